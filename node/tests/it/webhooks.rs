//! Lifecycle webhooks on one node: a local receiver checks every signature; sockets connect and end
//! in the ways the node knows, users go online once and offline after the grace, a 500 is retried.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::support::webhook::Receiver;
use crate::support::ws::WireFrame as _;

/// A node with webhooks to `receiver`, a short batch window and `extra` flags.
fn server(receiver: &Receiver, extra: &[&str]) -> Server {
    let mut args = receiver.flags();
    args.extend(["--webhook-batch-ms", "20"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A token of user `sub` (no `sub` claim when `None`).
fn token_of(secret: &str, sub: Option<&str>) -> String {
    let mut claims = json!({"role": "authenticated", "iat": now(), "exp": now() + 3600});
    if let Some(sub) = sub {
        claims["sub"] = json!(sub);
    }
    sign(secret, &claims)
}

async fn connect_as(server: &Server, sub: Option<&str>) -> Client {
    let url =
        server.ws_url_at("/socket/websocket", &format!("apikey={}&vsn=2.0.0", token_of(&server.secret, sub)));
    Client::connect(&url, realtime_proto::Vsn::V2).await.expect("connect")
}

/// The `socket_id` of the one `socket.connect` of `user` that is not in `seen`.
async fn next_socket(receiver: &Receiver, user: Option<&str>, seen: &[u64]) -> u64 {
    let connects = receiver.wait_for("socket.connect", None, seen.len() + 1, T).await;
    let fresh: Vec<&Value> = connects
        .iter()
        .filter(|e| e["user_id"] == json!(user) && !seen.contains(&e["socket_id"].as_u64().unwrap()))
        .collect();
    assert_eq!(fresh.len(), 1, "one new socket.connect of {user:?}: {connects:#?}");
    fresh[0]["socket_id"].as_u64().expect("socket_id is a number")
}

async fn disconnect_of(receiver: &Receiver, socket: u64) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let found: Vec<Value> = receiver
            .named("socket.disconnect", None)
            .into_iter()
            .filter(|e| e["socket_id"] == socket)
            .collect();
        if let Some(event) = found.first() {
            assert_eq!(found.len(), 1, "one disconnect per socket: {found:#?}");
            return event.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no socket.disconnect for {socket}: {:#?}",
            receiver.events()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn t10_connect_and_disconnect_carry_user_socket_and_reason() {
    let receiver = Receiver::start("127.0.0.1", &[]).await;
    let mut server = server(&receiver, &["--idle-timeout-ms", "1500", "--node-id", "hooks-node"]);
    let mut seen = Vec::new();

    // Client close: the client's code.
    let alice = connect_as(&server, Some("alice")).await;
    let id = next_socket(&receiver, Some("alice"), &seen).await;
    seen.push(id);
    let connect = receiver.named("socket.connect", Some("alice")).remove(0);
    assert_eq!(connect["node"], "hooks-node");
    assert!(connect["at"].as_u64().is_some() && connect["id"].as_str().is_some(), "{connect}");
    alice.close().await;
    let event = disconnect_of(&receiver, id).await;
    assert_eq!(
        (&event["reason"], &event["code"], &event["user_id"]),
        (&json!("client_closed"), &json!(1000), &json!("alice"))
    );

    // A token without `sub`: user_id null. It sends nothing, so the idle timeout ends it.
    let mut anonymous = connect_as(&server, None).await;
    let id = next_socket(&receiver, None, &seen).await;
    seen.push(id);
    let event = disconnect_of(&receiver, id).await;
    assert_eq!((&event["reason"], &event["code"]), (&json!("heartbeat_timeout"), &json!(1000)), "{event}");
    assert_eq!(event["user_id"], Value::Null);
    assert!(anonymous.recv(T).await.is_some_and(|f| f.close_code().is_some()), "the socket was closed");

    // A client that vanishes without a close frame.
    let mut gone = connect_as(&server, Some("bob")).await;
    let id = next_socket(&receiver, Some("bob"), &seen).await;
    seen.push(id);
    gone.heartbeat().await;
    drop(gone);
    let event = disconnect_of(&receiver, id).await;
    assert_eq!((&event["reason"], &event["code"]), (&json!("connection_lost"), &Value::Null), "{event}");

    // The drain: 1012, delivered before the process exits. Heartbeats keep it past the idle timeout.
    let mut carol = connect_as(&server, Some("carol")).await;
    let id = next_socket(&receiver, Some("carol"), &seen).await;
    carol.heartbeat().await;
    server.sigterm();
    // Waited for without blocking this runtime: the receiver runs on it and must answer the node's
    // last batches while it drains.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while server.proc.try_wait().expect("wait").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "exited on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = disconnect_of(&receiver, id).await;
    assert_eq!((&event["reason"], &event["code"]), (&json!("server_shutdown"), &json!(1012)), "{event}");
    // A single node that stops reports its users offline (nobody else will): the one it closed, and
    // those still in their grace, each once.
    for user in ["carol", "alice", "bob"] {
        let offline = receiver.named("user.offline", Some(user));
        assert_eq!(offline.len(), 1, "{user}: {:#?}", receiver.events());
        assert_eq!(offline[0]["node"], "hooks-node");
    }
}

#[tokio::test]
async fn t20_a_user_is_online_once_does_not_flap_and_goes_offline_after_the_grace() {
    const GRACE_MS: u64 = 3_000;
    let receiver = Receiver::start("127.0.0.1", &[]).await;
    let server = server(&receiver, &["--offline-grace-ms", &GRACE_MS.to_string()]);
    let mut seen = Vec::new();
    let first = connect_as(&server, Some("dana")).await;
    seen.push(next_socket(&receiver, Some("dana"), &seen).await);
    let second = connect_as(&server, Some("dana")).await;
    seen.push(next_socket(&receiver, Some("dana"), &seen).await);
    receiver.wait_for("user.online", Some("dana"), 1, T).await;
    // A socket without `sub` has no user events.
    let anonymous = connect_as(&server, None).await;
    seen.push(next_socket(&receiver, None, &seen).await);
    anonymous.close().await;

    first.close().await;
    second.close().await;
    disconnect_of(&receiver, seen[1]).await;
    // Back at once, well within the grace.
    let third = connect_as(&server, Some("dana")).await;
    let id = next_socket(&receiver, Some("dana"), &seen).await;
    third.close().await;
    let last = disconnect_of(&receiver, id).await;
    let offline =
        receiver.wait_for("user.offline", Some("dana"), 1, T + Duration::from_millis(GRACE_MS)).await;
    // Nothing more comes: one online, one offline, and the offline counts its grace from the last socket.
    tokio::time::sleep(QUIET).await;
    assert_eq!(receiver.named("user.online", Some("dana")).len(), 1, "{:#?}", receiver.events());
    assert_eq!(receiver.named("user.offline", Some("dana")).len(), 1, "{:#?}", receiver.events());
    let waited = offline[0]["at"].as_u64().unwrap() - last["at"].as_u64().unwrap();
    assert!(waited >= GRACE_MS, "offline {waited} ms after the last socket left");
    assert_eq!(offline[0]["socket_id"], Value::Null);
    assert!(receiver.named("user.online", None).iter().all(|e| e["user_id"] == "dana"), "no anonymous user");
}

#[tokio::test]
async fn t30_a_batch_answered_500_is_sent_again() {
    let receiver = Receiver::start("127.0.0.1", &[500]).await;
    let server = server(&receiver, &["--webhook-backoff-ms", "50"]);
    let _socket = connect_as(&server, Some("erin")).await;
    receiver.wait_for("socket.connect", Some("erin"), 1, T).await;
    let requests = receiver.requests();
    assert_eq!((requests[0].status, requests[1].status), (500, 200), "{requests:?}");
    assert_eq!(requests[0].body, requests[1].body, "the same batch, byte for byte");
    let metrics = http().get(server.http("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("realtime_webhook_requests_total 2"), "{metrics}");
}

#[tokio::test]
async fn t40_a_full_queue_drops_and_counts() {
    // Nobody listens at the URL, batches of one event are retried for seconds: of the ten events, the
    // one-slot queue holds one while the first is retried, the others are dropped.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{unused}/hooks");
    let server = Server::start(&[
        "--webhook-url",
        &url,
        "--webhook-secret",
        "s",
        "--webhook-queue",
        "1",
        "--webhook-batch-max",
        "1",
        "--webhook-backoff-ms",
        "2000",
    ]);
    for _ in 0..5 {
        connect_as(&server, Some("fay")).await.close().await;
    }
    let deadline = std::time::Instant::now() + T;
    loop {
        let metrics = http().get(server.http("/metrics")).send().await.unwrap().text().await.unwrap();
        let dropped = metrics
            .lines()
            .find_map(|l| l.strip_prefix("realtime_webhook_events_dropped_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if dropped > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no drop counted: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
