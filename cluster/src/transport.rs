//! How nodes reach each other: [`Transport`] gives membership its datagrams and the peer links their
//! streams, so the cluster core runs the same over the network ([`Network`]: UDP and TCP) and over
//! the in-memory twin ([`memory::MemoryNetwork`]), where a test cuts, delays or holds traffic between
//! node addresses and controls time (`tokio::time::pause`), and a partition runs in milliseconds.
//!
//! The seam is the socket, not the message: the handshake, framing, sequence numbers,
//! acknowledgements, stall detection and SWIM all run unchanged above it, so what the in-memory tests
//! show is what the nodes do.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

pub mod memory;

/// The reading half of a stream.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a stream.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// One ordered, reliable byte stream between two nodes (a TCP connection, or its in-memory twin).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {
    /// The two halves, to read acknowledgements while frames are written.
    fn into_halves(self: Box<Self>) -> (ReadHalf, WriteHalf);
}

/// Accepts the streams peers open to this node.
pub trait Listener: Send {
    /// The next stream and the address it came from.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Stream>, SocketAddr)>>;
}

/// Unreliable, unordered datagrams (membership's SWIM packets).
pub trait Datagrams: Send + Sync {
    fn send_to<'a>(&'a self, packet: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>>;
    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>>;
    /// A datagram that already arrived, without waiting (`WouldBlock` when none).
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// What a node bound at its cluster address: both kinds share the address (and the port).
pub struct Bound {
    pub listener: Box<dyn Listener>,
    pub datagrams: Box<dyn Datagrams>,
}

/// Where streams and datagrams come from.
pub trait Transport: Send + Sync {
    /// The stream listener and the datagram socket of a node bound at `at`.
    fn bind(&self, at: SocketAddr) -> BoxFuture<'_, io::Result<Bound>>;
    /// A stream to `to`, leaving from `from` when given (see [`crate::link`]).
    fn dial(&self, to: SocketAddr, from: Option<IpAddr>) -> BoxFuture<'_, io::Result<Box<dyn Stream>>>;
}

/// The real network: TCP streams (no Nagle delay) and UDP datagrams.
pub struct Network;

impl Transport for Network {
    fn bind(&self, at: SocketAddr) -> BoxFuture<'_, io::Result<Bound>> {
        Box::pin(async move {
            let udp = std::net::UdpSocket::bind(at)?;
            udp.set_nonblocking(true)?;
            let tcp = TcpListener::bind(at).await?;
            let datagrams = Udp { unregistered: Mutex::new(Some(udp)), socket: OnceLock::new() };
            Ok(Bound { listener: Box::new(tcp), datagrams: Box::new(datagrams) })
        })
    }

    fn dial(&self, to: SocketAddr, from: Option<IpAddr>) -> BoxFuture<'_, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let stream = match from {
                None => TcpStream::connect(to).await?,
                Some(source) => {
                    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
                    socket.bind(SocketAddr::new(source, 0))?;
                    socket.connect(to).await?
                }
            };
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream) as Box<dyn Stream>)
        })
    }
}

impl Stream for TcpStream {
    fn into_halves(self: Box<Self>) -> (ReadHalf, WriteHalf) {
        let (reading, writing) = self.into_split();
        (Box::new(reading), Box::new(writing))
    }
}

impl Listener for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Stream>, SocketAddr)>> {
        Box::pin(async move {
            let (stream, from) = TcpListener::accept(self).await?;
            let _ = stream.set_nodelay(true);
            Ok((Box::new(stream) as Box<dyn Stream>, from))
        })
    }
}

/// A UDP socket bound at start-up and registered with the runtime that first uses it: membership
/// runs on a thread and runtime of its own (see [`crate::membership`]).
struct Udp {
    unregistered: Mutex<Option<std::net::UdpSocket>>,
    socket: OnceLock<io::Result<UdpSocket>>,
}

impl Udp {
    fn socket(&self) -> io::Result<&UdpSocket> {
        let registered = self.socket.get_or_init(|| {
            let taken = crate::sync::lock(&self.unregistered).take();
            taken.map_or_else(|| Err(io::Error::other("socket already taken")), UdpSocket::from_std)
        });
        registered.as_ref().map_err(|error| io::Error::new(error.kind(), error.to_string()))
    }
}

impl Datagrams for Udp {
    fn send_to<'a>(&'a self, packet: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move { self.socket()?.send_to(packet, to).await })
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(async move { self.socket()?.recv_from(buf).await })
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket()?.try_recv_from(buf)
    }
}
