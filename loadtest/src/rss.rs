//! Server memory and CPU, Linux only: resident set size from `/proc/<pid>/status` (`VmRSS`), CPU time
//! from `/proc/<pid>/stat` (`utime` + `stime`, in clock ticks).

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

#[cfg(test)]
mod tests {
    use super::*;

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
