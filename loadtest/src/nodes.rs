//! Node processes the `failover` scenario runs itself: node `i` is `--node-id node-<i>` on its own
//! loopback address `127.0.0.<base+i>` (HTTP on port 0, the cluster on a fixed port), seeded with every
//! node's cluster address, with its own data directory so a restart finds its state again.
//!
//! A killed node is restarted with the same name, address and data directory, as an operator (or a
//! Kubernetes StatefulSet) would. Every process is SIGKILLed when [`Nodes`] is dropped, which covers
//! errors, panics (unwinding) and the scenario's Ctrl-C handler; only a SIGKILL of the load generator
//! itself can leave nodes behind. Each node's stdout and stderr go to `<dir>/node-<i>.log` (appended
//! across restarts) once its listening line was read.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{timeout_at, Instant};

use crate::scrape::fetch;

/// What a node prints on stdout once it listens.
const LISTENING: &str = "realtime listening on http://";
/// One `/cluster` request.
const VIEW_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a SIGKILLed process gets to be reaped.
const REAP: Duration = Duration::from_secs(5);

/// How every node is started.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub bin: PathBuf,
    /// Node `i` binds `127.0.0.<ip_base + i>`.
    pub ip_base: u8,
    pub cluster_port: u16,
    pub count: usize,
    /// Where data directories and logs go.
    pub dir: PathBuf,
    /// Flags every node gets (database, slot, secret, extra `--node-arg`s).
    pub common: Vec<String>,
}

impl NodeSpec {
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, self.ip_base.saturating_add(i as u8))
    }

    pub fn name(i: usize) -> String {
        format!("node-{i}")
    }

    /// Node `i`'s command line, after the binary.
    pub fn args(&self, i: usize) -> Vec<String> {
        let seeds: Vec<String> =
            (0..self.count).map(|j| format!("{}:{}", self.ip(j), self.cluster_port)).collect();
        let mut args = vec![
            format!("--bind={}:0", self.ip(i)),
            format!("--node-id={}", Self::name(i)),
            format!("--cluster-bind={}:{}", self.ip(i), self.cluster_port),
            format!("--seeds={}", seeds.join(",")),
            format!("--data-dir={}", self.dir.join(Self::name(i)).display()),
        ];
        args.extend(self.common.iter().cloned());
        args
    }
}

struct Running {
    child: Child,
    http: SocketAddr,
}

/// The node processes; each is SIGKILLed on drop.
pub struct Nodes {
    pub spec: NodeSpec,
    running: Vec<Option<Running>>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in self.running.iter_mut().flatten() {
            let _ = node.child.start_kill();
        }
    }
}

/// Copies a child's output to `log` until it ends.
async fn copy_to(mut from: impl tokio::io::AsyncRead + Unpin, log: &Path) {
    if let Ok(mut file) = tokio::fs::OpenOptions::new().create(true).append(true).open(log).await {
        let _ = tokio::io::copy(&mut from, &mut file).await;
        let _ = file.flush().await;
    }
}

impl Nodes {
    pub fn new(spec: NodeSpec) -> Nodes {
        let running = (0..spec.count).map(|_| None).collect();
        Nodes { spec, running }
    }

    /// Starts node `i` and waits (until `deadline`) for its listening line.
    pub async fn start(&mut self, i: usize, deadline: Instant) -> anyhow::Result<()> {
        let log = self.spec.dir.join(format!("{}.log", NodeSpec::name(i)));
        let mut child = Command::new(&self.spec.bin)
            .args(self.spec.args(i))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.spec.bin.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let err_log = log.clone();
        tokio::spawn(async move { copy_to(stderr, &err_log).await });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let http = loop {
            match timeout_at(deadline, lines.next_line()).await {
                Err(_) => {
                    let _ = child.start_kill();
                    bail!("{} printed no listening line in time (log: {})", NodeSpec::name(i), log.display());
                }
                Ok(Ok(Some(line))) => {
                    if let Some(addr) = line.strip_prefix(LISTENING).and_then(|a| a.trim().parse().ok()) {
                        break addr;
                    }
                }
                Ok(_) => bail!("{} exited before listening (log: {})", NodeSpec::name(i), log.display()),
            }
        };
        tokio::spawn(async move { copy_to(lines.into_inner(), &log).await });
        self.running[i] = Some(Running { child, http });
        Ok(())
    }

