//! A broadcast's place in its channel's resumable stream.
//!
//! Positions come from the one order every node agrees on: the commit order of PostgreSQL's WAL,
//! which the CDC leader ships to every node. A position is the commit position (LSN) of the
//! transaction that stored the message, and the message's place among that transaction's changes,
//! so messages of one transaction keep the order they were sent in. Clients treat it as opaque text:
//! 24 upper-case hex digits, whose text order is their order.

use std::fmt;

/// A message's place in the cluster-wide commit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// End of the commit record of the message's transaction.
    pub commit_lsn: u64,
    /// The message's index among its transaction's changes.
    pub index: u32,
}

/// Why a position sent by a client cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a position is 24 hexadecimal digits, as received in a broadcast's meta.position")]
pub struct BadPosition;

impl Position {
    /// Reads the text form (either case).
    pub fn parse(text: &str) -> Result<Position, BadPosition> {
        if text.len() != 24 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadPosition);
        }
        let commit_lsn = u64::from_str_radix(&text[..16], 16).map_err(|_| BadPosition)?;
        let index = u32::from_str_radix(&text[16..], 16).map_err(|_| BadPosition)?;
        Ok(Position { commit_lsn, index })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}{:08X}", self.commit_lsn, self.index)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_text_form_is_fixed_width_hex() {
        let p = Position { commit_lsn: 0x16B_3748, index: 3 };
        assert_eq!(p.to_string(), "00000000016B374800000003");
        assert_eq!(Position::parse("00000000016b374800000003"), Ok(p));
        for bad in [
            "",
            "0",
            "00000000016B37480000000",
            "00000000016B3748000000033",
            "00000000016B37480000000G",
            "+0000000016B374800000003",
        ] {
            assert_eq!(Position::parse(bad), Err(BadPosition), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn text_round_trips_and_sorts_like_positions(a in any::<(u64, u32)>(), b in any::<(u64, u32)>()) {
            let (a, b) = (Position { commit_lsn: a.0, index: a.1 }, Position { commit_lsn: b.0, index: b.1 });
            prop_assert_eq!(Position::parse(&a.to_string()), Ok(a));
            prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        }
    }
}
