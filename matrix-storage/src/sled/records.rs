//! The records of the schema-1 tables that are more than a string or a number: events, rooms
//! and users.

use std::sync::Arc;

use crate::codec::{Dec, Enc};
use crate::{
    ErrorKind, EventStatus, Result, RoomInfo, SnapshotId, StorageError, StoredEvent, StreamPos,
    User,
};

fn status_code(status: EventStatus) -> u64 {
    match status {
        EventStatus::Accepted => 0,
        EventStatus::Outlier => 1,
        EventStatus::Rejected => 2,
        EventStatus::SoftFailed => 3,
    }
}

fn status_of(code: u64) -> Result<EventStatus> {
    Ok(match code {
        0 => EventStatus::Accepted,
        1 => EventStatus::Outlier,
        2 => EventStatus::Rejected,
        3 => EventStatus::SoftFailed,
        _ => return Err(StorageError::new(ErrorKind::Corrupt, "unknown event status")),
    })
}

pub(super) fn encode_event(event: &StoredEvent) -> Vec<u8> {
    let mut enc = Enc::default()
        .str(&event.room_id)
        .bytes(&event.json)
        .u64(status_code(event.status))
        .u64(event.stream.map_or(0, |p| p.0))
        .bool(event.state_after.is_some())
        .u64(event.state_after.map_or(0, |s| s.0))
        .u64(event.auth_events.len() as u64);
    for id in &event.auth_events {
        enc = enc.str(id);
    }
    enc = enc.u64(event.prev_events.len() as u64);
    for id in &event.prev_events {
        enc = enc.str(id);
    }
    enc.done()
}

pub(super) fn decode_event(event_id: &str, bytes: &[u8]) -> Result<StoredEvent> {
    let mut dec = Dec::new(bytes);
    let room_id = dec.str()?;
    let json: Arc<[u8]> = Arc::from(dec.bytes()?);
    let status = status_of(dec.u64()?)?;
    let stream = dec.u64()?;
    let has_state = dec.bool()?;
    let state = dec.u64()?;
    let list = |dec: &mut Dec<'_>| -> Result<Vec<String>> {
        let count = dec.u64()?;
        (0..count).map(|_| dec.str()).collect()
    };
    let auth_events = list(&mut dec)?;
    let prev_events = list(&mut dec)?;
    Ok(StoredEvent {
        event_id: event_id.to_owned(),
        room_id,
        json,
        status,
        auth_events,
        prev_events,
        stream: (stream != 0).then_some(StreamPos(stream)),
        state_after: has_state.then_some(SnapshotId(state)),
    })
}

pub(super) fn encode_room(info: &RoomInfo) -> Vec<u8> {
    let mut enc = Enc::default()
        .str(&info.version)
        .bool(info.current_state.is_some())
        .u64(info.current_state.map_or(0, |s| s.0))
        .u64(info.forward_extremities.len() as u64);
    for id in &info.forward_extremities {
        enc = enc.str(id);
    }
    enc.done()
}

pub(super) fn decode_room(bytes: &[u8]) -> Result<RoomInfo> {
    let mut dec = Dec::new(bytes);
    let version = dec.str()?;
    let has_state = dec.bool()?;
    let state = dec.u64()?;
    let count = dec.u64()?;
    let forward_extremities = (0..count).map(|_| dec.str()).collect::<Result<_>>()?;
    Ok(RoomInfo {
        version,
        current_state: has_state.then_some(SnapshotId(state)),
        forward_extremities,
    })
}

pub(super) fn encode_user(user: &User) -> Vec<u8> {
    Enc::default()
        .opt_str(user.password_hash.as_deref())
        .bool(user.admin)
        .bool(user.deactivated)
        .done()
}

pub(super) fn decode_user(user_id: &str, bytes: &[u8]) -> Result<User> {
    let mut dec = Dec::new(bytes);
    Ok(User {
        user_id: user_id.to_owned(),
        password_hash: dec.opt_str()?,
        admin: dec.bool()?,
        deactivated: dec.bool()?,
    })
}
