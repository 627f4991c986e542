//! HTTP routes: the WebSocket endpoint, the REST broadcast API, the notifications inbox (REST insert
//! and GraphQL), health and metrics. Routes only; the handlers live in the submodules.

pub mod admin;
pub mod batch;
pub mod graphql;
pub mod health;
pub mod notifications;
pub mod rest;
pub mod server;
pub mod socket;

use actix_web::web;

/// Registers every route under both the bare paths and the Supabase gateway's `/realtime/v1` prefix.
pub fn routes(cfg: &mut web::ServiceConfig) {
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
}
