//! Every WebSocket close the server sends, as one enum: its code, its reason text (exactly what goes
//! into the close frame) and whether the client reconnects after it. `docs/errors.md` lists the same
//! closes; `node/tests/docs.rs` checks the two against each other.
//!
//! A leaf: it depends on nothing else in the crate, so the socket, the outbox, the drain and the
//! webhooks all use it without importing one another.

use std::borrow::Cow;

/// One close of a WebSocket by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The socket's actor stopped without another reason (1000, empty reason).
    Ended,
    /// Nothing, not even a heartbeat, arrived for the idle timeout.
    IdleTimeout,
    /// The socket went over its joins per second (1001, as the reference closes it).
    JoinFlood,
    /// A continuation frame arrived with no first fragment before it.
    OrphanContinuation,
    /// Any other WebSocket protocol violation.
    ProtocolError,
    /// The client does not read fast enough (1008); the cause is in the reason.
    SlowConsumer(SlowCause),
    /// A `ref` or `join_ref` over `max` bytes: a reply could not be matched, so the socket is closed.
    RefTooLong { max: usize },
    /// A frame over the frame limit, decided from its header.
    FrameTooLarge,
    /// A reassembled fragmented message over the frame limit.
    MessageTooLarge,
    /// The node is draining: reconnect now, to another node (1012).
    Shutdown,
    /// The answer to a close frame the client sent: its code back, no reason.
    Echo { code: u16 },
}

/// Why a socket was closed as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowCause {
    /// A frame would have passed the outbox's bytes or frames bound.
    Overflow,
    /// Frames waited with no write progress for the write timeout.
    WriteTimeout,
    /// It had not written a batch of Postgres changes by the flush deadline.
    FlushDeadline,
}

impl SlowCause {
    pub const ALL: [SlowCause; 3] = [SlowCause::Overflow, SlowCause::WriteTimeout, SlowCause::FlushDeadline];

    /// The close reason the client reads.
    pub fn reason(self) -> &'static str {
        match self {
            SlowCause::Overflow => "slow consumer: outbox full",
            SlowCause::WriteTimeout => "slow consumer: write timeout",
            SlowCause::FlushDeadline => "slow consumer: postgres changes not written in time",
        }
    }
}

impl Close {
    /// Every close once: each slow-consumer cause, and an example value for the other fields. For docs
    /// and tests; a unit test checks that every variant is here.
    pub const ALL: [Close; 13] = [
        Close::Ended,
        Close::IdleTimeout,
        Close::JoinFlood,
        Close::OrphanContinuation,
        Close::ProtocolError,
        Close::SlowConsumer(SlowCause::Overflow),
        Close::SlowConsumer(SlowCause::WriteTimeout),
        Close::SlowConsumer(SlowCause::FlushDeadline),
        Close::RefTooLong { max: 64 },
        Close::FrameTooLarge,
        Close::MessageTooLarge,
        Close::Shutdown,
        Close::Echo { code: 1000 },
    ];

    /// The close code.
    pub fn code(self) -> u16 {
        match self {
            Close::Ended | Close::IdleTimeout => 1000,
            Close::JoinFlood => 1001,
            Close::OrphanContinuation | Close::ProtocolError => 1002,
            Close::SlowConsumer(_) | Close::RefTooLong { .. } => 1008,
            Close::FrameTooLarge | Close::MessageTooLarge => 1009,
            Close::Shutdown => 1012,
            Close::Echo { code } => code,
        }
    }

    /// The close frame's reason text, exactly as sent.
    pub fn reason(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Close::Ended | Close::Echo { .. } => "",
            Close::IdleTimeout => "idle timeout",
            Close::JoinFlood => "too many joins per second",
            Close::OrphanContinuation => "continuation without a first fragment",
            Close::ProtocolError => "protocol error",
            Close::SlowConsumer(cause) => cause.reason(),
            Close::RefTooLong { max } => {
                return Cow::Owned(format!("RefTooLong: ref and join_ref may have at most {max} bytes"))
            }
            Close::FrameTooLarge => "frame too large",
            Close::MessageTooLarge => "message too large",
            Close::Shutdown => "server shutting down, reconnect",
        })
    }

    /// Whether the client reconnects after this close: realtime-js reconnects (with its backoff)
    /// after every close it did not start itself.
    pub fn client_reconnects(self) -> bool {
        !matches!(self, Close::Echo { .. })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The variant names declared in `enum name { … }` of this file.
    fn declared(name: &str) -> BTreeSet<String> {
        let src = include_str!("close.rs");
        let start = src.find(&format!("pub enum {name} {{")).expect("enum declared");
        let body = &src[start..];
        let body = &body[..body.find("\n}").expect("enum closed")];
        body.lines()
            .skip(1)
            .filter_map(|l| l.strip_prefix("    "))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(|l| l.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap().to_owned())
            .collect()
    }

    fn debug_name(value: impl std::fmt::Debug) -> String {
        format!("{value:?}").split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap().to_owned()
    }

    #[test]
    fn all_lists_every_variant_once() {
        assert_eq!(Close::ALL.iter().map(debug_name).collect::<BTreeSet<_>>(), declared("Close"));
        assert_eq!(SlowCause::ALL.iter().map(debug_name).collect::<BTreeSet<_>>(), declared("SlowCause"));
        for cause in SlowCause::ALL {
            assert!(Close::ALL.contains(&Close::SlowConsumer(cause)), "{cause:?}");
        }
        let distinct: BTreeSet<(u16, String)> =
            Close::ALL.iter().map(|c| (c.code(), c.reason().into_owned())).collect();
        assert_eq!(distinct.len(), Close::ALL.len() - 1, "only Ended and Echo {{1000}} send the same");
    }

    #[test]
    fn codes_and_reasons_are_the_wire_ones() {
        assert_eq!(
            (Close::Shutdown.code(), &*Close::Shutdown.reason()),
            (1012, "server shutting down, reconnect")
        );
        let slow = Close::SlowConsumer(SlowCause::Overflow);
        assert_eq!((slow.code(), &*slow.reason()), (1008, "slow consumer: outbox full"));
        let r = Close::RefTooLong { max: 64 };
        assert_eq!(
            (r.code(), &*r.reason()),
            (1008, "RefTooLong: ref and join_ref may have at most 64 bytes")
        );
        assert_eq!((Close::Echo { code: 4001 }.code(), &*Close::Echo { code: 4001 }.reason()), (4001, ""));
        assert!(Close::IdleTimeout.client_reconnects() && !Close::Echo { code: 1000 }.client_reconnects());
    }
}
