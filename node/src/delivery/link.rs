//! The TCP connection under a socket, wrapped so that it can be cut from outside.
//!
//! A peer that stops reading parks whoever writes to it on a full kernel buffer (the socket's writer
//! task, or actix-http's dispatcher before the upgrade), and nothing in that task runs again until the
//! peer reads or goes away. [`LinkedStream`] wraps every accepted TCP stream; its [`Link`] can
//! [`abort`](Link::abort) it: the reader and the writer are woken, their next poll fails, and the socket
//! is reset (linger 0) so the kernel frees its buffers at once.
//!
//! The link also tells when bytes have reached the kernel: every write that takes all the bytes it was
//! offered means nothing was left in user space right then, and bumps [`Link::drained_epoch`]. A frame
//! taken from an outbox before epoch `e` is in the kernel (and survives a crash of this process) once
//! the epoch is past `e`.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[derive(Debug, Default)]
struct LinkState {
    aborted: AtomicBool,
    /// The stream was dropped: the connection is gone.
    closed: AtomicBool,
    /// The tasks reading and writing the connection (one task, or two after a split), woken by an abort.
    reader: AtomicWaker,
    writer: AtomicWaker,
    drained: AtomicU64,
}

/// A handle on one TCP connection: abort it, or ask how far its writes got.
#[derive(Debug, Clone, Default)]
pub struct Link(Arc<LinkState>);

impl Link {
    /// Cuts the connection: its task is woken and fails on its next read or write.
    pub fn abort(&self) {
        self.0.aborted.store(true, Ordering::Release);
        self.0.reader.wake();
        self.0.writer.wake();
    }

    pub fn is_aborted(&self) -> bool {
        self.0.aborted.load(Ordering::Acquire)
    }

    /// Whether the connection is gone (its stream dropped).
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// How many times a write handed the kernel everything it was given.
    pub fn drained_epoch(&self) -> u64 {
        self.0.drained.load(Ordering::Acquire)
    }
}

/// A TCP stream that its [`Link`] can abort.
pub struct LinkedStream {
    io: TcpStream,
    link: Link,
}

impl LinkedStream {
    pub fn new(io: TcpStream) -> LinkedStream {
        LinkedStream { io, link: Link::default() }
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Fails the poll when aborted (and resets the connection when it is dropped); otherwise makes sure
    /// an abort will wake the polling task (`waker` is the reader's or the writer's slot).
    fn check(&self, cx: &Context<'_>, waker: &AtomicWaker) -> io::Result<()> {
        if self.link.is_aborted() {
            // Reset rather than linger: the peer is not reading, so unsent bytes are dropped with it.
            let _ = socket2::SockRef::from(&self.io).set_linger(Some(Duration::ZERO));
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "aborted by the node"));
        }
        waker.register(cx.waker());
        Ok(())
    }
}

impl Drop for LinkedStream {
    fn drop(&mut self) {
        self.link.0.closed.store(true, Ordering::Release);
    }
}

impl AsyncRead for LinkedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx, &this.link.0.reader)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for LinkedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx, &this.link.0.writer)?;
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n == buf.len()) {
            this.link.0.drained.fetch_add(1, Ordering::AcqRel);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx, &this.link.0.writer)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn abort_wakes_a_parked_reader_and_resets_the_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut stream = LinkedStream::new(server);
        let link = stream.link().clone();
        stream.write_all(b"hello").await.unwrap();
        let epoch = link.drained_epoch();
        assert!(epoch >= 1, "a write that took everything bumps the epoch");
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let result = stream.read(&mut buf).await;
            drop(stream);
            result
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        link.abort();
        let result = tokio::time::timeout(Duration::from_secs(2), reader).await.unwrap().unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        let mut buf = [0u8; 16];
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        let end = client.read(&mut buf).await;
        assert!(
            matches!(&end, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "linger 0 resets: {end:?}"
        );
    }
}
