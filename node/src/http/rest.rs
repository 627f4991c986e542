//! The REST broadcast API (PROTOCOL.md §3.5–3.6), for backends without a socket:
//! `POST /api/broadcast` (a batch of JSON messages) and `POST /api/broadcast/{topic}/events/{event}`
//! (one message, JSON or raw bytes). Both enter the same channel fan-out as socket broadcasts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use realtime_proto::binary::BinaryEncoding;
use realtime_proto::server;
use serde_json::{json, Map, Value};

use crate::channel::messages::{Broadcast, BroadcastBody, Lookup};
use crate::channel::TopicKey;
use crate::metrics::{metrics, Refusal};
use crate::state::Shared;

const UNSUPPORTED_MEDIA_TYPE: &str =
    "Unsupported Media Type. Use application/json or application/octet-stream";
const PAYLOAD_TOO_LARGE: &str = "Payload size exceeds tenant limit";

fn message(status: actix_web::http::StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "message": text }))
}

fn unauthorized() -> HttpResponse {
    message(actix_web::http::StatusCode::UNAUTHORIZED, "Unauthorized")
}

fn rate_limited(text: &str) -> HttpResponse {
    metrics().refused(Refusal::RestRate);
    message(actix_web::http::StatusCode::TOO_MANY_REQUESTS, text)
}

/// `Authorization: Bearer <t>`, else the `apikey` header, else the `apikey` query parameter.
fn token(headers: &HeaderMap, query: &str) -> Option<String> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::to_owned);
    let header = || headers.get("apikey").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let param = || {
        web::Query::<HashMap<String, String>>::from_query(query).ok().and_then(|q| q.get("apikey").cloned())
    };
    bearer.or_else(header).or_else(param)
}

fn authorised(req: &HttpRequest, shared: &Shared) -> bool {
    match token(req.headers(), req.query_string()) {
        Some(t) => shared.verifier.verify(&t).is_ok(),
        None => false,
    }
}

async fn publish(shared: &Shared, sub_topic: &str, body: BroadcastBody) {
    let key = TopicKey { sub_topic: Arc::from(sub_topic), private: false };
    if let Ok(Some(channel)) = shared.registry.send(Lookup { key }).await {
        channel.do_send(Broadcast { from: None, body, received_at: Instant::now() });
    }
}

/// Field errors of one batch message, in the reference's changeset shape.
fn validate(message: &Value, max_payload: usize) -> Map<String, Value> {
    let mut errors = Map::new();
    let blank = || json!(["can't be blank"]);
    let invalid = || json!(["is invalid"]);
    match message.get("topic") {
        None | Some(Value::Null) => drop(errors.insert("topic".into(), blank())),
        Some(Value::String(s)) if s.is_empty() => drop(errors.insert("topic".into(), blank())),
        Some(Value::String(_)) => {}
        Some(_) => drop(errors.insert("topic".into(), invalid())),
    }
    match message.get("event") {
        None | Some(Value::Null) => drop(errors.insert("event".into(), blank())),
        Some(Value::String(s)) if s.is_empty() => drop(errors.insert("event".into(), blank())),
        Some(Value::String(_)) => {}
        Some(_) => drop(errors.insert("event".into(), invalid())),
    }
    match message.get("payload") {
        None | Some(Value::Null) => drop(errors.insert("payload".into(), blank())),
        Some(Value::Object(p)) => {
            if serde_json::to_string(p).map_or(usize::MAX, |s| s.len()) > max_payload {
                errors.insert("payload".into(), json!([PAYLOAD_TOO_LARGE]));
            }
        }
        Some(_) => drop(errors.insert("payload".into(), invalid())),
    }
    if let Some(private) = message.get("private") {
        if realtime_proto::join::flexible_bool(Some(private)).is_none() {
            errors.insert("private".into(), invalid());
        }
    }
    errors
}

