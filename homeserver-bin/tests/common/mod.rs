//! What the binary's test files share: the binary, and a server started from a config.

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) fn homeserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_homeserver"))
}

/// A server started with `config` (RUST_LOG unset): the child, the lines of its stderr, and
/// the lines it said up to "serving" (it is ready then; at most 30 s).
pub(crate) fn start(config: &Path) -> (Child, Lines<BufReader<ChildStderr>>, Vec<String>) {
    let mut child = homeserver()
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said = Vec::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let ready = line.contains("serving");
        said.push(line);
        if ready {
            break;
        }
    }
    (child, lines, said)
}
