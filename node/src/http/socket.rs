//! `GET /socket/websocket` (and `/realtime/v1/websocket`): check the token and limits, then start a
//! [`SocketActor`]. Refusals are answered with the status and `{"error": …}` body of PROTOCOL.md §1.3,
//! after the configured delay.
//!
//! WebSocket upgrades do not go through actix-web's routing: actix-http hands every upgrade request to
//! [`serve`] together with its connection, which answers the handshake itself and then takes the TCP
//! stream out of the HTTP/1 dispatcher. That dispatcher keeps an 8 KiB read and an 8 KiB write buffer
//! for as long as it runs; a socket instead reads through a stack buffer ([`Inbound`]) and writes its
//! outbox's chunks directly (`write_outbox`), so an idle socket holds no I/O buffer at all. The route
//! [`upgrade`] only sees GETs that are not upgrades: it answers the same refusals, or 400.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use actix::prelude::*;
use actix_codec::Framed;
use actix_http::body::{BodySize, MessageBody};
use actix_http::h1::{self, Message};
use actix_http::header::{HeaderValue, CONTENT_TYPE};
use actix_http::{Request, RequestHead, Response, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use realtime_proto::Vsn;
use tokio::io::{AsyncWriteExt as _, WriteHalf};

use crate::auth::TokenError;
use crate::delivery::link::LinkedStream;
use crate::delivery::outbox::OutboxWriter;
use crate::metrics::{metrics, Refusal};
use crate::socket::inbound::Inbound;
use crate::socket::SocketActor;
use crate::state::{Full, Shared};

/// The WebSocket paths.
const PATHS: [&str; 2] = ["/socket/websocket", "/realtime/v1/websocket"];

/// `{"error": message}` with its status.
fn refusal(status: StatusCode, message: &str) -> Response<Bytes> {
    let mut response =
        Response::with_body(status, Bytes::from(serde_json::json!({ "error": message }).to_string()));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

/// Query parameters, decoded; a query that cannot be decoded counts as empty.
fn query(query: &str) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(query).map(|q| q.into_inner()).unwrap_or_default()
}

/// A refused handshake, answered after the configured delay.
async fn refused(shared: &Shared, status: StatusCode, message: &str) -> Response<Bytes> {
    let delay = shared.config.connect_error_delay;
    if !delay.is_zero() {
        actix_web::rt::time::sleep(delay).await;
    }
    refusal(status, message)
}

/// The route for GETs on the WebSocket paths that are not upgrades: the refusals a client would get,
/// else 400 (the request is not a WebSocket handshake).
pub async fn upgrade(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let params = query(req.query_string());
    let response = match check(req.head(), &params, &shared) {
        Err((status, message)) => refused(&shared, status, &message).await,
        Ok(_) => match actix_http::ws::verify_handshake(req.head()) {
            Err(error) => return HttpResponse::from(Response::from(error)),
            Ok(()) => refusal(StatusCode::BAD_REQUEST, "not a WebSocket upgrade"),
        },
    };
    HttpResponse::from(response.map_into_boxed_body())
}

/// Answers an upgrade request on `framed`: refuses it, or starts a socket on its connection.
pub async fn serve(
    req: Request,
    mut framed: Framed<LinkedStream, h1::Codec>,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let head = req.head();
    if !PATHS.contains(&head.uri.path()) {
        return respond(&mut framed, refusal(StatusCode::NOT_FOUND, "Not Found")).await;
    }
    let params = query(head.uri.query().unwrap_or(""));
    let (vsn, token, user) = match check(head, &params, &shared) {
        Ok(ok) => ok,
        Err((status, message)) => {
            return respond(&mut framed, refused(&shared, status, &message).await).await
        }
    };
    let mut handshake = match actix_http::ws::handshake(head) {
        Ok(builder) => builder,
        Err(error) => {
            let (response, body) = Response::from(error).into_parts();
            let body = body.try_into_bytes().unwrap_or_default();
            return respond(&mut framed, response.set_body(body)).await;
        }
    };
    let id = match shared.connections.reserve() {
        Ok(id) => id,
        Err(full) => {
            let (counted, status, reason) = match full {
                Full::Connections => {
                    (Refusal::ConnectionLimit, StatusCode::TOO_MANY_REQUESTS, "Too many connected users")
                }
                Full::Files => {
                    (Refusal::FileLimit, StatusCode::SERVICE_UNAVAILABLE, "Server is at its open-files limit")
                }
            };
            metrics().refused(counted);
            return respond(&mut framed, refusal(status, reason)).await;
        }
    };
    let outbox = shared.new_outbox(framed.io_ref().link().clone());
    if let Err(error) = framed.send(Message::Item((handshake.finish().drop_body(), BodySize::None))).await {
        shared.connections.release(id);
        return Err(error);
    }
    // The connection leaves the HTTP/1 dispatcher (and its buffers) here.
    let parts = framed.into_parts();
    let (read, write) = tokio::io::split(parts.io);
    let inbound = Inbound::new(read, parts.read_buf, shared.config.limits.max_frame_bytes);
    actix_web::rt::spawn(write_outbox(outbox.writer(), write));
    SocketActor::create(move |ctx| {
        ctx.add_stream(inbound);
        SocketActor::new(id, vsn, shared, token.into(), user.as_deref().unwrap_or(""), outbox)
    });
    Ok(())
}

/// Writes a socket's outbox to its connection until the close frame (or the connection fails).
async fn write_outbox(mut writer: OutboxWriter, mut io: WriteHalf<LinkedStream>) {
    while let Some(Ok(chunk)) = writer.next().await {
        if io.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = io.shutdown().await;
}

/// Writes a whole response (a refusal) and ends the connection.
async fn respond(framed: &mut Framed<LinkedStream, h1::Codec>, response: Response<Bytes>) -> io::Result<()> {
    let (head, body) = response.into_parts();
    framed.send(Message::Item((head, BodySize::Sized(body.len() as u64)))).await?;
    framed.send(Message::Chunk(Some(body))).await?;
    framed.send(Message::Chunk(None)).await
}

/// Serializer, token and its user (`sub`), or the refusal's status and message.
fn check(
    head: &RequestHead,
    params: &HashMap<String, String>,
    shared: &Shared,
) -> Result<(Vsn, String, Option<String>), (StatusCode, String)> {
    if shared.is_draining() {
        metrics().refused(Refusal::Draining);
        return Err((StatusCode::SERVICE_UNAVAILABLE, "Server is shutting down".into()));
    }
    let vsn = Vsn::from_query(params.get("vsn").map(String::as_str))
        .map_err(|e| (StatusCode::FORBIDDEN, e.to_string()))?;
    // `x-api-key` wins, then the `apikey` parameter (what realtime-js sends), then a bearer.
    let header = head.headers().get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bearer = || super::bearer(head.headers()).map(str::to_owned);
    let token = header.or_else(|| params.get("apikey").cloned()).or_else(bearer).ok_or_else(|| {
        metrics().refused(Refusal::InvalidToken);
        (StatusCode::UNAUTHORIZED, TokenError::Missing.handshake_message())
    })?;
    let claims = shared.verifier.verify(&token).map_err(|e| {
        metrics().refused(Refusal::InvalidToken);
        (StatusCode::UNAUTHORIZED, e.handshake_message())
    })?;
    Ok((vsn, token, claims.sub))
}
