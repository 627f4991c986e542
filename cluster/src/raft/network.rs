//! The raft transport: openraft's RPCs over the peer links' control lane.
//!
//! Control links carry only raft traffic, so a heartbeat never waits on the wire behind a burst of
//! relayed broadcasts. Links are one-way (a node sends on the links it opened and reads on the ones
//! it accepted), so a request leaves on this node's control link to the target and its reply comes
//! back on the target's control link to us. [`Rpc`] pairs them by a request id in a pending map.
//!
//! The RPC bodies are JSON inside the bincode [`PeerMessage`] frame: openraft's types carry serde
//! attributes meant for self-describing formats (the store uses JSON for the same reason) and raft
//! messages here are tiny (leadership commands and membership only).
//!
//! Failures map onto openraft's [`RPCError`]: no connected control link → `Unreachable` (openraft
//! backs off before retrying, see [`Client::backoff`]); no answer within the RPC's time to live
//! (capped at [`MAX_TTL`]) → `Timeout`; an undecodable answer → `Network`; raft stopped on the target
//! → `RemoteError`. The first two are a peer being down, which openraft would log on every retry:
//! [`super::reachability`] logs them once per change of state instead.
//!
//! Snapshots use openraft's v1 chunked `install_snapshot` (0.9 without `generic-snapshot-data`);
//! the default `full_snapshot` sends the chunks through it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::reachability::{self, Reachability};
use super::{RaftNodeId, RaftPeer, TypeConfig};
use crate::shared::Shared;
use crate::sync::{lock, read};
use crate::wire::PeerMessage;
use crate::NodeId;

/// No raft RPC waits longer than this for its answer, whatever openraft asks.
pub const MAX_TTL: Duration = Duration::from_secs(2);

pub(crate) type Raft = openraft::Raft<TypeConfig>;

/// A raft RPC as it travels in `PeerMessage::RaftRequest`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<RaftNodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer in `PeerMessage::RaftResponse`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcReply {
    Append(AppendEntriesResponse<RaftNodeId>),
    Vote(VoteResponse<RaftNodeId>),
    Snapshot(InstallSnapshotResponse<RaftNodeId>),
    /// The target refused the snapshot chunk (e.g. a chunk out of order).
    SnapshotRefused(InstallSnapshotError),
    /// Raft on the target has stopped.
    Fatal(Fatal<RaftNodeId>),
}

/// Why a call produced no answer of the expected kind.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("no connected control link to {0}")]
    NoLink(NodeId),
    #[error("no answer from {node} within {after:?}")]
    Timeout { node: NodeId, after: Duration },
    #[error("the raft transport stopped before {0} answered")]
    Dropped(NodeId),
    #[error("cannot encode or decode a raft message: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("{0} answered with the wrong kind of reply")]
    Mismatch(NodeId),
    #[error("raft on {node} has stopped: {fatal}")]
    Remote { node: NodeId, fatal: Box<Fatal<RaftNodeId>> },
}

/// Requests in flight: id → (the peer asked, where its answer goes).
type Waiters = HashMap<u64, (NodeId, oneshot::Sender<Vec<u8>>)>;

/// Requests in flight and the links to send them on.
pub(crate) struct Rpc {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    pending: Mutex<Waiters>,
    reachability: Reachability,
    /// When this node last accepted an append (a heartbeat included) from a leader of its term.
    last_append: Mutex<Option<Instant>>,
    /// The runtime raft was started on (the raft runtime, see [`crate::runtimes`]): requests are
    /// served there whichever lane brought them.
    runtime: tokio::runtime::Handle,
}

/// Forgets a request when its caller stops waiting (answered, timed out or cancelled by openraft).
struct PendingGuard<'a> {
    rpc: &'a Rpc,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.rpc.pending).remove(&self.id);
    }
}

