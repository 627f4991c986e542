//! Conformance and crash tests for the durable store.
//!
//! openraft's own `Suite` checks the trait contracts on a fresh directory per case. It never
//! reopens a store, so the tests after it check what durability adds: vote, log, truncation and
//! purge survive a reopen, a torn tail is ignored, and a restarted node gets its CDC owner back.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{self, StoreBuilder, Suite};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftLogReader, RaftSnapshotBuilder, StorageError, StorageHelper,
    Vote,
};

use super::log_store::LOG_FILE;
use super::*;

type Entry = openraft::Entry<TypeConfig>;

/// A fresh directory under the system temp dir, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> TestDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("realtime-raft-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TestDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct DirBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TestDir> for DirBuilder {
    async fn build(&self) -> Result<(TestDir, LogStore, StateMachine), StorageError<RaftNodeId>> {
        let dir = TestDir::new();
        let to_storage = |e: StoreError| e.into_storage(ErrorSubject::Store, ErrorVerb::Read);
        let log = LogStore::open(dir.path()).map_err(to_storage)?;
        let sm = StateMachine::open(dir.path()).map_err(to_storage)?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(DirBuilder).unwrap();
}

fn normal(term: u64, index: u64, command: Command) -> Entry {
    Entry { log_id: testing::log_id(term, 1, index), payload: EntryPayload::Normal(command) }
}

fn blanks(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes.map(|i| testing::blank_ent::<TypeConfig>(term, 1, i)).collect()
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn vote_log_and_committed_survive_reopen() {
    let dir = TestDir::new();
    let members = std::collections::BTreeSet::from([1, 2, 3]);
    let entries = vec![
        testing::membership_ent::<TypeConfig>(1, 1, 0, vec![members]),
        testing::blank_ent::<TypeConfig>(1, 1, 1),
        normal(1, 2, Command::CdcLeader { node: 1, term: 1 }),
    ];
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        log.save_committed(Some(testing::log_id(1, 1, 2))).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert!(
        matches!(LogStore::open(dir.path()), Err(crate::raft::StoreError::Locked { .. })),
        "a second store on the same directory is refused while the first is open"
    );
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(1, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(testing::log_id(1, 1, 2)));
    assert_eq!(log.try_get_log_entries(0..3).await.unwrap(), entries);
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, Some(testing::log_id(1, 1, 2))));
}

#[tokio::test]
async fn truncate_and_purge_survive_reopen() {
    let dir = TestDir::new();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append(blanks(1, 1..=10)).await.unwrap();
        log.purge(testing::log_id(1, 1, 3)).await.unwrap();
        log.truncate(testing::log_id(1, 1, 8)).await.unwrap();
        assert_eq!(indexes(&mut log).await, [4, 5, 6, 7]);
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, [4, 5, 6, 7]);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(testing::log_id(1, 1, 3)));

    // Appends after a rewrite land in the new file, and an older purge does not undo a newer one.
    log.blocking_append(blanks(2, 8..=9)).await.unwrap();
    log.purge(testing::log_id(1, 1, 2)).await.unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, [4, 5, 6, 7, 8, 9]);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(testing::log_id(1, 1, 3)));
    assert_eq!(state.last_log_id, Some(testing::log_id(2, 1, 9)));

    // Purging everything still remembers where the log ends.
    log.purge(testing::log_id(2, 1, 9)).await.unwrap();
    drop(log);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert!(indexes(&mut log).await.is_empty());
    assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(testing::log_id(2, 1, 9)));
}

#[tokio::test]
async fn a_torn_tail_is_ignored_and_cut_off() {
    let dir = TestDir::new();
    let log_path = dir.path().join(LOG_FILE);
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append(blanks(1, 1..=3)).await.unwrap();
    }
    let intact = fs::metadata(&log_path).unwrap().len();
    {
        // A fourth append that reached the disk only partly.
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append(blanks(1, 4..=4)).await.unwrap();
    }
    let full = fs::metadata(&log_path).unwrap().len();
    OpenOptions::new().write(true).open(&log_path).unwrap().set_len(full - 3).unwrap();

    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, [1, 2, 3]);
    assert_eq!(fs::metadata(&log_path).unwrap().len(), intact, "the torn tail is cut off the file");

    // New appends after the cut are readable after the next reopen.
    log.blocking_append(blanks(1, 4..=5)).await.unwrap();
    drop(log);

    // A record with a bad checksum at the end is a torn tail too.
    let mut file = OpenOptions::new().append(true).open(&log_path).unwrap();
    file.write_all(&[9, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, b'{', b'}']).unwrap();
    drop(file);
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, [1, 2, 3, 4, 5]);
}

/// Appends entries 1..=7 one record each, commits them, and returns where each entry's record starts.
async fn seven_committed(dir: &TestDir) -> Vec<u64> {
    let log_path = dir.path().join(LOG_FILE);
    let mut log = LogStore::open(dir.path()).unwrap();
    let mut starts = Vec::new();
    for i in 1..=7 {
        starts.push(fs::metadata(&log_path).unwrap().len());
        log.blocking_append(blanks(1, i..=i)).await.unwrap();
    }
    log.save_committed(Some(testing::log_id(1, 1, 7))).await.unwrap();
    starts
}

