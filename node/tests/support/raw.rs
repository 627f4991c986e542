//! Bare WebSocket connections for hostile-client tests (both suites): a small TCP receive buffer set
//! before connecting, so a test can stop reading and let the server's side fill up; how such a
//! connection ended; and metric samples read from `/metrics`.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket the test reads (or not) at will.
pub type RawWs = WebSocketStream<TcpStream>;

/// Connects to `url` on `127.0.0.1:port`, with a TCP receive buffer of `recv_buf` bytes when given.
pub async fn connect(port: u16, url: &str, recv_buf: Option<u32>, timeout: Duration) -> RawWs {
    let sock = TcpSocket::new_v4().expect("socket");
    if let Some(n) = recv_buf {
        sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    let stream = sock.connect(([127, 0, 0, 1], port).into()).await.expect("TCP connect");
    let (ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("handshake in time")
        .expect("handshake");
    ws
}

/// How a bare connection ended.
#[derive(Debug)]
pub enum End {
    /// A close frame: code and reason.
    Close(u16, String),
    /// A read error (reset) or EOF without a close frame.
    Cut(String),
}

/// Reads (and counts) every frame until the connection ends; panics if it has not within `timeout`.
pub async fn read_until_end(ws: &mut RawWs, timeout: Duration) -> (End, usize) {
    let deadline = Instant::now() + timeout;
    let mut frames = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("connection still open after {timeout:?} ({frames} frames read)"));
        match next {
            Some(Ok(Message::Close(cf))) => {
                let (code, reason) = cf.map_or((0, String::new()), |c| (c.code.into(), c.reason.to_string()));
                return (End::Close(code, reason), frames);
            }
            Some(Ok(_)) => frames += 1,
            Some(Err(e)) => return (End::Cut(e.to_string()), frames),
            None => return (End::Cut("EOF".into()), frames),
        }
    }
}

/// Sum of every sample of the metric `name` (exact name, any labels) in a Prometheus text `body`;
/// `None` when there is none.
pub fn metric_sum(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unparsable sample {line:?}"));
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// [`metric_sum`] of `127.0.0.1:port`'s `/metrics` (0 when absent).
pub async fn metric(port: u16, name: &str) -> f64 {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let body = reqwest::get(&url).await.expect("GET /metrics").text().await.expect("metrics body");
    metric_sum(&body, name).unwrap_or(0.0)
}
