//! The one integration-test binary of matrix-stateres.

mod chain_cover;
mod fixtures;
mod lean;
mod ruma_oracle;
mod v1;
