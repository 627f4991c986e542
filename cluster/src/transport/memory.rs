//! The in-memory twin of the network: streams and datagrams between node addresses inside one
//! process, with the faults a test wants between them, and nothing bound on any real interface.
//!
//! Faults are set between IP addresses, as firewall rules between pods would be:
//! - [`MemoryNetwork::cut`] / [`MemoryNetwork::cut_one_way`]: nothing passes (datagrams are lost;
//!   a stream's bytes wait, as TCP retransmits, and arrive after [`MemoryNetwork::heal`] — unless the
//!   node gave up on the connection first); a new stream cannot be opened while either way is cut;
//! - [`MemoryNetwork::delay`]: everything from one address to another arrives that much later;
//! - [`MemoryNetwork::jitter`] and [`MemoryNetwork::lose`]: datagrams arrive up to that much later
//!   (so out of order) or not at all, drawn from a seeded generator;
//! - [`MemoryNetwork::hold`] / [`MemoryNetwork::release`]: the streams open now from one address to
//!   another deliver nothing until released, while new ones flow: a connection that lags behind its
//!   replacement, the reordering a reconnect can cause.
//!
//! Time is tokio's, so under `tokio::time::pause` a test runs minutes of cluster life in milliseconds.
//! A stream's send buffer is bounded ([`STREAM_BUFFER`]): a writer whose bytes are not read waits,
//! as it would on a full socket.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::{Bound, Datagrams, Listener, ReadHalf, Stream, Transport, WriteHalf};
use crate::sync::lock;

/// Bytes one direction of a stream holds before its writer waits.
pub const STREAM_BUFFER: usize = 256 * 1024;

type Route = (IpAddr, IpAddr);
/// Where a bound address's accepted streams (and where they came from) go, with its binding's id.
type Accepting = (u64, mpsc::UnboundedSender<(Box<dyn Stream>, SocketAddr)>);
/// Where a bound address's datagrams go, with its binding's id.
type Receiving = (u64, mpsc::UnboundedSender<(Vec<u8>, SocketAddr)>);

/// A network inside the process; cheap to clone (clones are the same network).
#[derive(Clone)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    listeners: HashMap<SocketAddr, Accepting>,
    sockets: HashMap<SocketAddr, Receiving>,
    cut: HashSet<Route>,
    delay: HashMap<Route, Duration>,
    jitter: HashMap<Route, Duration>,
    loss: HashMap<Route, f64>,
    /// The streams' directions, to hold the ones open now.
    pipes: Vec<(Route, Weak<Pipe>)>,
    /// Readers waiting for a cut to heal.
    blocked: Vec<Waker>,
    rng: u64,
    next_id: u64,
    datagrams_lost: u64,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// xorshift64*: enough to draw loss and jitter reproducibly from the seed.
    fn draw(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn is_cut(&self, from: IpAddr, to: IpAddr) -> bool {
        self.cut.contains(&(from, to))
    }

    fn changed(&mut self) {
        for waker in self.blocked.drain(..) {
            waker.wake();
        }
    }
}

impl MemoryNetwork {
    /// A network with no faults; `seed` drives loss and jitter.
    pub fn new(seed: u64) -> MemoryNetwork {
        let state = State { rng: seed | 1, ..State::default() };
        MemoryNetwork { inner: Arc::new(Mutex::new(state)) }
    }

    /// Nothing passes between `a` and `b`, either way.
    pub fn cut(&self, a: IpAddr, b: IpAddr) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Nothing passes from `from` to `to`; the other way is untouched.
    pub fn cut_one_way(&self, from: IpAddr, to: IpAddr) {
        let mut state = lock(&self.inner);
        state.cut.insert((from, to));
        state.changed();
    }

    /// Traffic passes between `a` and `b` again, both ways.
    pub fn heal(&self, a: IpAddr, b: IpAddr) {
        let mut state = lock(&self.inner);
        state.cut.remove(&(a, b));
        state.cut.remove(&(b, a));
        state.changed();
    }

    /// Every cut healed (delays, jitter and loss stay).
    pub fn heal_all(&self) {
        let mut state = lock(&self.inner);
        state.cut.clear();
        state.changed();
    }

    /// Everything from `from` to `to` arrives `by` later (zero: no delay).
    pub fn delay(&self, from: IpAddr, to: IpAddr, by: Duration) {
        lock(&self.inner).delay.insert((from, to), by);
    }

    /// Datagrams from `from` to `to` arrive up to `max` later than their delay, so out of order.
    pub fn jitter(&self, from: IpAddr, to: IpAddr, max: Duration) {
        lock(&self.inner).jitter.insert((from, to), max);
    }

    /// A share (0 to 1) of the datagrams from `from` to `to` is lost.
    pub fn lose(&self, from: IpAddr, to: IpAddr, share: f64) {
        lock(&self.inner).loss.insert((from, to), share.clamp(0.0, 1.0));
    }

