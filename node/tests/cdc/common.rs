//! Shared fixtures for the Postgres Changes tests: a PostgreSQL cluster (one per test process unless
//! `REALTIME_TEST_DATABASE_URL` names one), a database per test with a Supabase-like schema, the
//! server process pointed at it, a WebSocket client for both serializers and payload helpers.
//!
//! Every wait is bounded; failures print what was received.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::{json, Map, Value};
use tokio_postgres::{Client as PgClient, NoTls};

pub use crate::support::jwt::{now, sign};
use crate::support::pg::{ROLES_SQL, SCHEMA_SQL};
use crate::support::process::{self, KillOnDrop};
use crate::support::ws::{self, WireFrame};
pub use crate::support::VSNS;

/// Default bound for anything that is expected to happen.
pub const T: Duration = Duration::from_secs(10);
/// How long "nothing (more) arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(800);

pub const SUBSCRIBED: &str = "Subscribed to PostgreSQL";

// ---------------------------------------------------------------------------------------------------
// PostgreSQL cluster

static CLUSTER: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The superuser URL of the cluster (database `postgres`). Uses `REALTIME_TEST_DATABASE_URL` when set;
/// otherwise starts one throwaway cluster for this test process with `scripts/pg.sh start
/// /tmp/realtime-cdc-pg-<pid>`, and a watcher shell that stops it (and removes the directory) once
/// this process has exited.
pub async fn cluster_url() -> &'static str {
    CLUSTER
        .get_or_init(|| async {
            let url = match std::env::var("REALTIME_TEST_DATABASE_URL") {
                Ok(url) if !url.is_empty() => url,
                _ => start_cluster().await,
            };
            let (client, conn) = connect(&url).await;
            client.batch_execute(ROLES_SQL).await.unwrap_or_else(|e| panic!("create roles: {e}"));
            drop(client);
            conn.abort();
            url
        })
        .await
}

async fn start_cluster() -> String {
    let dir = std::env::temp_dir().join(format!("realtime-cdc-pg-{}", std::process::id()));
    let script = workspace_root().join("scripts/pg.sh");
    let (script_s, dir_s) = (script.display().to_string(), dir.display().to_string());
    let out = tokio::task::spawn_blocking(move || Command::new(&script_s).args(["start", &dir_s]).output())
        .await
        .expect("join pg.sh")
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/pg.sh start failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    eprintln!("cdc tests: started PostgreSQL at {url} in {}", dir.display());
    // Stop it when this process is gone.
    let watcher = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {script} stop {dir}; rm -rf {dir}",
        pid = std::process::id(),
        script = workspace_root().join("scripts/pg.sh").display(),
        dir = dir.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &watcher])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    url
}

/// Connects; the connection task runs on the current runtime.
/// A steady load: rows `(id, 'load')` inserted into `table` (ids from 1001) every 3 ms until stopped.
/// Each row is stamped with the instant its insert was *sent*, so a row stamped after an instant was
/// surely committed after it (a stamp taken when the insert returns can be late by however long the
/// test's runtime took to poll the inserter again).
pub struct Inserter {
    rows: std::sync::Arc<std::sync::Mutex<Vec<(u64, Instant)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Inserter {
    pub fn start(url: &str, table: &'static str) -> Inserter {
        let rows: std::sync::Arc<std::sync::Mutex<Vec<(u64, Instant)>>> = Default::default();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rows_w, stop_r, url) = (rows.clone(), stop.clone(), url.to_owned());
        let task = tokio::spawn(async move {
            let (pg, _conn) = connect(&url).await;
            let mut n = 1000u64;
            while !stop_r.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let sent = Instant::now();
                pg.batch_execute(&format!("insert into {table} (id, title) values ({n}, 'load')"))
                    .await
                    .expect("insert");
                rows_w.lock().unwrap().push((n, sent));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        });
        Inserter { rows, stop, task }
    }

    /// Stops the load; every row committed, in order, with the instant its insert was sent.
    pub async fn stop(self) -> Vec<(u64, Instant)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.expect("inserter");
        let rows = self.rows.lock().unwrap().clone();
        rows
    }
}

pub async fn connect(url: &str) -> (PgClient, tokio::task::JoinHandle<()>) {
    let (client, connection) = tokio::time::timeout(T, tokio_postgres::connect(url, NoTls))
        .await
        .unwrap_or_else(|_| panic!("connect {url}: timed out"))
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, task)
}

