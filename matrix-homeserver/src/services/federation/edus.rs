//! EDUs other servers send: what their users do that is not a room event. Each one is about
//! users of the sending server only; one about anybody else is dropped, as are kinds this
//! server does not handle (the spec has servers ignore unknown EDUs).

use std::time::Duration;

use matrix_core::{Object, Value};

use crate::State;
use crate::error::ApiError;

/// How long a remote user's typing notice lasts without a renewal (the sending server sends
/// `typing: false` when it ends sooner).
const REMOTE_TYPING: Duration = Duration::from_secs(30);

/// Whether `user` is a user of `origin`.
fn of_origin(user: &str, origin: &str) -> bool {
    user.split_once(':').is_some_and(|(_, server)| server == origin)
}

/// Handles one EDU from `origin`.
pub(crate) async fn received(state: &State, origin: &str, edu: &Object) -> Result<(), ApiError> {
    let Some(content) = edu.get_object("content") else { return Ok(()) };
    match edu.get_str("edu_type") {
        Some("m.typing") => typing(state, origin, content).await,
        _ => Ok(()),
    }
}

/// `m.typing`: a joined user of `origin` starts or stops typing in a room.
async fn typing(state: &State, origin: &str, content: &Object) -> Result<(), ApiError> {
    let (Some(room), Some(user)) = (content.get_str("room_id"), content.get_str("user_id")) else {
        return Ok(());
    };
    if !of_origin(user, origin)
        || state.rooms.storage().membership(room, user).await?.as_deref() != Some("join")
    {
        return Ok(());
    }
    let typing = matches!(content.get("typing"), Some(Value::Bool(true)));
    state.ephemeral.set_typing(room, user, typing.then_some(REMOTE_TYPING)).await;
    Ok(())
}
