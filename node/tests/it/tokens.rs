//! Tokens (PROTOCOL §1.3, §2.10, §2.11, §6): handshake refusals, join-time token errors, `access_token`
//! refresh and expiry while joined.

use std::time::Duration;

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

fn join_with_token(token: &str) -> Value {
    json!({"config": config(true, false, "", false), "access_token": token})
}

async fn push_access_token(c: &mut Client, jr: &str, topic: &str, token: Value) {
    c.push(Some(jr), topic, "access_token", &json!({"access_token": token})).await;
}

#[tokio::test]
async fn t50_handshake_refuses_hostile_tokens_with_exact_bodies() {
    let server = Server::start(&[]);
    for path in ["/socket/websocket", "/realtime/v1/websocket"] {
        for (name, tok, message) in hostile::all(&server.secret) {
            let url = server.http(&format!("{path}?apikey={tok}&vsn=2.0.0"));
            let (status, ct, body) = raw_upgrade(&url, &[]).await;
            assert_eq!(status, 401, "{path} {name}: {body}");
            assert_eq!(parse_json(&body), json!({"error": message}), "{path} {name}");
            assert!(ct.starts_with("application/json"), "{path} {name}: content-type {ct:?}");
            // A real WebSocket client is refused too.
            let ws = server.ws_url_at(path, &format!("apikey={tok}&vsn=2.0.0"));
            assert!(Client::connect(&ws, Vsn::V2).await.is_err(), "{path} {name}: upgrade must fail");
        }
        let (status, _ct, body) = raw_upgrade(&server.http(&format!("{path}?vsn=1.0.0")), &[]).await;
        assert_eq!(status, 401, "{path}: no apikey: {body}");
        assert_eq!(parse_json(&body), json!({"error": "API key is missing"}), "{path}: no apikey");
        let (status, _ct, body) = raw_upgrade(&server.http(&format!("{path}?apikey=&vsn=1.0.0")), &[]).await;
        assert_eq!(status, 401, "{path}: empty apikey: {body}");
    }
}

#[tokio::test]
async fn t50_x_api_key_header_wins_over_query() {
    let server = Server::start(&[]);
    let good = server.token();
    // Header valid, query garbage → accepted.
    let url = server.ws_url_at("/socket/websocket", "apikey=garbage&vsn=2.0.0");
    let mut c = Client::connect_with_headers(&url, Vsn::V2, &[("x-api-key", &good)])
        .await
        .expect("valid x-api-key header wins over a bad query apikey");
    c.heartbeat().await;
    // Header only.
    let url = server.ws_url_at("/socket/websocket", "vsn=1.0.0");
    let mut c = Client::connect_with_headers(&url, Vsn::V1, &[("x-api-key", &good)])
        .await
        .expect("x-api-key header alone");
    c.heartbeat().await;
    // Header garbage, query valid → refused with the header's error.
    let url = server.http(&format!("/socket/websocket?apikey={good}&vsn=2.0.0"));
    let (status, _ct, body) = raw_upgrade(&url, &[("x-api-key", "garbage")]).await;
    assert_eq!(status, 401, "bad x-api-key header: {body}");
    assert_eq!(parse_json(&body), json!({"error": "The token provided is not a valid JWT"}));
}

/// The seed spec's handshake takes the JWT "in a query param or header": `Authorization: Bearer` too,
/// after `x-api-key` and the `apikey` parameter (what realtime-js sends), checked like them.
#[tokio::test]
async fn t50b_a_bearer_token_opens_a_socket_after_the_other_places() {
    let server = Server::start(&[]);
    let good = server.token();
    let bearer = format!("Bearer {good}");
    let url = server.ws_url_at("/socket/websocket", "vsn=2.0.0");
    let mut c = Client::connect_with_headers(&url, Vsn::V2, &[("authorization", &bearer)])
        .await
        .expect("a bearer alone opens a socket");
    c.heartbeat().await;
    let (_jr, reply) = c.join("realtime:bearer", &json!({"config": {}})).await;
    assert_eq!(reply["payload"]["status"], "ok", "{reply}");
    // Bad bearer alone: refused with the token's error.
    let url = server.http("/socket/websocket?vsn=2.0.0");
    let (status, _ct, body) = raw_upgrade(&url, &[("authorization", "Bearer garbage")]).await;
    assert_eq!(status, 401, "bad bearer: {body}");
    assert_eq!(parse_json(&body), json!({"error": "The token provided is not a valid JWT"}));
    // Another scheme is no token at all.
    let (status, _ct, body) = raw_upgrade(&url, &[("authorization", &format!("Basic {good}"))]).await;
    assert_eq!((status, parse_json(&body)), (401, json!({"error": "API key is missing"})));
    // The `apikey` parameter comes first: a valid one opens the socket whatever the bearer says.
    let url = server.ws_url_at("/socket/websocket", &format!("apikey={good}&vsn=1.0.0"));
    let mut c = Client::connect_with_headers(&url, Vsn::V1, &[("authorization", "Bearer garbage")])
        .await
        .expect("the apikey parameter wins over a bearer");
    c.heartbeat().await;
}

