//! `POST /graphql`: the notifications inbox's GraphQL endpoint ([`crate::inbox::graphql`]).
//!
//! The HTTP side decides what the schema cannot: who the caller is (the token's `sub`, verified as for
//! REST broadcast and sockets; none, invalid, or a `sub` that is not a UUID → 401), how large a body
//! may be (read up to `REALTIME_GRAPHQL_MAX_BODY_BYTES`, larger → 413; whole within
//! `REALTIME_REQUEST_BODY_TIMEOUT_MS`, slower → 408), how large an answer may be (over
//! [`MAX_RESPONSE_BYTES`] → only a `RESPONSE_TOO_LARGE` error; the schema's complexity limit keeps
//! answers well under it unless an operator raised it), and the status of an answer (429 when an
//! operation hit its per-user rate limit). Every refusal has a GraphQL-shaped body:
//! `{"data": null, "errors": [{"message", "extensions": {"code"}}]}`.
//!
//! The body is read here rather than by `async-graphql-actix-web`'s extractor, which reads a JSON
//! body to its end with no size limit; the crate's `GraphQLResponse` writes the answers.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, Responder as _};
use async_graphql::{ErrorExtensionValues, ServerError};
use async_graphql_actix_web::GraphQLResponse;

use super::rest::{authorised, read_limited, BodyError};
use crate::inbox::graphql::{
    explain_too_complex, Caller, MAX_RESPONSE_BYTES, RATE_LIMITED, RESPONSE_TOO_LARGE,
};
use crate::state::Shared;

fn answer(req: &HttpRequest, status: StatusCode, response: async_graphql::Response) -> HttpResponse {
    let mut http = GraphQLResponse::from(response).respond_to(req);
    *http.status_mut() = status;
    http
}

fn refuse(req: &HttpRequest, status: StatusCode, message: &str, code: &str) -> HttpResponse {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    answer(req, status, async_graphql::Response::from_errors(vec![error]))
}

/// Whether `response` serialises to at most `max` bytes of JSON; counting stops at `max`.
fn fits(response: &async_graphql::Response, max: usize) -> bool {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.checked_sub(buf.len()).ok_or(std::io::ErrorKind::WriteZero)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Budget(max), response).is_ok()
}

fn is_rate_limited(error: &ServerError) -> bool {
    let code = error.extensions.as_ref().and_then(|e| e.get("code"));
    matches!(code, Some(async_graphql::Value::String(c)) if c == RATE_LIMITED)
}

/// `POST /graphql` with `{"query", "variables"?, "operationName"?}`.
pub async fn graphql(req: HttpRequest, payload: web::Payload, shared: web::Data<Shared>) -> HttpResponse {
    let Some(schema) = &shared.graphql else {
        let reason = "notifications need a database: DATABASE_URL is not set";
        return refuse(&req, StatusCode::SERVICE_UNAVAILABLE, reason, "UNAVAILABLE");
    };
    let Some(claims) = authorised(&req, &shared) else {
        let reason = "a valid JWT is required (Authorization: Bearer, or apikey)";
        return refuse(&req, StatusCode::UNAUTHORIZED, reason, "UNAUTHENTICATED");
    };
    let Some(user_id) = claims.sub.as_deref().and_then(|sub| uuid::Uuid::parse_str(sub).ok()) else {
        let reason = "the token's sub must be a user id (a UUID)";
        return refuse(&req, StatusCode::UNAUTHORIZED, reason, "UNAUTHENTICATED");
    };
    let max = shared.config.inbox.max_body_bytes;
    let body = match read_limited(payload, max, shared.config.limits.request_body_timeout).await {
        Ok(body) => body,
        Err(e) => {
            let code = match e {
                BodyError::TooLarge { .. } => "PAYLOAD_TOO_LARGE",
                BodyError::Cut => "BAD_REQUEST",
                BodyError::Slow { .. } => "REQUEST_TIMEOUT",
            };
            let mut response = refuse(&req, e.status(), &e.to_string(), code);
            if matches!(e, BodyError::Slow { .. }) {
                // The rest of the body is not waited for.
                response.head_mut().set_connection_type(actix_web::http::ConnectionType::Close);
            }
            return response;
        }
    };
    let request = match serde_json::from_slice::<async_graphql::Request>(&body) {
        Ok(request) => request,
        Err(e) => {
            let reason = format!("the body must be a GraphQL request (JSON with \"query\"): {e}");
            return refuse(&req, StatusCode::BAD_REQUEST, &reason, "BAD_REQUEST");
        }
    };
    let mut response = schema.execute(request.data(Caller { user_id })).await;
    explain_too_complex(&mut response, shared.config.inbox.max_complexity);
    if !fits(&response, MAX_RESPONSE_BYTES) {
        let reason = format!(
            "the answer would be larger than {MAX_RESPONSE_BYTES} bytes: ask for fewer rows (limit) or fields"
        );
        return refuse(&req, StatusCode::OK, &reason, RESPONSE_TOO_LARGE);
    }
    let status = if response.errors.iter().any(is_rate_limited) {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    };
    answer(&req, status, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_over_the_cap_does_not_fit() {
        let data = async_graphql::Value::from_json(serde_json::json!({"a": "x".repeat(100)})).unwrap();
        let response = async_graphql::Response::new(data);
        let size = serde_json::to_vec(&response).unwrap().len();
        assert!(fits(&response, size));
        assert!(!fits(&response, size - 1));
        assert!(!fits(&response, 0));
    }
}