#[tokio::test]
async fn damage_before_the_tail_stops_the_store_naming_file_and_offset() {
    for (what, at) in [("payload", 12), ("length prefix", 2)] {
        // The attack of issue 16: 16 flipped bytes in the middle of the log (entry 4's record).
        let dir = TestDir::new();
        let starts = seven_committed(&dir).await;
        let log_path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&log_path).unwrap();
        let fourth = starts[3] as usize;
        for byte in &mut bytes[fourth + at..fourth + at + 16] {
            *byte ^= 0x5a;
        }
        fs::write(&log_path, &bytes).unwrap();

        let error = match LogStore::open(dir.path()) {
            Err(error) => error,
            Ok(_) => panic!("{what}: damaged log opened"),
        };
        match &error {
            StoreError::DamagedLog { path, offset, intact_at } => {
                assert_eq!((path, *offset, *intact_at), (&log_path, starts[3], starts[4]), "{what}");
            }
            other => panic!("{what}: {other}"),
        }
        let message = error.to_string();
        assert!(message.contains(&log_path.display().to_string()), "{message}");
        assert!(message.contains(&format!("byte {}", starts[3])), "{message}");
        assert_eq!(fs::read(&log_path).unwrap(), bytes, "{what}: nothing is cut off a damaged log");
    }
}

#[tokio::test]
async fn a_garbled_last_record_is_a_torn_tail_even_after_commits() {
    let dir = TestDir::new();
    seven_committed(&dir).await;
    let log_path = dir.path().join(LOG_FILE);
    let mut bytes = fs::read(&log_path).unwrap();
    // The last record (the commit) garbled in place, then zeroes as a crash can leave them.
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff;
    bytes.extend_from_slice(&[0; 100]);
    fs::write(&log_path, &bytes).unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(indexes(&mut log).await, [1, 2, 3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn damaged_vote_file_is_an_error_not_a_fresh_start() {
    let dir = TestDir::new();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(5, 1)).await.unwrap();
    }
    let vote_path = dir.path().join(super::log_store::VOTE_FILE);
    let len = fs::metadata(&vote_path).unwrap().len();
    OpenOptions::new().write(true).open(&vote_path).unwrap().set_len(len - 1).unwrap();
    assert!(matches!(LogStore::open(dir.path()), Err(StoreError::Corrupt { .. })));
}

#[tokio::test]
async fn cdc_owner_follows_claims_and_ignores_stale_terms() {
    let dir = TestDir::new();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    let handle = sm.handle();
    let mut owner_rx = handle.watch();
    assert_eq!(handle.cdc_owner(), None);

    let replies = sm
        .apply([
            normal(2, 1, Command::CdcLeader { node: 7, term: 2 }),
            normal(2, 2, Command::Noop),
            normal(2, 3, Command::CdcLeader { node: 8, term: 1 }),
        ])
        .await
        .unwrap();
    let owner = Some(CdcOwner { node: 7, term: 2 });
    assert_eq!(replies, vec![Response { cdc_owner: owner }; 3]);
    assert!(owner_rx.has_changed().unwrap());
    assert_eq!(*owner_rx.borrow_and_update(), owner);

    sm.apply([normal(3, 4, Command::CdcLeader { node: 8, term: 3 })]).await.unwrap();
    assert_eq!(handle.cdc_owner(), Some(CdcOwner { node: 8, term: 3 }));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(testing::log_id(3, 1, 4)));
}

#[tokio::test]
async fn snapshots_persist_and_install() {
    let dir = TestDir::new();
    let owner = Some(CdcOwner { node: 7, term: 2 });
    let snapshot = {
        let mut sm = StateMachine::open(dir.path()).unwrap();
        sm.apply([normal(2, 1, Command::CdcLeader { node: 7, term: 2 })]).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap()
    };
    let mut sm = StateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.cdc_owner(), owner, "state comes back from the snapshot file");
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);

    let other = TestDir::new();
    let mut follower = StateMachine::open(other.path()).unwrap();
    let handle = follower.handle();
    let mut data = follower.begin_receiving_snapshot().await.unwrap();
    *data = *current.snapshot;
    follower.install_snapshot(&current.meta, data).await.unwrap();
    assert_eq!(handle.cdc_owner(), owner);
    drop(follower);
    assert_eq!(StateMachine::open(other.path()).unwrap().cdc_owner(), owner);
}

#[tokio::test]
async fn a_restarted_node_reapplies_committed_entries() {
    let dir = TestDir::new();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        let mut entries = vec![testing::membership_ent::<TypeConfig>(0, 1, 0, vec![[1].into()])];
        entries.extend(blanks(1, 1..=1));
        entries.push(normal(1, 2, Command::CdcLeader { node: 1, term: 1 }));
        log.blocking_append(entries).await.unwrap();
        log.save_committed(Some(testing::log_id(1, 1, 2))).await.unwrap();
    }
    // The state machine is in memory: it comes back empty, openraft replays the committed log.
    let mut log = LogStore::open(dir.path()).unwrap();
    let mut sm = StateMachine::open(dir.path()).unwrap();
    assert_eq!(sm.cdc_owner(), None);
    StorageHelper::new(&mut log, &mut sm).get_initial_state().await.unwrap();
    assert_eq!(sm.cdc_owner(), Some(CdcOwner { node: 1, term: 1 }));
}
