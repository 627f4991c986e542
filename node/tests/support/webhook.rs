//! A webhook receiver for the tests: a plain HTTP/1.1 server on a loopback address that checks every
//! request's `X-Realtime-Signature` (HMAC-SHA256 of the exact body) and records the events. It answers
//! a scripted status per request (then 200), so retries can be tested. Every wait is bounded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Request {
    pub body: Vec<u8>,
    /// The signature header matched the body under the secret.
    pub signed: bool,
    /// The status the receiver answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// Statuses to answer, first to last; 200 once used up.
    script: Vec<u16>,
}

/// The running receiver (stops with the test's runtime).
pub struct Receiver {
    pub url: String,
    pub secret: String,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    /// Listens on `ip:0`; answers `script` (in order) to the first requests, then 200.
    pub async fn start(ip: &str, script: &[u16]) -> Receiver {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind the webhook receiver");
        let url = format!("http://{}/hooks", listener.local_addr().expect("local address"));
        let secret = format!("hook-secret-{}", uuid::Uuid::new_v4().simple());
        let state = Arc::new(Mutex::new(State { requests: Vec::new(), script: script.to_vec() }));
        let (task_state, task_secret) = (state.clone(), secret.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, task_state.clone(), task_secret.clone()));
            }
        });
        Receiver { url, secret, state }
    }

    /// The flags that point a node at this receiver.
    pub fn flags(&self) -> Vec<String> {
        vec!["--webhook-url".into(), self.url.clone(), "--webhook-secret".into(), self.secret.clone()]
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Every event of every accepted (2xx) request, in arrival order; panics on a bad signature.
    pub fn events(&self) -> Vec<Value> {
        let requests = self.requests();
        assert!(requests.iter().all(|r| r.signed), "a webhook request had a bad signature");
        requests
            .iter()
            .filter(|r| r.status / 100 == 2)
            .flat_map(|r| {
                let body: Value = serde_json::from_slice(&r.body).expect("webhook body is JSON");
                body["events"].as_array().expect("`events` is an array").clone()
            })
            .collect()
    }

    /// Accepted events named `name` (for `user_id`, if given).
    pub fn named(&self, name: &str, user: Option<&str>) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["name"] == name && user.is_none_or(|u| e["user_id"] == u))
            .collect()
    }

    /// Waits (≤ `timeout`) until there are at least `n` events named `name` (for `user`); returns them.
    pub async fn wait_for(&self, name: &str, user: Option<&str>, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.named(name, user);
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{n} × {name} ({user:?}) not received within {timeout:?}; events: {:#?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Serves one connection's requests (keep-alive) until it closes.
async fn serve(stream: TcpStream, state: Arc<Mutex<State>>, secret: String) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut signature = None;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            match tokio::time::timeout(Duration::from_secs(30), stream.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((name, value)) = trimmed.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-realtime-signature" => signature = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length.min(16 * 1024 * 1024)];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let signed = signature.is_some_and(|s| s == expected(&secret, &body));
        let status = {
            let mut state = state.lock().unwrap();
            let status = if !signed {
                401
            } else if state.script.is_empty() {
                200
            } else {
                state.script.remove(0)
            };
            state.requests.push(Request { body, signed, status });
            status
        };
        let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if stream.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// How a receiver computes the signature it expects.
fn expected(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("sha256={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}
