//! Server memory and CPU, Linux only: resident set size from `/proc/<pid>/status` (`VmRSS`), CPU time
//! from `/proc/<pid>/stat` (`utime` + `stime`, in clock ticks), and how busy one core was from
//! `/proc/stat`.

/// `VmRSS` in KiB from the text of a `/proc/<pid>/status` file.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// The process's resident set size in KiB, or `None` when there is no pid or it cannot be read.
pub fn read_rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    parse_vm_rss_kib(&status)
}

/// Clock ticks per second of `/proc` times when `getconf CLK_TCK` cannot be asked (Linux's `USER_HZ`).
const DEFAULT_CLOCK_TICKS: u64 = 100;

/// `utime + stime` (fields 14 and 15, in clock ticks) from the text of a `/proc/<pid>/stat` file. The
/// command name (field 2) is parenthesised and may contain spaces or parentheses, so fields are counted
/// after its last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): utime is field 14, i.e. index 11 here.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`, else 100).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks: &u64| ticks > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS)
}

/// CPU time (user + system) the process has used, in clock ticks; `None` without a pid or `/proc`.
pub fn read_cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    parse_stat_cpu_ticks(&stat)
}

/// Busy and total clock ticks of core `core` from the text of `/proc/stat` (its `cpuN` line: busy is
/// everything but `idle` and `iowait`).
pub fn parse_core_ticks(stat: &str, core: usize) -> Option<(u64, u64)> {
    parse_cpu_line(stat, &format!("cpu{core}"))
}

/// Busy and total ticks of the `cpu` line named `name` (`cpu` is every core together).
fn parse_cpu_line(stat: &str, name: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user/nice]
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Core `core`'s busy and total ticks so far, `None` without `/proc/stat`.
pub fn read_core_ticks(core: usize) -> Option<(u64, u64)> {
    parse_core_ticks(&std::fs::read_to_string("/proc/stat").ok()?, core)
}

/// The whole machine's busy and total ticks so far (every core, every process), and its cores.
pub fn read_machine_ticks() -> Option<((u64, u64), usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cores = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
    Some((parse_cpu_line(&stat, "cpu")?, cores))
}

/// Share of the time core `core` was busy between two [`read_core_ticks`] readings.
pub fn busy_share(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    let total = t1.checked_sub(t0).filter(|&t| t > 0)?;
    Some(b1.saturating_sub(b0) as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_ticks() {
        let stat =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 10 1 5 80 4 0 0 0 0 0\ncpu1 50 0 30 20 0 0 0 0 0 0\nintr 1\n";
        assert_eq!(parse_core_ticks(stat, 0), Some((16, 100)));
        assert_eq!(parse_core_ticks(stat, 1), Some((80, 100)));
        assert_eq!(parse_core_ticks(stat, 2), None);
        assert_eq!(parse_cpu_line(stat, "cpu"), Some((54, 72)));
        assert_eq!(busy_share(Some((16, 100)), Some((66, 200))), Some(0.5));
        assert_eq!(busy_share(Some((16, 100)), Some((16, 100))), None);
        assert!(read_core_ticks(0).is_some());
        assert!(read_machine_ticks().is_some_and(|(_, cores)| cores >= 1));
    }

    #[test]
    fn parses_stat() {
        let stat = "1234 (real time) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 99 1000 50 x";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("1 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 x"), Some(23));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_own_cpu() {
        assert!(read_cpu_ticks(Some(std::process::id())).is_some());
        assert_eq!(read_cpu_ticks(None), None);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn parses_status() {
        let status = "Name:\trealtime\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12_345));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\t abc kB\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\t 5 MB\n"), None);
    }

    #[test]
    fn reads_own_process() {
        assert!(read_rss_kib(Some(std::process::id())).is_some_and(|kib| kib > 0));
        assert_eq!(read_rss_kib(None), None);
    }
}
