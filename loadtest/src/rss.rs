//! Server memory: resident set size read from `/proc/<pid>/status` (`VmRSS`), Linux only.

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

#[cfg(test)]
mod tests {
    use super::*;

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
