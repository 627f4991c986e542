//! Fixtures: a cluster of node processes, and a client that keeps a channel's presence state from
//! `presence_state` and `presence_diff` the way realtime-js does.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::support::jwt::{now, sign};
use crate::support::process::{self, KillOnDrop};
pub use crate::support::ws::JsonFrame as Frame;
use crate::support::{self, ws};

/// Bound for anything expected to happen on a healthy cluster.
pub const T: Duration = Duration::from_secs(10);
pub type Client = ws::Client<Frame>;

/// One node process.
pub struct Node {
    pub name: String,
    pub ip: String,
    pub port: u16,
    pub proc: KillOnDrop,
    /// Its stderr (the log, at `RUST_LOG=info`).
    pub log: std::path::PathBuf,
}

/// Where the nodes of a test cluster get their cluster secret.
#[derive(Debug, Clone, PartialEq)]
enum Secret {
    /// `support::cluster::CLUSTER_SECRET`, as a flag.
    Shared,
    /// None: the loopback development mode.
    None,
    /// Node `i` reads `<dir>/node-<i>` (`--cluster-secret-file`).
    Files(std::path::PathBuf),
}

/// Node processes on 127.0.0.`base`+i, each seeded with all the others' cluster addresses.
pub struct Cluster {
    pub secret: String,
    /// Each node's data directory (raft's vote and log) is `<data>/node-<i>`; removed on drop.
    data: std::path::PathBuf,
    base: u8,
    size: usize,
    extra: Vec<String>,
    /// How the nodes get their cluster secret.
    cluster_secret: Secret,
    pub nodes: Vec<Option<Node>>,
}

impl Cluster {
    /// Starts `size` nodes (with `extra` flags each) and waits until every one sees all the others.
    pub async fn start(base: u8, size: usize, extra: &[&str]) -> Cluster {
        Cluster::launch(base, size, extra, Secret::Shared).await
    }

    /// As [`Cluster::start`], without a cluster secret: every peer packet is trusted.
    pub async fn start_insecure(base: u8, size: usize, extra: &[&str]) -> Cluster {
        Cluster::launch(base, size, extra, Secret::None).await
    }

    /// As [`Cluster::start`], node `i` reading its secrets from `<dir>/node-<i>` (which must exist).
    pub async fn start_with_secret_files(base: u8, size: usize, dir: &std::path::Path) -> Cluster {
        Cluster::launch(base, size, &[], Secret::Files(dir.to_owned())).await
    }

    async fn launch(base: u8, size: usize, extra: &[&str], secret: Secret) -> Cluster {
        let mut cluster = Cluster {
            secret: format!("cluster-secret-{}", uuid::Uuid::new_v4().simple()),
            data: std::env::temp_dir()
                .join(format!("realtime-cluster-data-{}", uuid::Uuid::new_v4().simple())),
            base,
            size,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cluster_secret: secret,
            nodes: (0..size).map(|_| None).collect(),
        };
        for i in 0..size {
            cluster.start_node(i);
        }
        cluster.wait_formed(T).await;
        cluster
    }

