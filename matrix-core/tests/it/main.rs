//! The one integration-test binary of matrix-core.

mod auth_rules;
mod json;
mod pdu;
mod ruma_oracle;
mod signing;
mod vectors;
mod xmatrix;