#[tokio::test]
async fn t51_join_token_errors() {
    let server = Server::start(&[]);
    let secret = server.secret.clone();
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let (_jr, reply) = c.join("realtime:tok", &join_with_token(&hostile::expired(&secret))).await;
        let reason = reply["payload"]["response"]["reason"].as_str().unwrap_or_default().to_owned();
        assert_eq!(reply["payload"]["status"], "error", "{vsn}: {reply}");
        assert!(reason.starts_with("InvalidJWTToken: Token has expired "), "{vsn}: expired join: {reason:?}");
        assert!(reason.ends_with(" seconds ago"), "{vsn}: expired join: {reason:?}");

        let cases = [
            (hostile::missing_role(&secret), "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
            (hostile::missing_exp(&secret), "InvalidJWTToken: Fields `role` and `exp` are required in JWT"),
            (hostile::not_a_jwt(), "MalformedJWT: The token provided is not a valid JWT"),
            (hostile::wrong_secret(), "JwtSignatureError: Failed to validate JWT signature"),
        ];
        for (tok, want) in cases {
            let (_jr, reply) = c.join("realtime:tok", &join_with_token(&tok)).await;
            assert_eq!(
                reply["payload"],
                json!({"status": "error", "response": {"reason": want}}),
                "{vsn}: join with bad access_token"
            );
        }
        for tok in [hostile::alg_none(), hostile::rs256_signed_with_hmac(&secret)] {
            let (_jr, reply) = c.join("realtime:tok", &join_with_token(&tok)).await;
            let reason = reply["payload"]["response"]["reason"].as_str().unwrap_or_default();
            assert!(
                reason.starts_with("JwtSignerError: Failed to generate JWT signer"),
                "{vsn}: signer error at join: {reply}"
            );
        }
        // An opaque sb_ key is ignored in favour of the socket's token.
        let (_jr, reply) = c.join("realtime:tok", &join_with_token("sb_publishable_xyz")).await;
        assert_eq!(reply["payload"]["status"], "ok", "{vsn}: sb_ access_token: {reply}");
        c.heartbeat().await;
    }
}

#[tokio::test]
async fn t52_access_token_refresh_is_silent_and_channel_keeps_working() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("refresh"));
        let mut c = server.client(vsn).await;
        let (jr, reply) = c.join(&topic, &join_with_token(&server.token())).await;
        assert_eq!(reply["payload"]["status"], "ok", "{reply}");
        push_access_token(&mut c, &jr, &topic, json!(token(&server.secret, 7200))).await;
        c.expect_silence(QUIET).await;
        // Ignored forms: sb_ keys and null.
        push_access_token(&mut c, &jr, &topic, json!("sb_publishable_whatever")).await;
        push_access_token(&mut c, &jr, &topic, Value::Null).await;
        c.expect_silence(QUIET).await;
        c.broadcast_json(&jr, &topic, "after-refresh", &json!({"ok": true})).await;
        let got = c.expect_event("broadcast", T).await;
        assert_eq!(got["payload"]["event"], "after-refresh", "{vsn}");
        c.heartbeat().await;
    }
}

#[tokio::test]
async fn t53_access_token_refused_closes_channel_but_not_socket() {
    let server = Server::start(&[]);
    let secret = server.secret.clone();
    let cases: Vec<(Value, &str, bool)> = vec![
        (json!(hostile::expired(&secret)), "Token has expired ", true),
        (json!(hostile::missing_role(&secret)), "Fields `role` and `exp` are required in JWT", false),
        (json!(""), "The token provided is not a valid JWT", false),
        (json!("not-a-jwt"), "The token provided is not a valid JWT", false),
    ];
    for vsn in VSNS {
        for (tok, message, is_prefix) in &cases {
            let sub = unique("expire");
            let topic = format!("realtime:{sub}");
            let mut c = server.client(vsn).await;
            let jr = c.join_ok(&topic, default_config()).await;
            push_access_token(&mut c, &jr, &topic, tok.clone()).await;
            let sys = c.expect_event("system", T).await;
            if *is_prefix {
                assert_system_error_prefix(&sys, message, &sub);
                let m = sys["payload"]["message"].as_str().unwrap();
                assert!(m.ends_with(" seconds ago"), "{vsn}: {m:?}");
            } else {
                assert_eq!(sys["payload"], system_error(message, &sub), "{vsn}: access_token {tok}");
            }
            assert_eq!(sys["ref"], Value::Null, "{vsn}: system push ref");
            let close = c.expect_event("phx_close", T).await;
            assert_phx_close(vsn, &close, &topic, &jr);
            // The socket stays open.
            c.heartbeat().await;
            c.join_ok(&format!("realtime:{}", unique("again")), default_config()).await;
        }
    }
}

