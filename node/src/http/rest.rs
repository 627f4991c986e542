//! The REST broadcast API (PROTOCOL.md §3.5–3.6), for backends without a socket:
//! `POST /api/broadcast` (a batch of JSON messages) and `POST /api/broadcast/{topic}/events/{event}`
//! (one message, JSON or raw bytes). Both enter the same channel fan-out as socket broadcasts.
//!
//! What a request may cost is bounded before it is paid: at most `max_rest_concurrency` requests are
//! processed at once (each holds a [`RestSlot`] while it reads and parses its body; more are refused
//! with 429 before their body is read). A slot goes only to a caller whose token (in the request head)
//! is valid, and a body must arrive whole within `request_body_timeout` (else 408, and the slot is
//! free again): without that, 16 uploads trickling a few bytes every 10 s held every slot, refusing
//! everyone. A body is read only up to its size limit, and a batch's messages are counted while they
//! are parsed ([`batch`]), so a 100,000-message batch is refused after its first `max_rest_batch` + 1
//! messages, not after building all of them.
//!
//! Messages spend two budgets per second: the sender's (its token's `sub`, or the token itself), then
//! the node's. The node's alone let one sender's flood refuse everyone else's sends; a message the
//! sender's budget refuses spends nothing of the node's.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use realtime_proto::binary::BinaryEncoding;
use realtime_proto::server;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::batch::{self, BatchError};
use super::server::MAX_REST_BODY;
use crate::auth::jwt::Claims;
use crate::authz::{Caller, Extension};
use crate::channel::messages::{Broadcast, Lookup};
use crate::metrics::{metrics, Refusal};
use crate::resume::{self, Write, WriteError};
use crate::state::Shared;
use crate::vocab::{BroadcastBody, TopicKey};

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

/// One REST request being processed; released when dropped.
pub struct RestSlot<'a>(&'a Shared);

impl RestSlot<'_> {
    /// A slot, or `None` when `max_rest_concurrency` requests are already in flight.
    pub fn acquire(shared: &Shared) -> Option<RestSlot<'_>> {
        let max = shared.config.limits.max_rest_concurrency;
        let previous = shared.rest_in_flight.fetch_add(1, Ordering::AcqRel);
        if previous >= max {
            shared.rest_in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics().refused(Refusal::RestBusy);
            return None;
        }
        Some(RestSlot(shared))
    }
}

impl Drop for RestSlot<'_> {
    fn drop(&mut self) {
        self.0.rest_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) fn busy() -> HttpResponse {
    message(actix_web::http::StatusCode::TOO_MANY_REQUESTS, "Too many concurrent requests, retry later")
}

/// Why a request body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum BodyError {
    /// Larger than the limit (reading stopped there).
    #[error("the request body is larger than {max} bytes")]
    TooLarge { max: usize },
    /// The connection failed mid-body.
    #[error("the request body was cut")]
    Cut,
    /// Not received whole in time (`request_body_timeout`).
    #[error("the request body was not received within {} ms", .timeout.as_millis())]
    Slow { timeout: Duration },
}

