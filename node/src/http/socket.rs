//! `GET /socket/websocket` (and `/realtime/v1/websocket`): check the token and limits, then start a
//! [`SocketActor`]. Refusals are answered with the status and `{"error": …}` body of PROTOCOL.md §1.3,
//! after the configured delay.
//!
//! The response body is the socket's outbox writer ([`crate::delivery`]) and the request body its
//! inbound frames ([`Inbound`]); the actor in between is a plain actix actor, so neither direction
//! waits on the other.

use std::collections::HashMap;

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use realtime_proto::Vsn;

use crate::auth::TokenError;
use crate::delivery::Link;
use crate::metrics::{metrics, Refusal};
use crate::socket::inbound::Inbound;
use crate::socket::SocketActor;
use crate::state::Shared;

fn refusal(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json; charset=utf-8")
        .body(serde_json::json!({ "error": message }).to_string())
}

/// Query parameters, decoded; a query that cannot be decoded counts as empty.
fn query(req: &HttpRequest) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

pub async fn upgrade(
    req: HttpRequest,
    stream: web::Payload,
    shared: web::Data<Shared>,
) -> actix_web::Result<HttpResponse> {
    let params = query(&req);
    let checked = check(&req, &params, &shared);
    let (vsn, token, user) = match checked {
        Ok(ok) => ok,
        Err((status, message)) => {
            let delay = shared.config.connect_error_delay;
            if !delay.is_zero() {
                actix_web::rt::time::sleep(delay).await;
            }
            return Ok(refusal(status, &message));
        }
    };
    let mut handshake = match actix_http::ws::handshake(req.head()) {
        Ok(builder) => builder,
        Err(error) => return Ok(HttpResponse::from(actix_http::Response::from(error))),
    };
    let Some(id) = shared.connections.reserve() else {
        metrics().refused(Refusal::ConnectionLimit);
        return Ok(refusal(StatusCode::TOO_MANY_REQUESTS, "Too many connected users"));
    };
    let link = req.conn_data::<Link>().cloned().unwrap_or_default();
    let outbox = shared.new_outbox(link);
    let inbound = Inbound::new(stream, shared.config.limits.max_frame_bytes);
    let writer = outbox.writer();
    let shared = shared.into_inner();
    SocketActor::create(move |ctx| {
        ctx.add_stream(inbound);
        SocketActor::new(id, vsn, shared, token, user.as_deref().unwrap_or(""), outbox)
    });
    let response = handshake.message_body(actix_web::body::BodyStream::new(writer))?;
    Ok(HttpResponse::from(response.map_into_boxed_body()))
}

/// Serializer, token and its user (`sub`), or the refusal's status and message.
fn check(
    req: &HttpRequest,
    params: &HashMap<String, String>,
    shared: &Shared,
) -> Result<(Vsn, String, Option<String>), (StatusCode, String)> {
    if shared.is_draining() {
        metrics().refused(Refusal::Draining);
        return Err((StatusCode::SERVICE_UNAVAILABLE, "Server is shutting down".into()));
    }
    let vsn = Vsn::from_query(params.get("vsn").map(String::as_str))
        .map_err(|e| (StatusCode::FORBIDDEN, e.to_string()))?;
    let header = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let token = header.or_else(|| params.get("apikey").cloned()).ok_or_else(|| {
        metrics().refused(Refusal::InvalidToken);
        (StatusCode::UNAUTHORIZED, TokenError::Missing.handshake_message())
    })?;
    let claims = shared.verifier.verify(&token).map_err(|e| {
        metrics().refused(Refusal::InvalidToken);
        (StatusCode::UNAUTHORIZED, e.handshake_message())
    })?;
    Ok((vsn, token, claims.sub))
}
