//! Fuzz target: the pgoutput decoder ([`decode`]) and the commit timestamp formatter.
//!
//! The bytes come from the replication connection, so a malformed or hostile message must be a typed
//! [`DecodeError`], never a panic or an allocation the message does not pay for. There is no encoder in
//! the crate (PostgreSQL is the only writer), so this file has one, written from the protocol
//! documentation: every generated [`Message`] encodes and decodes back to itself. Around that: arbitrary
//! bytes, bytes behind a known tag, encoded messages edited byte by byte (what still decodes must
//! re-encode to the same message), and messages whose one length or count field lies, where the exact
//! error is known (`Truncated` for any over-claim, however large, `TrailingBytes` for an under-claim,
//! `NegativeLength` below zero).
//!
//! Cases per property: `REALTIME_FUZZ_CASES` (default 2,000). The long run is
//! `REALTIME_FUZZ_CASES=1000000 cargo test --release -p realtime-node --lib pgoutput::fuzz_tests` (or the
//! command in docs/benchmarks.md, which runs every target).

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;

/// Cases per property: `REALTIME_FUZZ_CASES` (underscores allowed), else 2,000; as in
/// `proto/tests/support`, failures are not persisted (a crash becomes a named regression test).
fn config() -> Config {
    let cases = match std::env::var("REALTIME_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("REALTIME_FUZZ_CASES={v:?} is not a count")),
        Err(_) => 2_000,
    };
    Config { cases, failure_persistence: None, ..Config::default() }
}

// ---------------------------------------------------------------------------------------------------
// A pgoutput writer ("Logical Replication Message Formats", protocol versions 1, 2 and 4's abort).

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn string(&mut self, s: &str) -> &mut Self {
        self.0.extend(s.as_bytes());
        self.u8(0)
    }
    fn xid(&mut self, xid: Option<u32>) -> &mut Self {
        if let Some(xid) = xid {
            self.u32(xid);
        }
        self
    }
    fn data(&mut self, bytes: &[u8]) -> &mut Self {
        self.i32(i32::try_from(bytes.len()).expect("test data is small"));
        self.0.extend(bytes);
        self
    }
    fn tuple(&mut self, tuple: &Tuple) -> &mut Self {
        self.u16(u16::try_from(tuple.0.len()).expect("test tuples are small"));
        for value in &tuple.0 {
            match value {
                TupleValue::Null => self.u8(b'n'),
                TupleValue::UnchangedToast => self.u8(b'u'),
                TupleValue::Text(b) => self.u8(b't').data(b),
                TupleValue::Binary(b) => self.u8(b'b').data(b),
            };
        }
        self
    }
    fn old(&mut self, old: &OldTuple) -> &mut Self {
        match old {
            OldTuple::Key(t) => self.u8(b'K').tuple(t),
            OldTuple::Full(t) => self.u8(b'O').tuple(t),
        }
    }
}

/// Encodes a message. `stream_xid` is the xid a Relation or Type carries inside a stream (the decoder
/// reads and drops it); the other transactional messages carry theirs in the message itself.
fn encode(message: &Message, stream_xid: Option<u32>) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    match message {
        Message::Begin { final_lsn, commit_time_us, xid } => {
            w.u8(b'B').u64(*final_lsn).i64(*commit_time_us).u32(*xid);
        }
        Message::Commit { flags, commit_lsn, end_lsn, commit_time_us } => {
            w.u8(b'C').u8(*flags).u64(*commit_lsn).u64(*end_lsn).i64(*commit_time_us);
        }
        Message::Origin { commit_lsn, name } => {
            w.u8(b'O').u64(*commit_lsn).string(name);
        }
        Message::Relation(r) => {
            w.u8(b'R').xid(stream_xid).u32(r.oid).string(&r.namespace).string(&r.name).u8(r.replica_identity);
            w.u16(u16::try_from(r.columns.len()).expect("test relations are small"));
            for c in &r.columns {
                w.u8(u8::from(c.key)).string(&c.name).u32(c.type_oid).i32(c.type_modifier);
            }
        }
        Message::Type { oid, namespace, name } => {
            w.u8(b'Y').xid(stream_xid).u32(*oid).string(namespace).string(name);
        }
        Message::Insert { xid, relation, new } => {
            w.u8(b'I').xid(*xid).u32(*relation).u8(b'N').tuple(new);
        }
        Message::Update { xid, relation, old, new } => {
            w.u8(b'U').xid(*xid).u32(*relation);
            if let Some(old) = old {
                w.old(old);
            }
            w.u8(b'N').tuple(new);
        }
        Message::Delete { xid, relation, old } => {
            w.u8(b'D').xid(*xid).u32(*relation).old(old);
        }
        Message::Truncate { xid, options, relations } => {
            w.u8(b'T').xid(*xid).i32(i32::try_from(relations.len()).expect("small")).u8(*options);
            for r in relations {
                w.u32(*r);
            }
        }
        Message::LogicalMessage { xid, transactional, lsn, prefix, content } => {
            w.u8(b'M').xid(*xid).u8(u8::from(*transactional)).u64(*lsn).string(prefix).data(content);
        }
        Message::StreamStart { xid, first_segment } => {
            w.u8(b'S').u32(*xid).u8(u8::from(*first_segment));
        }
        Message::StreamStop => {
            w.u8(b'E');
        }
        Message::StreamCommit { xid, flags, commit_lsn, end_lsn, commit_time_us } => {
            w.u8(b'c').u32(*xid).u8(*flags).u64(*commit_lsn).u64(*end_lsn).i64(*commit_time_us);
        }
        Message::StreamAbort { xid, subxid, abort_lsn, abort_time_us } => {
            w.u8(b'A').u32(*xid).u32(*subxid);
            if let (Some(lsn), Some(time)) = (abort_lsn, abort_time_us) {
                w.u64(*lsn).i64(*time);
            }
        }
    }
    w.0
}

