//! The embedded store on fjall, an LSM-tree engine, instead of sled: the same tables, records,
//! stream, snapshots, write-ahead log and conformance suite (it is
//! [`SledStore`](crate::sled::SledStore) opened with [`FjallOptions`]). Its commits cost a
//! quarter of sled's CPU, which is what bounds durable appends on a small machine (numbers in
//! the repository's `benches/README.md`).
//!
//! ```
//! use matrix_storage::fjall::{FjallOptions, FjallStore};
//! use matrix_storage::{ChangeSet, Storage, User};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store = FjallStore::open(dir.path(), &FjallOptions::default())?;
//! let mut changes = ChangeSet::new();
//! changes.new_users.push(User {
//!     user_id: "@alice:example.org".into(),
//!     password_hash: None,
//!     admin: false,
//!     deactivated: false,
//! });
//! store.apply(changes).await?; // durable once it returns
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub use crate::sled::FjallOptions;

/// The embedded store opened on fjall: [`crate::sled::SledStore`] with [`FjallOptions`].
pub type FjallStore = crate::sled::SledStore;
