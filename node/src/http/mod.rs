//! HTTP routes: the WebSocket endpoint, the REST broadcast API, the notifications inbox (REST insert
//! and GraphQL), health and metrics, and the inspector when it is on. Routes only; the handlers live in
//! the submodules.

pub mod admin;
pub mod batch;
pub mod graphql;
pub mod health;
pub mod inspector;
pub mod notifications;
pub mod rest;
pub mod server;
pub mod socket;

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use actix_web::web;

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

/// Registers every route under both the bare paths and the Supabase gateway's `/realtime/v1` prefix;
/// the inspector's only with `inspector` (`REALTIME_INSPECTOR`), and only under the bare path.
pub fn routes(cfg: &mut web::ServiceConfig, inspector: bool) {
    for prefix in ["", "/realtime/v1"] {
        let websocket = if prefix.is_empty() { "/socket/websocket" } else { "/realtime/v1/websocket" };
        cfg.route(websocket, web::get().to(socket::upgrade))
            .route(&format!("{prefix}/api/broadcast"), web::post().to(rest::broadcast_batch))
            .route(
                &format!("{prefix}/api/broadcast/{{topic}}/events/{{event}}"),
                web::post().to(rest::broadcast_single),
            )
            .route(&format!("{prefix}/api/notifications"), web::post().to(notifications::create))
            .route(&format!("{prefix}/graphql"), web::post().to(graphql::graphql));
    }
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/healthcheck", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/cluster", web::get().to(health::cluster))
        .route("/metrics", web::get().to(health::metrics));
    if inspector {
        inspector::routes(cfg);
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn reads_a_bearer_token_in_any_case_and_nothing_else() {
        assert_eq!(bearer(&with("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer(&with("bearer abc")), Some("abc"));
        assert_eq!(bearer(&with("BEARER  abc ")), Some("abc"));
        assert_eq!(bearer(&with("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(&with("Bearer")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
