//! The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! ...), read from `/proc/self` at each scrape: Linux only; elsewhere, or when a file cannot be
//! read, the metric is left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// The process collector.
#[derive(Debug)]
pub(super) struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stat = Stat::read();
        if let Some(stat) = &stat {
            let cpu = ConstCounter::new((stat.utime + stat.stime) / TICKS_PER_SECOND);
            let metric = encoder.encode_descriptor(
                // The encoder adds `_total` to a counter's name.
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?;
            cpu.encode(metric)?;
        }
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", status("VmRSS:")),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", status("VmSize:")),
            ("process_open_fds", "Number of open file descriptors", open_fds()),
            ("process_max_fds", "Maximum number of open file descriptors", max_fds()),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                stat.and_then(|s| boot_time().map(|boot| boot + s.start_ticks / TICKS_PER_SECOND)),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
                gauge.encode(metric)?;
            }
        }
        Ok(())
    }
}

/// What `/proc/self/stat` says of CPU time and the start, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct Stat {
    utime: f64,
    stime: f64,
    start_ticks: f64,
}

impl Stat {
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let (_, rest) = text.rsplit_once(") ")?;
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        Some(Stat { utime: field(14)?, stime: field(15)?, start_ticks: field(22)? })
    }
}

/// A `kB` line of `/proc/self/status`, in bytes.
fn status(key: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|line| line.starts_with(key))?;
    let kilobytes: f64 = line.strip_prefix(key)?.split_ascii_whitespace().next()?.parse().ok()?;
    Some(kilobytes * 1024.0)
}

fn open_fds() -> Option<f64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle being read is one of them.
    Some(entries.count().saturating_sub(1) as f64)
}

fn max_fds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|line| line.starts_with("Max open files"))?;
    line.strip_prefix("Max open files")?.split_ascii_whitespace().next()?.parse().ok()
}

/// When the machine booted, in seconds since the epoch.
fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|line| line.strip_prefix("btime "))?.trim().parse().ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_process_reads_itself() {
        let stat = Stat::read().expect("/proc/self/stat");
        assert!(stat.start_ticks > 0.0);
        assert!(status("VmRSS:").expect("VmRSS") > 0.0);
        assert!(open_fds().expect("fds") >= 1.0);
        assert!(max_fds().expect("limit") >= 1.0);
        let start = boot_time().expect("btime") + stat.start_ticks / TICKS_PER_SECOND;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(start <= now + 1.0 && start > now - 86_400.0 * 365.0, "{start} vs {now}");
    }
}
