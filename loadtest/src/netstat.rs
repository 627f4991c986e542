//! What the kernel knows about the run's TCP traffic, Linux only, read from `/proc` (the load generator
//! and the server share the machine and its network namespace over loopback):
//!
//! - `/proc/net/netstat` (`TcpExt` counters): SYNs the server's listen queue dropped during a connect
//!   storm (`ListenOverflows`, `ListenDrops`), which a client only sees as a slow or timed-out connect.
//! - `/proc/net/tcp` and `tcp6` (the socket table): the *server's* end of a connection, so a stalled
//!   reader can tell when the server closed it without reading a byte. The server's close frame and FIN
//!   queue behind everything it already sent, which a stalled reader never takes, so the only early
//!   sign is the server's socket losing its file descriptor (inode 0) or leaving `ESTABLISHED`.

use std::collections::BTreeMap;

/// `TcpExt` counters worth printing for a connect storm.
pub const LISTEN_COUNTERS: [&str; 2] = ["ListenOverflows", "ListenDrops"];

/// Parses the `TcpExt:` header/value line pair of `/proc/net/netstat` into name → value.
pub fn parse_tcp_ext(netstat: &str) -> BTreeMap<String, u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return BTreeMap::new() };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
        .collect()
}

/// The `TcpExt` counters now (empty when `/proc/net/netstat` cannot be read).
pub fn read_tcp_ext() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/net/netstat").map(|text| parse_tcp_ext(&text)).unwrap_or_default()
}

/// `after - before` for each of `names` present in both (counters only grow; a wrap reads as 0).
pub fn counter_deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    names: &[&str],
) -> Vec<(String, u64)> {
    names
        .iter()
        .filter_map(|&n| Some((n.to_owned(), after.get(n)?.saturating_sub(*before.get(n)?))))
        .collect()
}

/// One row of `/proc/net/tcp`: the ends by port, the state and queues, and whether a process still
/// holds the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    pub local_port: u16,
    pub remote_port: u16,
    pub state: TcpState,
    /// Bytes sent and not yet acknowledged (or not yet sent, for a zero window).
    pub tx_queue: u64,
    /// Bytes received and not yet read by the owner.
    pub rx_queue: u64,
    /// 0 once no file descriptor refers to the socket (an orphan the kernel finishes on its own).
    pub inode: u64,
}

/// The kernel's TCP states as `/proc/net/tcp` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    Other(u8),
}

impl TcpState {
    fn from_code(code: u8) -> TcpState {
        match code {
            0x01 => TcpState::Established,
            0x02 => TcpState::SynSent,
            0x03 => TcpState::SynRecv,
            0x04 => TcpState::FinWait1,
            0x05 => TcpState::FinWait2,
            0x06 => TcpState::TimeWait,
            0x07 => TcpState::Close,
            0x08 => TcpState::CloseWait,
            0x09 => TcpState::LastAck,
            0x0A => TcpState::Listen,
            0x0B => TcpState::Closing,
            other => TcpState::Other(other),
        }
    }

    pub fn name(self) -> String {
        match self {
            TcpState::Established => "ESTABLISHED".into(),
            TcpState::SynSent => "SYN_SENT".into(),
            TcpState::SynRecv => "SYN_RECV".into(),
            TcpState::FinWait1 => "FIN_WAIT1".into(),
            TcpState::FinWait2 => "FIN_WAIT2".into(),
            TcpState::TimeWait => "TIME_WAIT".into(),
            TcpState::Close => "CLOSE".into(),
            TcpState::CloseWait => "CLOSE_WAIT".into(),
            TcpState::LastAck => "LAST_ACK".into(),
            TcpState::Listen => "LISTEN".into(),
            TcpState::Closing => "CLOSING".into(),
            TcpState::Other(code) => format!("state {code:#04x}"),
        }
    }
}

fn port_of(address: &str) -> Option<u16> {
    u16::from_str_radix(address.rsplit_once(':')?.1, 16).ok()
}

