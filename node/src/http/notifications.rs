//! `POST /api/notifications`: a backend creates a notification for a user (issue 10). It needs a
//! `service_role` token (Bearer, `apikey` header or query, verified as the REST broadcast does), and
//! answers 201 with the inserted row; its push to `notifications:<user_id>` then comes from the WAL
//! stream, like any insert ([`crate::cdc::notifications`]).
//!
//! Refusals are `{"error": reason}`: 401 (no or bad token), 403 (not `service_role`), 422 (the body,
//! see [`crate::inbox::input`]), 408 (the body did not arrive in time), 429 (REST concurrency; a slot
//! is taken only once the token and role are checked), 503 (no `DATABASE_URL`, or the database cannot
//! be reached), 500 (the insert failed).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::rest::{authorised, body_refusal, busy, read_limited, BodyError, RestSlot};
use crate::db::DbError;
use crate::inbox::input::{self, InputError};
use crate::inbox::InboxError;
use crate::state::Shared;

fn error(status: StatusCode, reason: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": reason.to_string() }))
}

/// `POST /api/notifications` with `{user_id, type, content}` → 201 `{id, user_id, type, content,
/// read_at, created_at}`.
pub async fn create(req: HttpRequest, payload: web::Payload, shared: web::Data<Shared>) -> HttpResponse {
    let Some(claims) = authorised(&req, &shared) else {
        return error(StatusCode::UNAUTHORIZED, "a valid JWT is required (Authorization: Bearer, or apikey)");
    };
    if !claims.is_service_role() {
        return error(StatusCode::FORBIDDEN, "creating notifications needs a service_role token");
    }
    let Some(inbox) = &shared.inbox else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "notifications need a database: DATABASE_URL is not set",
        );
    };
    let Some(_slot) = RestSlot::acquire(&shared) else { return busy() };
    let max_content = shared.config.inbox.max_content_bytes;
    let max_body = input::max_body_bytes(max_content);
    let body = match read_limited(payload, max_body, shared.config.limits.request_body_timeout).await {
        Ok(body) => body,
        Err(BodyError::TooLarge { .. }) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, InputError::LargeBody(max_body));
        }
        Err(e) => return body_refusal(e).json(json!({ "error": e.to_string() })),
    };
    let new = match input::parse(&body, max_content) {
        Ok(new) => new,
        Err(reason) => return error(StatusCode::UNPROCESSABLE_ENTITY, reason),
    };
    match inbox.insert(new).await {
        Ok(row) => HttpResponse::Created().json(row),
        Err(InboxError::Db(e @ (DbError::Pool(_) | DbError::Stopped))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
        Err(e) => {
            tracing::warn!(error = %e, "notification insert failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}
