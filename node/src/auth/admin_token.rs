//! The admin token (`REALTIME_ADMIN_TOKEN`): a secret compared in constant time and never printed.
//! Here, beside the JWT verifier, because the configuration builds it and the HTTP layer checks it
//! (`crate::http::admin`): neither has to import the other for it.

use sha2::{Digest, Sha256};

/// The token `/cluster` and `/metrics` require; never printed.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps an already validated token (see `config`).
    pub fn new(token: String) -> AdminToken {
        AdminToken(token)
    }

    /// Whether `presented` is this token, in time independent of where they differ and of their
    /// lengths: both are hashed, and the digests compared without an early exit.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let want = Sha256::digest(self.0.as_bytes());
        let got = Sha256::digest(presented.as_bytes());
        want.iter().zip(got.iter()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}
