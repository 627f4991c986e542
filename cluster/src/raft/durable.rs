//! On-disk building blocks shared by the log, vote and snapshot files.
//!
//! Every file starts with a 5-byte header: 4 magic bytes naming the kind of file, then the format
//! version. Records follow, each framed as
//!
//! ```text
//! len: u32 LE | crc32 of payload: u32 LE | payload: len bytes of JSON
//! ```
//!
//! The log file grows only by appending records, so a crash can leave its last record short or with
//! a bad checksum; [`split_records`] stops at the first such record. The vote and snapshot files hold
//! one record and are replaced whole ([`replace_file`]): written to `<name>.tmp`, fsynced, renamed
//! over `<name>`, and the directory fsynced, so a reader sees the old file or the new one.
//!
//! JSON rather than bincode: openraft's types carry serde attributes meant for self-describing
//! formats, the records are tiny, and an operator can read them with `strings`.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StoreError;

/// Format version written after the magic bytes; bump it when a record layout changes.
pub(crate) const VERSION: u8 = 1;
/// Magic bytes plus the version byte.
pub(crate) const HEADER_LEN: usize = 5;
/// Length prefix plus checksum in front of each payload.
const FRAME_HEAD: usize = 8;

/// The header of a file of the kind named by `magic`.
pub(crate) fn header(magic: [u8; 4]) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = magic;
    [a, b, c, d, VERSION]
}

/// Checks the header of a whole file read from `path`.
pub(crate) fn check_header(path: &Path, bytes: &[u8], magic: [u8; 4]) -> Result<(), StoreError> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        // Files are created by rename with their header in place, so a short one is damage.
        return Err(StoreError::Corrupt { path: path.to_path_buf(), offset: 0 });
    };
    if head[..4] != magic {
        return Err(StoreError::BadMagic { path: path.to_path_buf() });
    }
    if head[4] != VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: head[4],
            expected: VERSION,
        });
    }
    Ok(())
}

/// Appends `value` to `out` as one framed record.
pub(crate) fn push_record<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), StoreError> {
    let payload = serde_json::to_vec(value).map_err(StoreError::Encode)?;
    let len = u32::try_from(payload.len()).map_err(|_| StoreError::RecordTooLarge { len: payload.len() })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// One intact record: its byte offset in the file and its payload.
pub(crate) struct RawRecord<'a> {
    pub offset: u64,
    pub payload: &'a [u8],
}

/// Splits `bytes[start..]` into intact records. Returns them with the end offset of the last one;
/// anything after that offset is a torn or damaged tail.
pub(crate) fn split_records(bytes: &[u8], start: usize) -> (Vec<RawRecord<'_>>, usize) {
    let mut records = Vec::new();
    let mut pos = start;
    while let Some(head) = bytes.get(pos..pos + FRAME_HEAD) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let body_start = pos + FRAME_HEAD;
        let Some(payload) = body_start.checked_add(len).and_then(|end| bytes.get(body_start..end)) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push(RawRecord { offset: pos as u64, payload });
        pos = body_start + len;
    }
    (records, pos)
}

/// The offset of the first intact record starting after `from`, found by trying every offset: a
/// record whose length is not zero, whose bytes lie within the file, whose checksum matches and whose
/// payload `is_record` accepts. Used to tell a torn tail (nothing intact after the damage) from damage
/// before the tail. The lengths read at most offsets of damaged JSON text or zeroes are zero or
/// beyond the file, so few checksums are computed.
pub(crate) fn next_intact(bytes: &[u8], from: usize, is_record: impl Fn(&[u8]) -> bool) -> Option<usize> {
    (from..bytes.len()).find(|&pos| {
        let Some(head) = bytes.get(pos..pos + FRAME_HEAD) else { return false };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let body_start = pos + FRAME_HEAD;
        len > 0
            && body_start
                .checked_add(len)
                .and_then(|end| bytes.get(body_start..end))
                .is_some_and(|payload| crc32fast::hash(payload) == crc && is_record(payload))
    })
}

/// Decodes the payload of the record at `offset` of `path`.
pub(crate) fn decode<T: DeserializeOwned>(path: &Path, record: &RawRecord<'_>) -> Result<T, StoreError> {
    serde_json::from_slice(record.payload).map_err(|source| StoreError::Decode {
        path: path.to_path_buf(),
        offset: record.offset,
        source,
    })
}

