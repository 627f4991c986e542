//! The notifications inbox's API (issue 10, items 1, 3, 5): `POST /api/notifications` (service_role)
//! inserts a row whose `notification.new` reaches the user's socket; GraphQL at `/graphql` lists,
//! marks read and deletes the caller's own notifications only; every refusal path (401/403/422/429,
//! 413, 503), the depth limit and the introspection switch.

use std::time::Duration;

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(T).build().expect("reqwest client")
}

/// `POST /api/notifications` with `token` as a Bearer; (status, body).
async fn create(port: u16, token: &str, body: &str) -> (u16, Value) {
    let response = http()
        .post(format!("http://127.0.0.1:{port}/api/notifications"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST /api/notifications");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A GraphQL request as `token` (none when empty); (status, body).
async fn gql_at(port: u16, path: &str, token: &str, query: &str, variables: Value) -> (u16, Value) {
    let mut request = http()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .json(&json!({"query": query, "variables": variables}));
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST /graphql");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

async fn gql(port: u16, token: &str, query: &str, variables: Value) -> (u16, Value) {
    gql_at(port, "/graphql", token, query, variables).await
}

const FIELDS: &str = "id userId type content readAt createdAt";

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn t120_a_rest_insert_is_pushed_and_its_owner_lists_marks_and_deletes_it() {
    let db = Db::migrated("").await;
    let server = db.server(&[]);
    let (ann, ben) = (new_uuid(), new_uuid());
    let (ann_token, ben_token) = (db.token("authenticated", &ann), db.token("authenticated", &ben));
    let service = db.token("service_role", &new_uuid());
    let mut socket = server.client(&ann_token, Vsn::V1).await;
    let topic = format!("realtime:notifications:{ann}");
    assert_eq!(socket.join_with(&topic, &json!({"config": {}})).await.1["status"], "ok");

    // The stream may still be starting: create until the first push arrives.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut created = Vec::new();
    let first = loop {
        let (status, row) =
            create(server.port, &service, &json!({"user_id": ann, "type": "probe"}).to_string()).await;
        assert_eq!(status, 201, "{row}");
        created.push(row);
        if let Some(f) = socket.recv(Duration::from_millis(300)).await {
            if let Some(v) = f.value().filter(|v| v["event"] == "broadcast") {
                break v.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "notification.new never pushed");
    };
    assert_eq!(first["payload"]["event"], "notification.new");
    assert!(created.iter().any(|row| row["id"] == first["payload"]["payload"]["id"]), "{first}");
    socket.drain(Duration::from_millis(300)).await;

    let (status, row) = create(
        server.port,
        &service,
        &json!({"user_id": ann, "type": "mention", "content": {"by": "ben", "n": [1, 2]}}).to_string(),
    )
    .await;
    assert_eq!(status, 201);
    let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "{row}");
    assert_eq!((row["user_id"].as_str(), row["type"].as_str()), (Some(ann.as_str()), Some("mention")));
    assert_eq!(row["content"], json!({"by": "ben", "n": [1, 2]}));
    assert_eq!(row["read_at"], Value::Null);
    let pushed = &socket.broadcasts(&topic, 1).await[0];
    assert_eq!(pushed["event"], "notification.new");
    assert_eq!(pushed["payload"]["id"], row["id"]);
    assert_eq!(pushed["payload"]["content"], row["content"]);
    let id = row["id"].as_str().unwrap().to_owned();

    // Listing: newest first, the caller's own only.
    let list = format!("query($unread: Boolean, $limit: Int, $before: String) {{ notifications(unreadOnly: $unread, limit: $limit, before: $before) {{ {FIELDS} }} }}");
    let (status, body) = gql(server.port, &ann_token, &list, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let rows = body["data"]["notifications"].as_array().unwrap().clone();
    assert_eq!(rows.len(), created.len() + 1);
    assert_eq!(rows[0]["id"], row["id"]);
    assert_eq!(rows[0]["userId"], json!(ann));
    assert_eq!(rows[0]["type"], "mention");
    assert_eq!(rows[0]["content"], row["content"]);
    assert_eq!(rows[0]["createdAt"], row["created_at"]);
    let stamps: Vec<&str> = rows.iter().map(|r| r["createdAt"].as_str().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "newest first: {stamps:?}");
    // limit and the before cursor page through them.
    let (_, page) = gql(server.port, &ann_token, &list, json!({"limit": 1})).await;
    assert_eq!(page["data"]["notifications"].as_array().unwrap().len(), 1);
    let (_, older) = gql(server.port, &ann_token, &list, json!({"before": rows[0]["createdAt"]})).await;
    let older = older["data"]["notifications"].as_array().unwrap().clone();
    assert!(!older.is_empty() && older.iter().all(|r| r["id"] != row["id"]), "{older:?}");
    let (_, bad) = gql(server.port, &ann_token, &list, json!({"before": "not a time"})).await;
    assert_eq!(code(&bad), "BAD_USER_INPUT", "{bad}");
    // Ben sees none of them.
    let (_, bens) = gql(server.port, &ben_token, &list, json!({})).await;
    assert_eq!(bens["data"]["notifications"], json!([]));

    // Ben cannot mark or delete Ann's; nothing changes.
    let mark = format!("mutation($id: ID!) {{ markNotificationRead(id: $id) {{ {FIELDS} }} }}");
    let delete = "mutation($id: ID!) { deleteNotification(id: $id) }";
    let (status, body) = gql(server.port, &ben_token, &mark, json!({"id": id})).await;
    assert_eq!((status, &body["data"]["markNotificationRead"]), (200, &Value::Null), "{body}");
    assert_eq!(code(&body), "NOT_FOUND");
    let (_, body) = gql(server.port, &ben_token, delete, json!({"id": id})).await;
    assert_eq!(body["data"]["deleteNotification"], false);
    let stored = db.json_rows(&format!("select read_at from realtime.notifications where id = '{id}'")).await;
    assert_eq!(stored, vec![Value::Null], "Ben's attempts touched nothing");

    // Ann marks it read (once: a second mark keeps the first time), then lists unread only.
    let (_, body) = gql(server.port, &ann_token, &mark, json!({"id": id})).await;
    let marked = body["data"]["markNotificationRead"].clone();
    assert_eq!(marked["id"], json!(id));
    assert!(marked["readAt"].is_string(), "{body}");
    let (_, again) = gql(server.port, &ann_token, &mark, json!({"id": id})).await;
    assert_eq!(again["data"]["markNotificationRead"]["readAt"], marked["readAt"]);
    let (_, unread) = gql(server.port, &ann_token, &list, json!({"unread": true})).await;
    let unread = unread["data"]["notifications"].as_array().unwrap().clone();
    assert_eq!(unread.len(), created.len());
    assert!(unread.iter().all(|r| r["id"] != json!(id) && r["readAt"].is_null()));
    let (_, body) = gql(server.port, &ann_token, &mark, json!({"id": "not-a-uuid"})).await;
    assert_eq!(code(&body), "NOT_FOUND");

    // Ann deletes it: true once, then false; the row is gone.
    let (_, body) = gql(server.port, &ann_token, delete, json!({"id": id})).await;
    assert_eq!(body["data"]["deleteNotification"], true);
    let (_, body) = gql(server.port, &ann_token, delete, json!({"id": id})).await;
    assert_eq!(body["data"]["deleteNotification"], false);
    assert!(db
        .json_rows(&format!("select id from realtime.notifications where id = '{id}'"))
        .await
        .is_empty());

    // The gateway prefix serves the same API.
    let (status, body) = gql_at(
        server.port,
        "/realtime/v1/graphql",
        &ann_token,
        "{ notifications(limit: 1) { id } }",
        json!({}),
    )
    .await;
    assert_eq!((status, body["data"]["notifications"].as_array().map(Vec::len)), (200, Some(1)), "{body}");
}

#[tokio::test]
async fn t121_rest_refuses_bad_tokens_roles_and_bodies() {
    let db = Db::migrated("").await;
    let server = db.server(&["--notifications-max-content-bytes", "100"]);
    let ann = new_uuid();
    let service = db.token("service_role", &new_uuid());
    let good = json!({"user_id": ann, "type": "t"}).to_string();
    let url = format!("http://127.0.0.1:{}/api/notifications", server.port);

    let none = http().post(&url).body(good.clone()).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    assert!(none.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(create(server.port, "not-a-jwt", &good).await.0, 401);
    let other_secret = sign("another-secret", &json!({"role": "service_role", "exp": now() + 60}));
    assert_eq!(create(server.port, &other_secret, &good).await.0, 401);
    let (status, body) = create(server.port, &db.token("authenticated", &ann), &good).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("creating notifications needs a service_role token"))
    );

    let cases = [
        ("nope".to_owned(), "the body must be a JSON object"),
        (json!({"type": "t"}).to_string(), "user_id is required"),
        (json!({"user_id": "x", "type": "t"}).to_string(), "user_id must be a UUID string"),
        (json!({"user_id": ann, "type": ""}).to_string(), "type must be a non-empty string"),
        (json!({"user_id": ann, "type": "t", "content": [1]}).to_string(), "content must be a JSON object"),
        (
            json!({"user_id": ann, "type": "t", "content": {"k": "x".repeat(200)}}).to_string(),
            "content is larger than 100 bytes",
        ),
        (
            json!({"user_id": ann, "type": "t", "content": {"k": "x".repeat(5000)}}).to_string(),
            "the body is larger than 1124 bytes",
        ),
    ];
    for (body, reason) in cases {
        let (status, answer) = create(server.port, &service, &body).await;
        assert_eq!((status, answer["error"].as_str()), (422, Some(reason)), "{body}");
    }
    assert!(db.json_rows("select id from realtime.notifications").await.is_empty(), "nothing was inserted");

    // The apikey header and query parameter work too, and so does the gateway prefix.
    let header = http()
        .post(format!("http://127.0.0.1:{}/realtime/v1/api/notifications", server.port))
        .header("apikey", &service)
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(header.status().as_u16(), 201);
    let query = http().post(format!("{url}?apikey={service}")).body(good).send().await.unwrap();
    assert_eq!(query.status().as_u16(), 201);
    assert_eq!(db.json_rows("select id from realtime.notifications").await.len(), 2);
}

#[tokio::test]
async fn t122_graphql_refuses_bad_callers_and_enforces_its_limits() {
    let db = Db::migrated("").await;
    let server = db.server(&[
        "--notifications-list-per-minute",
        "2",
        "--notifications-delete-per-minute",
        "1",
        "--graphql-max-depth",
        "3",
        "--graphql-max-body-bytes",
        "300",
    ]);
    let (ann, ben) = (new_uuid(), new_uuid());
    let (ann_token, ben_token) = (db.token("authenticated", &ann), db.token("authenticated", &ben));
    let list = "{ notifications { id } }";

    let (status, body) = gql(server.port, "", list, json!({})).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    assert_eq!(body["data"], Value::Null);
    assert_eq!(gql(server.port, "garbage", list, json!({})).await.0, 401);
    let (status, body) = gql(server.port, &db.token("authenticated", "not-a-uuid"), list, json!({})).await;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"));
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("sub"), "{body}");
    let no_sub = sign(&db.secret, &json!({"role": "authenticated", "exp": now() + 60}));
    assert_eq!(gql(server.port, &no_sub, list, json!({})).await.0, 401);

    // Depth: 4 levels against a limit of 3 (introspection is the only deep part of this schema).
    let deep = "{ __schema { queryType { fields { name } } } }";
    let (status, body) = gql(server.port, &ann_token, deep, json!({})).await;
    assert_eq!(status, 200);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nested too deep"), "{body}");
    assert!(body["data"].is_null(), "{body}");
    // Introspection is on by default.
    let (_, body) = gql(server.port, &ann_token, "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query", "{body}");

    // Body size.
    let padded = format!("{{ notifications {{ id }} }} #{}", "x".repeat(400));
    let (status, body) = gql(server.port, &ann_token, &padded, json!({})).await;
    assert_eq!((status, code(&body)), (413, "PAYLOAD_TOO_LARGE"), "{body}");

    // Rate limits: the introspection queries above counted nothing; two lists a minute for Ann, and
    // the third is refused with 429; Ben has his own budget.
    for _ in 0..2 {
        assert_eq!(gql(server.port, &ann_token, list, json!({})).await.0, 200);
    }
    let (status, body) = gql(server.port, &ann_token, list, json!({})).await;
    assert_eq!((status, code(&body)), (429, "RATE_LIMITED"), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("at most 2 notifications queries"));
    assert_eq!(gql(server.port, &ben_token, list, json!({})).await.0, 200);
    let delete = "mutation { deleteNotification(id: \"00000000-0000-0000-0000-000000000000\") }";
    assert_eq!(gql(server.port, &ben_token, delete, json!({})).await.0, 200);
    let (status, body) = gql(server.port, &ben_token, delete, json!({})).await;
    assert_eq!((status, code(&body)), (429, "RATE_LIMITED"), "{body}");

    // With introspection off, __schema is refused (one server on the test's slot at a time).
    drop(server);
    let closed = db.server(&["--graphql-introspection", "false"]);
    let (status, body) = gql(closed.port, &ann_token, "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(status, 200);
    assert!(body["data"]["__schema"].is_null(), "{body}");
    let (status, body) = gql(closed.port, &ann_token, list, json!({})).await;
    assert_eq!((status, &body["data"]["notifications"]), (200, &json!([])), "{body}");
}

/// One request's rows are bounded across its aliases: `notifications` counts its `limit` toward the
/// complexity limit, so 250 aliased `notifications(limit: 100)` (a 12 KB request that made a 160 MB
/// answer) are refused before anything runs, through variables too, while full pages still pass.
#[tokio::test]
async fn t124_graphql_bounds_the_rows_of_a_request_across_aliases() {
    let db = Db::migrated("").await;
    let server = db.server(&[]);
    let ann = new_uuid();
    let ann_token = db.token("authenticated", &ann);
    let service = db.token("service_role", &new_uuid());
    for n in 0..3 {
        let body = json!({"user_id": ann, "type": "t", "content": {"n": n}}).to_string();
        assert_eq!(create(server.port, &service, &body).await.0, 201);
    }
    let aliases: String =
        (0..250).map(|i| format!("a{i}: notifications(limit: 100) {{ content }} ")).collect();
    let (status, body) = gql(server.port, &ann_token, &format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!((status, code(&body)), (200, "TOO_COMPLEX"), "{body}");
    assert_eq!(body["data"], Value::Null, "nothing ran: {body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Query is too complex: at most 500, where"), "{body}");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(1), "one error, no rate limit hit: {body}");

    let five = format!(
        "query($n: Int) {{ {} }}",
        (0..5).map(|i| format!("p{i}: notifications(limit: $n) {{ id }}")).collect::<Vec<_>>().join(" ")
    );
    let (_, body) = gql(server.port, &ann_token, &five, json!({"n": 100})).await;
    assert_eq!(code(&body), "TOO_COMPLEX", "five pages of 100: {body}");
    let (status, body) = gql(server.port, &ann_token, &five, json!({"n": 50})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["p4"].as_array().map(Vec::len), Some(3), "five pages of 50 run: {body}");

    let page = format!("{{ notifications(limit: 100) {{ {FIELDS} }} }}");
    let (status, body) = gql(server.port, &ann_token, &page, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["notifications"].as_array().map(Vec::len), Some(3), "a full page: {body}");
}

#[tokio::test]
async fn t123_without_a_database_the_inbox_answers_503() {
    let secret = "inbox-no-db-secret";
    let log = std::env::temp_dir().join(format!("realtime-inbox-nodb-{}.log", new_uuid()));
    let (_proc, lines) = crate::support::process::spawn(secret, &[], &[], log, 40);
    let port = crate::support::process::wait_listening(&lines, Duration::from_secs(20)).expect("listening");
    let service = sign(secret, &json!({"role": "service_role", "sub": new_uuid(), "exp": now() + 60}));
    let (status, body) =
        create(port, &service, &json!({"user_id": new_uuid(), "type": "t"}).to_string()).await;
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("DATABASE_URL"), "{body}");
    let user = sign(secret, &json!({"role": "authenticated", "sub": new_uuid(), "exp": now() + 60}));
    let (status, body) = gql(port, &user, "{ notifications { id } }", json!({})).await;
    assert_eq!((status, code(&body)), (503, "UNAVAILABLE"), "{body}");
}
