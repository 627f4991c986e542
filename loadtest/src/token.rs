//! The JWT every load connection presents: HS256, `role: anon`, expiring in an hour (PROTOCOL.md §6.1).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

/// How long the generated token stays valid; longer than any run.
pub const TOKEN_TTL_SECS: u64 = 3_600;

#[derive(Serialize)]
struct Claims<'a> {
    role: &'a str,
    iat: u64,
    exp: u64,
}

/// Signs an `anon` token with `secret`.
pub fn anon_token(secret: &str) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = Claims { role: "anon", iat: now, exp: now + TOKEN_TTL_SECS };
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{decode, DecodingKey, Validation};
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Decoded {
        role: String,
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
}
