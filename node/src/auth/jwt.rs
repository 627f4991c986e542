//! JWT verification with the reference server's selection rules and error messages.
//!
//! The algorithm named in the token header picks the key: HS* uses the shared secret (or an `oct` JWK
//! with the token's `kid`), RS*/ES*/EdDSA need a JWK of the matching type with the token's `kid`. A token
//! can never choose its own key type, so an RS256 header signed with the HMAC secret is refused.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use thiserror::Error;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("API key is missing")]
    Missing,
    #[error("The token provided is not a valid JWT")]
    Malformed,
    #[error("Failed to validate JWT signature")]
    Signature,
    #[error("Failed to generate JWT signer, check your JWT secret or JWKS configuration")]
    NoSigner,
    #[error(
        "Failed to generate JWT signer for key ID (kid) \"{0}\", check your JWT secret or JWKS configuration"
    )]
    NoSignerForKid(String),
    #[error("Token has expired {0} seconds ago")]
    Expired(i64),
    #[error("Fields `role` and `exp` are required in JWT")]
    MissingClaims,
}

impl TokenError {
    /// The `{"error": …}` message of a refused WebSocket handshake (PROTOCOL.md §1.3).
    pub fn handshake_message(&self) -> String {
        match self {
            TokenError::Expired(_) => "Token has expired".to_owned(),
            other => other.to_string(),
        }
    }

    /// The `reason` of a refused join: `"<Code>: <message>"` (PROTOCOL.md §2.5).
    pub fn join_reason(&self) -> String {
        let code = match self {
            TokenError::Missing | TokenError::Malformed => "MalformedJWT",
            TokenError::Signature => "JwtSignatureError",
            TokenError::NoSigner | TokenError::NoSignerForKid(_) => "JwtSignerError",
            TokenError::Expired(_) | TokenError::MissingClaims => "InvalidJWTToken",
        };
        let message = match self {
            TokenError::Missing => TokenError::Malformed.to_string(),
            other => other.to_string(),
        };
        format!("{code}: {message}")
    }

    /// The `system` message that closes a joined channel (PROTOCOL.md §2.10, §2.11).
    pub fn channel_message(&self) -> String {
        match self {
            TokenError::Missing => TokenError::Malformed.to_string(),
            other => other.to_string(),
        }
    }
}

/// The role of a Supabase backend's key: trusted to act for the project (create notifications, read
/// `/cluster` and `/metrics`, REST broadcasts outside the per-sender budget).
pub const SERVICE_ROLE: &str = "service_role";

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub role: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    pub sub: Option<String>,
    /// Every claim, for RLS (`request.jwt.claims`).
    pub all: Map<String, Value>,
}

impl Claims {
    /// A `service_role` token: the project's own backend.
    pub fn is_service_role(&self) -> bool {
        self.role == SERVICE_ROLE
    }
}

/// Verifies tokens against the configured secret and JWKS.
pub struct Verifier {
    secret: DecodingKey,
    /// JWKs by `kid`.
    jwks: HashMap<String, jsonwebtoken::jwk::Jwk>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("jwks_kids", &self.jwks.keys().collect::<Vec<_>>()).finish()
    }
}

/// The JWKS file could not be used.
#[derive(Debug, Error)]
#[error("invalid JWKS: {0}")]
pub struct JwksError(String);

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Verifier {
    pub fn new(secret: &str, jwks_json: Option<&str>) -> Result<Verifier, JwksError> {
        let mut jwks = HashMap::new();
        if let Some(json) = jwks_json {
            let set: JwkSet = serde_json::from_str(json).map_err(|e| JwksError(e.to_string()))?;
            for jwk in set.keys {
                if let Some(kid) = jwk.common.key_id.clone() {
                    jwks.insert(kid, jwk);
                }
            }
        }
        Ok(Verifier { secret: DecodingKey::from_secret(secret.as_bytes()), jwks })
    }

    /// Verifies `token` now.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, now_secs())
    }

    /// Verifies `token` as of `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let token: String = token.chars().filter(|c| !c.is_whitespace()).collect();
        if token.is_empty() {
            return Err(TokenError::Malformed);
        }
        let header = peek_header(&token)?;
        let alg = header.get("alg").and_then(Value::as_str).ok_or(TokenError::Malformed)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let (algorithm, key) = self.key_for(alg, kid)?;
        let mut validation = Validation::new(algorithm);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(&token, &key, &validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                    jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
                    | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
                    | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
                    | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                    | jsonwebtoken::errors::ErrorKind::InvalidEddsaKey => TokenError::NoSigner,
                    _ => TokenError::Malformed,
                }
            })?;
        claims_of(data.claims, now)
    }

    fn key_for(&self, alg: &str, kid: Option<&str>) -> Result<(Algorithm, DecodingKey), TokenError> {
        let algorithm: Algorithm = match alg {
            "HS256" | "HS384" | "HS512" | "RS256" | "RS384" | "RS512" | "ES256" | "ES384" | "PS256"
            | "PS384" | "PS512" | "EdDSA" => alg.parse().map_err(|_| TokenError::NoSigner)?,
            _ => return Err(signer_error(kid)),
        };
        let wanted = |params: &AlgorithmParameters| match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                matches!(params, AlgorithmParameters::OctetKey(_))
            }
            Algorithm::ES256 | Algorithm::ES384 => matches!(params, AlgorithmParameters::EllipticCurve(_)),
            Algorithm::EdDSA => matches!(params, AlgorithmParameters::OctetKeyPair(_)),
            _ => matches!(params, AlgorithmParameters::RSA(_)),
        };
        let jwk = kid.and_then(|k| self.jwks.get(k)).filter(|jwk| wanted(&jwk.algorithm));
        match (jwk, algorithm) {
            (Some(jwk), _) => {
                let key = DecodingKey::from_jwk(jwk).map_err(|_| signer_error(kid))?;
                Ok((algorithm, key))
            }
            (None, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
                Ok((algorithm, self.secret.clone()))
            }
            (None, _) => Err(signer_error(kid)),
        }
    }
}