/// Reads a request body up to `max` bytes, never buffering more, and whole within `timeout`.
pub(super) async fn read_limited(
    mut payload: web::Payload,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = BytesMut::new();
    loop {
        let next = tokio::time::timeout_at(deadline, payload.next()).await.map_err(|_| {
            metrics().refused(Refusal::BodyTimeout);
            BodyError::Slow { timeout }
        })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| BodyError::Cut)?;
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl BodyError {
    /// 413, 400 or 408.
    pub(super) fn status(self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Cut => StatusCode::BAD_REQUEST,
            BodyError::Slow { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// The answer to a body that could not be read; a slow one also ends its connection (the rest of its
/// body is not waited for).
pub(super) fn body_refusal(error: BodyError) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(error.status());
    if matches!(error, BodyError::Slow { .. }) {
        builder.force_close();
    }
    builder
}

/// Reads a request body up to `max` bytes; 413 when it is larger, 400 when the connection failed, 408
/// when it did not arrive in time.
async fn read_body(shared: &Shared, payload: web::Payload, max: usize) -> Result<Bytes, HttpResponse> {
    let timeout = shared.config.limits.request_body_timeout;
    read_limited(payload, max, timeout).await.map_err(|error| {
        let text = match error {
            BodyError::Cut => "Request body was cut".to_owned(),
            BodyError::TooLarge { .. } => "Request body is too large".to_owned(),
            BodyError::Slow { timeout } => {
                format!("Request body not received within {} ms", timeout.as_millis())
            }
        };
        body_refusal(error).json(json!({ "message": text }))
    })
}

/// `Authorization: Bearer <t>`, else the `apikey` header, else the `apikey` query parameter.
fn token(headers: &HeaderMap, query: &str) -> Option<String> {
    let bearer = super::bearer(headers).map(str::to_owned);
    let header = || headers.get("apikey").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let param = || {
        web::Query::<HashMap<String, String>>::from_query(query).ok().and_then(|q| q.get("apikey").cloned())
    };
    bearer.or_else(header).or_else(param)
}

/// The caller's verified claims, if its token is valid.
pub(super) fn authorised(req: &HttpRequest, shared: &Shared) -> Option<Claims> {
    sender(req, shared).map(|sender| sender.claims)
}

/// A verified REST caller.
struct Sender {
    claims: Claims,
    /// Whose budget its messages spend: the token's `sub`, or the token itself.
    key: String,
}

fn sender(req: &HttpRequest, shared: &Shared) -> Option<Sender> {
    let token = token(req.headers(), req.query_string())?;
    let claims = shared.verifier.verify(&token).ok()?;
    let key = claims.sub.clone().unwrap_or(token);
    Some(Sender { claims, key })
}

/// Spends `n` messages of the sender's budget, then of the node's; the 429 when either is spent. The
/// sender's comes first, so a sender over its own budget does not spend the node's. A `service_role`
/// caller (the project's backend, trusted) spends only the node's, so its batches up to
/// `REALTIME_MAX_REST_BATCH` pass as before.
fn over_budget(shared: &Shared, sender: &Sender, n: u32) -> Option<HttpResponse> {
    if !sender.claims.is_service_role() && !shared.token_rest.allow_n(&sender.key, n, Instant::now()) {
        metrics().refused(Refusal::TokenRestRate);
        let per_second = shared.config.limits.max_token_rest_events_per_second;
        let text =
            format!("You have exceeded your rate limit: at most {per_second} messages per second per sender");
        return Some(message(actix_web::http::StatusCode::TOO_MANY_REQUESTS, &text));
    }
    if !shared.rest.allow(n) {
        return Some(rate_limited("You have exceeded your rate limit"));
    }
    None
}

/// May the caller send to the private channel `sub_topic`? Its RLS write check (no database: no).
async fn may_write_private(shared: &Shared, claims: &Claims, sub_topic: &str) -> bool {
    let Some(authz) = &shared.authz else { return false };
    match authz.write(Caller::new(sub_topic, claims), Extension::Broadcast, claims.exp).await {
        Ok(allowed) => allowed,
        Err(error) => {
            tracing::warn!(topic = sub_topic, %error, "REST private send: write check failed");
            false
        }
    }
}

/// A sent message (`None`), or a stored one's commit to wait for.
type Published = Result<Option<oneshot::Receiver<Result<(), WriteError>>>, WriteError>;

/// Sends a message to the channel's members on every node. On a resumable channel it is stored
/// instead (and reaches them through the stream): the receiver tells when it is committed.
async fn publish(shared: &Shared, sub_topic: &str, private: bool, body: BroadcastBody) -> Published {
    let key = TopicKey { sub_topic: Arc::from(sub_topic), private };
    if let Some(resume) = shared.resume.as_ref().filter(|r| r.is_resumable(&key)) {
        let (event, payload) = resume::stored_form(&body).map_err(|e| WriteError::Failed(e.into()))?;
        let (done, committed) = oneshot::channel();
        resume.writer().submit(Write { key, event, payload, from: None, done: Some(done) })?;
        return Ok(Some(committed));
    }
    crate::peers::relay(shared.cluster.as_ref(), &key, &body);
    if let Ok(Some(channel)) = shared.registry.send(Lookup { key }).await {
        channel.do_send(Broadcast { from: None, body, received_at: Instant::now(), stored: None });
    }
    Ok(None)
}

/// 202 once every stored message is committed; 503 with the reason when one is not.
async fn accepted(published: Vec<Published>) -> HttpResponse {
    for result in published {
        let outcome = match result {
            Ok(Some(committed)) => committed.await.unwrap_or(Err(WriteError::Stopped)),
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            metrics().resume.store_failures.increment(1);
            return message(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, &error.to_string());
        }
    }
    HttpResponse::Accepted().finish()
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
pub async fn broadcast_batch(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let Some(sender) = sender(&req, &shared) else { return unauthorized() };
    let Some(_slot) = RestSlot::acquire(&shared) else { return busy() };
    let body = match read_body(&shared, payload, MAX_REST_BODY).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let limits = &shared.config.limits;
    // No batch larger than the budgets it spends can ever pass: stop parsing there.
    let sender_rate = match sender.claims.is_service_role() {
        true => u32::MAX,
        false => limits.max_token_rest_events_per_second,
    };
    let rate = limits.max_rest_events_per_second.min(sender_rate) as usize;
    let messages = match batch::messages(&body, limits.max_rest_batch.min(rate)) {
        Ok(Some(messages)) => messages,
        Ok(None) => {
            return HttpResponse::UnprocessableEntity()
                .json(json!({"errors": {"messages": ["can't be blank"]}}));
        }
        Err(BatchError::Json) => {
            return message(actix_web::http::StatusCode::BAD_REQUEST, "Request body is not valid JSON");
        }
        Err(BatchError::TooMany { .. }) if limits.max_rest_batch >= rate => {
            return rate_limited("Too many messages to broadcast, please reduce the batch size");
        }
        Err(BatchError::TooMany { max }) => {
            metrics().refused(Refusal::RestBatchTooLarge);
            let reason = format!("at most {max} messages per request");
            return HttpResponse::UnprocessableEntity().json(json!({"errors": {"messages": [reason]}}));
        }
    };
    let max_payload = limits.max_payload_bytes;
    let errors: Vec<Map<String, Value>> = messages.iter().map(|m| validate(m, max_payload)).collect();
    if errors.iter().any(|e| !e.is_empty()) {
        return HttpResponse::UnprocessableEntity().json(json!({"errors": {"messages": errors}}));
    }
    if let Some(refused) = over_budget(&shared, &sender, messages.len() as u32) {
        return refused;
    }
    let claims = sender.claims;
    let mut published = Vec::new();
    for m in messages {
        let (Some(topic), Some(event)) = (m["topic"].as_str(), m["event"].as_str()) else { continue };
        // A private channel's messages go out only if the caller's RLS write check passes; like the
        // reference, the others are skipped and the request still succeeds.
        let private = realtime_proto::join::flexible_bool(m.get("private")) == Some(true);
        if private && !may_write_private(&shared, &claims, topic).await {
            metrics().refused(Refusal::PrivateChannel);
            continue;
        }
        let meta = m.get("id").filter(|id| !id.is_null()).map(|id| json!({ "id": id }).to_string());
        let payload = server::user_broadcast_json(event, &m["payload"].to_string(), meta.as_deref());
        metrics().rest_messages.increment(1);
        published.push(publish(&shared, topic, private, BroadcastBody::Json(payload.into())).await);
    }
    accepted(published).await
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
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let Some(encoding) = body_encoding(req.headers()) else {
        return HttpResponse::UnsupportedMediaType().json(json!({ "error": UNSUPPORTED_MEDIA_TYPE }));
    };
    let Some(sender) = sender(&req, &shared) else { return unauthorized() };
    let Some(_slot) = RestSlot::acquire(&shared) else { return busy() };
    let body = match read_body(&shared, payload, MAX_REST_BODY).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let claims = &sender.claims;
    let private = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("private").cloned())
        .is_some_and(|p| p.eq_ignore_ascii_case("true"));
    let (topic, event) = path.into_inner();
    if private && !may_write_private(&shared, claims, &topic).await {
        // Not allowed by the topic's policies (or no database to ask): refuse, nothing is sent.
        metrics().refused(Refusal::PrivateChannel);
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
    if let Some(refused) = over_budget(&shared, &sender, 1) {
        return refused;
    }
    metrics().rest_messages.increment(1);
    let body = BroadcastBody::User { event: event.into(), encoding, data, meta: None };
    accepted(vec![publish(&shared, &topic, private, body).await]).await
}
