//! The lab: PostgreSQL and three `realtime` nodes in the test's own network namespace.
//!
//! Node `i` listens (HTTP and cluster) on 127.0.0.(11+i), and its peer links leave from that address
//! too, so a rule between two node addresses cuts exactly the traffic between those two nodes. Each
//! node reaches PostgreSQL through an address of its own, 127.0.1.(11+i) (PostgreSQL listens on every
//! address of the namespace), so one node's path to the database is cut without touching the others'.
//! The test itself (clients, the row inserter) uses 127.0.0.1, which no fault names.

use std::os::unix::process::CommandExt as _;
use std::path::{Path as FsPath, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::{Client as PgClient, NoTls};

use crate::netns::{self, Endpoint, Faults, Path};
use crate::support;
use crate::support::jwt::{now, sign};
use crate::support::pg::{ROLES_SQL, SCHEMA_SQL};
use crate::support::process::{self, KillOnDrop};

pub const NODES: usize = 3;
/// The first node's last address byte (inside the namespace every address is the test's own).
const BASE: u8 = 11;
/// The lab's slot and database.
const DATABASE: &str = "lab";
const SLOT: &str = "lab_slot";
/// Bound for anything expected on a healthy network.
pub const T: Duration = Duration::from_secs(20);

/// The table every subscriber follows.
const TABLE_SQL: &str = r#"
create table items (id int8 primary key, title text);
grant select on items to authenticated;
alter publication supabase_realtime add table items;
"#;

/// What a scenario changes about the lab.
#[derive(Default)]
pub struct Options {
    /// Flags every node gets.
    pub flags: Vec<String>,
    /// PostgreSQL settings (`alter system`), e.g. a shorter `wal_sender_timeout`.
    pub pg_settings: Vec<(&'static str, &'static str)>,
}

pub struct LabNode {
    pub ip: String,
    pub port: u16,
    /// Killed when the node is dropped.
    _process: KillOnDrop,
    pub log: PathBuf,
}

pub struct Lab {
    /// The lab database, reached from the test's own address.
    pub db_url: String,
    pub pg_port: u16,
    pub jwt_secret: String,
    pub faults: Faults,
    pub nodes: Vec<Option<LabNode>>,
    flags: Vec<String>,
    pg_dir: PathBuf,
    data: PathBuf,
}

/// Node `i`'s address.
pub fn ip(i: usize) -> String {
    support::cluster::ip(BASE, i)
}

/// The address node `i` reaches PostgreSQL at.
pub fn db_ip(i: usize) -> String {
    format!("127.0.1.{}", BASE as usize + i)
}

fn workspace_root() -> PathBuf {
    FsPath::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

async fn connect(url: &str) -> PgClient {
    let (client, conn) = tokio::time::timeout(T, tokio_postgres::connect(url, NoTls))
        .await
        .unwrap_or_else(|_| panic!("connect {url}: timed out"))
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

impl Lab {
    /// Enters a network of its own, starts PostgreSQL and the nodes, and waits until the cluster
    /// has formed and agreed on a leader.
    pub async fn start(options: Options) -> Lab {
        netns::enter();
        let pg_dir = std::env::temp_dir().join(format!("realtime-lab-pg-{}", uuid::Uuid::new_v4().simple()));
        let out = Command::new(workspace_root().join("scripts/pg.sh"))
            .args(["start", &pg_dir.display().to_string()])
            .env("PG_LISTEN", "0.0.0.0")
            .output()
            .expect("run scripts/pg.sh");
        assert!(out.status.success(), "scripts/pg.sh start: {}", String::from_utf8_lossy(&out.stderr));
        // Dropping the lab stops it; this stops it too when the test process is killed before that.
        let watcher = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {script} stop {dir}; rm -rf {dir}",
            pid = std::process::id(),
            script = workspace_root().join("scripts/pg.sh").display(),
            dir = pg_dir.display()
        );
        // A process group of its own: a timeout that kills the test's group leaves the watcher.
        let _ = Command::new("sh")
            .args(["-c", &watcher])
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let admin_url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let pg_port: u16 = admin_url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
            .expect("port in the URL");
        let mut lab = Lab {
            db_url: format!("postgres://postgres@127.0.0.1:{pg_port}/{DATABASE}"),
            pg_port,
            jwt_secret: format!("lab-secret-{}", uuid::Uuid::new_v4().simple()),
            faults: Faults::default(),
            nodes: (0..NODES).map(|_| None).collect(),
            flags: options.flags,
            pg_dir,
            data: std::env::temp_dir().join(format!("realtime-lab-data-{}", uuid::Uuid::new_v4().simple())),
        };
        let admin = connect(&admin_url).await;
        admin.batch_execute(ROLES_SQL).await.expect("roles");
        admin.batch_execute(&format!("create database {DATABASE}")).await.expect("create database");
        for (name, value) in &options.pg_settings {
            admin.batch_execute(&format!("alter system set {name} = '{value}'")).await.expect("alter system");
        }
        admin.batch_execute("select pg_reload_conf()").await.expect("reload");
        let db = connect(&lab.db_url).await;
        db.batch_execute(SCHEMA_SQL).await.expect("schema");
        db.batch_execute(TABLE_SQL).await.expect("table");
        for i in 0..NODES {
            lab.start_node(i);
        }
        lab.wait_formed().await;
        lab
    }

    /// (Re)starts node `i`.
    pub fn start_node(&mut self, i: usize) {
        let name = format!("node-{i}");
        let db_url = format!("postgres://postgres@{}:{}/{DATABASE}", db_ip(i), self.pg_port);
        let mut args = support::cluster::node_args(BASE, i, NODES, &self.data);
        args.extend(["--database-url".to_owned(), db_url, "--slot".to_owned(), SLOT.to_owned()]);
        args.extend(self.flags.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The test process's id first: several runs (and engineers) may share /tmp.
        let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let log = std::env::temp_dir().join(format!("realtime-lab-{}-{run}-{name}.log", std::process::id()));
        let (proc, lines) = process::spawn(&self.jwt_secret, &args, &[("RUST_LOG", "info")], log.clone(), 60);
        let port = process::wait_listening(&lines, T)
            .unwrap_or_else(|e| panic!("{name} did not print its listening line: {e}"));
        self.nodes[i] = Some(LabNode { ip: ip(i), port, _process: proc, log });
    }

    pub fn node(&self, i: usize) -> &LabNode {
        self.nodes[i].as_ref().unwrap_or_else(|| panic!("node {i} is not running"))
    }

    /// `GET /cluster` of node `i` (`Null` when it does not answer).
    pub async fn view(&self, i: usize) -> Value {
        support::cluster::view(&self.node(i).ip, self.node(i).port).await
    }

    /// Waits until every node is ready, sees the two others alive and all name one leader.
    async fn wait_formed(&self) {
        let deadline = Instant::now() + T;
        loop {
            let mut views = Vec::new();
            for i in 0..NODES {
                views.push(self.view(i).await);
            }
            let alive = |v: &Value| {
                v["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count())
            };
            let leader = views[0]["leader"].clone();
            if views.iter().all(|v| v["ready"] == true && alive(v) == NODES - 1 && v["leader"] == leader)
                && leader.is_string()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the lab's cluster did not form within {T:?}: {views:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node all of `among` name as leader now, if they agree on one (and the names, for messages).
    async fn agreed_leader(&self, among: &[usize]) -> (Option<usize>, Vec<Option<String>>) {
        let mut named = Vec::new();
        for &i in among {
            named.push(self.view(i).await["leader"].as_str().map(str::to_owned));
        }
        let agreed = named[0].clone().filter(|_| named.iter().all(|n| *n == named[0]));
        let index = agreed.and_then(|l| l.strip_prefix("node-").and_then(|n| n.parse::<usize>().ok()));
        (index, named)
    }

    /// The node the nodes in `among` agree leads, once they do (within `timeout`).
    pub async fn leader_among(&self, among: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let (leader, named) = self.agreed_leader(among).await;
            if let Some(i) = leader {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {among:?} named no common leader within {timeout:?}: {named:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The node other than `old` that all of `among` name as leader, once they do (`None` after
    /// `timeout`).
    pub async fn new_leader(&self, among: &[usize], old: usize, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(i) = self.agreed_leader(among).await.0.filter(|i| *i != old) {
                return Some(i);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    pub async fn leader(&self) -> usize {
        self.leader_among(&(0..NODES).collect::<Vec<_>>(), T).await
    }

    /// A token of an authenticated user.
    pub fn token(&self) -> String {
        let now = now();
        let claims = json!({"role": "authenticated", "sub": uuid::Uuid::new_v4().to_string(),
                            "aud": "authenticated", "iat": now, "exp": now + 3600});
        sign(&self.jwt_secret, &claims)
    }

    /// The WebSocket URL of node `i`.
    pub fn ws_url(&self, i: usize) -> String {
        let node = self.node(i);
        format!("ws://{}:{}/socket/websocket?apikey={}&vsn=2.0.0", node.ip, node.port, self.token())
    }

    // ---- faults

    /// Both ways between nodes `a` and `b` (every protocol: SWIM, links, raft).
    pub fn between(a: usize, b: usize) -> [Path; 2] {
        Path::both(Endpoint::ip(&ip(a)), Endpoint::ip(&ip(b)))
    }

    /// From node `a` to node `b` only.
    pub fn one_way(a: usize, b: usize) -> [Path; 1] {
        [Path::new(Endpoint::ip(&ip(a)), Endpoint::ip(&ip(b)))]
    }

    /// Both ways between node `i` and PostgreSQL.
    pub fn to_database(&self, i: usize) -> [Path; 2] {
        Path::both(Endpoint::ip("127.0.0.1"), Endpoint::tcp(&db_ip(i), self.pg_port))
    }

    /// Every path between any two nodes.
    pub fn every_link() -> Vec<Path> {
        (0..NODES).flat_map(|i| ((i + 1)..NODES).flat_map(move |j| Lab::between(i, j))).collect()
    }

    /// Every path between node `i` and the other nodes.
    pub fn from_peers(i: usize) -> Vec<Path> {
        (0..NODES).filter(|j| *j != i).flat_map(|j| Lab::between(i, j)).collect()
    }

    /// Where the nodes' logs are (printed with each scenario's figures).
    pub fn logs(&self) -> Vec<String> {
        self.nodes.iter().flatten().map(|n| n.log.display().to_string()).collect()
    }

    /// The last `n` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        let lines = self.log_lines(i, "");
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Lines of node `i`'s log (ANSI colours removed) containing `needle`.
    pub fn log_lines(&self, i: usize, needle: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.node(i).log).unwrap_or_default();
        let plain = regex::Regex::new("\x1b\\[[0-9;]*m").expect("regex").replace_all(&text, "").into_owned();
        plain.lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.nodes.iter_mut().for_each(|n| drop(n.take()));
        let _ = Command::new(workspace_root().join("scripts/pg.sh"))
            .args(["stop", &self.pg_dir.display().to_string()])
            .output();
        let _ = std::fs::remove_dir_all(&self.pg_dir);
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