fn signer_error(kid: Option<&str>) -> TokenError {
    match kid {
        Some(kid) => TokenError::NoSignerForKid(kid.to_owned()),
        None => TokenError::NoSigner,
    }
}

/// Decodes the header segment without verifying anything.
fn peek_header(token: &str) -> Result<Map<String, Value>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).map_err(|_| TokenError::Malformed)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed),
    }
}

fn claims_of(all: Map<String, Value>, now: i64) -> Result<Claims, TokenError> {
    let role = all.get("role").and_then(Value::as_str).map(str::to_owned);
    let exp = all.get("exp");
    let (Some(role), Some(exp)) = (role, exp) else { return Err(TokenError::MissingClaims) };
    let exp = exp.as_f64().map(|e| e.round() as i64).ok_or(TokenError::Malformed)?;
    if let Some(iat) = all.get("iat") {
        if !iat.is_number() {
            return Err(TokenError::Malformed);
        }
    }
    if exp <= now {
        return Err(TokenError::Expired(now - exp));
    }
    let sub = all.get("sub").and_then(Value::as_str).map(str::to_owned);
    Ok(Claims { role, exp, sub, all })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "test-secret-with-enough-bytes-0123456789";

    fn sign(alg: Algorithm, claims: Value, key: &[u8]) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn verifier() -> Verifier {
        Verifier::new(SECRET, None).unwrap()
    }

    #[test]
    fn accepts_hs_family() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let t = sign(alg, json!({"role": "anon", "exp": 2000, "sub": "u1"}), SECRET.as_bytes());
            let c = verifier().verify_at(&t, 1000).unwrap();
            assert_eq!((c.role.as_str(), c.exp, c.sub.as_deref()), ("anon", 2000, Some("u1")));
        }
    }

    #[test]
    fn refuses_hostile_tokens_with_the_reference_messages() {
        let v = verifier();
        let ok_claims = json!({"role": "anon", "exp": 2000});
        let expired = sign(Algorithm::HS256, json!({"role": "anon", "exp": 900}), SECRET.as_bytes());
        assert_eq!(v.verify_at(&expired, 1000), Err(TokenError::Expired(100)));
        let no_role = sign(Algorithm::HS256, json!({"exp": 2000}), SECRET.as_bytes());
        assert_eq!(v.verify_at(&no_role, 1000), Err(TokenError::MissingClaims));
        let no_exp = sign(Algorithm::HS256, json!({"role": "anon"}), SECRET.as_bytes());
        assert_eq!(v.verify_at(&no_exp, 1000), Err(TokenError::MissingClaims));
        let wrong = sign(Algorithm::HS256, ok_claims.clone(), b"another-secret");
        assert_eq!(v.verify_at(&wrong, 1000), Err(TokenError::Signature));
        let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&ok_claims));
        assert_eq!(v.verify_at(&none, 1000), Err(TokenError::NoSigner));
        // RS256 header, HMAC-signed with the secret: algorithm confusion must not verify.
        let hs = sign(Algorithm::HS256, ok_claims.clone(), SECRET.as_bytes());
        let sig = hs.rsplit('.').next().unwrap();
        let confused = format!("{}.{}.{}", b64(&json!({"alg": "RS256", "typ": "JWT"})), b64(&ok_claims), sig);
        assert_eq!(v.verify_at(&confused, 1000), Err(TokenError::NoSigner));
        let with_kid = format!("{}.{}.{}", b64(&json!({"alg": "RS256", "kid": "k1"})), b64(&ok_claims), sig);
        assert_eq!(v.verify_at(&with_kid, 1000), Err(TokenError::NoSignerForKid("k1".into())));
        for junk in ["", "abc", "a.b.c", "a.b", "....", "eyJ.eyJ.x"] {
            assert_eq!(v.verify_at(junk, 1000), Err(TokenError::Malformed), "{junk:?}");
        }
    }

    #[test]
    fn jwks_oct_key_by_kid_and_fallback() {
        let jwks = json!({"keys": [{"kty": "oct", "kid": "k1", "k": URL_SAFE_NO_PAD.encode(b"jwk-secret"), "alg": "HS256"}]});
        let v = Verifier::new(SECRET, Some(&jwks.to_string())).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let claims = json!({"role": "authenticated", "exp": 2000});
        let t = encode(&header, &claims, &EncodingKey::from_secret(b"jwk-secret")).unwrap();
        assert!(v.verify_at(&t, 1000).is_ok());
        header.kid = Some("unknown".into());
        let t = encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
        assert!(v.verify_at(&t, 1000).is_ok(), "HS with unknown kid falls back to the secret");
    }

    #[test]
    fn reasons() {
        assert_eq!(TokenError::Expired(5).join_reason(), "InvalidJWTToken: Token has expired 5 seconds ago");
        assert_eq!(TokenError::Expired(5).handshake_message(), "Token has expired");
        assert_eq!(
            TokenError::Malformed.join_reason(),
            "MalformedJWT: The token provided is not a valid JWT"
        );
        assert_eq!(
            TokenError::Signature.join_reason(),
            "JwtSignatureError: Failed to validate JWT signature"
        );
    }
}
