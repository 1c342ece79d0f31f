//! Interop tests against a real Synapse on loopback.
//!
//! `.ci/run` installs Synapse (`interop/synapse/install`, cached between runs), starts it
//! (`interop/synapse/start`: self-signed certificate, an IP:port server name, loopback allowed
//! for federation) and exports what [`synapse::Synapse::from_env`] reads:
//! `SYNAPSE_CLIENT_URL`, `SYNAPSE_SERVER_NAME`, `SYNAPSE_FEDERATION_URL` and
//! `SYNAPSE_SHARED_SECRET`. Without them every test that needs Synapse says it is skipped and
//! passes; the tests of the driver itself (the registration MAC) always run.
//!
//! To run them by hand:
//! ```text
//! venv=$(interop/synapse/install)
//! interop/synapse/start "$venv" /tmp/synapse && set -a && . /tmp/synapse/env && set +a
//! cargo test -p homeserver-bin --test interop
//! interop/synapse/stop /tmp/synapse
//! ```
//!
//! One Synapse serves every test of the run, so each test makes its own users and rooms (names
//! from [`unique`]) and never assumes a fresh server. Our servers are started per test by
//! [`ours::OurServer::start`], the binary in a process of its own with federation on.

mod backfill;
mod client;
mod directory;
mod driver;
mod edus;
mod federation_check;
mod fork;
mod keys;
mod knock;
mod link;
mod ours;
mod restart;
mod rooms;
mod sliding_sync;
mod synapse;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A name no earlier run against the same Synapse used: `prefix`, the time in milliseconds
/// and a counter.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{prefix}_{millis}_{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Now, in milliseconds since the epoch (what `valid_until_ts` and the like count in).
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
