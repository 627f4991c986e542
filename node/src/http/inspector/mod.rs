//! The inspector (issue 20): a page at `/inspector` that shows, live, the cluster (members and their
//! state, the raft/CDC leader, peer links with their lag), this node's channels with member counts, and
//! one channel joined with a token the user pastes, so they see exactly what that user would see (RLS
//! included): broadcasts, presence and Postgres Changes as they arrive, and a broadcast they send.
//!
//! Off unless `REALTIME_INSPECTOR=true`: without it none of these routes exist, so `/inspector` and
//! its API answer 404 like any unknown path. On, the page itself is public (it holds no data and no
//! secret), and everything it shows comes either from [`api`], which needs a `service_role` JWT the
//! user types into the page, or from the node's own Phoenix socket, joined with the token the user
//! pastes and checked like any client's. The page keeps both tokens in memory only (input fields and
//! variables: no storage or cookies, never in the page's URL); it sends the service key only in an
//! `Authorization` header, and the pasted token as the socket's `apikey`, as realtime-js does.
//!
//! # Why plain HTML and one vanilla ES module, embedded
//!
//! The page is three small files in `assets/` (HTML, one `<script type="module">`, CSS) compiled into
//! the binary with `include_str!`: no build step, no npm at build time, no CDN, nothing to fetch at
//! run time, so the binary stays one self-contained file and the page works on an air-gapped cluster.
//! What the page does is small: poll two JSON endpoints, speak Phoenix vsn 1.0.0 (JSON objects) over
//! one WebSocket (join, heartbeat every 25 s, broadcast, presence track, leave), and render tables and a
//! message list. That is about 350 lines of plain JavaScript; a framework (even a tiny one) or a
//! bundler would add a toolchain to keep current and more code than the page itself, and htmx would
//! still need this script for the socket, since its server-rendered fragments cannot hold a live
//! channel. realtime-js is not vendored: the page speaks the wire protocol itself, which is also a
//! second, independent client of it.
//!
//! Every asset is served with its content type, `X-Content-Type-Options: nosniff`, no caching, and a
//! strict [`content_security_policy`]: scripts and styles only from this node (no inline script, no
//! `eval`), connections (fetches and WebSockets) only to the host the page was loaded from, no frames,
//! forms or base URL. The script
//! writes what it receives with `textContent`, never as HTML.

mod api;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

/// The policy of every inspector asset: nothing but this node's own script and style, no inline
/// script, no frames; fetches and WebSockets only to `host`, the host the page was asked from (as
/// `Host` or a proxy's forwarded host gives it). Browsers that do not count `ws:` as `'self'` need the
/// host named; a host with anything but the characters of a host and port is not named (connections
/// then only to `'self'`), so a request cannot write into the policy.
pub fn content_security_policy(host: &str) -> String {
    let plain = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    let connect = if plain { format!("'self' ws://{host} wss://{host}") } else { "'self'".to_owned() };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src {connect}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// One embedded file of the page.
struct Asset {
    body: &'static str,
    content_type: &'static str,
}

static PAGE: Asset =
    Asset { body: include_str!("assets/index.html"), content_type: "text/html; charset=utf-8" };
static SCRIPT: Asset =
    Asset { body: include_str!("assets/inspector.js"), content_type: "text/javascript; charset=utf-8" };
static STYLE: Asset =
    Asset { body: include_str!("assets/inspector.css"), content_type: "text/css; charset=utf-8" };

/// The inspector's routes; registered only when `REALTIME_INSPECTOR` is on. The page's assets and API
/// are addressed relative to `/inspector`, so a proxy that maps the node under a prefix keeps it whole.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/inspector", web::get().to(|req: HttpRequest| serve(req, &PAGE)))
        .route("/inspector/inspector.js", web::get().to(|req: HttpRequest| serve(req, &SCRIPT)))
        .route("/inspector/inspector.css", web::get().to(|req: HttpRequest| serve(req, &STYLE)))
        .route("/inspector/api/cluster", web::get().to(api::cluster))
        .route("/inspector/api/channels", web::get().to(api::channels));
}

async fn serve(req: HttpRequest, asset: &'static Asset) -> HttpResponse {
    let policy = content_security_policy(req.connection_info().host());
    HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, policy))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .insert_header((header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body(asset.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_only_a_plain_host() {
        let named = content_security_policy("127.0.0.1:4000");
        assert!(named.contains("connect-src 'self' ws://127.0.0.1:4000 wss://127.0.0.1:4000;"), "{named}");
        assert!(content_security_policy("[::1]:4000").contains("ws://[::1]:4000 "));
        for hostile in ["", "a; script-src *", "a b", "a\"", "a/b", "é.example"] {
            let policy = content_security_policy(hostile);
            assert!(policy.contains("connect-src 'self'; "), "{hostile:?}: {policy}");
            assert_eq!(policy.matches("script-src").count(), 1, "{hostile:?}: {policy}");
        }
    }
}
