//! The raft state machine: which node owns the CDC consumer.
//!
//! The state is three fields: the last applied log id, the last applied membership and the
//! [`CdcOwner`]. It lives in memory. What makes it survive a restart is a persisted snapshot plus
//! the log: openraft purges log entries once a snapshot covers them, so every snapshot, built here
//! or installed from the leader, is written to the file `snapshot` (magic `RSNP`, one record with
//! the snapshot metadata and the state, replaced by temp + fsync + rename) before it is current.
//! [`StateMachine::open`] starts from that file, and openraft re-applies the log entries after it up
//! to the committed id that [`super::LogStore`] saved.
//!
//! Snapshot bytes on the wire are the JSON of the state; the metadata travels beside them.
//!
//! The node learns the owner through a [`StateMachineHandle`] (a `watch`), taken before the state
//! machine is handed to openraft. The owner is a fact of the committed log; the node should run CDC
//! only while it is both the owner and the current raft leader.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{durable, CdcOwner, Command, RaftNodeId, RaftPeer, Response, StoreError, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;
type Meta = SnapshotMeta<RaftNodeId, RaftPeer>;
type Result<T> = std::result::Result<T, StorageError<RaftNodeId>>;

pub(super) const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_MAGIC: [u8; 4] = *b"RSNP";

/// The replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    last_applied: Option<LogId<RaftNodeId>>,
    last_membership: StoredMembership<RaftNodeId, RaftPeer>,
    cdc_owner: Option<CdcOwner>,
}

impl State {
    fn apply_command(&mut self, command: &Command) {
        match *command {
            Command::CdcLeader { node, term } => {
                if self.cdc_owner.is_none_or(|owner| term >= owner.term) {
                    self.cdc_owner = Some(CdcOwner { node, term });
                }
            }
            Command::Noop => {}
        }
    }
}

/// A snapshot as the `snapshot` file stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    state: State,
}

impl StoredSnapshot {
    /// The snapshot as openraft reads it: metadata and the state as JSON bytes.
    fn to_snapshot(&self) -> std::result::Result<Snapshot<TypeConfig>, StoreError> {
        let bytes = serde_json::to_vec(&self.state).map_err(StoreError::Encode)?;
        Ok(Snapshot { meta: self.meta.clone(), snapshot: Box::new(Cursor::new(bytes)) })
    }

    fn subject(&self) -> ErrorSubject<RaftNodeId> {
        ErrorSubject::Snapshot(Some(self.meta.signature()))
    }
}

/// The current snapshot and its file, shared by the state machine and its snapshot builders (which
/// openraft runs in their own task). The lock serializes writes of the file.
struct SnapshotStore {
    dir: PathBuf,
    current: Mutex<Option<StoredSnapshot>>,
}

impl SnapshotStore {
    /// Persists `snapshot` and makes it current. With `only_if_newer`, a snapshot older than the
    /// current one (a builder racing an install) is dropped instead.
    fn save(&self, snapshot: &StoredSnapshot, only_if_newer: bool) -> std::result::Result<(), StoreError> {
        // Poisoning cannot leave `current` half written: it is replaced in one assignment.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if only_if_newer && current.as_ref().is_some_and(|c| c.meta.last_log_id > snapshot.meta.last_log_id) {
            return Ok(());
        }
        durable::write_single(&self.dir, SNAPSHOT_FILE, SNAPSHOT_MAGIC, snapshot)?;
        *current = Some(snapshot.clone());
        Ok(())
    }

    fn current(&self) -> Option<StoredSnapshot> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Watches the CDC owner decided by the log; cheap to clone.
#[derive(Debug, Clone)]
pub struct StateMachineHandle {
    owner_rx: watch::Receiver<Option<CdcOwner>>,
}

impl StateMachineHandle {
    /// The CDC owner as of the last applied entry (`None` before any claim was applied).
    pub fn cdc_owner(&self) -> Option<CdcOwner> {
        *self.owner_rx.borrow()
    }

