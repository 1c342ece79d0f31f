//! Time and memory figures as `stateres` prints them. The `ruma-stateres` bench binary
//! (benches/src/bin) includes this file too, so that both tools report alike.

use std::time::Duration;

/// The peak resident memory of this process (Linux), in bytes.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A duration in milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The peak memory, and its ratio to the input file's size.
pub(crate) fn memory_line(file_len: usize) -> String {
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

/// The median of non-empty `times`.
pub(crate) fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}