    /// (Re)starts node `i` under its name `node-<i>`.
    pub fn start_node(&mut self, i: usize) {
        let (ip, name) = (support::cluster::ip(self.base, i), format!("node-{i}"));
        let mut args = support::cluster::node_args(self.base, i, self.size, &self.data);
        if self.cluster_secret != Secret::Shared {
            if let Some(at) = args.iter().position(|a| a == "--cluster-secret") {
                args.drain(at..at + 2);
            }
        }
        if let Secret::Files(dir) = &self.cluster_secret {
            args.extend(["--cluster-secret-file".to_owned(), dir.join(&name).display().to_string()]);
        }
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = std::env::temp_dir()
            .join(format!("realtime-cluster-{}-{name}.log", uuid::Uuid::new_v4().simple()));
        let (proc, lines) = process::spawn(&self.secret, &args, &[("RUST_LOG", "info")], log.clone(), 40);
        let port = process::wait_listening(&lines, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{name} did not print its listening line: {e}"));
        self.nodes[i] = Some(Node { name, ip, port, proc, log });
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().unwrap_or_else(|| panic!("node {i} is not running"))
    }

    fn live(&self) -> Vec<usize> {
        (0..self.size).filter(|i| self.nodes[*i].is_some()).collect()
    }

    /// `GET /cluster` of node `i`.
    pub async fn view(&self, i: usize) -> Value {
        support::cluster::view(&self.node(i).ip, self.node(i).port).await
    }

    /// Names of the members node `i` sees alive.
    pub async fn alive_seen_by(&self, i: usize) -> Vec<String> {
        let view = self.view(i).await;
        let mut alive: Vec<String> = view["members"]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter(|m| m["state"] == "alive")
                    .filter_map(|m| m["node"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        alive.sort();
        alive
    }

    /// Waits until every running node is ready and sees exactly the other running nodes alive.
    pub async fn wait_formed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self.live();
            let mut formed = true;
            for &i in &live {
                let mut want: Vec<String> =
                    live.iter().filter(|j| **j != i).map(|j| format!("node-{j}")).collect();
                want.sort();
                let view = self.view(i).await;
                if view["ready"] != true || self.alive_seen_by(i).await != want {
                    formed = false;
                    break;
                }
            }
            if formed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster did not form within {timeout:?}: {:?}",
                self.views().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn views(&self) -> Vec<Value> {
        let mut views = Vec::new();
        for i in self.live() {
            views.push(self.view(i).await);
        }
        views
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.proc.kill();
        }
    }

    /// SIGTERM, and wait (≤ 15 s) for the process to exit.
    pub fn terminate(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            let _ = node.proc.sigterm();
            assert!(
                node.proc.wait_exit(Duration::from_secs(15)).is_some(),
                "{} did not exit on SIGTERM",
                node.name
            );
        }
    }

    pub fn signal(&self, i: usize, signal: &str) {
        let status = Command::new("kill").args([signal, &self.node(i).proc.pid().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal}");
    }

    pub fn token(&self) -> String {
        sign(
            &self.secret,
            &json!({"role": "authenticated", "sub": "cluster-test", "iat": now(), "exp": now() + 3600}),
        )
    }

    pub async fn client(&self, i: usize, vsn: Vsn) -> Client {
        let node = self.node(i);
        let param = match vsn {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        };
        let url =
            format!("ws://{}:{}/socket/websocket?apikey={}&vsn={param}", node.ip, node.port, self.token());
        Client::connect_req(url, vsn).await.unwrap_or_else(|e| panic!("connect to {}: {e}", node.name))
    }

    /// `POST /api/broadcast` on node `i`.
    pub async fn rest_broadcast(&self, i: usize, topic: &str, event: &str, payload: Value) -> u16 {
        let node = self.node(i);
        let url = format!("http://{}:{}/api/broadcast", node.ip, node.port);
        let body = json!({"messages": [{"topic": topic, "event": event, "payload": payload}]});
        let resp = reqwest::Client::new()
            .post(url)
            .bearer_auth(self.token())
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("REST broadcast");
        resp.status().as_u16()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut() {
            if let Some(mut node) = node.take() {
                node.proc.kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Joins `realtime:<topic>` with presence under `key` and broadcast `self` off; asserts the ok reply.
pub async fn join(c: &mut Client, topic: &str, key: &str) -> String {
    let payload = json!({"config": {"broadcast": {"self": false, "ack": false}, "presence": {"key": key, "enabled": true}}});
    let jr = c.send_join(&format!("realtime:{topic}"), &payload).await;
    let reply = c.expect_reply(&jr, T).await;
    assert_eq!(reply["payload"]["status"], "ok", "join {topic}: {reply}");
    jr
}

/// Tracks `meta`; asserts the ok reply.
pub async fn track(c: &mut Client, jr: &str, topic: &str, meta: Value) {
    let topic = format!("realtime:{topic}");
    let r = c
        .push(Some(jr), &topic, "presence", &json!({"type": "presence", "event": "track", "payload": meta}))
        .await;
    let reply = c.expect_reply(&r, T).await;
    assert_eq!(reply["payload"]["status"], "ok", "track: {reply}");
}

/// A channel's presence as a client keeps it: key → phx_refs → meta.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PresenceModel(pub BTreeMap<String, BTreeMap<String, Value>>);

impl PresenceModel {
    fn apply(&mut self, side: &Value, join: bool) {
        for (key, entry) in side.as_object().into_iter().flatten() {
            for meta in entry["metas"].as_array().into_iter().flatten() {
                let phx_ref = meta["phx_ref"].as_str().unwrap_or_default().to_owned();
                let mut clean = meta.clone();
                if let Some(o) = clean.as_object_mut() {
                    o.remove("phx_ref");
                    o.remove("phx_ref_prev");
                }
                if join {
                    self.0.entry(key.clone()).or_default().insert(phx_ref, clean);
                } else if let Some(metas) = self.0.get_mut(key) {
                    metas.remove(&phx_ref);
                    if metas.is_empty() {
                        self.0.remove(key);
                    }
                }
            }
        }
    }

    /// Applies a `presence_state` or `presence_diff` frame; `false` for any other frame.
    pub fn apply_frame(&mut self, frame: &Value) -> bool {
        match frame["event"].as_str() {
            Some("presence_state") => {
                self.0.clear();
                self.apply(&frame["payload"], true);
                true
            }
            Some("presence_diff") => {
                self.apply(&frame["payload"]["leaves"], false);
                self.apply(&frame["payload"]["joins"], true);
                true
            }
            _ => false,
        }
    }

    /// The keys present, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// Reads `c`'s frames into `model` until `done(model)` holds; panics after `timeout` with the model.
/// Frames other than presence are dropped.
pub async fn presence_until(
    c: &mut Client,
    model: &mut PresenceModel,
    timeout: Duration,
    what: &str,
    done: impl Fn(&PresenceModel) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(model) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: not reached within {timeout:?}; presence is {model:?}");
        match c.recv(left).await {
            Some(Frame::Text(v, _)) => drop(model.apply_frame(&v)),
            Some(Frame::Close(code)) => panic!("{what}: socket closed ({code:?})"),
            None => {}
        }
    }
}

/// Keys `key-<i>` for each i in `nodes`, sorted.
pub fn keys(nodes: &[usize]) -> Vec<String> {
    let mut keys: Vec<String> = nodes.iter().map(|i| format!("key-{i}")).collect();
    keys.sort();
    keys
}