#[tokio::test]
async fn t54_token_expiring_after_join_closes_the_channel() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let sub = unique("shortlived");
        let topic = format!("realtime:{sub}");
        let mut c = server.client(vsn).await;
        let short = token(&server.secret, 2);
        let (jr, reply) = c.join(&topic, &join_with_token(&short)).await;
        assert_eq!(reply["payload"]["status"], "ok", "{vsn}: {reply}");
        c.expect_silence(Duration::from_millis(500)).await;
        let sys = c.expect_event("system", Duration::from_secs(8)).await;
        assert_system_error_prefix(&sys, "Token has expired ", &sub);
        let close = c.expect_event("phx_close", T).await;
        assert_phx_close(vsn, &close, &topic, &jr);
        c.heartbeat().await;
    }
}

/// Test-only key pairs (generated for this suite, never used elsewhere) and their public JWKS.
const RSA_PEM: &str = include_str!("fixtures/test-only-rsa.pem");
const EC_PEM: &str = include_str!("fixtures/test-only-ec.pem");

fn jwks_path() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/jwks.json").to_owned()
}

fn asym_token(alg: jsonwebtoken::Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        jsonwebtoken::Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()),
        jsonwebtoken::Algorithm::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(EC_PEM.as_bytes()),
        other => panic!("no test key for {other:?}"),
    }
    .expect("test key");
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn claims() -> Value {
    json!({"role": "authenticated", "sub": "jwks-user", "exp": now() + 3600})
}

async fn handshake(server: &Server, tok: &str) -> (u16, String) {
    let url = server.http(&format!("/socket/websocket?apikey={tok}&vsn=2.0.0"));
    let (status, _ct, body) = raw_upgrade(&url, &[]).await;
    (status, body)
}

#[tokio::test]
async fn t55_jwks_signer_selection() {
    let jwks = jwks_path();
    let server = Server::start(&["--jwks", &jwks]);
    let rs = asym_token(jsonwebtoken::Algorithm::RS256, Some("it-rsa"), &claims());
    let es = asym_token(jsonwebtoken::Algorithm::ES256, Some("it-ec"), &claims());
    // HS256 with a kid that matches no `oct` key falls back to the shared secret (PROTOCOL §6.1).
    let hs_kid = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("unknown-hs-kid".into());
        jsonwebtoken::encode(
            &header,
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(server.secret.as_bytes()),
        )
        .expect("sign")
    };
    for (name, tok) in
        [("RS256 kid", &rs), ("ES256 kid", &es), ("HS256 secret", &server.token()), ("HS256 kid", &hs_kid)]
    {
        let url = server.ws_url_at("/socket/websocket", &format!("apikey={tok}&vsn=2.0.0"));
        let mut c = Client::connect(&url, Vsn::V2).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_jr, reply) =
            c.join("realtime:jwks", &json!({"config": default_config(), "access_token": tok})).await;
        assert_eq!(reply["payload"]["status"], "ok", "{name}: join with it as access_token: {reply}");
        let resp = http()
            .post(server.http("/api/broadcast"))
            .bearer_auth(tok)
            .json(&json!({"messages": [{"topic": "jwks", "event": "e", "payload": {}}]}))
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status().as_u16(), 202, "{name}: REST with it");
    }

    let unknown_kid = asym_token(jsonwebtoken::Algorithm::RS256, Some("nope"), &claims());
    let (status, body) = handshake(&server, &unknown_kid).await;
    assert_eq!(status, 401, "unknown kid: {body}");
    assert_eq!(
        parse_json(&body),
        json!({"error": "Failed to generate JWT signer for key ID (kid) \"nope\", check your JWT secret or JWKS configuration"})
    );

    let no_kid = asym_token(jsonwebtoken::Algorithm::RS256, None, &claims());
    let (status, body) = handshake(&server, &no_kid).await;
    assert_eq!(status, 401, "RS256 without kid: {body}");
    assert_eq!(
        parse_json(&body),
        json!({"error": "Failed to generate JWT signer, check your JWT secret or JWKS configuration"})
    );

    // RS256 token whose claims were swapped after signing.
    let mut parts: Vec<String> = rs.split('.').map(str::to_owned).collect();
    let forged = json!({"role": "service_role", "exp": now() + 3600});
    parts[1] = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string())
    };
    let (status, body) = handshake(&server, &parts.join(".")).await;
    assert_eq!(status, 401, "tampered RS256: {body}");
    assert_eq!(parse_json(&body), json!({"error": "Failed to validate JWT signature"}));

    // The EC key id with an RSA algorithm does not select the EC key.
    let mismatched = asym_token(jsonwebtoken::Algorithm::RS256, Some("it-ec"), &claims());
    let (status, body) = handshake(&server, &mismatched).await;
    assert_eq!(status, 401, "RS256 with an EC kid: {body}");
}
