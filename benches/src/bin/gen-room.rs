//! Writes a generated forked room in the `stateres` input format to standard output.
//!
//! `cargo run --release -p benches --bin gen-room -- MEMBERS [SEED] [VERSION] > room.json`

use std::process::ExitCode;

use benches::rooms::{RoomSpec, generate};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |i: usize, default: u64| args.get(i).map_or(Ok(default), |a| a.parse::<u64>());
    let (Ok(members), Ok(seed)) = (parse(0, 1_000), parse(1, 1)) else {
        eprintln!("usage: gen-room MEMBERS [SEED] [ROOM_VERSION]");
        return ExitCode::from(2);
    };
    let version = match args.get(2).map(String::as_str) {
        None => "11",
        Some(v) => match matrix_core::RoomVersionRules::get(v) {
            Some(rules) => rules.id,
            None => {
                eprintln!("gen-room: unknown room version {v:?}");
                return ExitCode::from(2);
            }
        },
    };
    let members = usize::try_from(members).unwrap_or(usize::MAX);
    let spec = RoomSpec { version, members, servers: 100, fork_events: 60, seed };
    println!("{}", generate(spec).to_json());
    ExitCode::SUCCESS
}