    /// The streams open now from `from` to `to` deliver nothing until [`MemoryNetwork::release`];
    /// streams opened later are not held.
    pub fn hold(&self, from: IpAddr, to: IpAddr) {
        let mut state = lock(&self.inner);
        state.pipes.retain(|(_, pipe)| pipe.strong_count() > 0);
        for pipe in
            state.pipes.iter().filter(|(route, _)| *route == (from, to)).filter_map(|(_, p)| p.upgrade())
        {
            lock(&pipe.state).held = true;
        }
    }

    /// Held streams from `from` to `to` deliver what they hold.
    pub fn release(&self, from: IpAddr, to: IpAddr) {
        let mut state = lock(&self.inner);
        state.pipes.retain(|(_, pipe)| pipe.strong_count() > 0);
        for pipe in
            state.pipes.iter().filter(|(route, _)| *route == (from, to)).filter_map(|(_, p)| p.upgrade())
        {
            let mut pipe = lock(&pipe.state);
            pipe.held = false;
            if let Some(waker) = pipe.reader.take() {
                waker.wake();
            }
        }
    }

    /// Datagrams lost to cuts and loss so far.
    pub fn datagrams_lost(&self) -> u64 {
        lock(&self.inner).datagrams_lost
    }

    fn pipe(&self, route: Route) -> Arc<Pipe> {
        let pipe = Arc::new(Pipe { route, net: Arc::downgrade(&self.inner), state: Mutex::default() });
        lock(&self.inner).pipes.push((route, Arc::downgrade(&pipe)));
        pipe
    }
}

impl Transport for MemoryNetwork {
    fn bind(&self, at: SocketAddr) -> BoxFuture<'_, io::Result<Bound>> {
        Box::pin(async move {
            let mut state = lock(&self.inner);
            if state.listeners.contains_key(&at) || state.sockets.contains_key(&at) {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{at} is bound")));
            }
            let id = state.next_id();
            let (streams, accepted) = mpsc::unbounded_channel();
            let (packets, received) = mpsc::unbounded_channel();
            state.listeners.insert(at, (id, streams));
            state.sockets.insert(at, (id, packets));
            let net = Arc::downgrade(&self.inner);
            let listener = MemoryListener { at, id, net: net.clone(), accepted };
            let datagrams = MemoryDatagrams { at, id, net, received: tokio::sync::Mutex::new(received) };
            Ok(Bound { listener: Box::new(listener), datagrams: Box::new(datagrams) })
        })
    }

    fn dial(&self, to: SocketAddr, from: Option<IpAddr>) -> BoxFuture<'_, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let source = from.unwrap_or(IpAddr::from([127, 0, 0, 1]));
            let (listener, port) = {
                let mut state = lock(&self.inner);
                let blocked = state.is_cut(source, to.ip()) || state.is_cut(to.ip(), source);
                let port = 10_000 + (state.next_id() % 50_000) as u16;
                (if blocked { None } else { Some(state.listeners.get(&to).map(|(_, tx)| tx.clone())) }, port)
            };
            // A cut: the connection attempt goes unanswered (the caller's timeout ends it).
            let Some(listener) = listener else { return std::future::pending().await };
            let listener = listener.ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            let outbound = self.pipe((source, to.ip()));
            let inbound = self.pipe((to.ip(), source));
            let theirs = MemoryStream::new(outbound.clone(), inbound.clone());
            let mine = MemoryStream::new(inbound, outbound);
            listener
                .send((Box::new(theirs), SocketAddr::new(source, port)))
                .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            Ok(Box::new(mine) as Box<dyn Stream>)
        })
    }
}

/// One direction of a stream.
struct Pipe {
    route: Route,
    net: Weak<Mutex<State>>,
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    /// What was written, each with when it may be read.
    chunks: VecDeque<(Instant, Bytes)>,
    bytes: usize,
    write_closed: bool,
    read_closed: bool,
    held: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn close_write(&self) {
        let mut state = lock(&self.state);
        state.write_closed = true;
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
    }

    fn close_read(&self) {
        let mut state = lock(&self.state);
        state.read_closed = true;
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
    }
}

/// One end of a stream: it reads one pipe and writes the other.
struct MemoryStream {
    reader: PipeReader,
    writer: PipeWriter,
}

impl MemoryStream {
    fn new(reads: Arc<Pipe>, writes: Arc<Pipe>) -> MemoryStream {
        MemoryStream { reader: PipeReader { pipe: reads, wait: None }, writer: PipeWriter { pipe: writes } }
    }
}

struct PipeReader {
    pipe: Arc<Pipe>,
    /// Until the first chunk's delay has passed.
    wait: Option<Pin<Box<Sleep>>>,
}

struct PipeWriter {
    pipe: Arc<Pipe>,
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.pipe.close_read();
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.pipe.close_write();
    }
}