/// The `in_stream` flag a message must be decoded with, and the stream xid to encode it with.
fn stream_of(message: &Message, relation_xid: Option<u32>) -> (bool, Option<u32>) {
    match message {
        Message::Insert { xid, .. }
        | Message::Update { xid, .. }
        | Message::Delete { xid, .. }
        | Message::Truncate { xid, .. }
        | Message::LogicalMessage { xid, .. } => (xid.is_some(), None),
        Message::Relation(_) | Message::Type { .. } => (relation_xid.is_some(), relation_xid),
        // Not transactional: the flag does not change how these are read.
        _ => (relation_xid.is_some(), None),
    }
}

// ---------------------------------------------------------------------------------------------------
// Generators.

/// A name as PostgreSQL sends it: any text without NUL (the terminator).
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z_][a-z0-9_]{0,12}",
        1 => prop::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..16)
            .prop_map(String::from_iter),
    ]
}

fn data() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn tuple() -> impl Strategy<Value = Tuple> {
    let value = prop_oneof![
        Just(TupleValue::Null),
        Just(TupleValue::UnchangedToast),
        data().prop_map(TupleValue::Text),
        data().prop_map(TupleValue::Binary),
    ];
    prop::collection::vec(value, 0..6).prop_map(Tuple)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![tuple().prop_map(OldTuple::Key), tuple().prop_map(OldTuple::Full)]
}

fn relation() -> impl Strategy<Value = Relation> {
    let column = (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(key, name, type_oid, type_modifier)| RelationColumn { key, name, type_oid, type_modifier },
    );
    let identity = prop_oneof![4 => prop::sample::select(b"dnfi".to_vec()), 1 => any::<u8>()];
    (any::<u32>(), name(), name(), identity, prop::collection::vec(column, 0..6)).prop_map(
        |(oid, namespace, name, replica_identity, columns)| Relation {
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        },
    )
}

fn message() -> BoxedStrategy<Message> {
    let xid = prop::option::of(any::<u32>());
    prop_oneof![
        (any::<u64>(), any::<i64>(), any::<u32>())
            .prop_map(|(final_lsn, commit_time_us, xid)| Message::Begin { final_lsn, commit_time_us, xid }),
        (any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time_us)| Message::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time_us
            }
        ),
        (any::<u64>(), name()).prop_map(|(commit_lsn, name)| Message::Origin { commit_lsn, name }),
        relation().prop_map(Message::Relation),
        (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| Message::Type {
            oid,
            namespace,
            name
        }),
        (xid.clone(), any::<u32>(), tuple()).prop_map(|(xid, relation, new)| Message::Insert {
            xid,
            relation,
            new
        }),
        (xid.clone(), any::<u32>(), prop::option::of(old_tuple()), tuple())
            .prop_map(|(xid, relation, old, new)| Message::Update { xid, relation, old, new }),
        (xid.clone(), any::<u32>(), old_tuple()).prop_map(|(xid, relation, old)| Message::Delete {
            xid,
            relation,
            old
        }),
        (xid.clone(), any::<u8>(), prop::collection::vec(any::<u32>(), 0..6))
            .prop_map(|(xid, options, relations)| Message::Truncate { xid, options, relations }),
        (xid, any::<bool>(), any::<u64>(), name(), data()).prop_map(
            |(xid, transactional, lsn, prefix, content)| {
                Message::LogicalMessage { xid, transactional, lsn, prefix, content }
            }
        ),
        (any::<u32>(), any::<bool>())
            .prop_map(|(xid, first_segment)| Message::StreamStart { xid, first_segment }),
        Just(Message::StreamStop),
        (any::<u32>(), any::<u8>(), any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
            |(xid, flags, commit_lsn, end_lsn, commit_time_us)| Message::StreamCommit {
                xid,
                flags,
                commit_lsn,
                end_lsn,
                commit_time_us
            }
        ),
        (any::<u32>(), any::<u32>(), prop::option::of((any::<u64>(), any::<i64>()))).prop_map(
            |(xid, subxid, abort)| Message::StreamAbort {
                xid,
                subxid,
                abort_lsn: abort.map(|a| a.0),
                abort_time_us: abort.map(|a| a.1),
            }
        ),
    ]
    .boxed()
}

