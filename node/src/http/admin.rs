//! Who may read `/cluster` and `/metrics`: they name every node, its cluster address and identity
//! (incarnation), its links and load, which is what an attacker on the cluster network needs to
//! speak for a node. With `REALTIME_ADMIN_TOKEN` set they need `Authorization: Bearer <token>`, or a
//! `service_role` JWT the node accepts (what a Supabase backend already holds); anything else gets
//! 401. `/healthz` and `/readyz` stay open: Kubernetes probes carry no credentials, and they say
//! nothing but "up" and "ready".
//!
//! Without the setting both answer anyone, as before (a warning at start names the risk when the
//! node is in a cluster).

use crate::auth::jwt::Verifier;
use crate::auth::AdminToken;
use actix_web::http::header::{self, HeaderMap};
use actix_web::HttpResponse;

/// Whether a request with `headers` may read an admin endpoint: always without a token; with one,
/// its bearer must be the token or a valid `service_role` JWT.
pub fn allowed(token: Option<&AdminToken>, verifier: &Verifier, headers: &HeaderMap) -> bool {
    let Some(token) = token else { return true };
    let Some(bearer) = super::bearer(headers) else { return false };
    token.matches(bearer) || verifier.verify(bearer).is_ok_and(|claims| claims.is_service_role())
}

/// The answer to a request that is not allowed.
pub fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"realtime admin\""))
        .content_type("text/plain")
        .body("admin token or service_role JWT required\n")
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    const SECRET: &str = "jwt-secret-for-admin-tests";

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn jwt(role: &str, secret: &str) -> String {
        let claims = serde_json::json!({ "role": role, "exp": crate::auth::jwt::now_secs() + 600 });
        jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    #[test]
    fn without_a_token_everyone_is_allowed() {
        let verifier = Verifier::new(SECRET, None).unwrap();
        assert!(allowed(None, &verifier, &headers(None)));
        assert!(allowed(None, &verifier, &headers(Some("Bearer nonsense"))));
    }

    #[test]
    fn with_a_token_only_it_or_a_service_role_jwt_is_allowed() {
        let verifier = Verifier::new(SECRET, None).unwrap();
        let token = AdminToken::new("0123456789abcdef-admin".into());
        let token = Some(&token);
        assert!(allowed(token, &verifier, &headers(Some("Bearer 0123456789abcdef-admin"))));
        assert!(allowed(token, &verifier, &headers(Some("bearer 0123456789abcdef-admin"))));
        assert!(allowed(
            token,
            &verifier,
            &headers(Some(&format!("Bearer {}", jwt("service_role", SECRET))))
        ));

        assert!(!allowed(token, &verifier, &headers(None)));
        assert!(!allowed(token, &verifier, &headers(Some("0123456789abcdef-admin"))));
        assert!(!allowed(token, &verifier, &headers(Some("Bearer 0123456789abcdef-admiN"))));
        assert!(!allowed(token, &verifier, &headers(Some("Bearer 0123456789abcdef"))));
        assert!(!allowed(token, &verifier, &headers(Some("Bearer "))));
        assert!(!allowed(token, &verifier, &headers(Some(&format!("Bearer {}", jwt("anon", SECRET))))));
        assert!(!allowed(
            token,
            &verifier,
            &headers(Some(&format!("Bearer {}", jwt("authenticated", SECRET))))
        ));
        let forged = jwt("service_role", "another-secret");
        assert!(!allowed(token, &verifier, &headers(Some(&format!("Bearer {forged}")))));
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let token = AdminToken::new("0123456789abcdef-admin".into());
        assert!(!format!("{token:?}").contains("0123"));
    }
}
