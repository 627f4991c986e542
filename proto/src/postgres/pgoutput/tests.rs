//! Unit tests of the pgoutput decoder: each message kind byte for byte, and malformed input.

use super::*;

/// Concatenates hand-written pieces of a message.
fn msg(parts: &[&[u8]]) -> Bytes {
    Bytes::from(parts.concat())
}

fn text(s: &'static str) -> TupleValue {
    TupleValue::Text(Bytes::from_static(s.as_bytes()))
}

fn begin() -> Bytes {
    msg(&[
        b"B",
        b"\x00\x00\x00\x01\x6b\x37\x48\x10", // final LSN 1/6B374810
        b"\x00\x02\xe3\x2b\x6c\x6a\x01\x40", // commit time
        b"\x00\x00\x02\xef",                 // xid 751
    ])
}

fn commit() -> Bytes {
    msg(&[
        b"C",
        b"\x00",                             // flags
        b"\x00\x00\x00\x01\x6b\x37\x48\x10", // commit LSN
        b"\x00\x00\x00\x01\x6b\x37\x48\x40", // end LSN
        b"\x00\x02\xe3\x2b\x6c\x6a\x01\x40", // commit time
    ])
}

fn origin() -> Bytes {
    msg(&[b"O", b"\x00\x00\x00\x00\x00\x00\x00\x2a", b"node_a\0"])
}

fn relation(stream: bool) -> Bytes {
    msg(&[
        b"R",
        if stream { b"\x00\x00\x03\x00" } else { b"" }, // xid 768 in a stream
        b"\x00\x00\x40\x01",                            // oid 16385
        b"public\0",
        b"todos\0",
        b"d",                                           // replica identity default
        b"\x00\x03",                                    // 3 columns
        b"\x01id\0\x00\x00\x00\x17\xff\xff\xff\xff",    // key, int4 (23), typmod -1
        b"\x00title\0\x00\x00\x04\x13\x00\x00\x00\x68", // varchar (1043), typmod 104
        b"\x00done\0\x00\x00\x00\x10\xff\xff\xff\xff",  // bool (16)
    ])
}

fn type_msg() -> Bytes {
    msg(&[b"Y", b"\x00\x00\x40\x10", b"public\0", b"mood\0"])
}

fn insert(stream: bool) -> Bytes {
    msg(&[
        b"I",
        if stream { b"\x00\x00\x03\x00" } else { b"" },
        b"\x00\x00\x40\x01",
        b"N",
        b"\x00\x03",
        b"t\x00\x00\x00\x011",
        b"t\x00\x00\x00\x05hello",
        b"n",
    ])
}

fn update_key() -> Bytes {
    msg(&[
        b"U",
        b"\x00\x00\x40\x01",
        b"K\x00\x03t\x00\x00\x00\x011nn",
        b"N\x00\x03t\x00\x00\x00\x012ut\x00\x00\x00\x01t",
    ])
}

fn update_full() -> Bytes {
    msg(&[b"U", b"\x00\x00\x40\x01", b"O\x00\x01t\x00\x00\x00\x011", b"N\x00\x01t\x00\x00\x00\x012"])
}

fn update_new_only() -> Bytes {
    msg(&[b"U", b"\x00\x00\x40\x01", b"N\x00\x01b\x00\x00\x00\x02\x00\x07"])
}

fn delete_key() -> Bytes {
    msg(&[b"D", b"\x00\x00\x40\x01", b"K\x00\x02t\x00\x00\x00\x0242n"])
}

fn delete_full() -> Bytes {
    msg(&[b"D", b"\x00\x00\x40\x01", b"O\x00\x02t\x00\x00\x00\x0242t\x00\x00\x00\x00"])
}

fn truncate(stream: bool) -> Bytes {
    msg(&[
        b"T",
        if stream { b"\x00\x00\x03\x00" } else { b"" },
        b"\x00\x00\x00\x02", // 2 relations
        b"\x03",             // CASCADE | RESTART IDENTITY
        b"\x00\x00\x40\x01\x00\x00\x40\x02",
    ])
}

