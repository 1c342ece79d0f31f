//! The administrators' lists of users and rooms: pages in byte order of the ids.

use super::{Store, apply, create_room};
use crate::{ChangeSet, User};

/// Users and rooms are listed above a cursor, in byte order (not by length, not by locale),
/// deactivated users too, at most `limit` at a time.
pub async fn users_and_rooms_in_pages(store: Store) {
    let user = |id: &str, deactivated: bool| User {
        user_id: id.to_owned(),
        password_hash: None,
        admin: id == "@b:x",
        deactivated,
    };
    // Ids of different lengths and cases: byte order is `@B` `@a` `@aa` `@b` `@ba`.
    let ids = ["@b:x", "@aa:x", "@ba:x", "@a:x", "@B:x"];
    let mut changes = ChangeSet::new();
    changes.new_users = ids.iter().map(|id| user(id, *id == "@aa:x")).collect();
    changes.rooms = ["!z:x", "!a:x", "!ab:x", "!B:x"].into_iter().map(create_room).collect();
    apply(&store, changes).await;

    let names = |users: Vec<User>| users.into_iter().map(|u| u.user_id).collect::<Vec<_>>();
    let all = store.users("", 100).await.expect("lists");
    assert_eq!(all.iter().find(|u| u.user_id == "@aa:x").map(|u| u.deactivated), Some(true));
    assert_eq!(all.iter().find(|u| u.user_id == "@b:x").map(|u| u.admin), Some(true));
    assert_eq!(names(all), ["@B:x", "@a:x", "@aa:x", "@b:x", "@ba:x"]);
    assert_eq!(names(store.users("", 2).await.expect("lists")), ["@B:x", "@a:x"]);
    assert_eq!(names(store.users("@a:x", 2).await.expect("lists")), ["@aa:x", "@b:x"]);
    assert_eq!(names(store.users("@b:x", 2).await.expect("lists")), ["@ba:x"]);
    assert!(store.users("@ba:x", 2).await.expect("lists").is_empty());
    assert!(store.users("", 0).await.expect("lists").is_empty());
    // A cursor that names no user still pages from where it would sort.
    assert_eq!(names(store.users("@ab", 1).await.expect("lists")), ["@b:x"]);

    assert_eq!(store.room_ids("", 10).await.expect("lists"), ["!B:x", "!a:x", "!ab:x", "!z:x"]);
    assert_eq!(store.room_ids("!a:x", 2).await.expect("lists"), ["!ab:x", "!z:x"]);
    assert!(store.room_ids("!z:x", 2).await.expect("lists").is_empty());
}