/// Parses one data row of `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn parse_tcp_line(line: &str) -> Option<TcpEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 || !fields[0].ends_with(':') {
        return None;
    }
    let (tx, rx) = fields[4].split_once(':')?;
    Some(TcpEntry {
        local_port: port_of(fields[1])?,
        remote_port: port_of(fields[2])?,
        state: TcpState::from_code(u8::from_str_radix(fields[3], 16).ok()?),
        tx_queue: u64::from_str_radix(tx, 16).ok()?,
        rx_queue: u64::from_str_radix(rx, 16).ok()?,
        inode: fields[9].parse().ok()?,
    })
}

/// Every TCP socket of this network namespace (IPv4 and IPv6), or none when `/proc` cannot be read.
pub fn read_tcp_table() -> Vec<TcpEntry> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| text.lines().skip(1).filter_map(parse_tcp_line).collect::<Vec<_>>())
        .collect()
}

/// The server's end of the connection whose client end uses `client_port` (loopback: both ends are
/// in the table).
pub fn server_end(table: &[TcpEntry], server_port: u16, client_port: u16) -> Option<TcpEntry> {
    table.iter().copied().find(|e| e.local_port == server_port && e.remote_port == client_port)
}

/// The socket inodes process `pid` holds (`/proc/<pid>/fd/*` → `socket:[inode]`).
fn socket_inodes(pid: u32) -> std::io::Result<std::collections::BTreeSet<u64>> {
    let mut inodes = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = std::fs::read_link(fd?.path()) else { continue };
        let link = link.to_string_lossy();
        if let Some(inode) = link.strip_prefix("socket:[").and_then(|l| l.strip_suffix(']')) {
            inodes.extend(inode.parse::<u64>().ok());
        }
    }
    Ok(inodes)
}

/// The TCP ports process `pid` listens on: its sockets in `LISTEN` (scenario `presence` finds which
/// `--target` a `--kill-node-pid` serves).
pub fn listening_ports(pid: u32) -> std::io::Result<std::collections::BTreeSet<u16>> {
    let inodes = socket_inodes(pid)?;
    Ok(read_tcp_table()
        .into_iter()
        .filter(|e| e.state == TcpState::Listen && inodes.contains(&e.inode))
        .map(|e| e.local_port)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_ext() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 1 20 22\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        let c = parse_tcp_ext(text);
        assert_eq!(c["ListenOverflows"], 20);
        assert_eq!(c["ListenDrops"], 22);
        let after = parse_tcp_ext("TcpExt: ListenOverflows ListenDrops\nTcpExt: 25 30\n");
        assert_eq!(
            counter_deltas(&c, &after, &LISTEN_COUNTERS),
            vec![("ListenOverflows".to_owned(), 5), ("ListenDrops".to_owned(), 8)]
        );
        assert!(parse_tcp_ext("Ip: x\nIp: 1\n").is_empty());
    }

    #[test]
    fn reads_this_machine() {
        assert!(read_tcp_ext().contains_key("ListenDrops"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let client_port = client.local_addr().unwrap().port();
        let end = server_end(&read_tcp_table(), port, client_port).expect("the server end is listed");
        assert_eq!(end.state, TcpState::Established);
        assert_ne!(end.inode, 0);
        assert!(listening_ports(std::process::id()).unwrap().contains(&port));
    }

    #[test]
    fn parses_tcp_rows() {
        let v4 =
            "   3: 0100007F:0FA0 0100007F:C350 04 0001F400:00000000 01:00000014 00000000  1000        0 0 1 \
                  0000000000000000 20 4 0 10 -1";
        let e = parse_tcp_line(v4).unwrap();
        assert_eq!((e.local_port, e.remote_port, e.state), (4000, 50000, TcpState::FinWait1));
        assert_eq!((e.tx_queue, e.rx_queue, e.inode), (128_000, 0, 0));
        let v6 = "   0: 00000000000000000000000001000000:0FA0 00000000000000000000000001000000:D431 01 \
                  00000000:00002000 00:00000000 00000000  1000        0 123456 1 0000000000000000 20 4 30 10 -1";
        let e = parse_tcp_line(v6).unwrap();
        assert_eq!(
            (e.remote_port, e.state, e.rx_queue, e.inode),
            (0xD431, TcpState::Established, 8192, 123_456)
        );
        assert_eq!(parse_tcp_line("  sl  local_address rem_address   st tx_queue"), None);
        assert_eq!(TcpState::Other(0x0C).name(), "state 0x0c");
    }
}
