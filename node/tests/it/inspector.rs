//! The inspector (`REALTIME_INSPECTOR`): off by default (404), its page self-contained under a strict
//! Content-Security-Policy, and its API only for `service_role` tokens. The page itself is driven in a
//! browser by `tests/js/17-inspector.test.js`.

use realtime_proto::Vsn;
use serde_json::json;

use crate::common::*;

const PAGE_PATHS: [&str; 3] = ["/inspector", "/inspector/inspector.js", "/inspector/inspector.css"];
const API_PATHS: [&str; 2] = ["/inspector/api/cluster", "/inspector/api/channels"];

/// `GET path` with these headers: status, content-type, body and the response's headers.
async fn get(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String, reqwest::header::HeaderMap) {
    let mut request = http().get(server.http(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let headers = response.headers().clone();
    let (status, content_type, body) = read_response(response).await;
    (status, content_type, body, headers)
}

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> &'h str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn t88_inspector_is_off_by_default() {
    let server = Server::start(&[]);
    let service_role = sign(&server.secret, &json!({"role": "service_role", "exp": now() + 600}));
    let bearer = format!("Bearer {service_role}");
    for path in PAGE_PATHS.iter().chain(&API_PATHS) {
        let (status, _, body, _) = get(&server, path, &[("authorization", &bearer)]).await;
        assert_eq!(status, 404, "{path} with the inspector off: {body}");
    }
    let off = Server::start(&["--inspector", "false"]);
    let (status, _, _, _) = get(&off, "/inspector", &[]).await;
    assert_eq!(status, 404, "--inspector false");
}

#[tokio::test]
async fn t89_inspector_page_is_embedded_with_its_types_and_a_strict_csp() {
    let server = Server::start_with_env(&[], &[("REALTIME_INSPECTOR", "true")]);
    // WebSockets and fetches only to the host the page came from.
    let connect =
        format!("connect-src 'self' ws://127.0.0.1:{port} wss://127.0.0.1:{port};", port = server.port);
    let mut bodies = Vec::new();
    for (path, want_type) in PAGE_PATHS.iter().zip([
        "text/html; charset=utf-8",
        "text/javascript; charset=utf-8",
        "text/css; charset=utf-8",
    ]) {
        let (status, content_type, body, headers) = get(&server, path, &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(content_type, want_type, "{path}");
        let csp = header(&headers, "content-security-policy");
        for directive in
            ["default-src 'none'", "script-src 'self'", connect.as_str(), "frame-ancestors 'none'"]
        {
            assert!(csp.contains(directive), "{path}: CSP {csp:?} lacks {directive:?}");
        }
        assert!(!csp.contains("unsafe"), "{path}: CSP {csp:?}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&headers, "cache-control"), "no-store", "{path}");
        bodies.push(body);
    }
    let page = &bodies[0];
    // The controls a browser test (or a screen reader) finds by name.
    for control in [
        r#"<label for="token">Token</label>"#,
        r#"<label for="topic">Topic</label>"#,
        r#"<button id="join" type="submit">Join</button>"#,
        r#"<button id="send" type="submit" disabled>Send</button>"#,
        r#"<h2 id="messages-title">Messages</h2>"#,
        r#"<h2 id="cluster-title">Cluster</h2>"#,
    ] {
        assert!(page.contains(control), "the page lacks {control}");
    }
    // Nothing from elsewhere, nothing inline, no secret: the page is the same for everyone.
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads from another origin");
    let handler = regex::Regex::new(r#"\son[a-z]+\s*="#).unwrap();
    assert!(!page.contains("<script>") && !handler.is_match(page), "inline script in the page");
    assert!(!page.contains(&server.secret));
    assert!(bodies[1].contains("socket/websocket"), "the script opens the node's own socket");
}

#[tokio::test]
async fn t89b_inspector_api_needs_a_service_role_token() {
    let server = Server::start(&["--inspector", "true"]);
    let claims = |role: &str| json!({"role": role, "sub": "it-user", "exp": now() + 600});
    let anon = sign(&server.secret, &claims("anon"));
    let user = sign(&server.secret, &claims("authenticated"));
    let forged = sign("not-the-node-secret", &claims("service_role"));
    let expired = sign(&server.secret, &json!({"role": "service_role", "exp": now() - 120}));
    for path in API_PATHS {
        let refusals = [
            ("no token", vec![], 401, "needs a service_role JWT"),
            ("a token in the query only", vec![], 401, "needs a service_role JWT"),
            ("not a JWT", vec![("authorization", "Bearer nonsense".into())], 401, "not a valid JWT"),
            ("a forged service_role JWT", vec![("apikey", forged.clone())], 401, "signature"),
            (
                "an expired service_role JWT",
                vec![("authorization", format!("Bearer {expired}"))],
                401,
                "expired",
            ),
            ("an anon JWT", vec![("authorization", format!("Bearer {anon}"))], 403, "role is \"anon\""),
            ("a user's JWT", vec![("apikey", user.clone())], 403, "role is \"authenticated\""),
        ];
        for (who, headers, want, says) in refusals {
            let query_path =
                if who.contains("query") { format!("{path}?apikey={anon}") } else { path.to_owned() };
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let (status, content_type, body, _) = get(&server, &query_path, &headers).await;
            assert_eq!(status, want, "{path} with {who}: {body}");
            assert!(content_type.starts_with("application/json"), "{path} with {who}: {content_type}");
            let message = parse_json(&body)["message"].as_str().unwrap_or_default().to_owned();
            assert!(message.contains(says), "{path} with {who}: {message:?} should say {says:?}");
            assert!(!body.contains("\"members\"") && !body.contains("\"channels\""), "{path} leaked: {body}");
        }
    }
}

#[tokio::test]
async fn t89c_inspector_lists_the_cluster_and_channels_with_member_counts() {
    let server = Server::start(&["--inspector", "true", "--node-id", "inspector-it"]);
    let service_role = sign(&server.secret, &json!({"role": "service_role", "exp": now() + 600}));
    let busy = unique("busy");
    let quiet = unique("quiet");
    let mut clients = Vec::new();
    for (topic, n) in [(&busy, 3), (&quiet, 1)] {
        for _ in 0..n {
            let mut client = server.client(Vsn::V1).await;
            client.join_ok(&format!("realtime:{topic}"), default_config()).await;
            clients.push(client);
        }
    }

    let bearer = format!("Bearer {service_role}");
    let (status, _, body, headers) =
        get(&server, "/inspector/api/channels", &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "cache-control"), "no-store");
    assert_eq!(
        parse_json(&body),
        json!({
            "node": "inspector-it",
            "total": 2,
            "channels": [
                {"topic": busy, "private": false, "members": 3, "elsewhere": 0},
                {"topic": quiet, "private": false, "members": 1, "elsewhere": 0},
            ],
        })
    );

    let (status, _, body, _) = get(&server, "/inspector/api/cluster", &[("apikey", &service_role)]).await;
    assert_eq!(status, 200, "{body}");
    let cluster = parse_json(&body);
    assert_eq!(cluster["node"], "inspector-it", "{cluster}");
    assert_eq!(cluster["members"], json!([]), "{cluster}");
    assert_eq!(cluster["leader"], json!(null), "{cluster}");

    // Members leave, channels go.
    drop(clients);
    let deadline = std::time::Instant::now() + T;
    loop {
        let (_, _, body, _) = get(&server, "/inspector/api/channels", &[("authorization", &bearer)]).await;
        let list = parse_json(&body);
        if list["total"] == 0 && list["channels"] == json!([]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "channels still listed after their members left: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