fn logical_message(stream: bool) -> Bytes {
    msg(&[
        b"M",
        if stream { b"\x00\x00\x03\x00" } else { b"" },
        b"\x01",
        b"\x00\x00\x00\x00\x00\x00\x10\x00",
        b"my_prefix\0",
        b"\x00\x00\x00\x03",
        b"abc",
    ])
}

fn stream_start() -> Bytes {
    msg(&[b"S", b"\x00\x00\x03\x00", b"\x01"])
}

fn stream_stop() -> Bytes {
    msg(&[b"E"])
}

fn stream_commit() -> Bytes {
    msg(&[
        b"c",
        b"\x00\x00\x03\x00",
        b"\x00",
        b"\x00\x00\x00\x00\x00\x00\x20\x00",
        b"\x00\x00\x00\x00\x00\x00\x20\x30",
        b"\xff\xff\xff\xff\xff\xff\xff\xff", // -1 µs: 1999-12-31T23:59:59.999999Z
    ])
}

fn stream_abort(v4: bool) -> Bytes {
    msg(&[
        b"A",
        b"\x00\x00\x03\x00",
        b"\x00\x00\x03\x05",
        if v4 { b"\x00\x00\x00\x00\x00\x00\x30\x00\x00\x00\x00\x00\x00\x00\x00\x07" } else { b"" },
    ])
}

/// Every fixture with the `in_stream` flag it must be decoded with.
fn fixtures() -> Vec<(Bytes, bool)> {
    vec![
        (begin(), false),
        (commit(), false),
        (origin(), false),
        (relation(false), false),
        (relation(true), true),
        (type_msg(), false),
        (insert(false), false),
        (insert(true), true),
        (update_key(), false),
        (update_full(), false),
        (update_new_only(), false),
        (delete_key(), false),
        (delete_full(), false),
        (truncate(false), false),
        (truncate(true), true),
        (logical_message(false), false),
        (logical_message(true), true),
        (stream_start(), false),
        (stream_stop(), false),
        (stream_commit(), false),
        (stream_abort(false), false),
        (stream_abort(true), false),
    ]
}

#[test]
fn begin_and_commit() {
    assert_eq!(
        decode(begin(), false),
        Ok(Message::Begin { final_lsn: 0x1_6b37_4810, commit_time_us: 0x2_e32b_6c6a_0140, xid: 751 })
    );
    assert_eq!(
        decode(commit(), false),
        Ok(Message::Commit {
            flags: 0,
            commit_lsn: 0x1_6b37_4810,
            end_lsn: 0x1_6b37_4840,
            commit_time_us: 0x2_e32b_6c6a_0140
        })
    );
}

#[test]
fn origin_and_type() {
    assert_eq!(decode(origin(), false), Ok(Message::Origin { commit_lsn: 42, name: "node_a".into() }));
    assert_eq!(
        decode(type_msg(), false),
        Ok(Message::Type { oid: 0x4010, namespace: "public".into(), name: "mood".into() })
    );
}

#[test]
fn relation_with_columns() {
    let expected = Relation {
        oid: 16385,
        namespace: "public".into(),
        name: "todos".into(),
        replica_identity: b'd',
        columns: vec![
            RelationColumn { key: true, name: "id".into(), type_oid: 23, type_modifier: -1 },
            RelationColumn { key: false, name: "title".into(), type_oid: 1043, type_modifier: 104 },
            RelationColumn { key: false, name: "done".into(), type_oid: 16, type_modifier: -1 },
        ],
    };
    assert_eq!(decode(relation(false), false), Ok(Message::Relation(expected.clone())));
    assert_eq!(decode(relation(true), true), Ok(Message::Relation(expected)));
}

#[test]
fn insert_values_are_slices_of_the_payload() {
    let data = insert(false);
    let Ok(Message::Insert { xid: None, relation: 16385, new }) = decode(data.clone(), false) else {
        panic!("not an insert");
    };
    assert_eq!(new, Tuple(vec![text("1"), text("hello"), TupleValue::Null]));
    let TupleValue::Text(hello) = &new.0[1] else { panic!("not text") };
    let offset = hello.as_ptr() as usize - data.as_ptr() as usize;
    assert_eq!(&data[offset..offset + 5], b"hello", "value shares the payload's buffer");
    assert_eq!(
        decode(insert(true), true),
        Ok(Message::Insert {
            xid: Some(768),
            relation: 16385,
            new: Tuple(vec![text("1"), text("hello"), TupleValue::Null])
        })
    );
}