impl Rpc {
    /// Call on the runtime raft runs on.
    pub(crate) fn new(shared: Arc<Shared>) -> Rpc {
        Rpc {
            shared,
            next_id: AtomicU64::new(1),
            pending: Mutex::default(),
            reachability: Reachability::default(),
            last_append: Mutex::new(None),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// How long ago this node last accepted an append from a leader (`None`: never).
    pub(crate) fn since_append(&self) -> Option<Duration> {
        lock(&self.last_append).map(|at| at.elapsed())
    }

    /// Queues `msg` on the control link to `node`; `false` when there is no connected one (a frame
    /// queued for a link that is down would arrive stale, so it is not queued).
    pub(crate) fn send_control(&self, node: &NodeId, msg: &PeerMessage) -> bool {
        let links = read(&self.shared.links);
        links.get(node).is_some_and(|peer| peer.control.is_connected() && peer.control.send(msg))
    }

    /// Sends `request` to `node` and waits at most `ttl` (capped at [`MAX_TTL`]) for its answer;
    /// a peer that stops (or starts again) answering is logged once per change.
    pub(crate) async fn call(
        &self,
        node: &NodeId,
        request: &RpcRequest,
        ttl: Duration,
    ) -> Result<RpcReply, CallError> {
        let result = self.call_once(node, request, ttl).await;
        let report = match &result {
            Ok(_) => self.reachability.answered(node, Instant::now()).map(|report| (report, None)),
            Err(error @ (CallError::NoLink(_) | CallError::Dropped(_) | CallError::Timeout { .. })) => {
                self.reachability.failed(node, Instant::now()).map(|report| (report, Some(error)))
            }
            Err(_) => None,
        };
        if let Some((report, error)) = report {
            let reason: &dyn std::fmt::Display = match &error {
                Some(error) => error,
                None => &"answered",
            };
            reachability::log(node, &report, reason);
        }
        result
    }

    async fn call_once(
        &self,
        node: &NodeId,
        request: &RpcRequest,
        ttl: Duration,
    ) -> Result<RpcReply, CallError> {
        let body = serde_json::to_vec(request)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, (node.clone(), tx));
        let _guard = PendingGuard { rpc: self, id };
        if !self.send_control(node, &PeerMessage::RaftRequest { id, body }) {
            return Err(CallError::NoLink(node.clone()));
        }
        let after = ttl.min(MAX_TTL);
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(body)) => match serde_json::from_slice(&body)? {
                RpcReply::Fatal(fatal) => {
                    Err(CallError::Remote { node: node.clone(), fatal: Box::new(fatal) })
                }
                reply => Ok(reply),
            },
            Ok(Err(_)) => Err(CallError::Dropped(node.clone())),
            Err(_) => Err(CallError::Timeout { node: node.clone(), after }),
        }
    }

    /// See [`Client::backoff`].
    fn retry_unreachable(&self) -> Duration {
        self.shared.config.raft_election_min / 2
    }

    /// An answer from `from` to our request `id`.
    pub(crate) fn on_response(&self, from: &NodeId, id: u64, body: Vec<u8>) {
        let mut pending = lock(&self.pending);
        match pending.remove(&id) {
            Some((node, tx)) if node == *from => {
                let _ = tx.send(body);
            }
            Some(waiter) => {
                tracing::warn!(%from, id, expected = %waiter.0, "raft answer from the wrong peer ignored");
                pending.insert(id, waiter);
            }
            None => tracing::debug!(%from, id, "late raft answer dropped"),
        }
    }

    /// Serves a request from `from` on `raft` in a task of its own and answers on our control link.
    pub(crate) fn on_request(self: &Arc<Self>, raft: &Raft, from: NodeId, id: u64, body: Vec<u8>) {
        let rpc = Arc::clone(self);
        let raft = raft.clone();
        self.runtime.spawn(async move {
            let request = match serde_json::from_slice::<RpcRequest>(&body) {
                Ok(request) => request,
                Err(error) => {
                    tracing::warn!(%from, %error, "undecodable raft request dropped");
                    return;
                }
            };
            let reply = serve(&raft, request).await;
            if let RpcReply::Append(
                AppendEntriesResponse::Success
                | AppendEntriesResponse::PartialSuccess(_)
                | AppendEntriesResponse::Conflict,
            ) = &reply
            {
                *lock(&rpc.last_append) = Some(Instant::now());
            }
            match serde_json::to_vec(&reply) {
                Ok(body) => {
                    if !rpc.send_control(&from, &PeerMessage::RaftResponse { id, body }) {
                        tracing::debug!(%from, "no control link to answer a raft request on");
                    }
                }
                Err(error) => tracing::error!(%error, "cannot encode a raft answer"),
            }
        });
    }
}

/// Hands a request to the local raft.
async fn serve(raft: &Raft, request: RpcRequest) -> RpcReply {
    fn fatal(error: RaftError<RaftNodeId>) -> RpcReply {
        match error {
            RaftError::APIError(never) => match never {},
            RaftError::Fatal(fatal) => RpcReply::Fatal(fatal),
        }
    }
    match request {
        RpcRequest::Append(rpc) => raft.append_entries(rpc).await.map_or_else(fatal, RpcReply::Append),
        RpcRequest::Vote(rpc) => raft.vote(rpc).await.map_or_else(fatal, RpcReply::Vote),
        RpcRequest::Snapshot(rpc) => match raft.install_snapshot(rpc).await {
            Ok(answer) => RpcReply::Snapshot(answer),
            Err(RaftError::APIError(refused)) => RpcReply::SnapshotRefused(refused),
            Err(RaftError::Fatal(fatal)) => RpcReply::Fatal(fatal),
        },
    }
}

/// openraft's network factory: one [`Client`] per target, all sharing the [`Rpc`].
pub(crate) struct Network {
    rpc: Arc<Rpc>,
    me: RaftNodeId,
}

impl Network {
    pub(crate) fn new(rpc: Arc<Rpc>, me: RaftNodeId) -> Network {
        Network { rpc, me }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: RaftNodeId, node: &RaftPeer) -> Client {
        Client {
            rpc: Arc::clone(&self.rpc),
            me: self.me,
            target,
            peer: node.clone(),
            name: NodeId(node.name.clone()),
        }
    }
}

