//! `stateres`: resolve or benchmark state resolution on a room given as JSON.
//!
//! ```text
//! stateres resolve FILE.json   prints {"resolved_state": [[type, state_key, event_id], ...]}
//!                              (time per phase and peak memory on standard error)
//! stateres bench FILE.json     prints the median time per resolve and per phase, events per
//!                              second, the parse time and peak memory
//! ```
//!
//! The input is `{"room_version": "11", "pdus": [PDU, ...], "state_sets": [[event_id, ...], ...]}`
//! with an optional `"state_res": "v2.0" | "v2.1"`; each PDU carries its `event_id`, which is
//! taken as given.
//!
//! Events are read one at a time into lean events (`matrix_stateres::lean`): only what
//! resolution reads is kept, with ids interned, and no JSON tree of the file is ever built.

mod scan;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use matrix_core::json::{self, Value};
use matrix_core::room_version::StateResAlgorithm;
use matrix_core::{AuthEvent as _, RoomVersionRules};
use matrix_stateres::lean::{LeanRoom, Phase};

use crate::scan::Scanner;

const USAGE: &str = "usage: stateres (resolve | bench) FILE.json";

/// A parsed input file.
struct Input {
    algorithm: Option<StateResAlgorithm>,
    room: LeanRoom,
    /// Each state set as event indices of `room`.
    state_sets: Vec<Vec<u32>>,
}

/// The top-level members of the input, found but not yet read.
#[derive(Default)]
struct Members<'b> {
    room_version: Option<&'b [u8]>,
    state_res: Option<&'b [u8]>,
    pdus: Option<&'b [u8]>,
    state_sets: Option<&'b [u8]>,
}

fn members(bytes: &[u8]) -> Result<Members<'_>, String> {
    let mut scanner = Scanner::new(bytes);
    if scanner.peek() != Some(b'{') {
        return match scanner.peek() {
            None => Err("invalid JSON: empty input".into()),
            Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
                Err("the input must be a JSON object".into())
            }
            Some(_) => Err("invalid JSON: not a JSON value".into()),
        };
    }
    let mut found = Members::default();
    if !scanner.open(b'{', b'}')? {
        loop {
            let key = scanner.string()?;
            scanner.expect(b':')?;
            let span = scanner.value_span()?;
            match key.as_str() {
                "room_version" => found.room_version = Some(span),
                "state_res" => found.state_res = Some(span),
                "pdus" => found.pdus = Some(span),
                "state_sets" => found.state_sets = Some(span),
                _ => {}
            }
            if !scanner.next_element(b'}')? {
                break;
            }
        }
    }
    if !scanner.at_end() {
        return Err("invalid JSON: trailing characters after the object".into());
    }
    Ok(found)
}

fn small_value(span: &[u8]) -> Result<Value, String> {
    json::parse_lenient(span).map_err(|e| format!("invalid JSON: {e}"))
}

fn parse(bytes: &[u8]) -> Result<Input, String> {
    let found = members(bytes)?;
    let version = small_value(found.room_version.ok_or("missing field \"room_version\"")?)?;
    let version = version.as_str().ok_or("room_version must be a string")?;
    let rules = RoomVersionRules::get(version)
        .ok_or_else(|| format!("unknown room version {version:?}"))?;
    let algorithm = match found.state_res.map(small_value).transpose()?.as_ref().map(Value::as_str) {
        None => None,
        Some(Some("v2.0")) => Some(StateResAlgorithm::V2),
        Some(Some("v2.1")) => Some(StateResAlgorithm::V2_1),
        Some(_) => return Err("state_res must be \"v2.0\" or \"v2.1\"".into()),
    };
    let pdus = found.pdus.filter(|p| p.first() == Some(&b'['));
    let pdus = pdus.ok_or("missing field \"pdus\" (an array)")?;

    // One event at a time: parsed, reduced to what resolution reads, dropped.
    let mut builder = LeanRoom::builder(rules);
    let mut scanner = Scanner::new(pdus);
    if !scanner.open(b'[', b']')? {
        let mut i = 0usize;
        loop {
            let Value::Object(object) = small_value(scanner.value_span()?)? else {
                return Err(format!("pdus[{i}] is not an object"));
            };
            let id = object
                .get_str("event_id")
                .ok_or_else(|| format!("pdus[{i}] has no string event_id"))?;
            for name in ["type", "sender"] {
                if object.get_str(name).is_none() {
                    return Err(format!("pdus[{i}] ({id}) has no string {name}"));
                }
            }
            builder.push_object(&object, id).map_err(|e| e.to_string())?;
            i += 1;
            if !scanner.next_element(b']')? {
                break;
            }
        }
    }
    let room = builder.build();

    let sets = found.state_sets.ok_or("missing field \"state_sets\"")?;
    let mut scanner = Scanner::new(sets);
    if scanner.peek() != Some(b'[') {
        return Err("state_sets must be an array".into());
    }
    let mut state_sets = Vec::new();
    if !scanner.open(b'[', b']')? {
        loop {
            let i = state_sets.len();
            if scanner.peek() != Some(b'[') {
                return Err(format!("state_sets[{i}] is not an array"));
            }
            let mut set = Vec::new();
            if !scanner.open(b'[', b']')? {
                loop {
                    if !scanner.at_string() {
                        return Err(format!("state_sets[{i}] holds a non-string"));
                    }
                    let id = scanner.string()?;
                    let ix = room
                        .index(&id)
                        .ok_or_else(|| format!("invalid state set: event {id} is missing"))?;
                    set.push(ix);
                    if !scanner.next_element(b']')? {
                        break;
                    }
                }
            }
            state_sets.push(set);
            if !scanner.next_element(b']')? {
                break;
            }
        }
    }
    Ok(Input { algorithm, room, state_sets })
}

