//! The raft store's error type.
//!
//! [`StoreError`] says what went wrong with which file, for the operator reading the log of a node
//! that will not start. openraft's traits want a [`StorageError`] instead, which also names the raft
//! object (vote, logs, snapshot) and the verb; [`StoreError::into_storage`] does that conversion,
//! keeping the `StoreError` as the source. Any storage error stops the raft node (openraft treats it
//! as fatal), which is what we want: a node that cannot persist its vote must not vote.

use std::io;
use std::path::{Path, PathBuf};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use super::RaftNodeId;

impl From<StoreError> for crate::error::ClusterError {
    fn from(error: StoreError) -> Self {
        crate::error::ClusterError::RaftStore(Box::new(error))
    }
}

/// A failure of the durable raft store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds this data directory.
    #[error("{} is in use by another process (each node needs its own REALTIME_DATA_DIR)", path.display())]
    Locked { path: PathBuf },
    /// The filesystem refused an operation.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file does not start with the magic bytes of its kind: not ours, or the wrong file.
    #[error("{} is not a raft store file of this kind (bad magic)", path.display())]
    BadMagic { path: PathBuf },
    /// The file was written by a format this build does not read.
    #[error("{} has format version {found}, this build reads version {expected}", path.display())]
    UnsupportedVersion { path: PathBuf, found: u8, expected: u8 },
    /// A file replaced by rename (vote, snapshot) is short or fails its checksum. Unlike a torn log
    /// tail this cannot come from a crash, so it is reported instead of ignored.
    #[error("{} is damaged at byte {offset}", path.display())]
    Corrupt { path: PathBuf, offset: u64 },
    /// The log fails its checksum (or is cut short) at `offset`, yet intact records follow from
    /// `intact_at`: not a torn last append but damage to records that may be committed, so the node
    /// stops instead of dropping them.
    #[error(
        "{} is damaged at byte {offset}, before intact records (from byte {intact_at}): not a torn tail \
         from a crash; refusing to drop possibly committed entries (restore the file from a backup, or, \
         while the other voters have a leader, move its directory away: the node then rejoins with an \
         empty raft state and the leader sends it the log again)",
        path.display()
    )]
    DamagedLog { path: PathBuf, offset: u64, intact_at: u64 },
    /// A record passed its checksum but is not what this build expects.
    #[error("cannot decode the record at byte {offset} of {}: {source}", path.display())]
    Decode {
        path: PathBuf,
        offset: u64,
        #[source]
        source: serde_json::Error,
    },
    /// A snapshot received from the leader is not the JSON of our state.
    #[error("a received snapshot does not decode: {0}")]
    SnapshotDecode(#[source] serde_json::Error),
    /// A value could not be serialized.
    #[error("cannot encode a record: {0}")]
    Encode(#[source] serde_json::Error),
    /// A record does not fit the 32-bit length prefix.
    #[error("a record of {len} bytes exceeds the frame limit")]
    RecordTooLarge { len: usize },
}

impl StoreError {
    /// An I/O failure of `op` (a verb: "open", "fsync", ...) on `path`.
    pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
        move |source| StoreError::Io { op, path: path.to_path_buf(), source }
    }

    /// The error openraft's storage traits return, naming the raft object and the verb.
    pub(crate) fn into_storage(
        self,
        subject: ErrorSubject<RaftNodeId>,
        verb: ErrorVerb,
    ) -> StorageError<RaftNodeId> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}
