//! The server's Prometheus `/metrics` (and its `/cluster` view), read over a plain HTTP/1.0 request
//! (one short-lived TCP connection, bounded in time): counters the server alone knows, such as changes
//! decoded (`cdc`) or slow consumers refused (`fanout --stalled-readers`), and who leads (`failover`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// `GET /metrics` over HTTP/1.0 (so the body is never chunked); the body on a 200.
pub async fn fetch_metrics(addr: SocketAddr, budget: Duration) -> Result<String, String> {
    fetch(addr, "/metrics", budget).await
}

/// `GET <path>` over HTTP/1.0; the body on a 200, else a label such as `metrics timeout`.
pub async fn fetch(addr: SocketAddr, path: &str, budget: Duration) -> Result<String, String> {
    let what = path.trim_start_matches('/');
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = match timeout(budget, exchange).await {
        Err(_) => return Err(format!("{what} timeout")),
        Ok(Err(e)) => return Err(format!("{what} error: {:?}", e.kind())),
        Ok(Ok(response)) => String::from_utf8_lossy(&response).into_owned(),
    };
    let (head, body) = response.split_once("\r\n\r\n").ok_or(format!("{what}: malformed response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!("{what}: http status {status}"));
    }
    Ok(body.to_owned())
}
