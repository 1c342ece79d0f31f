//! `stateres`: resolve or benchmark state resolution on a room given as JSON.
//!
//! ```text
//! stateres resolve FILE.json   prints {"resolved_state": [[type, state_key, event_id], ...]}
//! stateres bench FILE.json     prints the median time per resolve and events per second
//! ```
//!
//! The input is `{"room_version": "11", "pdus": [PDU, ...], "state_sets": [[event_id, ...], ...]}`
//! with an optional `"state_res": "v2.0" | "v2.1"`; each PDU carries its `event_id`, which is
//! taken as given.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use matrix_core::json::{self, Value};
use matrix_core::room_version::StateResAlgorithm;
use matrix_core::{Pdu, RoomVersionRules};
use matrix_stateres::{ResolveOptions, StateMap};
use rustc_hash::FxBuildHasher;

const USAGE: &str = "usage: stateres (resolve | bench) FILE.json";

/// A parsed input file.
struct Input {
    rules: &'static RoomVersionRules,
    algorithm: Option<StateResAlgorithm>,
    events: HashMap<String, Pdu, FxBuildHasher>,
    state_sets: Vec<Vec<String>>,
}

fn field<'v>(object: &'v json::Object, name: &str) -> Result<&'v Value, String> {
    object.get(name).ok_or_else(|| format!("missing field {name:?}"))
}

fn parse(bytes: &[u8]) -> Result<Input, String> {
    let value = json::parse_lenient(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut top) = value else {
        return Err("the input must be a JSON object".into());
    };
    let version = field(&top, "room_version")?.as_str().ok_or("room_version must be a string")?;
    let rules = RoomVersionRules::get(version)
        .ok_or_else(|| format!("unknown room version {version:?}"))?;
    let algorithm = match top.get("state_res").map(|v| v.as_str()) {
        None => None,
        Some(Some("v2.0")) => Some(StateResAlgorithm::V2),
        Some(Some("v2.1")) => Some(StateResAlgorithm::V2_1),
        Some(_) => return Err("state_res must be \"v2.0\" or \"v2.1\"".into()),
    };
    // Taken out of the document, so each event is moved into its Pdu, not copied.
    let Some(Value::Array(pdus)) = top.remove("pdus") else {
        return Err("missing field \"pdus\" (an array)".into());
    };
    let mut events = HashMap::with_capacity_and_hasher(pdus.len(), FxBuildHasher);
    for (i, pdu) in pdus.into_iter().enumerate() {
        let Value::Object(object) = pdu else { return Err(format!("pdus[{i}] is not an object")) };
        let id = object
            .get_str("event_id")
            .ok_or_else(|| format!("pdus[{i}] has no string event_id"))?
            .to_owned();
        for name in ["type", "sender"] {
            if object.get_str(name).is_none() {
                return Err(format!("pdus[{i}] ({id}) has no string {name}"));
            }
        }
        let pdu = Pdu::with_event_id(object, id.clone(), rules);
        if events.insert(id.clone(), pdu).is_some() {
            return Err(format!("event {id} is listed twice"));
        }
    }
    let sets = field(&top, "state_sets")?.as_array().ok_or("state_sets must be an array")?;
    let state_sets = sets
        .iter()
        .enumerate()
        .map(|(i, set)| {
            let ids = set.as_array().ok_or_else(|| format!("state_sets[{i}] is not an array"))?;
            ids.iter()
                .map(|id| {
                    id.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("state_sets[{i}] holds a non-string"))
                })
                .collect()
        })
        .collect::<Result<_, String>>()?;
    Ok(Input { rules, algorithm, events, state_sets })
}

fn resolve(input: &Input) -> Result<StateMap<'_>, String> {
    let sets = input
        .state_sets
        .iter()
        .map(|set| {
            let ids: Vec<&str> = set.iter().map(String::as_str).collect();
            matrix_stateres::state_map_from_ids(&ids, &input.events)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid state set: {e}"))?;
    let options = ResolveOptions { algorithm: input.algorithm, ..ResolveOptions::default() };
    matrix_stateres::resolve_with(input.rules, &sets, &input.events, options)
        .map_err(|e| format!("cannot resolve: {e}"))
}

fn print_state(state: &StateMap<'_>) {
    let mut entries: Vec<(&str, &str, &str)> =
        state.iter().map(|(&(kind, key), &id)| (kind, key, id)).collect();
    entries.sort_unstable();
    let rows: Vec<Value> = entries
        .into_iter()
        .map(|(kind, key, id)| Value::Array(vec![kind.into(), key.into(), id.into()]))
        .collect();
    let out: json::Object = [("resolved_state", Value::Array(rows))].into_iter().collect();
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{}", Value::Object(out));
}

fn bench(input: &Input) -> Result<(), String> {
    // Warm up for a second (at least once), then measure for about five seconds.
    let warm_up = Instant::now();
    while {
        resolve(input)?;
        warm_up.elapsed() < Duration::from_secs(1)
    } {}
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < Duration::from_secs(5) && times.len() < 10_000) {
        let t = Instant::now();
        std::hint::black_box(resolve(input)?);
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    let events = input.events.len();
    println!("resolves: {}", times.len());
    println!("median time per resolve: {:.3} ms", median.as_secs_f64() * 1e3);
    println!("fastest resolve: {:.3} ms", times[0].as_secs_f64() * 1e3);
    println!("input events: {events}");
    println!("events per second: {:.0}", events as f64 / median.as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, path) = match args.as_slice() {
        [command, path] if command == "resolve" || command == "bench" => (command, path),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = std::fs::read(path)
        .map_err(|e| format!("cannot read {path}: {e}"))
        .and_then(|bytes| parse(&bytes))
        .and_then(|input| {
            if command == "resolve" {
                resolve(&input).map(|state| print_state(&state))
            } else {
                bench(&input)
            }
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stateres: {message}");
            ExitCode::FAILURE
        }
    }
}