/// A message with the stream xid a Relation or Type is sent with inside a stream.
fn framed_message() -> impl Strategy<Value = (Message, Option<u32>)> {
    (message(), prop::option::of(any::<u32>()))
}

/// One byte-level edit: where (a fraction of the length), what, and a value.
fn byte_edits() -> impl Strategy<Value = Vec<(f64, u8, u32)>> {
    prop::collection::vec((0.0f64..1.0, 0u8..5, any::<u32>()), 1..4)
}

/// Applies byte edits: delete, insert, replace, cut, or overwrite four bytes with a length that lies
/// (`i32::MAX`, `-1`, or the value given).
fn edit(bytes: &mut Vec<u8>, edits: &[(f64, u8, u32)]) {
    for &(at, op, value) in edits {
        let i = ((bytes.len() as f64) * at) as usize;
        match op {
            0 if i < bytes.len() => {
                bytes.remove(i);
            }
            1 => bytes.insert(i.min(bytes.len()), value as u8),
            2 if i < bytes.len() => bytes[i] = value as u8,
            3 => bytes.truncate(i),
            4 if i + 4 <= bytes.len() => {
                let lie = match value % 3 {
                    0 => i32::MAX as u32,
                    1 => u32::MAX,
                    _ => value,
                };
                bytes[i..i + 4].copy_from_slice(&lie.to_be_bytes());
            }
            _ => {}
        }
    }
}

/// Decodes without panicking; what decodes must encode and decode back to the same message.
fn check_decodes_stably(bytes: Vec<u8>, in_stream: bool) {
    let Ok(message) = decode(Bytes::from(bytes), in_stream) else { return };
    // A Relation or Type inside a stream carried an xid the decoder dropped; any xid re-encodes it.
    let stream_xid = in_stream.then_some(0);
    let again = encode(&message, stream_xid);
    assert_eq!(decode(Bytes::from(again), in_stream), Ok(message));
}

/// Which length field of [`lying_message`] lies.
#[derive(Debug, Clone, Copy)]
enum Lie {
    TextLength,
    ContentLength,
    TruncateCount,
    TupleCount,
    ColumnCount,
}

