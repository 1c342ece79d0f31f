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
//! The file is read a block at a time and its events one at a time into lean events
//! (`matrix_stateres::lean`): only what resolution reads is kept, with ids interned; neither
//! the file nor a JSON tree of it is ever held whole.

mod pdu;
mod report;
mod scan;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use matrix_core::RoomVersionRules;
use matrix_core::json::{self, Value};
use matrix_core::room_version::StateResAlgorithm;
use matrix_stateres::lean::{LeanRoom, Phase};

use crate::report::{median, memory_line, ms};
use crate::scan::Stream;

const USAGE: &str = "usage: stateres (resolve | bench) FILE.json";

/// A parsed input file.
struct Input {
    algorithm: Option<StateResAlgorithm>,
    room: LeanRoom,
    /// Each state set as event indices of `room`.
    state_sets: Vec<Vec<u32>>,
}

/// Reads the top-level object of the file at `path`, calling `member` with each key and the
/// stream positioned at its value, which `member` must consume.
fn top_level(
    path: &str,
    mut member: impl FnMut(&str, &mut Stream<std::fs::File>) -> Result<(), String>,
) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut stream = Stream::new(file);
    match stream.with(|s| Ok(s.peek()))? {
        Some(b'{') => {}
        None => return Err("invalid JSON: empty input".into()),
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err("the input must be a JSON object".into());
        }
        Some(_) => return Err("invalid JSON: not a JSON value".into()),
    }
    if !stream.with(|s| s.open(b'{', b'}'))? {
        loop {
            let key = stream.with(|s| s.string())?;
            stream.with(|s| s.expect(b':'))?;
            member(&key, &mut stream)?;
            if !stream.with(|s| s.next_element(b'}'))? {
                break;
            }
        }
    }
    if !stream.with(|s| Ok(s.at_end()))? {
        return Err("invalid JSON: trailing characters after the object".into());
    }
    Ok(())
}

fn small_value(span: &[u8]) -> Result<Value, String> {
    json::parse_lenient(span).map_err(|e| format!("invalid JSON: {e}"))
}

/// Reads the file in three passes over it, never holding it whole: the room version (needed
/// to read events) and which members exist; then the events, one at a time into lean events;
/// then the state sets, straight to event indices.
fn parse(path: &str) -> Result<Input, String> {
    let (mut version, mut state_res, mut pdus_array, mut has_sets) = (None, None, false, false);
    top_level(path, |key, stream| {
        match key {
            "room_version" => version = Some(small_value(stream.value()?)?),
            "state_res" => state_res = Some(small_value(stream.value()?)?),
            "pdus" => {
                pdus_array = stream.with(|s| Ok(s.peek()))? == Some(b'[');
                return stream.skip();
            }
            "state_sets" => {
                has_sets = true;
                return stream.skip();
            }
            _ => return stream.skip(),
        }
        Ok(())
    })?;
    let version = version.ok_or("missing field \"room_version\"")?;
    let version = version.as_str().ok_or("room_version must be a string")?;
    let rules = RoomVersionRules::get(version)
        .ok_or_else(|| format!("unknown room version {version:?}"))?;
    let algorithm = match state_res.as_ref().map(Value::as_str) {
        None => None,
        Some(Some("v2.0")) => Some(StateResAlgorithm::V2),
        Some(Some("v2.1")) => Some(StateResAlgorithm::V2_1),
        Some(_) => return Err("state_res must be \"v2.0\" or \"v2.1\"".into()),
    };
    if !pdus_array {
        return Err("missing field \"pdus\" (an array)".into());
    }
    if !has_sets {
        return Err("missing field \"state_sets\"".into());
    }

    // One event at a time, read straight from its bytes into a lean event.
    let mut builder = LeanRoom::builder(rules);
    top_level(path, |key, stream| {
        if key != "pdus" {
            return stream.skip();
        }
        if stream.with(|s| s.open(b'[', b']'))? {
            return Ok(());
        }
        let mut i = 0usize;
        loop {
            pdu::push(&mut builder, rules, stream.value()?, i)?;
            i += 1;
            if !stream.with(|s| s.next_element(b']'))? {
                return Ok(());
            }
        }
    })?;
    let room = builder.build();

    let mut state_sets = Vec::new();
    top_level(path, |key, stream| {
        if key != "state_sets" {
            return stream.skip();
        }
        if stream.with(|s| Ok(s.peek()))? != Some(b'[') {
            return Err("state_sets must be an array".into());
        }
        if stream.with(|s| s.open(b'[', b']'))? {
            return Ok(());
        }
        loop {
            let i = state_sets.len();
            if stream.with(|s| Ok(s.peek()))? != Some(b'[') {
                return Err(format!("state_sets[{i}] is not an array"));
            }
            let mut set = Vec::new();
            if !stream.with(|s| s.open(b'[', b']'))? {
                loop {
                    if !stream.with(|s| Ok(s.at_string()))? {
                        return Err(format!("state_sets[{i}] holds a non-string"));
                    }
                    let id = stream.with(|s| s.string())?;
                    let ix = room
                        .index(&id)
                        .ok_or_else(|| format!("invalid state set: event {id} is missing"))?;
                    set.push(ix);
                    if !stream.with(|s| s.next_element(b']'))? {
                        break;
                    }
                }
            }
            state_sets.push(set);
            if !stream.with(|s| s.next_element(b']'))? {
                return Ok(());
            }
        }
    })?;
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
    // Row by row: no JSON tree of the whole state is built.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let write = || -> std::io::Result<()> {
        out.write_all(b"{\"resolved_state\":[")?;
        for (i, (kind, key, id)) in entries.into_iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            let row = Value::Array(vec![kind.into(), key.into(), id.into()]);
            write!(out, "{row}")?;
        }
        out.write_all(b"]}\n")?;
        out.flush()
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = write();
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
    if let Ok(cover) = input.room.chain_cover() {
        let links: usize = (0..cover.chain_count() as u32).map(|c| cover.links(c).len()).sum();
        println!("auth DAG: {} chains, {links} links between them", cover.chain_count());
    }
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
    let result = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {path}: {e}"))
        .and_then(|metadata| {
            let file_len = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
            let started = Instant::now();
            let input = parse(path)?;
            let parse_time = started.elapsed();
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
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stateres: {message}");
            ExitCode::FAILURE
        }
    }
}