/// `url` with its database name replaced.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URL has a path");
    format!("{base}/{db}")
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

// ---------------------------------------------------------------------------------------------------
// Test database

/// A database of its own (`t_<id>`), with the base schema, a replication slot name (`s_<id>`), a data
/// directory and a JWT secret for the servers of this test. Dropping it drops the slot and the
/// database (servers must be dropped first; locals drop in reverse order).
pub struct Db {
    pub name: String,
    pub url: String,
    pub slot: String,
    pub data_dir: PathBuf,
    pub secret: String,
    admin_url: String,
    pub pg: PgClient,
    conn: tokio::task::JoinHandle<()>,
}

impl Db {
    /// A fresh database with the base schema plus `extra_sql`.
    pub async fn new(extra_sql: &str) -> Db {
        let admin_url = cluster_url().await.to_owned();
        let id = short_id();
        let name = format!("t_{id}");
        let (admin, admin_conn) = connect(&admin_url).await;
        admin
            .batch_execute(&format!("create database {name}"))
            .await
            .unwrap_or_else(|e| panic!("create db: {e}"));
        admin
            .batch_execute(&format!("alter database {name} set timezone to 'UTC'"))
            .await
            .unwrap_or_else(|e| panic!("alter db: {e}"));
        drop(admin);
        admin_conn.abort();
        let url = with_db(&admin_url, &name);
        let (pg, conn) = connect(&url).await;
        pg.batch_execute(SCHEMA_SQL).await.unwrap_or_else(|e| panic!("base schema: {e}"));
        if !extra_sql.is_empty() {
            pg.batch_execute(extra_sql).await.unwrap_or_else(|e| panic!("test schema: {e}\n{extra_sql}"));
        }
        let data_dir = std::env::temp_dir().join(format!("realtime-cdc-data-{id}"));
        Db {
            name,
            url,
            slot: format!("s_{id}"),
            data_dir,
            secret: format!("cdc-secret-{}", uuid::Uuid::new_v4().simple()),
            admin_url,
            pg,
            conn,
        }
    }

    /// [`Db::new`], then the node's `realtime` schema (as a server would apply it at start, with
    /// today's partitions), then `extra_sql` (policies on `realtime.messages`, triggers using
    /// `realtime.send`).
    pub async fn migrated(extra_sql: &str) -> Db {
        let db = Db::new("").await;
        let (mut pg, conn) = connect(&db.url).await;
        realtime_node::schema::migrations::apply(&mut pg).await.expect("migrations");
        realtime_node::schema::janitor::sweep(&mut pg, Duration::from_secs(72 * 3600))
            .await
            .expect("janitor pass");
        drop(pg);
        conn.abort();
        if !extra_sql.is_empty() {
            db.exec(extra_sql).await;
        }
        db
    }

    pub async fn exec(&self, sql: &str) {
        tokio::time::timeout(T, self.pg.batch_execute(sql))
            .await
            .unwrap_or_else(|_| panic!("sql timed out: {sql}"))
            .unwrap_or_else(|e| panic!("sql failed: {e}\n{sql}"));
    }

    /// The first column of every row, as JSON (`to_jsonb` of it), e.g. `select id from t`.
    pub async fn json_rows(&self, sql: &str) -> Vec<Value> {
        let wrapped = format!("select to_jsonb(q.*)::text from ({sql}) q");
        let rows = self.pg.query(&wrapped, &[]).await.unwrap_or_else(|e| panic!("query failed: {e}\n{sql}"));
        rows.iter()
            .map(|r| {
                let v: Value = serde_json::from_str(r.get::<_, &str>(0)).expect("jsonb text");
                v.as_object().and_then(|o| o.values().next().cloned()).unwrap_or(Value::Null)
            })
            .collect()
    }

    /// A token for this database's servers.
    pub fn token(&self, role: &str, sub: &str) -> String {
        let now = now();
        sign(
            &self.secret,
            &json!({"role": role, "sub": sub, "aud": "authenticated", "iat": now, "exp": now + 3600}),
        )
    }

    /// Starts a server on this database (slot, data dir, secret of this test) with `extra` flags.
    pub fn server(&self, extra: &[&str]) -> Server {
        Server::start(self, extra, &self.data_dir, &[])
    }

    /// [`Db::server`] with its own data directory `data_dir` and environment `envs`.
    pub fn server_with(&self, extra: &[&str], data_dir: &std::path::Path, envs: &[(&str, &str)]) -> Server {
        Server::start(self, extra, data_dir, envs)
    }

