//! CPU time and resident memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`
//! (Linux only; no libc calls).

use std::time::Instant;

/// `AT_CLKTCK` in the auxiliary vector: the unit of `utime`/`stime` in `/proc/<pid>/stat`.
const AT_CLKTCK: u64 = 17;
/// What Linux uses on every mainstream architecture, if the auxiliary vector is unreadable.
const DEFAULT_CLOCK_TICKS: u64 = 100;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// When it was read.
    pub at: Instant,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Clock ticks per second of `/proc` CPU times, from `/proc/self/auxv`.
#[must_use]
pub fn clock_ticks_per_second() -> u64 {
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return DEFAULT_CLOCK_TICKS;
    };
    auxv.chunks_exact(16)
        .find_map(|entry| {
            let (key, value) = entry.split_at(8);
            let key = u64::from_ne_bytes(key.try_into().ok()?);
            let value = u64::from_ne_bytes(value.try_into().ok()?);
            (key == AT_CLKTCK && value > 0).then_some(value)
        })
        .unwrap_or(DEFAULT_CLOCK_TICKS)
}

/// `utime + stime` from the text of `/proc/<pid>/stat` (the command name may contain spaces
/// and parentheses, so fields are counted after the last `)`).
#[must_use]
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Fields after the name start at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
#[must_use]
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Reads process `pid` now.
///
/// # Errors
/// The I/O error when the process does not exist (or `/proc` is unreadable); an
/// `InvalidData` error when the files do not have the expected shape.
pub fn sample(pid: u32) -> std::io::Result<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/{what} has an unexpected format"),
        )
    };
    Ok(ProcSample {
        at,
        cpu_ticks: parse_cpu_ticks(&stat).ok_or_else(|| invalid("stat"))?,
        rss_kib: parse_rss_kib(&status).ok_or_else(|| invalid("status"))?,
    })
}

/// Machine-wide CPU time from the first line of `/proc/stat`, in clock ticks:
/// `(busy, total)` where busy excludes idle and iowait.
#[must_use]
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Reads machine-wide CPU ticks now (see [`parse_machine_ticks`]).
///
/// # Errors
/// The I/O error, or `InvalidData` when `/proc/stat` has an unexpected format.
pub fn sample_machine() -> std::io::Result<(Instant, u64, u64)> {
    let at = Instant::now();
    let stat = std::fs::read_to_string("/proc/stat")?;
    let (busy, total) = parse_machine_ticks(&stat).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "/proc/stat has an unexpected format",
        )
    })?;
    Ok((at, busy, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tcrmd\nVmPeak:\t  9000 kB\nVmRSS:\t   51200 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(51_200));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn machine_ticks_exclude_idle_and_iowait() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((160, 980)));
        assert_eq!(parse_machine_ticks("intr 1 2"), None);
        assert!(sample_machine().is_ok());
    }

    #[test]
    fn this_process_can_be_sampled() {
        let reading = sample(std::process::id()).unwrap();
        assert!(reading.rss_kib > 0);
        assert!(clock_ticks_per_second() >= 100);
    }
}
