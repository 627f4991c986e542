//! The serializer versions a client can ask for with the `vsn` query parameter.
//!
//! `1.0.0` (the reference default when `vsn` is absent) speaks JSON objects in text frames; `2.0.0`
//! (realtime-js's default) speaks JSON arrays in text frames plus binary frames for user broadcasts.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A serializer version negotiated at the WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vsn {
    /// `1.0.0`: `{"topic","event","payload","ref","join_ref"}` objects; binary broadcasts cannot be sent.
    V1,
    /// `2.0.0`: `[join_ref, ref, topic, event, payload]` arrays and binary kinds 0/3 (in) and 4 (out).
    V2,
}

/// The `vsn` query parameter names no serializer this server speaks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("Unsupported serializer version: {0}")]
pub struct UnsupportedVsn(pub String);

impl Vsn {
    /// Both versions, in the order frames are pre-encoded for fan-out.
    pub const ALL: [Vsn; 2] = [Vsn::V1, Vsn::V2];

    /// Parses the `vsn` query value; a missing value means `1.0.0`, as in Phoenix.
    /// Any `1.0.x` / `2.0.x` matches (Phoenix uses `~> 1.0.0` / `~> 2.0.0`).
    pub fn from_query(value: Option<&str>) -> Result<Vsn, UnsupportedVsn> {
        match value {
            None => Ok(Vsn::V1),
            Some(v) => v.parse(),
        }
    }

    /// Index for per-version caches (`[T; 2]`).
    pub fn index(self) -> usize {
        match self {
            Vsn::V1 => 0,
            Vsn::V2 => 1,
        }
    }
}

impl FromStr for Vsn {
    type Err = UnsupportedVsn;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        let (major, minor, patch) = (parts.next(), parts.next(), parts.next());
        let patch_ok = patch.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if parts.next().is_some() || minor != Some("0") || !patch_ok {
            return Err(UnsupportedVsn(s.to_owned()));
        }
        match major {
            Some("1") => Ok(Vsn::V1),
            Some("2") => Ok(Vsn::V2),
            _ => Err(UnsupportedVsn(s.to_owned())),
        }
    }
}

impl fmt::Display for Vsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(Vsn::from_query(None), Ok(Vsn::V1));
        assert_eq!(Vsn::from_query(Some("1.0.0")), Ok(Vsn::V1));
        assert_eq!(Vsn::from_query(Some("2.0.0")), Ok(Vsn::V2));
        assert_eq!(Vsn::from_query(Some("2.0.3")), Ok(Vsn::V2));
        for bad in ["3.0.0", "2.1.0", "2", "", "2.0.", "2.0.0.0", "v2"] {
            assert!(Vsn::from_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
