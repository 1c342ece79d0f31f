//! The one integration-test binary of matrix-stateres.

mod fixtures;
mod ruma_oracle;
mod v1;
