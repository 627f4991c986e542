//! The JWTs load connections present: HS256, expiring in an hour (PROTOCOL.md §6.1): `role: anon` for
//! broadcast load, `role: authenticated` with a `sub` for Postgres Changes subscribers (RLS policies
//! read `auth.uid()` from it).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

/// How long the generated token stays valid; longer than any run.
pub const TOKEN_TTL_SECS: u64 = 3_600;

#[derive(Serialize)]
struct Claims<'a> {
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    iat: u64,
    exp: u64,
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn sign(secret: &str, claims: &Claims<'_>) -> Result<String, jsonwebtoken::errors::Error> {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
}

/// Signs an `anon` token with `secret`.
pub fn anon_token(secret: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let now = now_unix_secs();
    sign(secret, &Claims { role: "anon", sub: None, iat: now, exp: now + TOKEN_TTL_SECS })
}

/// Signs an `authenticated` token for user `sub`, issued at `iat`: every process signing for the same
/// user with the same `iat` produces the same token, so the server sees one set of claims per user.
pub fn user_token(secret: &str, sub: &str, iat: u64) -> Result<String, jsonwebtoken::errors::Error> {
    sign(secret, &Claims { role: "authenticated", sub: Some(sub), iat, exp: iat + TOKEN_TTL_SECS })
}

/// Signs a `service_role` token (what `POST /api/notifications` needs).
pub fn service_token(secret: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let now = now_unix_secs();
    sign(secret, &Claims { role: "service_role", sub: None, iat: now, exp: now + TOKEN_TTL_SECS })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{decode, DecodingKey, Validation};
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Decoded {
        role: String,
        sub: Option<String>,
        exp: u64,
        iat: u64,
    }

    #[test]
    fn verifies_with_the_same_secret_only() {
        let token = anon_token("secret").unwrap();
        let data = decode::<Decoded>(
            &token,
            &DecodingKey::from_secret(b"secret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims.role, "anon");
        assert_eq!(data.claims.exp - data.claims.iat, TOKEN_TTL_SECS);
        assert!(decode::<Decoded>(
            &token,
            &DecodingKey::from_secret(b"other"),
            &Validation::new(Algorithm::HS256)
        )
        .is_err());
    }

    #[test]
    fn user_tokens_carry_role_and_sub_and_are_reproducible() {
        let token = user_token("secret", "00000000-0000-4000-8000-000000000001", 1_000).unwrap();
        assert_eq!(token, user_token("secret", "00000000-0000-4000-8000-000000000001", 1_000).unwrap());
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        let data = decode::<Decoded>(&token, &DecodingKey::from_secret(b"secret"), &validation).unwrap();
        assert_eq!(data.claims.role, "authenticated");
        assert_eq!(data.claims.sub.as_deref(), Some("00000000-0000-4000-8000-000000000001"));
        assert_eq!((data.claims.iat, data.claims.exp), (1_000, 1_000 + TOKEN_TTL_SECS));
    }
}
