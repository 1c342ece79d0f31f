//! A room's stored history in pages, for the administrators' scans (the media a room names,
//! a history purge): its timeline backwards from a position, then its backfilled history.

use matrix_storage::{BackfillPos, Direction, Storage, StreamPos};

use crate::error::ApiError;

/// Where the pages stand.
enum Stage {
    Timeline(StreamPos),
    Backfill(BackfillPos),
    Done,
}

/// Pages of a room's event ids, newest first: the timeline before a position, then the
/// backfilled events (all older than the timeline). A page may be acted on (its events
/// deleted) before the next is asked for.
pub(crate) struct HistoryPages<'a> {
    room_id: &'a str,
    batch: usize,
    stage: Stage,
}

impl<'a> HistoryPages<'a> {
    /// The history of `room_id` before the timeline position `before` (`StreamPos(u64::MAX)`:
    /// all of it), `batch` events a page.
    pub(crate) fn before(room_id: &'a str, before: StreamPos, batch: usize) -> Self {
        HistoryPages { room_id, batch: batch.max(1), stage: Stage::Timeline(before) }
    }

    /// The next page's event ids, or `None` when the history is read.
    pub(crate) async fn next(
        &mut self,
        storage: &dyn Storage,
    ) -> Result<Option<Vec<String>>, ApiError> {
        loop {
            let (ids, full) = match self.stage {
                Stage::Timeline(from) => {
                    let items = storage
                        .timeline(self.room_id, from, Direction::Backwards, self.batch)
                        .await?;
                    let full = items.len() == self.batch;
                    self.stage = match items.last() {
                        Some(last) if full => Stage::Timeline(last.pos),
                        _ => Stage::Backfill(BackfillPos(0)),
                    };
                    (items.into_iter().map(|i| i.event_id).collect::<Vec<_>>(), full)
                }
                Stage::Backfill(from) => {
                    let items = storage
                        .backfilled(self.room_id, from, Direction::Backwards, self.batch)
                        .await?;
                    let full = items.len() == self.batch;
                    self.stage = match items.last() {
                        Some(last) if full => Stage::Backfill(last.pos),
                        _ => Stage::Done,
                    };
                    (items.into_iter().map(|i| i.event_id).collect(), full)
                }
                Stage::Done => return Ok(None),
            };
            if !ids.is_empty() || full {
                return Ok(Some(ids));
            }
        }
    }
}
