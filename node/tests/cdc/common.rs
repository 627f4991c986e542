//! Shared fixtures for the Postgres Changes tests: a PostgreSQL cluster (one per test process unless
//! `REALTIME_TEST_DATABASE_URL` names one), a database per test with a Supabase-like schema, the
//! server process pointed at it, a WebSocket client for both serializers and payload helpers.
//!
//! Every wait is bounded; failures print what was received.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime_proto::Vsn;
use serde_json::{json, Map, Value};
use tokio::net::TcpStream;
use tokio_postgres::{Client as PgClient, NoTls};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Default bound for anything that is expected to happen.
pub const T: Duration = Duration::from_secs(10);
/// How long "nothing (more) arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(800);
/// Both serializers, for tests that loop over them.
pub const VSNS: [Vsn; 2] = [Vsn::V1, Vsn::V2];

pub const SUBSCRIBED: &str = "Subscribed to PostgreSQL";

// ---------------------------------------------------------------------------------------------------
// PostgreSQL cluster

static CLUSTER: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

/// Roles every database shares (roles are cluster-wide); tolerant of concurrent creation.
const ROLES_SQL: &str = r#"
do $$ begin
  begin create role anon nologin noinherit; exception when duplicate_object or unique_violation then null; end;
  begin create role authenticated nologin noinherit; exception when duplicate_object or unique_violation then null; end;
  begin create role service_role nologin noinherit bypassrls; exception when duplicate_object or unique_violation then null; end;
end $$;
"#;

/// The per-database Supabase-like schema: `auth.uid()`, `auth.role()`, `auth.jwt()`, grants, and an
/// empty `supabase_realtime` publication.
const SCHEMA_SQL: &str = r#"
create schema auth;
create function auth.uid() returns uuid language sql stable as $$
  select nullif(coalesce(current_setting('request.jwt.claim.sub', true),
                         current_setting('request.jwt.claims', true)::jsonb ->> 'sub'), '')::uuid
$$;
create function auth.role() returns text language sql stable as $$
  select nullif(coalesce(current_setting('request.jwt.claim.role', true),
                         current_setting('request.jwt.claims', true)::jsonb ->> 'role'), '')::text
$$;
create function auth.jwt() returns jsonb language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
grant usage on schema public to anon, authenticated, service_role;
grant usage on schema auth to anon, authenticated, service_role;
grant execute on all functions in schema auth to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
create publication supabase_realtime;
"#;

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
        Server::start(self, extra)
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
    child: Child,
    log: PathBuf,
    /// When the listening line was read.
    pub started: Instant,
}

impl Server {
    fn start(db: &Db, extra: &[&str]) -> Server {
        let log = std::env::temp_dir().join(format!("realtime-cdc-{}.log", short_id()));
        let log_file = std::fs::File::create(&log).expect("create server log file");
        let data_dir = db.data_dir.display().to_string();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_realtime"));
        cmd.args(["--bind", "127.0.0.1:0", "--jwt-secret", &db.secret])
            .args(["--join-error-delay-ms", "0", "--connect-error-delay-ms", "0"])
            .args(["--database-url", &db.url, "--slot", &db.slot, "--data-dir", &data_dir])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        for (k, _) in std::env::vars() {
            if k.starts_with("REALTIME_") || k == "DATABASE_URL" {
                cmd.env_remove(k);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().expect("spawn the realtime binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut server = Server { port: 0, child, log, started: Instant::now() };
        let deadline = Instant::now() + Duration::from_secs(20);
        let prefix = "realtime listening on http://127.0.0.1:";
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = line.trim().strip_prefix(prefix) {
                        server.port = port.parse().unwrap_or_else(|_| panic!("bad listening line {line:?}"));
                        server.started = Instant::now();
                        return server;
                    }
                }
                Err(e) => {
                    let status = server.child.try_wait();
                    panic!(
                        "server did not print its listening line within 20 s ({e}; exit {status:?}); log:\n{}",
                        server.log_tail(40)
                    )
                }
            }
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
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
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not exit within 15 s of SIGTERM");
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- server stderr ({}), last 80 lines ----\n{}",
                self.log.display(),
                self.log_tail(80)
            );
        } else if std::env::var_os("IT_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// JWT

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

pub fn sign(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("sign JWT")
}

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

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One frame from the server.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A text frame normalised to `{"topic","event","payload","ref","join_ref"}` (`join_ref` null for
    /// 1.0.0), and its raw text.
    Text(Value, String),
    /// The server closed the socket (close code if a close frame was received).
    Close(Option<u16>),
}

impl Frame {
    pub fn value(&self) -> Option<&Value> {
        match self {
            Frame::Text(v, _) => Some(v),
            Frame::Close(_) => None,
        }
    }

    fn is_heartbeat_reply(&self) -> bool {
        matches!(self, Frame::Text(v, _) if v["topic"] == "phoenix" && v["event"] == "phx_reply")
    }

    pub fn is_event(&self, event: &str) -> bool {
        matches!(self, Frame::Text(v, _) if v["event"] == event)
    }
}

pub struct Client {
    ws: Ws,
    pub vsn: Vsn,
    next_ref: u64,
    pending: VecDeque<Frame>,
    closed: Option<Option<u16>>,
    /// How the socket ended when it was not a close frame (`EOF` or the read error).
    pub ended_by: Option<String>,
}

impl Client {
    pub async fn connect(url: &str, vsn: Vsn) -> Client {
        let (ws, _resp) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket handshake timed out")
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client { ws, vsn, next_ref: 0, pending: VecDeque::new(), closed: None, ended_by: None }
    }

    pub fn make_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    pub async fn send_text(&mut self, text: String) {
        tokio::time::timeout(T, self.ws.send(Message::text(text)))
            .await
            .unwrap_or_else(|_| panic!("{}: send blocked", self.vsn))
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.vsn));
    }

