//! The auth-chain index: each state event's place in a chain cover of its room's auth DAG.

/// One state event's entry in its room's auth-chain index: its place in a chain cover of the
/// room's auth DAG (computed by the caller, e.g. with matrix-stateres' `ChainCoverBuilder`).
/// The store keeps entries as given and hands them back; it checks only that no two take one
/// number in a room ([`crate::ChangeSet::auth_chain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthChainEntry {
    /// The room.
    pub room_id: String,
    /// The entry's number in its room: entries are numbered 0, 1, 2, ... per room, in the
    /// order they were added (parents before children).
    pub index: u32,
    /// The event.
    pub event_id: String,
    /// Its chain.
    pub chain: u32,
    /// Its sequence number in the chain (from 1).
    pub seq: u32,
    /// The links this event makes, as positions `(chain, seq)` on other chains that its
    /// chain reaches from this event's `seq` on.
    pub links: Vec<(u32, u32)>,
}

impl AuthChainEntry {
    /// The conflict of a change set that adds this entry when its number is taken.
    pub(crate) fn taken(&self) -> crate::StorageError {
        crate::StorageError::new(
            crate::ErrorKind::Conflict,
            format!("auth-chain index {} of room {} is taken", self.index, self.room_id),
        )
    }
}
