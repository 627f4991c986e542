//! The HTTP listener, bound with a listen backlog as deep as the kernel allows (`somaxconn`), so a storm
//! of connects waits in the accept queue instead of having its SYNs dropped (the standard library's
//! backlog is 128).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Used when `/proc/sys/net/core/somaxconn` cannot be read.
const FALLBACK_BACKLOG: i32 = 4096;

/// The kernel's cap on listen backlogs.
pub fn somaxconn() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n: &i32| *n > 0)
        .unwrap_or(FALLBACK_BACKLOG)
}

/// Binds `addr` (with `SO_REUSEADDR`, as the standard library does) with a `somaxconn` backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(somaxconn())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_loopback_with_the_kernel_backlog() {
        assert!(somaxconn() > 0);
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.port() > 0);
        std::net::TcpStream::connect(addr).unwrap();
    }
}