    pub fn encode(
        &self,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: &Value,
    ) -> String {
        match self.vsn {
            Vsn::V1 => json!({"topic": topic, "event": event, "payload": payload, "ref": msg_ref, "join_ref": join_ref})
                .to_string(),
            Vsn::V2 => json!([join_ref, msg_ref, topic, event, payload]).to_string(),
        }
    }

    /// Sends a push with a fresh ref; returns the ref.
    pub async fn push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: &Value,
    ) -> String {
        let r = self.make_ref();
        let text = self.encode(join_ref, Some(&r), topic, event, payload);
        self.send_text(text).await;
        r
    }

    /// Sends `phx_join` (ref == join_ref) with `payload`; returns the join ref without waiting.
    pub async fn send_join(&mut self, topic: &str, payload: &Value) -> String {
        let r = self.make_ref();
        let text = self.encode(Some(&r), Some(&r), topic, "phx_join", payload);
        self.send_text(text).await;
        r
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

    /// The next frame from the socket (queued ones first), or `None` after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Frame> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        self.read_socket(timeout).await
    }

    async fn read_socket(&mut self, timeout: Duration) -> Option<Frame> {
        if let Some(code) = self.closed {
            return Some(Frame::Close(code));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            let msg = match next {
                None | Some(Err(_)) => {
                    self.ended_by = Some(match next {
                        Some(Err(e)) => e.to_string(),
                        _ => "EOF".to_owned(),
                    });
                    self.closed = Some(None);
                    return Some(Frame::Close(None));
                }
                Some(Ok(m)) => m,
            };
            match msg {
                Message::Text(t) => {
                    return Some(Frame::Text(self.normalise(t.as_str()), t.as_str().to_owned()))
                }
                Message::Binary(b) => panic!("{}: unexpected binary frame {b:?}", self.vsn),
                Message::Close(cf) => {
                    let code = cf.map(|c| u16::from(c.code));
                    self.closed = Some(code);
                    return Some(Frame::Close(code));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    fn normalise(&self, text: &str) -> Value {
        let v: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("server text frame is not JSON ({e}): {text:?}"));
        match self.vsn {
            Vsn::V1 => {
                let obj = v.as_object().unwrap_or_else(|| panic!("1.0.0 frame is not an object: {text}"));
                assert!(!obj.contains_key("join_ref"), "1.0.0 server frames never carry join_ref: {text}");
                assert_eq!(obj.len(), 4, "1.0.0 frame must have exactly topic/event/payload/ref: {text}");
                json!({"topic": v["topic"], "event": v["event"], "payload": v["payload"], "ref": v["ref"], "join_ref": null})
            }
            Vsn::V2 => {
                let arr = v.as_array().unwrap_or_else(|| panic!("2.0.0 frame is not an array: {text}"));
                assert_eq!(arr.len(), 5, "2.0.0 frame must have 5 elements: {text}");
                json!({"topic": arr[2], "event": arr[3], "payload": arr[4], "ref": arr[1], "join_ref": arr[0]})
            }
        }
    }

    /// The next frame that is not a heartbeat reply; panics after `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Frame {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(f) if f.is_heartbeat_reply() => continue,
                Some(f) => return f,
                None => panic!("{}: nothing received within {timeout:?}", self.vsn),
            }
        }
    }

    /// Waits for the `phx_reply` with this ref; other frames stay queued in order.
    pub async fn expect_reply(&mut self, msg_ref: &str, timeout: Duration) -> Value {
        let is_reply =
            |f: &Frame| matches!(f, Frame::Text(v, _) if v["event"] == "phx_reply" && v["ref"] == msg_ref);
        if let Some(pos) = self.pending.iter().position(is_reply) {
            return self.pending.remove(pos).and_then(|f| f.value().cloned()).expect("queued reply");
        }
        let deadline = Instant::now() + timeout;
        let mut kept = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(f) = self.read_socket(left).await else { break None };
            if is_reply(&f) {
                break f.value().cloned();
            }
            if let Frame::Close(code) = f {
                panic!(
                    "{}: socket closed ({code:?}) while waiting for reply {msg_ref}; got {kept:?}",
                    self.vsn
                )
            }
            kept.push(f);
        };
        self.pending.extend(kept.iter().cloned());
        found.unwrap_or_else(|| {
            panic!("{}: no reply to ref {msg_ref} within {timeout:?}; got {kept:?}", self.vsn)
        })
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

    /// Asserts that nothing but heartbeat replies arrives for `dur`.
    pub async fn expect_silence(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.recv(left).await {
                None => return,
                Some(f) if f.is_heartbeat_reply() => continue,
                Some(f) => panic!("{}: expected silence, got {f:?}", self.vsn),
            }
        }
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

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
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
