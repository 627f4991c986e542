//! The inspector's API: `/inspector/api/cluster` (what `/cluster` shows) and `/inspector/api/channels`
//! (this node's channels with their member counts). Both need a `service_role` JWT the node accepts, in
//! `Authorization: Bearer <token>` or an `apikey` header, whatever `REALTIME_ADMIN_TOKEN` says: the page
//! is reachable by anyone who reaches the node, so its data is not. Not in the query string, where
//! tokens end up in logs. A missing or invalid token gets 401, a valid one of another role 403, each
//! with `{"message": …}` saying why.

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::auth::jwt::{Claims, TokenError, Verifier};
use crate::channel::messages::ListChannels;
use crate::state::Shared;

/// The most channels one answer lists (the busiest); `total` still counts them all.
pub const MAX_LISTED: usize = 500;

/// Why a request to the inspector's API was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "The inspector's API needs a service_role JWT: Authorization: Bearer <token>, or an apikey header"
    )]
    Missing,
    #[error("The token was refused: {0}")]
    Invalid(TokenError),
    #[error("The inspector's API needs a service_role JWT; this token's role is {role:?}")]
    NotServiceRole { role: String },
}

impl Refused {
    /// 401 for no valid token, 403 for a valid token of another role.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::Missing | Refused::Invalid(_) => StatusCode::UNAUTHORIZED,
            Refused::NotServiceRole { .. } => StatusCode::FORBIDDEN,
        }
    }

    fn response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status());
        if self.status() == StatusCode::UNAUTHORIZED {
            builder.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"realtime inspector\""));
        }
        builder
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({ "message": self.to_string() }))
    }
}

/// The caller's claims when `headers` carry a valid `service_role` JWT.
pub fn service_role(headers: &HeaderMap, verifier: &Verifier) -> Result<Claims, Refused> {
    let apikey =
        || headers.get("apikey").and_then(|v| v.to_str().ok()).map(str::trim).filter(|t| !t.is_empty());
    let token = crate::http::bearer(headers).or_else(apikey).ok_or(Refused::Missing)?;
    let claims = verifier.verify(token).map_err(Refused::Invalid)?;
    if claims.is_service_role() {
        Ok(claims)
    } else {
        Err(Refused::NotServiceRole { role: claims.role })
    }
}

fn ok(body: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}

/// `GET /inspector/api/cluster`: the body of `/cluster`.
pub async fn cluster(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if let Err(refused) = service_role(req.headers(), &shared.verifier) {
        return refused.response();
    }
    ok(crate::http::health::cluster_view(&shared))
}

/// `GET /inspector/api/channels`: `{node, total, channels: [{topic, private, members, elsewhere}]}`,
/// the busiest [`MAX_LISTED`] first; `members` counts this node's memberships, `elsewhere` the members
/// on the other nodes as this node last heard.
pub async fn channels(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if let Err(refused) = service_role(req.headers(), &shared.verifier) {
        return refused.response();
    }
    let Ok(list) = shared.registry.send(ListChannels { limit: MAX_LISTED }).await else {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "message": "The channel registry has stopped" }));
    };
    let channels: Vec<_> = list
        .channels
        .iter()
        .map(|c| {
            json!({
                "topic": &*c.key.sub_topic,
                "private": c.key.private,
                "members": c.members,
                "elsewhere": c.elsewhere,
            })
        })
        .collect();
    ok(json!({ "node": shared.config.node_id, "total": list.total, "channels": channels }))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    const SECRET: &str = "jwt-secret-for-inspector-tests";

    fn jwt(role: &str, secret: &str) -> String {
        let claims = json!({ "role": role, "exp": crate::auth::jwt::now_secs() + 600 });
        jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(header::HeaderName::from_static(name), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_a_valid_service_role_token_passes_and_each_refusal_says_why() {
        let verifier = Verifier::new(SECRET, None).unwrap();
        let service = jwt("service_role", SECRET);
        let check = |pairs: &[(&'static str, &str)]| service_role(&headers(pairs), &verifier);

        assert!(check(&[("authorization", &format!("Bearer {service}"))]).is_ok());
        assert!(check(&[("apikey", &service)]).is_ok());

        assert_eq!(check(&[]), Err(Refused::Missing));
        assert_eq!(check(&[("authorization", "Bearer ")]), Err(Refused::Missing));
        assert_eq!(
            check(&[("authorization", "Bearer nonsense")]),
            Err(Refused::Invalid(TokenError::Malformed))
        );
        let forged = jwt("service_role", "another-secret");
        assert_eq!(check(&[("apikey", &forged)]), Err(Refused::Invalid(TokenError::Signature)));
        let anon = jwt("anon", SECRET);
        let refused = check(&[("authorization", &format!("Bearer {anon}"))]).unwrap_err();
        assert_eq!(refused, Refused::NotServiceRole { role: "anon".into() });
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(Refused::Missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Refused::Invalid(TokenError::Signature).status(), StatusCode::UNAUTHORIZED);
    }
}
