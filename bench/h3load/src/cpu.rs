//! This process's CPU time (user and system, all threads) from `/proc/self/stat`.
//!
//! rustix 1 has no `getrusage`, and its `clock_gettime` needs a feature this crate does not
//! enable; `/proc/self/stat` counts in clock ticks (10 ms), which over a measured window of
//! seconds is well under 1 % of the reading.

use anyhow::{Context as _, anyhow};

/// `USER_HZ`: the unit of `utime`/`stime` in `/proc/*/stat`. The kernel fixes it at 100 on
/// every architecture it exports it for, whatever `CONFIG_HZ` is.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds this process has used so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CpuTime {
    pub(crate) user_s: f64,
    pub(crate) system_s: f64,
}

impl CpuTime {
    pub(crate) fn now() -> anyhow::Result<Self> {
        let stat =
            std::fs::read_to_string("/proc/self/stat").context("cannot read /proc/self/stat")?;
        parse_stat(&stat)
    }

    pub(crate) fn total_s(self) -> f64 {
        self.user_s + self.system_s
    }

    /// The CPU used between `earlier` and `self`.
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            user_s: self.user_s - earlier.user_s,
            system_s: self.system_s - earlier.system_s,
        }
    }
}

/// Fields 14 and 15 (utime, stime), counted after the `)` that ends the command name (which
/// may itself hold spaces and parentheses).
fn parse_stat(stat: &str) -> anyhow::Result<CpuTime> {
    let bad = || anyhow!("unexpected /proc/self/stat format: {stat:?}");
    let rest = stat.rsplit_once(')').ok_or_else(bad)?.1;
    // After the name: field 3 (state) is the first; utime is field 14.
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let mut next = || -> anyhow::Result<f64> {
        let ticks: u64 = fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        Ok(ticks as f64 / TICKS_PER_SECOND)
    };
    Ok(CpuTime {
        user_s: next()?,
        system_s: next()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_after_an_awkward_name() {
        let line = "4242 (h3 load) x) R 1 4242 4242 0 -1 4194304 731 0 0 0 250 37 0 0 20 0 3 0";
        let cpu = parse_stat(line).unwrap();
        assert_eq!(cpu.user_s, 2.5);
        assert_eq!(cpu.system_s, 0.37);
    }

    #[test]
    fn reads_this_process() {
        let before = CpuTime::now().unwrap();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        let used = CpuTime::now().unwrap().since(before);
        assert!(used.total_s() >= 0.0);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_stat("nonsense").is_err());
        assert!(parse_stat("1 (x) R 1 2").is_err());
    }
}