    /// SIGKILLs node `i` and reaps it.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let Some(mut node) = self.running[i].take() else { bail!("{} is not running", NodeSpec::name(i)) };
        node.child.start_kill().context("SIGKILL")?;
        let _ = tokio::time::timeout(REAP, node.child.wait()).await;
        Ok(())
    }

    /// The running nodes' indices.
    pub fn live(&self) -> Vec<usize> {
        (0..self.running.len()).filter(|&i| self.running[i].is_some()).collect()
    }

    /// Node `i`'s WebSocket endpoint.
    pub fn ws_url(&self, i: usize) -> Option<String> {
        self.running[i].as_ref().map(|n| format!("ws://{}/socket/websocket", n.http))
    }

    /// Node `i`'s `GET /cluster`, `None` when it cannot be read.
    pub async fn view(&self, i: usize) -> Option<Value> {
        let http = self.running[i].as_ref()?.http;
        let body = fetch(http, "/cluster", VIEW_TIMEOUT).await.ok()?;
        serde_json::from_str(&body).ok()
    }

    /// Whether every running node is ready and sees exactly the other running nodes alive.
    pub async fn formed(&self) -> bool {
        let live = self.live();
        for &i in &live {
            let Some(view) = self.view(i).await else { return false };
            let mut want: Vec<String> =
                live.iter().filter(|&&j| j != i).map(|&j| NodeSpec::name(j)).collect();
            want.sort();
            if view["ready"] != true || alive_members(&view) != want {
                return false;
            }
        }
        true
    }

    /// Whether node `i` (just restarted) is back: the cluster is formed and every other running node
    /// lists it alive *with its new incarnation* (a quick restart can find the old one still listed).
    pub async fn rejoined(&self, i: usize) -> bool {
        let Some(incarnation) = self.view(i).await.and_then(|v| v["incarnation"].as_u64()) else {
            return false;
        };
        for j in self.live().into_iter().filter(|&j| j != i) {
            let Some(view) = self.view(j).await else { return false };
            let listed = view["members"].as_array().into_iter().flatten().any(|m| {
                m["node"] == NodeSpec::name(i).as_str()
                    && m["incarnation"] == incarnation
                    && m["state"] == "alive"
            });
            if !listed {
                return false;
            }
        }
        self.formed().await
    }

    /// The leader every running node names, when they all name the same running node.
    pub async fn agreed_leader(&self) -> Option<usize> {
        let mut agreed = None;
        for i in self.live() {
            let leader = self.view(i).await?.get("leader")?.as_str()?.to_owned();
            let index = self.live().into_iter().find(|&j| NodeSpec::name(j) == leader)?;
            if agreed.is_some_and(|a| a != index) {
                return None;
            }
            agreed = Some(index);
        }
        agreed
    }
}

/// Calls `check` every 50 ms until it returns `Some` or `deadline` passes.
pub async fn poll_until<T, F>(deadline: Instant, mut check: impl FnMut() -> F) -> Option<T>
where
    F: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(t) = check().await {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Names of the members a `/cluster` view shows alive, sorted.
pub fn alive_members(view: &Value) -> Vec<String> {
    let mut alive: Vec<String> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["state"] == "alive")
        .filter_map(|m| m["node"].as_str().map(str::to_owned))
        .collect();
    alive.sort();
    alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_command_lines() {
        let spec = NodeSpec {
            bin: "realtime".into(),
            ip_base: 150,
            cluster_port: 4100,
            count: 3,
            dir: "/tmp/x".into(),
            common: vec!["--slot=s".into()],
        };
        let args = spec.args(2);
        assert_eq!(args[0], "--bind=127.0.0.152:0");
        assert_eq!(args[1], "--node-id=node-2");
        assert_eq!(args[2], "--cluster-bind=127.0.0.152:4100");
        assert_eq!(args[3], "--seeds=127.0.0.150:4100,127.0.0.151:4100,127.0.0.152:4100");
        assert_eq!(args[4], "--data-dir=/tmp/x/node-2");
        assert_eq!(args[5], "--slot=s");
    }

    #[test]
    fn members_alive() {
        let view = serde_json::json!({"members": [
            {"node": "node-2", "state": "alive"}, {"node": "node-0", "state": "suspect"},
            {"node": "node-1", "state": "alive"}]});
        assert_eq!(alive_members(&view), vec!["node-1", "node-2"]);
        assert!(alive_members(&Value::Null).is_empty());
    }
}
