//! The request signature: `X-Realtime-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact body
//! bytes under `REALTIME_WEBHOOK_SECRET`. The body carries each event's `id` and `at`, so a receiver
//! that checks the signature can also refuse stale or repeated events (see the README).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::dev::hex;

/// The header the signature travels in.
pub const SIGNATURE_HEADER: &str = "x-realtime-signature";

/// `sha256=<lowercase hex HMAC-SHA256 of body under secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn any_change_to_body_or_secret_changes_it() {
        let body = br#"{"events":[]}"#;
        let base = signature(b"s", body);
        assert_ne!(base, signature(b"t", body));
        assert_ne!(base, signature(b"s", br#"{"events":[] }"#));
        assert_eq!(base, signature(b"s", body));
        assert_eq!(base.len(), "sha256=".len() + 64);
    }
}