impl AsyncRead for PipeReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (from, to) = self.pipe.route;
        if let Some(net) = self.pipe.net.upgrade() {
            let mut net = lock(&net);
            if net.is_cut(from, to) {
                net.blocked.push(cx.waker().clone());
                return Poll::Pending;
            }
        }
        loop {
            let due = {
                let mut state = lock(&self.pipe.state);
                if state.held {
                    state.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                let Some((at, chunk)) = state.chunks.front_mut() else {
                    if state.write_closed {
                        return Poll::Ready(Ok(()));
                    }
                    state.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                };
                if *at <= Instant::now() {
                    let n = chunk.len().min(buf.remaining());
                    buf.put_slice(&chunk.split_to(n));
                    if chunk.is_empty() {
                        state.chunks.pop_front();
                    }
                    state.bytes -= n;
                    if let Some(waker) = state.writer.take() {
                        waker.wake();
                    }
                    return Poll::Ready(Ok(()));
                }
                *at
            };
            let wait = self.wait.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            wait.as_mut().reset(due);
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl AsyncWrite for PipeWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let delay = self.pipe.net.upgrade().and_then(|net| lock(&net).delay.get(&self.pipe.route).copied());
        let mut state = lock(&self.pipe.state);
        if state.read_closed {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        if state.bytes >= STREAM_BUFFER {
            state.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = data.len().min(STREAM_BUFFER - state.bytes);
        state
            .chunks
            .push_back((Instant::now() + delay.unwrap_or_default(), Bytes::copy_from_slice(&data[..n])));
        state.bytes += n;
        if let Some(waker) = state.reader.take() {
            waker.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.pipe.close_write();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

impl Stream for MemoryStream {
    fn into_halves(self: Box<Self>) -> (ReadHalf, WriteHalf) {
        let MemoryStream { reader, writer } = *self;
        (Box::new(reader), Box::new(writer))
    }
}

struct MemoryListener {
    at: SocketAddr,
    id: u64,
    net: Weak<Mutex<State>>,
    accepted: mpsc::UnboundedReceiver<(Box<dyn Stream>, SocketAddr)>,
}

impl Listener for MemoryListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Box<dyn Stream>, SocketAddr)>> {
        Box::pin(async move {
            self.accepted.recv().await.ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
        })
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        if let Some(net) = self.net.upgrade() {
            unbind(&mut lock(&net).listeners, self.at, self.id);
        }
    }
}

/// Frees `at` in `bound` if this binding (`id`) still holds it.
fn unbind<T>(bound: &mut HashMap<SocketAddr, (u64, T)>, at: SocketAddr, id: u64) {
    if bound.get(&at).is_some_and(|(held, _)| *held == id) {
        bound.remove(&at);
    }
}

struct MemoryDatagrams {
    at: SocketAddr,
    id: u64,
    net: Weak<Mutex<State>>,
    received: tokio::sync::Mutex<mpsc::UnboundedReceiver<(Vec<u8>, SocketAddr)>>,
}

impl MemoryDatagrams {
    fn take(buf: &mut [u8], (packet, from): (Vec<u8>, SocketAddr)) -> (usize, SocketAddr) {
        let n = packet.len().min(buf.len());
        buf[..n].copy_from_slice(&packet[..n]);
        (n, from)
    }
}

impl Datagrams for MemoryDatagrams {
    fn send_to<'a>(&'a self, packet: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(async move {
            let Some(net) = self.net.upgrade() else { return Ok(packet.len()) };
            let (target, after) = {
                let mut state = lock(&net);
                let route = (self.at.ip(), to.ip());
                let share = state.loss.get(&route).copied().unwrap_or_default();
                let lost = share > 0.0 && state.draw() < share;
                if state.is_cut(route.0, route.1) || lost {
                    state.datagrams_lost += 1;
                    return Ok(packet.len());
                }
                let jitter = state.jitter.get(&route).copied().unwrap_or_default();
                let after =
                    state.delay.get(&route).copied().unwrap_or_default() + jitter.mul_f64(state.draw());
                (state.sockets.get(&to).map(|(_, tx)| tx.clone()), after)
            };
            if let Some(target) = target {
                let (packet, from) = (packet.to_vec(), self.at);
                if after.is_zero() {
                    let _ = target.send((packet, from));
                } else {
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = target.send((packet, from));
                    });
                }
            }
            Ok(packet.len())
        })
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(async move {
            let received = self.received.lock().await.recv().await;
            received
                .map(|packet| Self::take(buf, packet))
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
        })
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut received =
            self.received.try_lock().map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))?;
        received
            .try_recv()
            .map(|packet| Self::take(buf, packet))
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))
    }
}

impl Drop for MemoryDatagrams {
    fn drop(&mut self) {
        if let Some(net) = self.net.upgrade() {
            unbind(&mut lock(&net).sockets, self.at, self.id);
        }
    }
}
