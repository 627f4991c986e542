//! Authentication: JWT verification for sockets, channels and REST (PROTOCOL.md §6.1).
//!
//! [`jwt::Verifier`] checks signatures (HS* with the configured secret, RS*/ES*/EdDSA from a JWKS by
//! `kid`) and the claims the reference requires (`exp` in the future, `role` present). Its
//! [`jwt::TokenError`] knows the exact message for each place a token is checked.

pub mod admin_token;
pub mod dev;
pub mod jwt;

pub use admin_token::AdminToken;
pub use jwt::{Claims, TokenError, Verifier, SERVICE_ROLE};
