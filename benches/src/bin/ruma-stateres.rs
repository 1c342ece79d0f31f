//! ruma-state-res 0.18 behind the `stateres` command line interface: the same input file, the
//! same commands, the same measurement, so the two tools can be compared in one run.
//!
//! ```text
//! ruma-stateres resolve FILE.json   prints {"resolved_state": [[type, state_key, event_id], ...]}
//! ruma-stateres bench FILE.json     median time per resolve and per phase, parse, peak memory
//! ```
//!
//! Parse: serde reads each PDU into ruma's event type (ids parsed, content kept as raw JSON)
//! and the state sets into ruma's state maps. Each resolve: the auth chain of each state set
//! by a walk over `auth_events` (as a server without a chain index computes it), then
//! `ruma::state_res::resolve`, which asks for the conflicted state subgraph in room version 12
//! (the same walk as `RumaRoom::conflicted_subgraph`, timed as its own phase).

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use benches::ruma_stateres::{RumaPdu, RumaRoom};

/// The `stateres` tool's figures, so that both report alike.
#[path = "../../../stateres-cli/src/report.rs"]
mod report;
use report::{median, memory_line, ms};
use ruma::state_res::{self, Event as _};
use ruma::{EventId, OwnedEventId, RoomVersionId};

const USAGE: &str = "usage: ruma-stateres (resolve | bench) FILE.json";

#[derive(serde::Deserialize)]
struct File {
    room_version: RoomVersionId,
    pdus: Vec<RumaPdu>,
    state_sets: Vec<Vec<OwnedEventId>>,
    #[serde(default)]
    state_res: Option<String>,
}

struct Input {
    version: RoomVersionId,
    room: RumaRoom,
}

fn parse(bytes: &[u8]) -> Result<Input, String> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| format!("invalid input: {e}"))?;
    if file.state_res.is_some() {
        return Err("state_res is not supported here: ruma takes the room version's".into());
    }
    let mut events = HashMap::with_capacity(file.pdus.len());
    for pdu in file.pdus {
        let id = pdu.event_id().clone();
        if events.insert(id.clone(), pdu).is_some() {
            return Err(format!("event {id} is listed twice"));
        }
    }
    let room = RumaRoom::from_events(events, &file.state_sets)
        .map_err(|id| format!("invalid state set: event {id} is missing"))?;
    Ok(Input { version: file.room_version, room })
}

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

fn resolve(input: &Input) -> Result<(state_res::StateMap<OwnedEventId>, Phases), String> {
    let rules = input.version.rules().ok_or("unknown room version")?;
    let v2_rules = rules.state_res.v2_rules().ok_or("not state resolution v2")?;
    let room = &input.room;
    let started = Instant::now();
    let chains = room.auth_chains();
    let auth_chains = started.elapsed();
    let subgraph = Cell::new(Duration::ZERO);
    let resolving = Instant::now();
    let state = state_res::resolve(
        &rules.authorization,
        v2_rules,
        &room.state_maps,
        chains,
        |id: &EventId| room.events.get(id),
        |conflicted| {
            let t = Instant::now();
            let answer = room.conflicted_subgraph(conflicted);
            subgraph.set(subgraph.get() + t.elapsed());
            answer
        },
    )
    .map_err(|e| format!("cannot resolve: {e}"))?;
    let subgraph = subgraph.get();
    let resolve = resolving.elapsed().saturating_sub(subgraph);
    Ok((state, Phases { auth_chains, subgraph, resolve }))
}

fn bench(input: &Input, parse_time: Duration, file_len: usize) -> Result<(), String> {
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
    let events = input.room.events.len();
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
    let result =
        std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}")).and_then(|bytes| {
            let started = Instant::now();
            let input = parse(&bytes)?;
            let parse_time = started.elapsed();
            let file_len = bytes.len();
            drop(bytes);
            if command == "resolve" {
                let (state, _) = resolve(&input)?;
                let mut rows = RumaRoom::rows(&state);
                rows.sort();
                let rows: Vec<[String; 3]> =
                    rows.into_iter().map(|(k, s, id)| [k, s, id]).collect();
                let out = serde_json::json!({ "resolved_state": rows });
                let _ = writeln!(std::io::stdout().lock(), "{out}");
                eprintln!(
                    "ruma-stateres: parse {:.3} ms; {}",
                    ms(parse_time),
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
            eprintln!("ruma-stateres: {message}");
            ExitCode::FAILURE
        }
    }
}