/// The time each phase of one resolve took.
#[derive(Debug, Clone, Copy, Default)]
struct Phases {
    auth_chains: Duration,
    subgraph: Duration,
    resolve: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.auth_chains + self.subgraph + self.resolve
    }
}

fn resolve(input: &Input) -> Result<(Vec<u32>, Phases), String> {
    let mut phases = Phases::default();
    let mut last = Instant::now();
    let mut done = |phase: Phase| {
        let now = Instant::now();
        let took = now - last;
        last = now;
        match phase {
            Phase::AuthChains => phases.auth_chains += took,
            Phase::Subgraph => phases.subgraph += took,
            _ => phases.resolve += took,
        }
    };
    let state = input
        .room
        .resolve_with_phases(&input.state_sets, input.algorithm, &mut done)
        .map_err(|e| format!("cannot resolve: {e}"))?;
    Ok((state, phases))
}

fn print_state(input: &Input, state: &[u32]) {
    let mut entries: Vec<(&str, &str, &str)> = state
        .iter()
        .filter_map(|&ix| input.room.event(ix))
        .map(|e| (e.kind(), e.state_key().unwrap_or_default(), e.event_id()))
        .collect();
    entries.sort_unstable();
    let rows: Vec<Value> = entries
        .into_iter()
        .map(|(kind, key, id)| Value::Array(vec![kind.into(), key.into(), id.into()]))
        .collect();
    let out: json::Object = [("resolved_state", Value::Array(rows))].into_iter().collect();
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{}", Value::Object(out));
}

/// The peak resident memory of this process (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn memory_line(file_len: usize) -> String {
    match peak_rss() {
        Some(peak) => format!(
            "peak memory (RSS): {:.1} MiB ({:.2}x the {:.1} MiB file)",
            peak as f64 / 1_048_576.0,
            peak as f64 / file_len.max(1) as f64,
            file_len as f64 / 1_048_576.0
        ),
        None => "peak memory (RSS): unknown".into(),
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn bench(input: &Input, parse_time: Duration, file_len: usize) -> Result<(), String> {
    // Warm up for a second (at least once), then measure for about five seconds.
    let warm_up = Instant::now();
    while {
        resolve(input)?;
        warm_up.elapsed() < Duration::from_secs(1)
    } {}
    let mut runs: Vec<Phases> = Vec::new();
    let start = Instant::now();
    while runs.len() < 5 || (start.elapsed() < Duration::from_secs(5) && runs.len() < 10_000) {
        let (state, phases) = resolve(input)?;
        std::hint::black_box(state);
        runs.push(phases);
    }
    let median_total = median(runs.iter().map(Phases::total).collect());
    let fastest = runs.iter().map(Phases::total).min().unwrap_or_default();
    let phase = |f: fn(&Phases) -> Duration| ms(median(runs.iter().map(f).collect()));
    let events = input.room.len();
    println!("resolves: {}", runs.len());
    println!("median time per resolve: {:.3} ms", ms(median_total));
    println!("fastest resolve: {:.3} ms", ms(fastest));
    println!(
        "median per phase: auth chains {:.3} ms, subgraph {:.3} ms, resolve {:.3} ms",
        phase(|p| p.auth_chains),
        phase(|p| p.subgraph),
        phase(|p| p.resolve)
    );
    println!("parse (once, not in the times above): {:.3} ms", ms(parse_time));
    println!("input events: {events}");
    println!("events per second: {:.0}", events as f64 / median_total.as_secs_f64());
    println!("{}", memory_line(file_len));
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
    let result = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}")).and_then(
        |bytes| {
            let started = Instant::now();
            let input = parse(&bytes)?;
            let parse_time = started.elapsed();
            let file_len = bytes.len();
            // The file is not needed once parsed.
            drop(bytes);
            if command == "resolve" {
                let (state, phases) = resolve(&input)?;
                print_state(&input, &state);
                eprintln!(
                    "stateres: parse {:.3} ms, auth chains {:.3} ms, subgraph {:.3} ms, resolve {:.3} ms; {}",
                    ms(parse_time),
                    ms(phases.auth_chains),
                    ms(phases.subgraph),
                    ms(phases.resolve),
                    memory_line(file_len)
                );
                Ok(())
            } else {
                bench(&input, parse_time, file_len)
            }
        },
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stateres: {message}");
            ExitCode::FAILURE
        }
    }
}