/// `POST /api/broadcast`: `{"messages":[{"topic","event","payload","private"?,"id"?}]}` → 202.
pub async fn broadcast_batch(req: HttpRequest, body: Bytes, shared: web::Data<Shared>) -> HttpResponse {
    if !authorised(&req, &shared) {
        return unauthorized();
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return message(actix_web::http::StatusCode::BAD_REQUEST, "Request body is not valid JSON");
    };
    let Some(messages) = parsed.get("messages").and_then(Value::as_array) else {
        return HttpResponse::UnprocessableEntity().json(json!({"errors": {"messages": ["can't be blank"]}}));
    };
    let max_payload = shared.config.limits.max_payload_bytes;
    let errors: Vec<Map<String, Value>> = messages.iter().map(|m| validate(m, max_payload)).collect();
    if errors.iter().any(|e| !e.is_empty()) {
        return HttpResponse::UnprocessableEntity().json(json!({"errors": {"messages": errors}}));
    }
    let limit = shared.config.limits.max_rest_events_per_second as usize;
    if messages.len() > limit {
        return rate_limited("Too many messages to broadcast, please reduce the batch size");
    }
    if !shared.rest.allow(messages.len() as u32) {
        return rate_limited("You have exceeded your rate limit");
    }
    for m in messages {
        // Private channels need RLS authorization, which needs a database: skipped, as the reference
        // skips topics the caller may not write to.
        if realtime_proto::join::flexible_bool(m.get("private")) == Some(true) {
            continue;
        }
        let (Some(topic), Some(event)) = (m["topic"].as_str(), m["event"].as_str()) else { continue };
        let meta = m.get("id").filter(|id| !id.is_null()).map(|id| json!({ "id": id }).to_string());
        let payload = server::user_broadcast_json(event, &m["payload"].to_string(), meta.as_deref());
        metrics().rest_messages.increment(1);
        publish(&shared, topic, BroadcastBody::Json(payload.into())).await;
    }
    HttpResponse::Accepted().finish()
}

/// Media type of the body, if it is one the single endpoint accepts (absent means JSON).
fn body_encoding(headers: &HeaderMap) -> Option<BinaryEncoding> {
    let Some(value) = headers.get(CONTENT_TYPE) else { return Some(BinaryEncoding::Json) };
    let media = value.to_str().ok()?.split(';').next()?.trim().to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Some(BinaryEncoding::Json),
        "application/octet-stream" => Some(BinaryEncoding::Raw),
        _ => None,
    }
}

/// `POST /api/broadcast/{topic}/events/{event}`: one JSON or binary message → 202.
pub async fn broadcast_single(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let Some(encoding) = body_encoding(req.headers()) else {
        return HttpResponse::UnsupportedMediaType().json(json!({ "error": UNSUPPORTED_MEDIA_TYPE }));
    };
    if !authorised(&req, &shared) {
        return unauthorized();
    }
    let private = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("private").cloned())
        .is_some_and(|p| p.eq_ignore_ascii_case("true"));
    if private {
        // No database, no RLS write check: refuse rather than publish unauthorised.
        return message(actix_web::http::StatusCode::FORBIDDEN, "Unauthorized");
    }
    let data = match encoding {
        BinaryEncoding::Raw => body,
        BinaryEncoding::Json => match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(_)) => body,
            // A non-object body arrives as `{"_json": …}`, as the reference's parser wraps it.
            Ok(other) => Bytes::from(json!({ "_json": other }).to_string()),
            Err(_) => {
                return HttpResponse::UnprocessableEntity()
                    .json(json!({"errors": {"payload": ["can't be blank"]}}));
            }
        },
    };
    if data.len() > shared.config.limits.max_payload_bytes {
        return HttpResponse::UnprocessableEntity().json(json!({"errors": {"payload": [PAYLOAD_TOO_LARGE]}}));
    }
    if !shared.rest.allow(1) {
        return rate_limited("You have exceeded your rate limit");
    }
    let (topic, event) = path.into_inner();
    metrics().rest_messages.increment(1);
    let body = BroadcastBody::User { event: event.into(), encoding, data, meta: None };
    publish(&shared, &topic, body).await;
    HttpResponse::Accepted().finish()
}