    /// The recorded delivered position (`<data-dir>/cdc-<slot>.lsn`), if any.
    pub fn recorded_position(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.data_dir.join(format!("cdc-{}.lsn", self.slot))).ok()?;
        text.trim().parse().ok()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.conn.abort();
        let (admin_url, url, name, slot) =
            (self.admin_url.clone(), self.url.clone(), self.name.clone(), self.slot.clone());
        let _ = std::fs::remove_dir_all(&self.data_dir);
        // A runtime of its own: this may run inside (or after) the test's runtime.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let deadline = Instant::now() + Duration::from_secs(15);
                if let Ok((pg, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    // The killed server's walsender may hold the slot for a moment.
                    loop {
                        let r = pg
                            .query(
                                "select pg_terminate_backend(active_pid) from pg_replication_slots \
                                 where slot_name = $1 and active_pid is not null",
                                &[&slot],
                            )
                            .await;
                        let dropped = pg
                            .query(
                                "select pg_drop_replication_slot(slot_name) from pg_replication_slots \
                                 where slot_name = $1",
                                &[&slot],
                            )
                            .await;
                        if r.is_ok() && dropped.is_ok() {
                            break;
                        }
                        if Instant::now() > deadline {
                            eprintln!("cdc tests: could not drop slot {slot}: {dropped:?}");
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                if let Ok((admin, conn)) = tokio_postgres::connect(&admin_url, NoTls).await {
                    tokio::spawn(conn);
                    loop {
                        match admin
                            .batch_execute(&format!("drop database if exists {name} with (force)"))
                            .await
                        {
                            Ok(()) => break,
                            Err(e) if Instant::now() > deadline => {
                                eprintln!("cdc tests: could not drop database {name}: {e}");
                                break;
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

// ---------------------------------------------------------------------------------------------------
// Server process

/// A running `realtime` process on an ephemeral port; killed (SIGKILL) and reaped when dropped. On a
/// panicking test the tail of its stderr is printed.
pub struct Server {
    pub port: u16,
    proc: KillOnDrop,
    /// When the listening line was read.
    pub started: Instant,
}

impl Server {
    fn start(db: &Db, extra: &[&str], data_dir: &std::path::Path, envs: &[(&str, &str)]) -> Server {
        let log = std::env::temp_dir().join(format!("realtime-cdc-{}.log", short_id()));
        let data_dir = data_dir.display().to_string();
        let mut args = vec!["--database-url", &db.url, "--slot", &db.slot, "--data-dir", &data_dir];
        args.extend_from_slice(extra);
        let mut envs = envs.to_vec();
        if std::env::var_os("RUST_LOG").is_none() {
            envs.push(("RUST_LOG", "info"));
        }
        let (mut proc, lines) = process::spawn(&db.secret, &args, &envs, log, 80);
        match process::wait_listening(&lines, Duration::from_secs(20)) {
            Ok(port) => Server { port, proc, started: Instant::now() },
            Err(e) => {
                let status = proc.try_wait();
                panic!(
                    "server did not print its listening line within 20 s ({e}; exit {status:?}); log:\n{}",
                    proc.log_tail(40)
                )
            }
        }
    }

    /// `ws://…/socket/websocket?apikey=<token>&vsn=<vsn>`.
    pub fn ws_url(&self, token: &str, vsn: Vsn) -> String {
        format!("ws://127.0.0.1:{}/socket/websocket?apikey={token}&vsn={vsn}", self.port)
    }

    /// A client whose socket token (`apikey`) is `token`.
    pub async fn client(&self, token: &str, vsn: Vsn) -> Client {
        Client::connect(&self.ws_url(token, vsn), vsn).await
    }

    /// SIGTERM (the graceful drain), and wait for the process to exit.
    pub fn terminate(&mut self) {
        let _ = self.proc.sigterm();
        if self.proc.wait_exit(Duration::from_secs(15)).is_none() {
            panic!("server did not exit within 15 s of SIGTERM");
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        self.proc.log_tail(n)
    }

    /// `GET /readyz`: its status and body.
    pub async fn readyz(&self) -> (u16, String) {
        let resp = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port)).await.expect("GET /readyz");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Polls `/readyz` until `ready(status, body)` holds (at most `timeout`); returns that answer.
    pub async fn readyz_until(&self, timeout: Duration, ready: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.readyz().await;
            if ready(status, &body) {
                return (status, body);
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never matched within {timeout:?}; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// JWT (`now` and `sign` are the shared ones)

/// A random user id.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------------------------------
// Join payloads and expected frames

/// A realtime-js style channel config with these `postgres_changes` entries.
pub fn pg_config(entries: &Value) -> Value {
    json!({
        "broadcast": {"ack": false, "self": false},
        "presence": {"key": "", "enabled": false},
        "postgres_changes": entries,
        "private": false
    })
}

/// A unique `realtime:` topic; returns `(topic, sub_topic)`.
pub fn topic(prefix: &str) -> (String, String) {
    let sub = format!("{prefix}-{}", &short_id()[..8]);
    (format!("realtime:{sub}"), sub)
}

/// The `system` push of a postgres subscription outcome.
pub fn pg_system(vsn: Vsn, topic: &str, sub: &str, join_ref: &str, ok: bool, message: &str) -> Value {
    let join_ref = if vsn == Vsn::V2 { json!(join_ref) } else { Value::Null };
    json!({
        "topic": topic, "event": "system", "ref": null, "join_ref": join_ref,
        "payload": {"extension": "postgres_changes", "status": if ok { "ok" } else { "error" },
                    "message": message, "channel": sub}
    })
}

/// Checks the `commit_timestamp` format (`YYYY-MM-DDTHH:MM:SS.mmmZ`, within 10 minutes of now) and
/// replaces it by `"<ts>"` so payloads can be compared exactly.
pub fn normalize_ts(data: &mut Value) {
    let Some(ts) = data.get("commit_timestamp").and_then(Value::as_str).map(str::to_owned) else { return };
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let shape = ts.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z';
    assert!(shape, "commit_timestamp {ts:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    let y: i64 = ts[0..4].parse().unwrap();
    let now_year = 1970 + now() / 31_556_952;
    assert!((y - now_year).abs() <= 1, "commit_timestamp {ts:?} is not about now");
    data["commit_timestamp"] = json!("<ts>");
}

/// A received `postgres_changes` message.
#[derive(Debug, Clone)]
pub struct Change {
    /// `ids`, sorted.
    pub ids: Vec<u64>,
    /// `data` with `commit_timestamp` replaced by `"<ts>"` (format checked).
    pub data: Value,
    /// The original `commit_timestamp`.
    pub commit_timestamp: Value,
    /// The frame's raw text.
    pub raw: String,
}

impl Change {
    pub fn kind(&self) -> &str {
        self.data["type"].as_str().unwrap_or("?")
    }

    /// `record.<key>` or, failing that, `old_record.<key>`.
    pub fn key(&self, key: &str) -> Value {
        let r = &self.data["record"][key];
        if !r.is_null() {
            return r.clone();
        }
        self.data["old_record"][key].clone()
    }
}

/// The expected `data` of a change (`commit_timestamp` as normalised).
pub fn data(
    table: &str,
    kind: &str,
    columns: &[(&str, &str)],
    record: Option<Value>,
    old: Option<Value>,
) -> Value {
    let mut d = json!({
        "schema": "public", "table": table, "commit_timestamp": "<ts>", "type": kind,
        "columns": columns.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
        "errors": null,
    });
    if let Some(r) = record {
        d["record"] = r;
    }
    if let Some(o) = old {
        d["old_record"] = o;
    }
    d
}

pub fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

// ---------------------------------------------------------------------------------------------------
// WebSocket client

pub use crate::support::ws::JsonFrame as Frame;

/// The shared client ([`ws::Client`]) with this suite's frames; the helpers below are the Postgres
/// Changes tests' own.
pub type Client = ws::Client<Frame>;

impl Client {
    pub async fn connect(url: &str, vsn: Vsn) -> Client {
        Self::connect_req(url, vsn).await.unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// Joins `topic` with `payload`; returns the join ref and the reply's payload (`{status, response}`).
    pub async fn join_with(&mut self, topic: &str, payload: &Value) -> (String, Value) {
        let r = self.send_join(topic, payload).await;
        let reply = self.expect_reply(&r, T).await;
        (r, reply["payload"].clone())
    }

    /// Pushes broadcast `m` with payload `{"n": n}` on a channel joined with `ack`, and waits for its
    /// `ok` (on a resumable channel: the message is committed).
    pub async fn broadcast_acked(&mut self, join_ref: &str, topic: &str, n: i64) {
        let payload = json!({"type": "broadcast", "event": "m", "payload": {"n": n}});
        let r = self.push(Some(join_ref), topic, "broadcast", &payload).await;
        let reply = self.expect_reply(&r, T).await;
        assert_eq!(reply["payload"]["status"], "ok", "{reply}");
    }

    /// The payloads of the next `n` broadcasts on `topic`; other frames (presence, …) are skipped.
    pub async fn broadcasts(&mut self, topic: &str, n: usize) -> Vec<Value> {
        let mut got = Vec::new();
        let deadline = Instant::now() + T;
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.recv(left).await.unwrap_or_else(|| {
                panic!("{}: {} of {n} broadcasts on {topic}: {got:?}", self.vsn, got.len())
            });
            if let Some(v) = f.value() {
                if v["topic"] == topic && v["event"] == "broadcast" {
                    got.push(v["payload"].clone());
                }
            }
        }
        got
    }

    /// Joins with these `postgres_changes` entries (and `access_token` when given), asserts the ok
    /// reply echoes every entry in order with an integer `id`; returns `(join_ref, ids)`.
    pub async fn join_pg(
        &mut self,
        topic: &str,
        entries: &Value,
        access_token: Option<&str>,
    ) -> (String, Vec<u64>) {
        let mut payload = json!({"config": pg_config(entries)});
        if let Some(t) = access_token {
            payload["access_token"] = json!(t);
        }
        let r = self.send_join(topic, &payload).await;
        let reply = self.expect_reply(&r, T).await;
        let ids = check_join_reply(self.vsn, &reply, topic, &r, entries);
        (r, ids)
    }

    /// [`Client::join_pg`], then the next frame must be `system` `Subscribed to PostgreSQL`.
    pub async fn subscribe(
        &mut self,
        topic: &str,
        sub: &str,
        entries: &Value,
        access_token: Option<&str>,
    ) -> (String, Vec<u64>) {
        let (r, ids) = self.join_pg(topic, entries, access_token).await;
        self.expect_subscribed(topic, sub, &r).await;
        (r, ids)
    }

    /// Reads `topic`'s changes (rows of the load [`Inserter`]) until row `last`; they must come in commit
    /// order, once each, and include every row of `must` (rows committed after `after`).
    pub async fn rows_until(&mut self, topic: &str, last: u64, must: &[u64], after: &str) -> Vec<u64> {
        let mut got: Vec<u64> = Vec::new();
        let deadline = Instant::now() + T;
        while got.last() != Some(&last) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{}: stream did not reach row {last}; got {got:?}", self.vsn);
            let ch = self.changes(topic, 1, left).await;
            got.push(ch[0].key("id").as_u64().expect("id"));
        }
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{}: rows in commit order, once each: {got:?}",
            self.vsn
        );
        let missing: Vec<u64> = must.iter().filter(|n| !got.contains(n)).copied().collect();
        assert!(
            missing.is_empty(),
            "{}: rows committed after {after} were not delivered: {missing:?}; got {got:?}",
            self.vsn
        );
        got
    }

    /// The next frame must be the `Subscribed to PostgreSQL` system push of this channel.
    pub async fn expect_subscribed(&mut self, topic: &str, sub: &str, join_ref: &str) {
        let f = self.next_frame(T).await;
        assert_eq!(
            f.value(),
            Some(&pg_system(self.vsn, topic, sub, join_ref, true, SUBSCRIBED)),
            "{}: expected `Subscribed to PostgreSQL` as the first push after the join reply",
            self.vsn
        );
    }

    /// Reads `postgres_changes` messages of `topic` until `n` arrived; any other frame (except
    /// heartbeat replies) fails the test. Checks each frame's envelope.
    pub async fn changes(&mut self, topic: &str, n: usize, timeout: Duration) -> Vec<Change> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(f) if f.is_heartbeat_reply() => {}
                Some(Frame::Text(v, raw)) if v["event"] == "postgres_changes" => got.push(parse_change(&v, raw, topic)),
                Some(other) => panic!(
                    "{}: unexpected frame while waiting for {n} changes on {topic}: {other:?}; got so far {:#?}",
                    self.vsn,
                    got.iter().map(|c: &Change| &c.data).collect::<Vec<_>>()
                ),
                None => panic!(
                    "{}: only {} of {n} changes on {topic} within {timeout:?}: {:#?}",
                    self.vsn,
                    got.len(),
                    got.iter().map(|c: &Change| (&c.ids, &c.data)).collect::<Vec<_>>()
                ),
            }
        }
        got
    }

    /// Like [`Client::changes`], then nothing more arrives for [`QUIET`]; extra changes fail the test
    /// with the complete list received.
    pub async fn exactly_changes(&mut self, topic: &str, n: usize, timeout: Duration) -> Vec<Change> {
        let mut got = self.changes(topic, n, timeout).await;
        let extra = self.drain(QUIET).await;
        if !extra.is_empty() {
            for f in &extra {
                if let Frame::Text(v, raw) = f {
                    if v["event"] == "postgres_changes" {
                        got.push(parse_change(v, raw.clone(), topic));
                    }
                }
            }
            let summary: Vec<String> = got
                .iter()
                .map(|c| {
                    format!(
                        "{} {}.{} ids={:?} record={} old_record={}",
                        c.kind(),
                        c.data["schema"],
                        c.data["table"],
                        c.ids,
                        c.data["record"],
                        c.data["old_record"]
                    )
                })
                .collect();
            panic!(
                "{}: expected exactly {n} changes on {topic}, received {}:\n  {}\nother frames after them: {:?}",
                self.vsn,
                got.len(),
                summary.join("\n  "),
                extra.iter().filter(|f| !f.is_event("postgres_changes")).collect::<Vec<_>>()
            );
        }
        got
    }

    /// Every frame that arrives within `dur` (heartbeat replies dropped).
    pub async fn drain(&mut self, dur: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + dur;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.recv(left).await {
                None => return out,
                Some(f) if f.is_heartbeat_reply() => {}
                Some(f @ Frame::Close(_)) => {
                    out.push(f);
                    return out;
                }
                Some(f) => out.push(f),
            }
        }
    }

    pub async fn heartbeat(&mut self) {
        let r = self.push(None, "phoenix", "heartbeat", &json!({})).await;
        let reply = self.expect_reply(&r, T).await;
        assert_eq!(reply["payload"]["status"], "ok", "heartbeat reply {reply}");
    }
}

/// Checks an ok join reply echoing `entries` (each + integer `id`, in order); returns the ids.
pub fn check_join_reply(vsn: Vsn, reply: &Value, topic: &str, join_ref: &str, entries: &Value) -> Vec<u64> {
    let want_join_ref = if vsn == Vsn::V2 { json!(join_ref) } else { Value::Null };
    assert_eq!(reply["topic"], topic, "{reply}");
    assert_eq!(reply["join_ref"], want_join_ref, "{reply}");
    assert_eq!(reply["payload"]["status"], "ok", "{vsn}: join {topic} refused: {reply}");
    let echoed = reply["payload"]["response"]["postgres_changes"]
        .as_array()
        .unwrap_or_else(|| panic!("join reply without response.postgres_changes: {reply}"));
    let sent = entries.as_array().expect("entries array");
    assert_eq!(echoed.len(), sent.len(), "join reply echoes every entry: {reply}");
    let mut ids = Vec::new();
    for (e, s) in echoed.iter().zip(sent) {
        let id = e["id"].as_u64().unwrap_or_else(|| panic!("entry id is not a non-negative integer: {e}"));
        let mut without: Map<String, Value> = e.as_object().expect("entry object").clone();
        without.remove("id");
        assert_eq!(&Value::Object(without), s, "entry echoed as sent (plus id): {reply}");
        ids.push(id);
    }
    ids
}

/// Checks the envelope of a `postgres_changes` frame and extracts it.
pub fn parse_change(v: &Value, raw: String, topic: &str) -> Change {
    assert_eq!(v["topic"], topic, "change on another topic: {raw}");
    assert_eq!(v["ref"], Value::Null, "postgres_changes ref must be null: {raw}");
    assert_eq!(v["join_ref"], Value::Null, "postgres_changes join_ref must be null: {raw}");
    let payload = v["payload"].as_object().unwrap_or_else(|| panic!("payload not an object: {raw}"));
    let mut keys: Vec<&String> = payload.keys().collect();
    keys.sort();
    assert_eq!(keys, ["data", "ids"], "payload has exactly ids and data: {raw}");
    let ids: Vec<u64> = payload["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("ids not an array: {raw}"))
        .iter()
        .map(|i| i.as_u64().unwrap_or_else(|| panic!("id not an integer: {raw}")))
        .collect();
    let mut data = payload["data"].clone();
    let commit_timestamp = data["commit_timestamp"].clone();
    normalize_ts(&mut data);
    Change { ids: sorted(ids), data, commit_timestamp, raw }
}