    /// A receiver that wakes on every change of the owner.
    pub fn watch(&self) -> watch::Receiver<Option<CdcOwner>> {
        self.owner_rx.clone()
    }
}

/// The in-memory state machine with persisted snapshots; see the module docs.
pub struct StateMachine {
    state: State,
    snapshots: Arc<SnapshotStore>,
    owner_tx: watch::Sender<Option<CdcOwner>>,
}

impl StateMachine {
    /// Opens the state machine of the store in `dir`, starting from its persisted snapshot if any.
    pub fn open(dir: &Path) -> std::result::Result<StateMachine, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
        let stored: Option<StoredSnapshot> = durable::read_single(dir, SNAPSHOT_FILE, SNAPSHOT_MAGIC)?;
        let state = stored.as_ref().map(|s| s.state.clone()).unwrap_or_default();
        let (owner_tx, _) = watch::channel(state.cdc_owner);
        let snapshots = Arc::new(SnapshotStore { dir: dir.to_path_buf(), current: Mutex::new(stored) });
        Ok(StateMachine { state, snapshots, owner_tx })
    }

    /// A handle the node keeps to observe the CDC owner after the state machine moves into raft.
    pub fn handle(&self) -> StateMachineHandle {
        StateMachineHandle { owner_rx: self.owner_tx.subscribe() }
    }

    /// The CDC owner as of the last applied entry.
    pub fn cdc_owner(&self) -> Option<CdcOwner> {
        self.state.cdc_owner
    }

    fn publish_owner(&self) {
        let owner = self.state.cdc_owner;
        self.owner_tx.send_if_modified(|current| std::mem::replace(current, owner) != owner);
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for the builder.
pub struct SnapshotBuilder {
    state: State,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let meta = Meta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.last_membership.clone(),
            snapshot_id: snapshot_id(self.state.last_applied),
        };
        let stored = StoredSnapshot { meta, state: self.state.clone() };
        let snapshot = stored.to_snapshot().map_err(|e| e.into_storage(stored.subject(), ErrorVerb::Read))?;
        self.snapshots.save(&stored, true).map_err(|e| e.into_storage(stored.subject(), ErrorVerb::Write))?;
        Ok(snapshot)
    }
}

/// A snapshot id unique across restarts: the last included log id and the wall clock.
fn snapshot_id(last: Option<LogId<RaftNodeId>>) -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    match last {
        Some(id) => format!("{}-{}-{}-{millis}", id.leader_id.term, id.leader_id.node_id, id.index),
        None => format!("none-{millis}"),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftNodeId>>, StoredMembership<RaftNodeId, RaftPeer>)> {
        Ok((self.state.last_applied, self.state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.state.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(command) => self.state.apply_command(&command),
                EntryPayload::Membership(membership) => {
                    self.state.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            responses.push(Response { cdc_owner: self.state.cdc_owner });
        }
        self.publish_owner();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { state: self.state.clone(), snapshots: Arc::clone(&self.snapshots) }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<Cursor<Vec<u8>>>) -> Result<()> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let mut state: State = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StoreError::SnapshotDecode(e).into_storage(subject, ErrorVerb::Read))?;
        // The metadata is authoritative for what the snapshot covers.
        state.last_applied = meta.last_log_id;
        state.last_membership = meta.last_membership.clone();
        let stored = StoredSnapshot { meta: meta.clone(), state: state.clone() };
        self.snapshots
            .save(&stored, false)
            .map_err(|e| e.into_storage(stored.subject(), ErrorVerb::Write))?;
        self.state = state;
        self.publish_owner();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        match self.snapshots.current() {
            Some(stored) => {
                stored.to_snapshot().map(Some).map_err(|e| e.into_storage(stored.subject(), ErrorVerb::Read))
            }
            None => Ok(None),
        }
    }
}
