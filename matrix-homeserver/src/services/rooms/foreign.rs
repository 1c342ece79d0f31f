//! Following what other processes write to a shared database
//! ([`matrix_storage::Storage::foreign_writes`]):
//! each time the storage says another process committed, the stream from where this process
//! had followed up to the readable head is read, and each event in it is handled as our own
//! appends are (a departure for `device_lists.left`, the syncs
//! it concerns woken), then the receipts, account data, to-device messages and device-list
//! changes of the range wake whom they concern. Events of our own in the range are handled
//! twice, which wakes their syncs once more and changes no answer (a departure noted twice is
//! read as one). Their notifications were stored by the process that appended them.
//!
//! When the head is still below a position another process committed (a lower one is being
//! written), the follower looks again shortly after, until it is past it. Storage errors wake
//! every waiting sync, so that nobody misses a change, and the range is read again later.

use std::sync::{Arc, Weak};
use std::time::Duration;

use matrix_storage::StreamPos;

use super::Rooms;
use crate::error::ApiError;

/// How many events one read of the stream takes.
const PAGE: usize = 500;

/// The longest the follower waits between looks while the head is below what another
/// process committed.
const MAX_PAUSE: Duration = Duration::from_millis(200);

impl Rooms {
    /// Starts following other processes' writes, if the storage is shared; the task ends
    /// with the service.
    pub(crate) fn follow_other_processes(self: &Arc<Self>) {
        let Some(moves) = self.storage.foreign_writes() else { return };
        tokio::spawn(follow(Arc::downgrade(self), moves));
    }

    /// Handles what was written at positions in `(after, upto]`.
    async fn catch_up(&self, after: StreamPos, upto: StreamPos) -> Result<(), ApiError> {
        let mut from = after;
        loop {
            let items = self.storage.stream_range(from, upto, PAGE).await?;
            for item in &items {
                let Some(pdu) = self.pdu(&item.event_id).await? else { continue };
                self.ephemeral.event_appended(&item.room_id, &pdu, Some(item.pos)).await;
            }
            match items.last() {
                Some(last) if items.len() == PAGE => from = last.pos,
                _ => break,
            }
        }
        let changes = self.storage.stream_changes(after, upto).await?;
        let device_lists = self.storage.device_list_changes(after, upto).await?;
        self.ephemeral.foreign_changes(&changes, &device_lists).await;
        Ok(())
    }
}

async fn follow(rooms: Weak<Rooms>, mut moves: tokio::sync::watch::Receiver<StreamPos>) {
    let mut done: Option<StreamPos> = None;
    let mut target = *moves.borrow_and_update();
    let mut pause = Duration::from_millis(5);
    loop {
        if done.is_some_and(|done| done >= target) {
            if moves.changed().await.is_err() {
                return;
            }
            target = target.max(*moves.borrow_and_update());
            pause = Duration::from_millis(5);
        }
        let Some(rooms) = rooms.upgrade() else { return };
        let head = match rooms.storage.stream_position().await {
            Ok(head) => head,
            Err(error) => {
                tracing::warn!("could not read the stream head to follow other processes: {error}");
                rooms.ephemeral.wake_everybody();
                drop(rooms);
                tokio::time::sleep(MAX_PAUSE).await;
                continue;
            }
        };
        // The first time: from where the stream is now.
        let from = done.unwrap_or(head);
        if head > from
            && let Err(error) = rooms.catch_up(from, head).await
        {
            tracing::warn!("could not read what other processes wrote: {error}");
            rooms.ephemeral.wake_everybody();
            drop(rooms);
            tokio::time::sleep(MAX_PAUSE).await;
            continue;
        }
        done = Some(from.max(head));
        drop(rooms);
        if head < target {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}