/// A message whose only variable-length part is its last one, with that part's length or count
/// replaced by `claimed`; returns the bytes and the true length or count.
fn lying_message(lie: Lie, payload: &[u8], claimed: i64) -> (Vec<u8>, i64) {
    let items = payload.len().min(8);
    let (message, at, width, actual) = match lie {
        Lie::TextLength => {
            let new = Tuple(vec![TupleValue::Text(Bytes::copy_from_slice(payload))]);
            // 'I', relation, 'N', column count, 't', then the length.
            (Message::Insert { xid: None, relation: 1, new }, 1 + 4 + 1 + 2 + 1, 4, payload.len())
        }
        Lie::ContentLength => {
            let content = Bytes::copy_from_slice(payload);
            let m = Message::LogicalMessage {
                xid: None,
                transactional: false,
                lsn: 1,
                prefix: "p".into(),
                content,
            };
            (m, 1 + 1 + 8 + 2, 4, payload.len())
        }
        Lie::TruncateCount => {
            let relations = (0..items as u32).collect();
            (Message::Truncate { xid: None, options: 0, relations }, 1, 4, items)
        }
        Lie::TupleCount => {
            let new = Tuple(vec![TupleValue::Null; items]);
            (Message::Insert { xid: None, relation: 1, new }, 1 + 4 + 1, 2, items)
        }
        Lie::ColumnCount => {
            let column = RelationColumn { key: false, name: "c".into(), type_oid: 23, type_modifier: -1 };
            let r = Relation {
                oid: 1,
                namespace: "s".into(),
                name: "t".into(),
                replica_identity: b'd',
                columns: vec![column; items],
            };
            (Message::Relation(r), 1 + 4 + 2 + 2 + 1, 2, items)
        }
    };
    let mut bytes = encode(&message, None);
    if width == 4 {
        bytes[at..at + 4].copy_from_slice(&(claimed as i32).to_be_bytes());
    } else {
        bytes[at..at + 2].copy_from_slice(&(claimed as u16).to_be_bytes());
    }
    (bytes, actual as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

proptest! {
    #![proptest_config(config())]

    /// Round trip: every message encodes and decodes back to itself.
    #[test]
    fn fuzz_pgoutput_round_trip((message, relation_xid) in framed_message()) {
        let (in_stream, stream_xid) = stream_of(&message, relation_xid);
        let bytes = Bytes::from(encode(&message, stream_xid));
        prop_assert_eq!(decode(bytes.clone(), in_stream), Ok(message));
        // Cut anywhere, it is refused (the protocol-4 abort cut after the subxid is a protocol-2 abort).
        let cut = bytes.len() / 2;
        if !(bytes[0] == b'A' && cut == 9) {
            prop_assert!(decode(bytes.slice(..cut), in_stream).is_err());
        }
    }

    #[test]
    fn fuzz_pgoutput_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256), in_stream in any::<bool>()) {
        check_decodes_stably(bytes, in_stream);
    }

    /// Arbitrary bytes behind a known tag, so they reach the message layouts.
    #[test]
    fn fuzz_pgoutput_tagged_bytes(
        tag in prop::sample::select(b"BCORYIUDTMSEcA".to_vec()),
        rest in prop::collection::vec(prop_oneof![3 => any::<u8>(), 1 => prop::sample::select(b"KONntub\0".to_vec())], 0..128),
        in_stream in any::<bool>(),
    ) {
        check_decodes_stably([&[tag][..], &rest].concat(), in_stream);
    }

    /// Valid messages edited byte by byte, including length fields overwritten with lies.
    #[test]
    fn fuzz_pgoutput_mutated((message, relation_xid) in framed_message(), edits in byte_edits(), flip in any::<bool>()) {
        let (in_stream, stream_xid) = stream_of(&message, relation_xid);
        let mut bytes = encode(&message, stream_xid);
        edit(&mut bytes, &edits);
        check_decodes_stably(bytes, in_stream ^ flip);
    }

    /// A length or count that lies gives the exact typed error, with no allocation of what it claims.
    #[test]
    fn fuzz_pgoutput_lying_lengths(
        lie in prop::sample::select(vec![Lie::TextLength, Lie::ContentLength, Lie::TruncateCount, Lie::TupleCount,
                                         Lie::ColumnCount]),
        payload in prop::collection::vec(any::<u8>(), 0..16),
        claimed in prop_oneof![
            Just(i64::from(i32::MAX)), Just(-1i64), Just(i64::from(i32::MIN)), Just(i64::from(u16::MAX)),
            0i64..32, any::<i32>().prop_map(i64::from),
        ],
    ) {
        let wide = matches!(lie, Lie::TextLength | Lie::ContentLength | Lie::TruncateCount);
        // A two-byte count is unsigned: the claim is what those bytes say.
        let claimed = if wide { claimed } else { i64::from(claimed as u16) };
        let (bytes, actual) = lying_message(lie, &payload, claimed);
        let result = decode(Bytes::from(bytes), false);
        let expected = if claimed == actual {
            None
        } else if claimed < 0 {
            Some(DecodeError::NegativeLength)
        } else if claimed > actual {
            Some(DecodeError::Truncated)
        } else {
            // Each item left over is trailing: bytes for data, 4 per relation oid, 1 per null, 10 per column.
            let per_item = match lie {
                Lie::TextLength | Lie::ContentLength => 1,
                Lie::TruncateCount => 4,
                Lie::TupleCount => 1,
                Lie::ColumnCount => 1 + 2 + 4 + 4,
            };
            Some(DecodeError::TrailingBytes(((actual - claimed) * per_item) as usize))
        };
        prop_assert_eq!(result.err(), expected, "{:?} claiming {} of {}", lie, claimed, actual);
    }

    /// Commit timestamps never panic, and within years 1..=9999 read back to the millisecond.
    #[test]
    fn fuzz_commit_timestamp(micros in prop_oneof![any::<i64>(), -63_000_000_000_000_000i64..252_000_000_000_000_000]) {
        let text = commit_timestamp_string(micros);
        prop_assert!(text.ends_with('Z'));
        let unix = micros.checked_add(PG_EPOCH_UNIX_MICROS);
        let Some(unix) = unix.filter(|u| (-62_135_596_800_000_000..253_402_300_800_000_000).contains(u)) else {
            return Ok(());
        };
        prop_assert_eq!(text.len(), 24, "{}", text);
        let field = |range: std::ops::Range<usize>| text[range].parse::<i64>().expect("digits");
        let days = days_from_civil(field(0..4), field(5..7), field(8..10));
        let millis = ((days * 24 + field(11..13)) * 60 + field(14..16)) * 60_000 + field(17..19) * 1_000 + field(20..23);
        prop_assert_eq!(millis * 1_000, unix - unix.rem_euclid(1_000), "{}", text);
        prop_assert_eq!(pg_micros_to_unix_micros(micros), unix);
    }
}
