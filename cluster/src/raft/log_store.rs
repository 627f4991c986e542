//! The durable raft log store: vote, log entries and the committed log id, in one directory.
//!
//! ## Files (framing in `durable`)
//! - `vote`: magic `RVOT`, one record holding the [`Vote`]. Every [`save_vote`] replaces the whole
//!   file by temp + fsync + rename + directory fsync before it returns, as raft requires.
//! - `log`: magic `RLOG`, then records replayed in order on open:
//!   `{"Entry":…}` (an entry; one at index `i` replaces any entries from `i` on),
//!   `{"Purged":log_id}` (entries up to it are gone) and `{"Committed":log_id}`.
//!   [`append`] and [`save_committed`] append records and fsync before reporting completion.
//!   [`truncate`] and [`purge`] are rare (a follower's conflicting tail; compaction after a
//!   snapshot), so they rewrite the file compacted (`Purged`, `Committed`, the kept entries) and
//!   replace it like the vote file. The file therefore never holds dead entries for long.
//!
//! A crash can tear only the last append, which was never acknowledged: [`LogStore::open`] ignores a
//! short or checksum-failing tail and cuts the file back to its intact prefix, so later appends are
//! not hidden behind the garbage. Damage with intact records after it is something else (a bad disk,
//! a stray write) and may hit committed entries: dropping everything from it on would silently lose
//! them (issue 16: 16 flipped bytes lost entries 4–7), so the store refuses to open
//! ([`StoreError::DamagedLog`], naming file and offset) and the node stops.
//!
//! ## Memory and threads
//! The log carries only leadership commands, so all entries also live in memory
//! (`BTreeMap<index, Entry>`) and reads never touch the disk. [`LogReader`]s for replication share
//! that map behind a `std::sync::Mutex`, held only for map operations, never across an await.
//! Writes are plain blocking file calls on the raft task: a few small fsyncs per election, which
//! costs less than handing each one to a blocking pool. Two stores must not open the same directory.
//!
//! [`save_vote`]: RaftLogStorage::save_vote
//! [`append`]: RaftLogStorage::append
//! [`save_committed`]: RaftLogStorage::save_committed
//! [`truncate`]: RaftLogStorage::truncate
//! [`purge`]: RaftLogStorage::purge

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::durable::{self, HEADER_LEN};
use super::{RaftNodeId, StoreError, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;
type Result<T> = std::result::Result<T, StorageError<RaftNodeId>>;

pub(super) const LOG_FILE: &str = "log";
pub(super) const VOTE_FILE: &str = "vote";
const LOG_MAGIC: [u8; 4] = *b"RLOG";
const VOTE_MAGIC: [u8; 4] = *b"RVOT";

/// One record of the log file. `E` is `&Entry` when writing and `Entry` when reading.
#[derive(Serialize, Deserialize)]
enum LogRecord<E> {
    Entry(E),
    Purged(LogId<RaftNodeId>),
    Committed(Option<LogId<RaftNodeId>>),
}

/// The in-memory log, shared with the readers.
#[derive(Default)]
struct Cache {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId<RaftNodeId>>,
}

impl Cache {
    /// Adds `entry`, dropping any entries at or after its index (raft replaces a conflicting tail).
    fn put(&mut self, entry: Entry) {
        self.entries.split_off(&entry.log_id.index);
        self.entries.insert(entry.log_id.index, entry);
    }

    fn purge(&mut self, upto: LogId<RaftNodeId>) {
        self.entries.retain(|&index, _| index > upto.index);
        self.last_purged = Some(upto);
    }

    fn range(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Vec::new(),
            },
            Bound::Unbounded => 0,
        };
        let end = range.end_bound().cloned();
        // `BTreeMap::range` panics on an inverted range; raft may ask for an empty one.
        if let Bound::Included(e) | Bound::Excluded(e) = end {
            if e < start {
                return Vec::new();
            }
        }
        self.entries.range((Bound::Included(start), end)).map(|(_, e)| e.clone()).collect()
    }
}

/// Locks the shared cache. The critical sections only move map entries and cannot leave it half
/// updated, so a poisoned lock (a panic elsewhere while holding it) still guards consistent data.
fn lock(cache: &Mutex<Cache>) -> MutexGuard<'_, Cache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the in-memory log; handed to openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    cache: Arc<Mutex<Cache>>,
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        Ok(lock(&self.cache).range(range))
    }
}

/// The durable vote and log of one raft node; see the module docs for the file format.
pub struct LogStore {
    dir: PathBuf,
    /// `lock`, held (an exclusive advisory lock) for the life of the store: two processes given the
    /// same data directory would corrupt each other's vote and log, so the second one is refused.
    _lock: File,
    /// `log`, opened for appending; reopened after each rewrite.
    file: File,
    vote: Option<Vote<RaftNodeId>>,
    committed: Option<LogId<RaftNodeId>>,
    cache: Arc<Mutex<Cache>>,
}

