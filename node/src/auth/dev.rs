//! Embedded defaults for a first run: a random dev secret and a token signed with it, printed at
//! start-up so a newcomer can connect without any setup.

use jsonwebtoken::{encode, EncodingKey, Header};
use rand::Rng as _;
use serde_json::json;

use super::jwt::now_secs;

/// A random 32-byte secret, hex-encoded.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex(&bytes)
}

/// Lowercase hex of `bytes` (also the webhook signature's encoding).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An HS256 token with `role` that expires after `ttl_secs`.
pub fn token(secret: &str, role: &str, ttl_secs: i64) -> String {
    let claims = json!({ "role": role, "exp": now_secs() + ttl_secs, "iat": now_secs(), "sub": "dev" });
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("HS256 signing with a byte secret cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;

    #[test]
    fn dev_token_verifies() {
        let secret = generate_secret();
        assert_eq!(secret.len(), 64);
        let claims = Verifier::new(&secret, None).unwrap().verify(&token(&secret, "anon", 60)).unwrap();
        assert_eq!(claims.role, "anon");
    }
}