/// Makes `dir/name` hold exactly `bytes`, durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
    file.write_all(bytes).map_err(StoreError::io("write", &tmp))?;
    file.sync_all().map_err(StoreError::io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(StoreError::io("rename over", &path))?;
    sync_dir(dir)
}

/// Fsyncs a directory so that renames and file creations in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("fsync directory", dir))?;
    // Elsewhere a directory cannot be opened as a file; the rename itself is what we have.
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replaces `dir/name` with a file of kind `magic` holding the single record `value`.
pub(crate) fn write_single<T: Serialize>(
    dir: &Path,
    name: &str,
    magic: [u8; 4],
    value: &T,
) -> Result<(), StoreError> {
    let mut bytes = header(magic).to_vec();
    push_record(&mut bytes, value)?;
    replace_file(dir, name, &bytes)
}

/// Reads a file written by [`write_single`]; `None` if it does not exist. Such files are replaced by
/// rename, so anything but exactly one intact record is damage and an error.
pub(crate) fn read_single<T: DeserializeOwned>(
    dir: &Path,
    name: &str,
    magic: [u8; 4],
) -> Result<Option<T>, StoreError> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("read", &path)(e)),
    };
    check_header(&path, &bytes, magic)?;
    let (records, end) = split_records(&bytes, HEADER_LEN);
    match records.as_slice() {
        [record] if end == bytes.len() => decode(&path, record).map(Some),
        _ => Err(StoreError::Corrupt { path, offset: end as u64 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_stops_at_a_short_or_damaged_record() {
        let mut bytes = header(*b"TEST").to_vec();
        push_record(&mut bytes, &"one").unwrap();
        push_record(&mut bytes, &"two").unwrap();
        let intact = bytes.len();
        push_record(&mut bytes, &"three").unwrap();

        let (records, end) = split_records(&bytes, HEADER_LEN);
        assert_eq!((records.len(), end), (3, bytes.len()));

        let (records, end) = split_records(&bytes[..bytes.len() - 1], HEADER_LEN);
        assert_eq!((records.len(), end), (2, intact));

        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let (records, end) = split_records(&bytes, HEADER_LEN);
        assert_eq!((records.len(), end), (2, intact));
    }

    #[test]
    fn the_next_intact_record_is_found_past_damage_of_any_kind() {
        let mut bytes = header(*b"TEST").to_vec();
        push_record(&mut bytes, &"one").unwrap();
        let second = bytes.len();
        push_record(&mut bytes, &"two").unwrap();
        let third = bytes.len();
        push_record(&mut bytes, &"three").unwrap();
        let any = |_: &[u8]| true;
        assert_eq!(next_intact(&bytes, second + 1, any), Some(third));
        assert_eq!(next_intact(&bytes, third + 1, any), None);
        // A length prefix flipped to something huge hides the record boundary; the scan still finds
        // the record after it.
        let mut flipped = bytes.clone();
        flipped[second + 3] ^= 0x7f;
        assert_eq!(split_records(&flipped, HEADER_LEN).1, second);
        assert_eq!(next_intact(&flipped, second + 1, any), Some(third));
        // Zeroes (a file extended by a crash before its data landed) are no record.
        let mut zeroed = bytes[..third].to_vec();
        zeroed.extend_from_slice(&[0; 64]);
        assert_eq!(next_intact(&zeroed, third, any), None);
        // The caller's check decides what a record is.
        assert_eq!(next_intact(&bytes, second + 1, |payload| payload == b"\"one\""), None);
    }

    #[test]
    fn headers_name_kind_and_version() {
        let path = Path::new("x");
        assert!(check_header(path, &header(*b"TEST"), *b"TEST").is_ok());
        assert!(matches!(check_header(path, &header(*b"TEST"), *b"OTHR"), Err(StoreError::BadMagic { .. })));
        assert!(matches!(
            check_header(path, b"TEST\x09", *b"TEST"),
            Err(StoreError::UnsupportedVersion { found: 9, .. })
        ));
        assert!(matches!(check_header(path, b"TE", *b"TEST"), Err(StoreError::Corrupt { .. })));
    }
}