/// Sends RPCs to one target, found by its name among the peer links.
pub(crate) struct Client {
    rpc: Arc<Rpc>,
    me: RaftNodeId,
    target: RaftNodeId,
    peer: RaftPeer,
    name: NodeId,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<RaftNodeId, RaftPeer, RaftError<RaftNodeId, E>>>;

impl Client {
    /// The openraft error for a failed call.
    fn error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        error: CallError,
    ) -> RPCError<RaftNodeId, RaftPeer, RaftError<RaftNodeId, E>> {
        match error {
            CallError::NoLink(_) | CallError::Dropped(_) => RPCError::Unreachable(Unreachable::new(&error)),
            CallError::Timeout { after, .. } => {
                RPCError::Timeout(Timeout { action, id: self.me, target: self.target, timeout: after })
            }
            CallError::Remote { fatal, .. } => RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.peer.clone(),
                RaftError::Fatal(*fatal),
            )),
            CallError::Codec(_) | CallError::Mismatch(_) => RPCError::Network(NetworkError::new(&error)),
        }
    }

    fn mismatch<E: std::error::Error>(
        &self,
        action: RPCTypes,
    ) -> RPCError<RaftNodeId, RaftPeer, RaftError<RaftNodeId, E>> {
        self.error(action, CallError::Mismatch(self.name.clone()))
    }
}

impl RaftNetwork<TypeConfig> for Client {
    /// How long openraft waits before trying a peer with no connected link again: half the
    /// shortest election timeout (150 ms by default; openraft's own default is 500 ms). A try costs
    /// nothing while the link is down (no I/O: `Unreachable` at once), and a voter that comes back
    /// must hear the leader before its election timer runs out, or it campaigns and deposes it.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.rpc.retry_unreachable()))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftNodeId>> {
        let action = RPCTypes::AppendEntries;
        match self.rpc.call(&self.name, &RpcRequest::Append(rpc), option.hard_ttl()).await {
            Ok(RpcReply::Append(answer)) => Ok(answer),
            Ok(_) => Err(self.mismatch(action)),
            Err(error) => Err(self.error(action, error)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftNodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftNodeId>> {
        let action = RPCTypes::Vote;
        match self.rpc.call(&self.name, &RpcRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RpcReply::Vote(answer)) => Ok(answer),
            Ok(_) => Err(self.mismatch(action)),
            Err(error) => Err(self.error(action, error)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftNodeId>, InstallSnapshotError> {
        let action = RPCTypes::InstallSnapshot;
        match self.rpc.call(&self.name, &RpcRequest::Snapshot(rpc), option.hard_ttl()).await {
            Ok(RpcReply::Snapshot(answer)) => Ok(answer),
            Ok(RpcReply::SnapshotRefused(refused)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.peer.clone(),
                RaftError::APIError(refused),
            ))),
            Ok(_) => Err(self.mismatch(action)),
            Err(error) => Err(self.error(action, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_as_json() {
        let vote = openraft::Vote::new(3, 7);
        let request = RpcRequest::Vote(VoteRequest::new(vote, Some(openraft::testing::log_id(2, 7, 5))));
        let bytes = serde_json::to_vec(&request).unwrap();
        assert!(matches!(serde_json::from_slice(&bytes).unwrap(), RpcRequest::Vote(v) if v.vote == vote));
        let append = RpcRequest::Append(AppendEntriesRequest {
            vote,
            prev_log_id: None,
            entries: vec![openraft::Entry {
                log_id: openraft::testing::log_id(3, 7, 1),
                payload: openraft::EntryPayload::Normal(super::super::Command::CdcLeader {
                    node: 7,
                    term: 3,
                }),
            }],
            leader_commit: None,
        });
        let bytes = serde_json::to_vec(&append).unwrap();
        assert!(
            matches!(serde_json::from_slice(&bytes).unwrap(), RpcRequest::Append(a) if a.entries.len() == 1)
        );
        for reply in [
            RpcReply::Append(AppendEntriesResponse::Success),
            RpcReply::Vote(VoteResponse::new(vote, None, true)),
            RpcReply::Fatal(Fatal::Stopped),
        ] {
            let bytes = serde_json::to_vec(&reply).unwrap();
            let back: RpcReply = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{reply:?}"));
        }
    }

    #[test]
    fn raft_frames_cross_the_peer_wire() {
        use crate::wire::{decode, encode};
        let body = serde_json::to_vec(&RpcReply::Append(AppendEntriesResponse::Conflict)).unwrap();
        for msg in [
            PeerMessage::RaftRequest { id: 9, body: body.clone() },
            PeerMessage::RaftResponse { id: u64::MAX, body },
            PeerMessage::RaftStatus {
                initialized: true,
                leader: Some(7),
                can_lead: false,
                hears_leader: true,
                hears: vec![1, u64::MAX],
            },
        ] {
            assert_eq!(decode(&encode(&msg).unwrap()).unwrap(), msg);
        }
    }
}