#[test]
fn update_variants() {
    assert_eq!(
        decode(update_key(), false),
        Ok(Message::Update {
            xid: None,
            relation: 16385,
            old: Some(OldTuple::Key(Tuple(vec![text("1"), TupleValue::Null, TupleValue::Null]))),
            new: Tuple(vec![text("2"), TupleValue::UnchangedToast, text("t")]),
        })
    );
    assert_eq!(
        decode(update_full(), false),
        Ok(Message::Update {
            xid: None,
            relation: 16385,
            old: Some(OldTuple::Full(Tuple(vec![text("1")]))),
            new: Tuple(vec![text("2")]),
        })
    );
    assert_eq!(
        decode(update_new_only(), false),
        Ok(Message::Update {
            xid: None,
            relation: 16385,
            old: None,
            new: Tuple(vec![TupleValue::Binary(Bytes::from_static(b"\x00\x07"))]),
        })
    );
}

#[test]
fn delete_variants() {
    assert_eq!(
        decode(delete_key(), false),
        Ok(Message::Delete {
            xid: None,
            relation: 16385,
            old: OldTuple::Key(Tuple(vec![text("42"), TupleValue::Null]))
        })
    );
    assert_eq!(
        decode(delete_full(), false),
        Ok(Message::Delete {
            xid: None,
            relation: 16385,
            old: OldTuple::Full(Tuple(vec![text("42"), text("")]))
        })
    );
}

#[test]
fn truncate_and_logical_message() {
    assert_eq!(
        decode(truncate(false), false),
        Ok(Message::Truncate { xid: None, options: 3, relations: vec![16385, 16386] })
    );
    assert_eq!(
        decode(truncate(true), true),
        Ok(Message::Truncate { xid: Some(768), options: 3, relations: vec![16385, 16386] })
    );
    let expected = |xid| Message::LogicalMessage {
        xid,
        transactional: true,
        lsn: 0x1000,
        prefix: "my_prefix".into(),
        content: Bytes::from_static(b"abc"),
    };
    assert_eq!(decode(logical_message(false), false), Ok(expected(None)));
    assert_eq!(decode(logical_message(true), true), Ok(expected(Some(768))));
}

#[test]
fn stream_messages() {
    assert_eq!(decode(stream_start(), false), Ok(Message::StreamStart { xid: 768, first_segment: true }));
    assert_eq!(decode(stream_stop(), true), Ok(Message::StreamStop));
    assert_eq!(
        decode(stream_commit(), false),
        Ok(Message::StreamCommit {
            xid: 768,
            flags: 0,
            commit_lsn: 0x2000,
            end_lsn: 0x2030,
            commit_time_us: -1
        })
    );
    assert_eq!(
        decode(stream_abort(false), false),
        Ok(Message::StreamAbort { xid: 768, subxid: 773, abort_lsn: None, abort_time_us: None })
    );
    assert_eq!(
        decode(stream_abort(true), false),
        Ok(Message::StreamAbort { xid: 768, subxid: 773, abort_lsn: Some(0x3000), abort_time_us: Some(7) })
    );
}

