//! Jump to date (`GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event` and
//! `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`): the room event whose
//! `origin_server_ts` is nearest a time, at or after it (`f`) or at or before it (`b`).
//!
//! No index by timestamp is kept: the room's timeline is in stream order, which is the order of
//! its timestamps but for events that arrived late. The boundary (the first event past the
//! time) is found by a binary search over stream positions, about 40 reads of one event
//! whatever the room's size; then the [`WINDOW`] events on each side of it are compared by
//! timestamp, so an event up to that far out of order is still found. When the boundary is
//! the timeline's start, the history before it (backfilled events, which carry no stream
//! order) is scanned too, at most [`MAX_BACKFILL_SCANNED`] events.

use matrix_storage::{BackfillPos, Direction, StreamPos};

use super::Rooms;
use crate::error::ApiError;

/// Events compared on each side of the boundary.
const WINDOW: usize = 50;
/// The most backfilled events looked at.
const MAX_BACKFILL_SCANNED: usize = 5_000;

/// An event near a time: its id and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nearest {
    pub(crate) event_id: String,
    pub(crate) origin_server_ts: i64,
}

/// Keeps the better of two candidates for `ts` in `direction`: at or after `ts` and earliest
/// (forwards), at or before it and latest (backwards).
fn consider(best: &mut Option<Nearest>, event_id: &str, event_ts: i64, ts: i64, forwards: bool) {
    let fits = if forwards { event_ts >= ts } else { event_ts <= ts };
    if !fits {
        return;
    }
    let better = match best {
        None => true,
        Some(b) if forwards => event_ts < b.origin_server_ts,
        Some(b) => event_ts > b.origin_server_ts,
    };
    if better {
        *best = Some(Nearest { event_id: event_id.to_owned(), origin_server_ts: event_ts });
    }
}

impl Rooms {
    /// The timestamp of a stored event (`None` when it cannot be read).
    async fn timestamp_of(&self, event_id: &str) -> Result<Option<i64>, ApiError> {
        Ok(self.pdu(event_id).await?.map(|pdu| pdu.origin_server_ts()))
    }

    /// The event of `room_id` nearest `ts` in the direction, whoever may see it (the callers
    /// check that).
    pub(crate) async fn nearest_event(
        &self,
        room_id: &str,
        ts: i64,
        forwards: bool,
    ) -> Result<Option<Nearest>, ApiError> {
        let storage = self.storage();
        // Whether an event is past the boundary: the first event past it starts the events
        // at or after `ts` (forwards), or follows the last at or before it (backwards).
        let past = |event_ts: i64| if forwards { event_ts >= ts } else { event_ts > ts };
        // Invariant: the room's events at or before `lo` are not past; the first after `hi`
        // is past (or there is none).
        let (mut lo, mut hi) = (0u64, storage.stream_position().await?.0);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let next = storage.timeline(room_id, StreamPos(mid), Direction::Forwards, 1).await?;
            let Some(item) = next.first() else {
                hi = mid;
                continue;
            };
            match self.timestamp_of(&item.event_id).await? {
                Some(event_ts) if !past(event_ts) => lo = item.pos.0.max(mid + 1),
                _ => hi = mid,
            }
        }
        let mut best = None;
        let after = storage.timeline(room_id, StreamPos(lo), Direction::Forwards, WINDOW).await?;
        let before =
            storage.timeline(room_id, StreamPos(lo + 1), Direction::Backwards, WINDOW).await?;
        for item in after.iter().chain(&before) {
            if let Some(event_ts) = self.timestamp_of(&item.event_id).await? {
                consider(&mut best, &item.event_id, event_ts, ts, forwards);
            }
        }
        // At the timeline's start: the history before it may hold a nearer event.
        if before.len() < WINDOW {
            let mut from = BackfillPos(0);
            let mut scanned = 0;
            while scanned < MAX_BACKFILL_SCANNED {
                let page = storage.backfilled(room_id, from, Direction::Backwards, 100).await?;
                let Some(last) = page.last() else { break };
                from = last.pos;
                scanned += page.len();
                for item in &page {
                    if let Some(event_ts) = self.timestamp_of(&item.event_id).await? {
                        consider(&mut best, &item.event_id, event_ts, ts, forwards);
                    }
                }
            }
        }
        Ok(best)
    }

    /// `GET /timestamp_to_event` of the client API: the nearest event `user` may see (404 when
    /// there is none, or the nearest is hidden from them).
    pub(crate) async fn timestamp_to_event<'a>(
        &self,
        room_id: &str,
        reader: impl Into<super::Reader<'a>>,
        ts: i64,
        forwards: bool,
    ) -> Result<Nearest, ApiError> {
        let reader = reader.into();
        // Who may read the room at all (403 otherwise), before anything of it is looked at.
        self.access(room_id, reader).await?;
        let not_found = || {
            let direction = if forwards { "forward" } else { "backward" };
            ApiError::not_found(format!("no event from {ts} in the {direction} direction"))
        };
        let nearest = self.nearest_event(room_id, ts, forwards).await?.ok_or_else(not_found)?;
        self.event_for(room_id, reader, &nearest.event_id).await.map_err(|_| not_found())?;
        Ok(nearest)
    }

    /// The same for another server (its ACL and its users' history visibility apply).
    pub(crate) async fn timestamp_to_event_for_server(
        &self,
        room_id: &str,
        server: &str,
        ts: i64,
        forwards: bool,
    ) -> Result<Nearest, ApiError> {
        let looker = self.server_access(room_id, server).await?;
        let not_found = || ApiError::not_found(format!("no event near {ts}"));
        let nearest = self.nearest_event(room_id, ts, forwards).await?.ok_or_else(not_found)?;
        let stored = self.storage().event(&nearest.event_id).await?.ok_or_else(not_found)?;
        let pdu = self.pdu(&nearest.event_id).await?.ok_or_else(not_found)?;
        match self.server_view(&looker, &pdu, stored.stream).await? {
            super::server_visibility::ServerView::Hidden => Err(not_found()),
            _ => Ok(nearest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_in_the_direction_wins() {
        let events = [("a", 10), ("b", 20), ("c", 30), ("late", 15)];
        let pick = |ts: i64, forwards: bool| {
            let mut best = None;
            for (id, event_ts) in events {
                consider(&mut best, id, event_ts, ts, forwards);
            }
            best.map(|b: Nearest| b.event_id)
        };
        assert_eq!(pick(12, true).as_deref(), Some("late"));
        assert_eq!(pick(16, false).as_deref(), Some("late"));
        assert_eq!(pick(20, true).as_deref(), Some("b"), "an exact time is found both ways");
        assert_eq!(pick(20, false).as_deref(), Some("b"));
        assert_eq!(pick(31, true), None);
        assert_eq!(pick(9, false), None);
    }
}
