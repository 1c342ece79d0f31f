//! The `stateres` binary, run as a user would run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stateres(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stateres")).args(args).output().expect("runs")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../matrix-stateres/tests/fixtures").join(name)
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("stateres-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("writable temp dir");
    path
}

#[test]
fn resolve_prints_the_sorted_state() {
    let path = fixture("v2_mainline_sort.json");
    let out = stateres(&["resolve", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        stdout.starts_with(r#"{"resolved_state":[["m.room.create","","$CREATE:example.com"],"#),
        "{stdout}"
    );
    assert!(stdout.contains(r#"["m.room.topic","","$T3:example.com"]"#), "{stdout}");
    assert!(stdout.contains(r#"["m.room.power_levels","","$PA2:example.com"]"#), "{stdout}");
}

#[test]
fn bench_reports_time_and_throughput() {
    let path = fixture("v2_topic.json");
    let out = stateres(&["bench", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    for line in ["median time per resolve: ", "input events: 17", "events per second: "] {
        assert!(stdout.contains(line), "{line:?} missing from {stdout}");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let cases = [
        ("not-json", "{", "invalid JSON"),
        ("version", r#"{"room_version":"99","pdus":[],"state_sets":[]}"#, "unknown room version"),
        (
            "no-pdus",
            r#"{"room_version":"11","state_sets":[]}"#,
            "missing field \"pdus\" (an array)",
        ),
        (
            "no-id",
            r#"{"room_version":"11","pdus":[{"type":"t"}],"state_sets":[]}"#,
            "no string event_id",
        ),
        (
            "missing-event",
            r#"{"room_version":"11","pdus":[],"state_sets":[["$nope"]]}"#,
            "event $nope is missing",
        ),
    ];
    for (name, contents, message) in cases {
        let path = temp_file(name, contents);
        let out = stateres(&["resolve", path.to_str().expect("utf-8")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        std::fs::remove_file(path).ok();
    }
    let out = stateres(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = stateres(&["resolve", "/does/not/exist.json"]);
    assert_eq!(out.status.code(), Some(1));
}

/// A room version 11 PDU with the given id, type, state key and auth events.
fn pdu(id: &str, kind: &str, state_key: &str, auth: &[&str]) -> String {
    let auth: Vec<String> = auth.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"{{"event_id":"{id}","room_id":"!r:x","type":"{kind}","state_key":"{state_key}","sender":"@a:x","content":{{"membership":"join"}},"auth_events":[{}],"prev_events":[],"origin_server_ts":1,"depth":1}}"#,
        auth.join(",")
    )
}

fn room(pdus: &[String], sets: &str) -> String {
    format!(r#"{{"room_version":"11","pdus":[{}],"state_sets":{sets}}}"#, pdus.join(","))
}

/// Broken auth graphs: cycles, an event naming itself, missing auth events, duplicate ids, two
/// events for one key. Each is a clear error (exit 1), never a panic.
#[test]
fn broken_graphs_are_clear_errors() {
    let create = pdu("$c", "m.room.create", "", &[]);
    let cases = [
        (
            "cycle",
            room(
                &[
                    create.clone(),
                    pdu("$a", "m.room.topic", "", &["$c", "$b"]),
                    pdu("$b", "m.room.name", "", &["$c", "$a"]),
                ],
                r#"[["$c","$a"],["$c","$b"]]"#,
            ),
            "auth events form a cycle through",
        ),
        (
            "self",
            room(
                &[create.clone(), pdu("$a", "m.room.topic", "", &["$c", "$a"])],
                r#"[["$c","$a"],["$c"]]"#,
            ),
            "auth events form a cycle through $a",
        ),
        (
            "missing-auth",
            room(
                &[create.clone(), pdu("$a", "m.room.topic", "", &["$c", "$gone"])],
                r#"[["$c","$a"],["$c"]]"#,
            ),
            "event $gone is missing (an auth event of $a)",
        ),
        (
            "duplicate",
            room(&[create.clone(), create.clone()], r#"[["$c"]]"#),
            "event $c is listed twice",
        ),
        (
            "two-for-one-key",
            room(
                &[
                    create.clone(),
                    pdu("$a", "m.room.topic", "", &["$c"]),
                    pdu("$b", "m.room.topic", "", &["$c"]),
                ],
                r#"[["$c","$a","$b"],["$c"]]"#,
            ),
            "a state set lists two events for the key of $b",
        ),
    ];
    for (name, contents, message) in cases {
        let path = temp_file(name, &contents);
        for command in ["resolve", "bench"] {
            let out = stateres(&[command, path.to_str().expect("utf-8")]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
            assert!(stderr.contains(message), "{name}: {stderr}");
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        }
        std::fs::remove_file(path).ok();
    }
}

/// The report names each phase and the peak memory.
#[test]
fn phases_and_memory_are_reported() {
    let path = fixture("v2_topic.json");
    let out = stateres(&["bench", path.to_str().expect("utf-8")]);
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    for part in [
        "median per phase: auth chains ",
        "subgraph ",
        "resolve ",
        "parse (once",
        "peak memory (RSS): ",
    ] {
        assert!(stdout.contains(part), "{part:?} missing from {stdout}");
    }
    let out = stateres(&["resolve", path.to_str().expect("utf-8")]);
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(stderr.contains("parse ") && stderr.contains("peak memory (RSS): "), "{stderr}");
}