impl LogStore {
    /// Opens (creating if needed) the store in `dir`, replaying the log and dropping a torn tail.
    pub fn open(dir: &Path) -> std::result::Result<LogStore, StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
        let lock_path = dir.join("lock");
        let lock_file = File::create(&lock_path).map_err(StoreError::io("create", &lock_path))?;
        if lock_file.try_lock().is_err() {
            return Err(StoreError::Locked { path: dir.to_path_buf() });
        }
        let vote = durable::read_single(dir, VOTE_FILE, VOTE_MAGIC)?;
        let path = dir.join(LOG_FILE);
        let (cache, committed) = match fs::read(&path) {
            Ok(bytes) => replay(&path, &bytes)?,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                durable::replace_file(dir, LOG_FILE, &durable::header(LOG_MAGIC))?;
                (Cache::default(), None)
            }
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        };
        let file = open_append(&path)?;
        Ok(LogStore {
            dir: dir.to_path_buf(),
            _lock: lock_file,
            file,
            vote,
            committed,
            cache: Arc::new(Mutex::new(cache)),
        })
    }

    /// Appends `bytes` (whole records) to the log file and fsyncs it.
    fn append_records(&mut self, bytes: &[u8]) -> std::result::Result<(), StoreError> {
        let path = self.dir.join(LOG_FILE);
        self.file.write_all(bytes).map_err(StoreError::io("append to", &path))?;
        self.file.sync_data().map_err(StoreError::io("fsync", &path))
    }

    /// Replaces the log file with a compacted copy of the current state and reopens it.
    fn rewrite(&mut self) -> std::result::Result<(), StoreError> {
        let mut bytes = durable::header(LOG_MAGIC).to_vec();
        {
            let cache = lock(&self.cache);
            if let Some(purged) = cache.last_purged {
                durable::push_record(&mut bytes, &LogRecord::<&Entry>::Purged(purged))?;
            }
            if self.committed.is_some() {
                durable::push_record(&mut bytes, &LogRecord::<&Entry>::Committed(self.committed))?;
            }
            for entry in cache.entries.values() {
                durable::push_record(&mut bytes, &LogRecord::Entry(entry))?;
            }
        }
        durable::replace_file(&self.dir, LOG_FILE, &bytes)?;
        self.file = open_append(&self.dir.join(LOG_FILE))?;
        Ok(())
    }
}

/// Rebuilds the in-memory log and the committed id from the log file's bytes; cuts a torn tail off
/// the file, and refuses damage that has intact records after it.
fn replay(path: &Path, bytes: &[u8]) -> std::result::Result<(Cache, Option<LogId<RaftNodeId>>), StoreError> {
    durable::check_header(path, bytes, LOG_MAGIC)?;
    let (records, end) = durable::split_records(bytes, HEADER_LEN);
    if end < bytes.len() {
        let is_record = |payload: &[u8]| serde_json::from_slice::<LogRecord<Entry>>(payload).is_ok();
        if let Some(intact_at) = durable::next_intact(bytes, end + 1, is_record) {
            return Err(StoreError::DamagedLog {
                path: path.to_path_buf(),
                offset: end as u64,
                intact_at: intact_at as u64,
            });
        }
    }
    let mut cache = Cache::default();
    let mut committed = None;
    for record in &records {
        match durable::decode::<LogRecord<Entry>>(path, record)? {
            LogRecord::Entry(entry) => cache.put(entry),
            LogRecord::Purged(upto) => cache.purge(upto),
            LogRecord::Committed(id) => committed = id,
        }
    }
    if end < bytes.len() {
        warn!(path = %path.display(), offset = end, dropped_bytes = bytes.len() - end, "raft log has a torn tail, dropping it");
        let file = OpenOptions::new().write(true).open(path).map_err(StoreError::io("open", path))?;
        file.set_len(end as u64).map_err(StoreError::io("truncate", path))?;
        file.sync_all().map_err(StoreError::io("fsync", path))?;
    }
    Ok((cache, committed))
}

fn open_append(path: &Path) -> std::result::Result<File, StoreError> {
    OpenOptions::new().append(true).open(path).map_err(StoreError::io("open", path))
}

fn log_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError<RaftNodeId> {
    move |e| e.into_storage(ErrorSubject::Logs, verb)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        Ok(lock(&self.cache).range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let cache = lock(&self.cache);
        let last_log_id = cache.entries.values().next_back().map(|e| e.log_id).or(cache.last_purged);
        Ok(LogState { last_purged_log_id: cache.last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { cache: Arc::clone(&self.cache) }
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> Result<()> {
        durable::write_single(&self.dir, VOTE_FILE, VOTE_MAGIC, vote)
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftNodeId>>> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftNodeId>>) -> Result<()> {
        let mut bytes = Vec::new();
        durable::push_record(&mut bytes, &LogRecord::<&Entry>::Committed(committed))
            .map_err(log_err(ErrorVerb::Write))?;
        self.append_records(&bytes).map_err(log_err(ErrorVerb::Write))?;
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftNodeId>>> {
        Ok(self.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for entry in &entries {
            durable::push_record(&mut bytes, &LogRecord::Entry(entry)).map_err(log_err(ErrorVerb::Write))?;
        }
        if !bytes.is_empty() {
            self.append_records(&bytes).map_err(log_err(ErrorVerb::Write))?;
        }
        let mut cache = lock(&self.cache);
        for entry in entries {
            cache.put(entry);
        }
        drop(cache);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<RaftNodeId>) -> Result<()> {
        let removed = lock(&self.cache).entries.split_off(&log_id.index);
        if removed.is_empty() {
            return Ok(());
        }
        self.rewrite().map_err(log_err(ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> Result<()> {
        {
            let mut cache = lock(&self.cache);
            if cache.last_purged.is_some_and(|purged| purged.index >= log_id.index) {
                return Ok(());
            }
            cache.purge(log_id);
        }
        self.rewrite().map_err(log_err(ErrorVerb::Delete))
    }
}
