//! The one integration-test binary of matrix-core.

mod json;
mod pdu;
mod ruma_oracle;
mod vectors;
mod xmatrix;
