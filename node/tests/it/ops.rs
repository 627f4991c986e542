//! Operations: health endpoints, Prometheus metrics, and the SIGTERM drain.

use std::time::{Duration, Instant};

use realtime_proto::binary::BinaryEncoding;
use realtime_proto::Vsn;
use serde_json::json;

use crate::common::*;
use crate::support::raw::metric_sum;

async fn get(server: &Server, path: &str) -> (u16, String, String) {
    let resp = http().get(server.http(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    read_response(resp).await
}

/// Polls /metrics until `metric` sums to `want` (gauges may lag a little).
async fn wait_metric(server: &Server, metric: &str, want: f64) {
    let deadline = Instant::now() + T;
    loop {
        let (_, _, body) = get(server, "/metrics").await;
        let got = metric_sum(&body, metric);
        if got == Some(want) {
            return;
        }
        if Instant::now() >= deadline {
            panic!("{metric} = {got:?}, want {want}\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn t80_health_endpoints() {
    let server = Server::start(&[]);
    let (status, _ct, body) = get(&server, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"), "/healthz");
    let (status, _ct, body) = get(&server, "/readyz").await;
    assert_eq!((status, body.trim()), (200, "ready"), "/readyz");
}

#[tokio::test]
async fn t81_metrics() {
    let server = Server::start(&[]);
    let topic = format!("realtime:{}", unique("metrics"));
    let mut v1 = server.client(Vsn::V1).await;
    let v1_jr = v1.join_ok(&topic, default_config()).await;
    let mut v2 = server.client(Vsn::V2).await;
    let v2_jr = v2.join_ok(&topic, default_config()).await;
    v1.broadcast_json(&v1_jr, &topic, "m", &json!({"a": 1})).await;
    v2.expect_event("broadcast", T).await;
    v2.broadcast_binary(&v2_jr, &topic, "m", BinaryEncoding::Json, b"{}").await;
    v1.expect_event("broadcast", T).await;
    // Refusals: a handshake without apikey and a join without a topic name.
    let (status, _, _) = raw_upgrade(&server.http("/socket/websocket?vsn=2.0.0"), &[]).await;
    assert_eq!(status, 401);
    v1.join_err("realtime:", default_config()).await;

    wait_metric(&server, "realtime_connections", 2.0).await;
    let (status, ct, body) = get(&server, "/metrics").await;
    assert_eq!(status, 200, "/metrics");
    assert!(ct.starts_with("text/plain"), "/metrics content-type {ct:?}");
    let joins = metric_sum(&body, "realtime_joins_total")
        .unwrap_or_else(|| panic!("no realtime_joins_total\n{body}"));
    assert!(joins >= 2.0, "realtime_joins_total = {joins}");
    assert!(
        body.lines().any(|l| l.starts_with("realtime_refusals_total{") && l.contains("reason=\"")),
        "realtime_refusals_total{{reason=...}} after refusals\n{body}"
    );
    let inn =
        metric_sum(&body, "realtime_messages_in_total").unwrap_or_else(|| panic!("no messages_in\n{body}"));
    assert!(inn >= 2.0, "realtime_messages_in_total = {inn}");
    let out =
        metric_sum(&body, "realtime_messages_out_total").unwrap_or_else(|| panic!("no messages_out\n{body}"));
    assert!(out >= 2.0, "realtime_messages_out_total = {out}");
    assert!(
        body.contains("# TYPE realtime_delivery_latency_seconds histogram"),
        "realtime_delivery_latency_seconds is a histogram\n{body}"
    );
    assert!(body.contains("realtime_delivery_latency_seconds_bucket{"), "histogram buckets\n{body}");
    let count = metric_sum(&body, "realtime_delivery_latency_seconds_count").unwrap_or(0.0);
    assert!(count >= 1.0, "delivery latency observations: {count}\n{body}");

    // The connection gauge goes back down.
    v1.close().await;
    drop(v2);
    wait_metric(&server, "realtime_connections", 0.0).await;
}

#[tokio::test]
async fn t82_sigterm_drains_with_system_message_and_1012() {
    let mut server = Server::start(&["--shutdown-grace-ms", "3000"]);
    let mut c1 = server.client(Vsn::V1).await;
    c1.join_ok("realtime:a", default_config()).await;
    c1.join_ok("realtime:b", default_config()).await;
    let mut c2 = server.client(Vsn::V2).await;
    let c2_jr = c2.join_ok("realtime:a", default_config()).await;
    let mut idle = server.client(Vsn::V2).await;
    idle.heartbeat().await;

    let started = Instant::now();
    server.sigterm();

    let disconnect = json!({"extension": "system", "status": "ok", "message": "Server requested disconnect"});
    for (c, topics, jr) in
        [(&mut c1, vec!["realtime:a", "realtime:b"], None), (&mut c2, vec!["realtime:a"], Some(c2_jr))]
    {
        let vsn = c.vsn;
        let mut seen = Vec::new();
        let code = loop {
            match c.next_frame(Duration::from_secs(6)).await {
                Frame::Close(code) => break code,
                Frame::Text(v) if v["event"] == "system" => {
                    assert_eq!(v["payload"], disconnect, "{vsn}: drain system payload");
                    assert_eq!(v["ref"], serde_json::Value::Null, "{vsn}: {v}");
                    if let Some(jr) = &jr {
                        assert_eq!(v["join_ref"], json!(jr), "{vsn}: system push carries the join_ref");
                    }
                    seen.push(v["topic"].as_str().unwrap_or_default().to_owned());
                }
                other => panic!("{vsn}: unexpected frame during drain: {other:?}"),
            }
        };
        seen.sort();
        assert_eq!(seen, topics, "{vsn}: one system message per joined channel");
        assert_eq!(code, Some(1012), "{vsn}: close code on SIGTERM");
    }
    let code = idle.expect_close(Duration::from_secs(6)).await;
    assert_eq!(code, Some(1012), "socket without channels: close code on SIGTERM");

    let status = server.proc.wait_exit(Duration::from_millis(3000 + 2000));
    let elapsed = started.elapsed();
    assert!(status.is_some(), "process still running {elapsed:?} after SIGTERM (grace 3000 ms)");
    assert!(elapsed < Duration::from_millis(5000), "exit took {elapsed:?}");
}

/// Connects `n` sockets and expects the next one to be refused with 429.
async fn expect_connection_cap(server: &Server, n: usize, what: &str) {
    let mut held = Vec::new();
    for i in 0..n {
        let c = Client::connect(&server.ws_url(Vsn::V2), Vsn::V2)
            .await
            .unwrap_or_else(|e| panic!("{what}: socket {} of {n} refused: {e}", i + 1));
        held.push(c);
    }
    let url = server.http(&format!("/socket/websocket?apikey={}&vsn=2.0.0", server.token()));
    let (status, _ct, body) = raw_upgrade(&url, &[]).await;
    assert_eq!(status, 429, "{what}: socket {} must be refused: {body}", n + 1);
}

#[tokio::test]
async fn t83_settings_precedence_flag_env_file() {
    let dir = std::env::temp_dir().join(format!("realtime-it-cfg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("realtime.toml");
    std::fs::write(&file, "max_connections = 1\n").expect("write config");
    let file = file.to_str().expect("utf-8 path").to_owned();

    let server = Server::start(&["--config", &file]);
    expect_connection_cap(&server, 1, "file only").await;
    drop(server);

    let server = Server::start_with_env(&[], &[("REALTIME_CONFIG", &file)]);
    expect_connection_cap(&server, 1, "file via REALTIME_CONFIG").await;
    drop(server);

    let server = Server::start_with_env(&["--config", &file], &[("REALTIME_MAX_CONNECTIONS", "2")]);
    expect_connection_cap(&server, 2, "env over file").await;
    drop(server);

    let server = Server::start_with_env(
        &["--config", &file, "--max-connections", "3"],
        &[("REALTIME_MAX_CONNECTIONS", "2")],
    );
    expect_connection_cap(&server, 3, "flag over env").await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// CRC-32 (IEEE), as the raft store frames its records.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn t84_raft_log_damaged_before_its_tail_stops_the_node() {
    // A raft log (magic RLOG, version 1) of seven framed records, the fourth with 16 flipped bytes:
    // not a torn tail, so the node must refuse to start and say where, not drop records 4–7.
    let dir = std::env::temp_dir().join(format!("realtime-it-raft-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("raft")).unwrap();
    let mut log = b"RLOG\x01".to_vec();
    let mut starts = Vec::new();
    for _ in 0..7 {
        starts.push(log.len());
        let payload = br#"{"Committed":null}"#;
        log.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        log.extend_from_slice(&crc32(payload).to_le_bytes());
        log.extend_from_slice(payload);
    }
    for byte in &mut log[starts[3] + 2..starts[3] + 18] {
        *byte ^= 0x5a;
    }
    let log_path = dir.join("raft").join("log");
    std::fs::write(&log_path, &log).unwrap();

    let cluster = "127.0.0.241:4790";
    let data_dir = dir.display().to_string();
    let stderr = std::env::temp_dir().join(format!("realtime-it-{}.log", uuid::Uuid::new_v4().simple()));
    let args = ["--seeds", cluster, "--cluster-bind", cluster, "--data-dir", &data_dir];
    let (mut proc, _lines) = crate::support::process::spawn("it-secret", &args, &[], stderr, 40);
    let status = proc.wait_exit(T).expect("the node exits on its own");
    let logged = proc.log_tail(usize::MAX);
    assert!(!status.success(), "exit status {status}\n{logged}");
    let expected = format!("{} is damaged at byte {}", log_path.display(), starts[3]);
    assert!(logged.contains(&expected), "want {expected:?} in:\n{logged}");
    assert_eq!(std::fs::read(&log_path).unwrap(), log, "the damaged log is left as it was");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn t85_admin_token_guards_cluster_and_metrics_not_probes() {
    const ADMIN: &str = "it-admin-token-0123456789";
    let server = Server::start(&["--admin-token", ADMIN]);
    let service_role = sign(&server.secret, &json!({"role": "service_role", "exp": now() + 600}));
    let anon = sign(&server.secret, &json!({"role": "anon", "exp": now() + 600}));
    let get_as = |path: &'static str, bearer: Option<String>| {
        let mut request = http().get(server.http(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        async move { read_response(request.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))).await }
    };
    for path in ["/cluster", "/metrics"] {
        for (who, bearer) in [
            ("nobody", None),
            ("a wrong token", Some("it-admin-token-012345678".to_owned())),
            ("an anon JWT", Some(anon.clone())),
        ] {
            let (status, _, body) = get_as(path, bearer).await;
            assert_eq!(status, 401, "{path} as {who}: {body}");
            assert!(!body.contains("\"node\"") && !body.contains("realtime_"), "{path} leaked: {body}");
        }
        for (who, bearer) in
            [("the admin token", ADMIN.to_owned()), ("a service_role JWT", service_role.clone())]
        {
            let (status, _, body) = get_as(path, Some(bearer)).await;
            assert_eq!(status, 200, "{path} as {who}: {body}");
        }
    }
    for path in ["/healthz", "/readyz"] {
        let (status, _, body) = get_as(path, None).await;
        assert_eq!(status, 200, "{path} stays open: {body}");
    }
}

#[tokio::test]
async fn t86_a_clustered_node_without_admin_token_warns_at_start() {
    const WARNING: &str = "REALTIME_ADMIN_TOKEN is not set";
    for (i, admin) in [(0u8, None), (1, Some("it-admin-token-0123456789"))] {
        let dir = std::env::temp_dir().join(format!("realtime-it-admin-{}", uuid::Uuid::new_v4().simple()));
        let cluster = format!("127.0.0.{}:4791", 242 + i);
        let data_dir = dir.display().to_string();
        let mut args = vec!["--seeds", &cluster, "--cluster-bind", &cluster, "--data-dir", &data_dir];
        if let Some(token) = admin {
            args.extend(["--admin-token", token]);
        }
        let server = Server::start(&args);
        // Ready once it has joined (alone): the warning, if any, was logged before the cluster started.
        let deadline = Instant::now() + Duration::from_secs(15);
        while get(&server, "/readyz").await.0 != 200 {
            assert!(Instant::now() < deadline, "the single clustered node never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let logged = server.proc.log_tail(usize::MAX);
        assert_eq!(logged.contains(WARNING), admin.is_none(), "admin token {admin:?}:\n{logged}");
        // Raft started (it runs with a data dir), but openraft's INFO chatter is held back (issue 20).
        assert!(logged.contains("raft started"), "{logged}");
        let chatter: Vec<&str> =
            logged.lines().filter(|l| l.contains(" INFO ") && l.contains("openraft")).collect();
        assert!(chatter.is_empty(), "openraft at INFO: {chatter:#?}");
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Logs a shipper can store: JSON, one object per line, a socket's lines carrying its `conn` and
/// `user`; in text, no colour escapes when stderr is a file; openraft's INFO chatter held back.
#[tokio::test]
async fn t87_logs_ship_as_json_or_plain_text() {
    let envs = [("REALTIME_LOG_FORMAT", "json"), ("RUST_LOG", "info,realtime_node::socket=debug")];
    let server = Server::start_with_env(&["--idle-timeout-ms", "300"], &envs);
    let claims = json!({"role": "authenticated", "sub": "log-user", "exp": crate::support::jwt::now() + 60});
    let token = crate::support::jwt::sign(&server.secret, &claims);
    let url = server.ws_url_at("/socket/websocket", &format!("apikey={token}&vsn=1.0.0"));
    let mut client = Client::connect(&url, Vsn::V1).await.expect("connect");
    // It sends nothing: the idle timeout closes it, and the socket logs that (at debug, in its span).
    assert!(client.expect_close(Duration::from_secs(5)).await.is_some(), "closed by the idle timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let closed = loop {
        let logged = server.proc.log_tail(usize::MAX);
        let lines: Vec<serde_json::Value> = logged
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
            .collect();
        assert!(lines.iter().all(|l| l["level"].is_string() && l["target"].is_string()), "{logged}");
        if let Some(line) = lines.iter().find(|l| l["message"] == "socket closed by the server") {
            break line.clone();
        }
        assert!(Instant::now() < deadline, "no line for the closed socket:\n{logged}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let span = &closed["span"];
    assert_eq!((&span["name"], &span["user"]), (&json!("socket"), &json!("log-user")), "{closed}");
    assert!(span["conn"].is_u64(), "{closed}");
    drop(server);

    // Text, to a file: no ANSI escapes; nothing from openraft at INFO (it is not clustered here, so
    // this only checks the text).
    let server = Server::start(&[]);
    let client = server.client(Vsn::V1).await;
    drop(client);
    let logged = server.proc.log_tail(usize::MAX);
    assert!(logged.contains(" INFO "), "{logged}");
    assert!(!logged.contains('\u{1b}'), "escape codes in a log file:\n{logged}");
}
