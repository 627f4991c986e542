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

/// `GET <path>` over HTTP/1.0; the body on a 200, else a label such as `metrics timeout`. With
/// `REALTIME_ADMIN_TOKEN` in the environment, it is sent as the bearer token that a node's
/// `/metrics` and `/cluster` need when the node has one.
pub async fn fetch(addr: SocketAddr, path: &str, budget: Duration) -> Result<String, String> {
    let token = std::env::var("REALTIME_ADMIN_TOKEN").ok();
    fetch_with(addr, path, budget, token.as_deref()).await
}

/// [`fetch`] with an explicit admin token (none, or blank: no `Authorization` header).
async fn fetch_with(
    addr: SocketAddr,
    path: &str,
    budget: Duration,
    token: Option<&str>,
) -> Result<String, String> {
    let what = path.trim_start_matches('/');
    let auth = token
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves one request and hands back what it was sent.
    async fn one_request(reply: &'static str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 4096];
            let n = stream.read(&mut request).await.unwrap();
            stream.write_all(reply.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (addr, served)
    }

    #[tokio::test]
    async fn the_admin_token_is_sent_as_a_bearer_and_a_401_is_an_error() {
        let (addr, served) = one_request("HTTP/1.0 200 OK\r\n\r\n{}").await;
        let body = fetch_with(addr, "/cluster", Duration::from_secs(5), Some(" tok-123 ")).await;
        assert_eq!(body.as_deref(), Ok("{}"));
        assert!(served.await.unwrap().contains("Authorization: Bearer tok-123\r\n"));

        let (addr, served) = one_request("HTTP/1.0 401 Unauthorized\r\n\r\n").await;
        let refused = fetch_with(addr, "/metrics", Duration::from_secs(5), None).await;
        assert_eq!(refused, Err("metrics: http status 401".to_owned()));
        assert!(!served.await.unwrap().contains("Authorization"));
    }
}