#[test]
fn errors() {
    assert_eq!(decode(Bytes::new(), false), Err(DecodeError::Truncated));
    assert_eq!(decode(msg(&[b"Z"]), false), Err(DecodeError::UnknownTag(b'Z')));
    assert_eq!(decode(msg(&[&begin(), b"x"]), false), Err(DecodeError::TrailingBytes(1)));
    // A streamed message decoded as if outside a stream leaves the xid's bytes over.
    assert!(decode(insert(true), false).is_err());
    assert_eq!(
        decode(msg(&[b"I", b"\x00\x00\x40\x01", b"X"]), false),
        Err(DecodeError::BadTupleMarker(b'X'))
    );
    assert_eq!(
        decode(msg(&[b"U", b"\x00\x00\x40\x01", b"K\x00\x00", b"O\x00\x00"]), false),
        Err(DecodeError::BadTupleMarker(b'O'))
    );
    assert_eq!(
        decode(msg(&[b"D", b"\x00\x00\x40\x01", b"N\x00\x00"]), false),
        Err(DecodeError::BadTupleMarker(b'N'))
    );
    assert_eq!(
        decode(msg(&[b"I", b"\x00\x00\x40\x01", b"N\x00\x01x"]), false),
        Err(DecodeError::BadTupleKind(b'x'))
    );
    assert_eq!(
        decode(msg(&[b"I", b"\x00\x00\x40\x01", b"N\x00\x01t\xff\xff\xff\xff"]), false),
        Err(DecodeError::NegativeLength)
    );
    assert_eq!(
        decode(msg(&[b"I", b"\x00\x00\x40\x01", b"N\x00\x01t\x7f\xff\xff\xff"]), false),
        Err(DecodeError::Truncated)
    );
    assert_eq!(decode(msg(&[b"O", &[0; 8], b"\xff\xfe\0"]), false), Err(DecodeError::BadUtf8));
    assert_eq!(
        decode(msg(&[b"T", b"\x7f\xff\xff\xff\x00\x00\x00\x40\x01"]), false),
        Err(DecodeError::Truncated),
        "a huge relation count is rejected before allocating"
    );
}

#[test]
fn every_strict_prefix_fails_without_panicking() {
    for (data, in_stream) in fixtures() {
        assert!(decode(data.clone(), in_stream).is_ok(), "fixture decodes: {data:?}");
        for len in 0..data.len() {
            let result = decode(data.slice(..len), in_stream);
            // The protocol-4 abort is a valid protocol-2 abort when cut right after the subxid.
            let valid_prefix = data == stream_abort(true) && len == 9;
            assert_eq!(result.is_ok(), valid_prefix, "prefix {len} of {data:?}: {result:?}");
        }
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const TAGS: &[u8] = b"BCORYIUDTMSEcAKNOntub";
    for round in 0..20_000 {
        let len = (next() % 48) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Mostly start with a real tag and sprinkle markers, to get past the first checks.
        for b in bytes.iter_mut() {
            if next() % 3 == 0 {
                *b = TAGS[(next() % TAGS.len() as u64) as usize];
            }
        }
        if let Some(first) = bytes.first_mut() {
            *first = TAGS[(next() % 14) as usize];
        }
        let _ = decode(Bytes::from(bytes), round % 2 == 0);
    }
    let fixtures = fixtures();
    for _ in 0..20_000 {
        let (data, in_stream) = &fixtures[(next() % fixtures.len() as u64) as usize];
        let mut bytes = data.to_vec();
        for _ in 0..1 + next() % 3 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        let _ = decode(Bytes::from(bytes), *in_stream);
    }
}

#[test]
fn timestamps() {
    assert_eq!(pg_micros_to_unix_micros(0), 946_684_800_000_000);
    assert_eq!(pg_micros_to_unix_micros(i64::MAX), i64::MAX);
    assert_eq!(commit_timestamp_string(0), "2000-01-01T00:00:00.000Z");
    assert_eq!(commit_timestamp_string(-1), "1999-12-31T23:59:59.999Z");
    // 2026-08-21T12:00:00.123456Z = Unix 1787313600.123456 s; milliseconds are truncated.
    let t = 1_787_313_600_123_456 - PG_EPOCH_UNIX_MICROS;
    assert_eq!(commit_timestamp_string(t), "2026-08-21T12:00:00.123Z");
    // 2024-02-29T23:59:59.999999Z = Unix 1709251199.999999 s (leap day).
    let t = 1_709_251_199_999_999 - PG_EPOCH_UNIX_MICROS;
    assert_eq!(commit_timestamp_string(t), "2024-02-29T23:59:59.999Z");
    // 2100-03-01T00:00:00Z = Unix 4107542400 s (2100 is not a leap year).
    let t = 4_107_542_400_000_000 - PG_EPOCH_UNIX_MICROS;
    assert_eq!(commit_timestamp_string(t), "2100-03-01T00:00:00.000Z");
    // 1970-01-01T00:00:00.001Z.
    assert_eq!(commit_timestamp_string(1_000 - PG_EPOCH_UNIX_MICROS), "1970-01-01T00:00:00.001Z");
    // Extremes do not panic.
    let _ = commit_timestamp_string(i64::MIN);
    let _ = commit_timestamp_string(i64::MAX);
}
