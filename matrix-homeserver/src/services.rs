//! The services: domain logic over the storage traits, with no HTTP in them.

pub(crate) mod accounts;
