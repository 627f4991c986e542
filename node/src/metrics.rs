//! Every metric the node exports, defined in one place and served as Prometheus text at `/metrics`.
//!
//! Handles are registered once ([`metrics()`]) after the recorder is installed, so hot paths pay an
//! atomic add, not a registry lookup. Names follow Prometheus unit suffixes (`_total`, `_bytes`,
//! `_seconds`).

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Why the node refused something; the `reason` label of `realtime_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ConnectionLimit,
    /// A handshake past what the open-files limit holds (`crate::open_files`).
    FileLimit,
    JoinRate,
    ClientJoinRate,
    TokenJoinRate,
    ChannelsPerClient,
    ChannelFull,
    EventRate,
    PresenceRate,
    PayloadTooLarge,
    TrackTooLarge,
    InvalidToken,
    RestRate,
    /// REST broadcast messages over the sender's own per-second budget.
    TokenRestRate,
    RestBatchTooLarge,
    RestBusy,
    /// A REST or GraphQL request body that did not arrive within `REALTIME_REQUEST_BODY_TIMEOUT_MS`.
    BodyTimeout,
    PrivateChannel,
    Draining,
    SlowConsumer,
    FrameTooLarge,
    /// A client-chosen field over its budget (topic, ref, presence key or depth, postgres_changes).
    Budget,
    PendingPushes,
    /// A notifications inbox GraphQL operation over its per-user-per-minute limit.
    InboxRate,
}

impl Refusal {
    const ALL: [Refusal; 24] = [
        Refusal::ConnectionLimit,
        Refusal::FileLimit,
        Refusal::JoinRate,
        Refusal::ClientJoinRate,
        Refusal::TokenJoinRate,
        Refusal::ChannelsPerClient,
        Refusal::ChannelFull,
        Refusal::EventRate,
        Refusal::PresenceRate,
        Refusal::PayloadTooLarge,
        Refusal::TrackTooLarge,
        Refusal::InvalidToken,
        Refusal::RestRate,
        Refusal::TokenRestRate,
        Refusal::RestBatchTooLarge,
        Refusal::RestBusy,
        Refusal::BodyTimeout,
        Refusal::PrivateChannel,
        Refusal::Draining,
        Refusal::SlowConsumer,
        Refusal::FrameTooLarge,
        Refusal::Budget,
        Refusal::PendingPushes,
        Refusal::InboxRate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::FileLimit => "file_limit",
            Refusal::JoinRate => "join_rate",
            Refusal::ClientJoinRate => "client_join_rate",
            Refusal::TokenJoinRate => "token_join_rate",
            Refusal::ChannelsPerClient => "channels_per_client",
            Refusal::ChannelFull => "channel_full",
            Refusal::EventRate => "event_rate",
            Refusal::PresenceRate => "presence_rate",
            Refusal::PayloadTooLarge => "payload_too_large",
            Refusal::TrackTooLarge => "track_too_large",
            Refusal::InvalidToken => "invalid_token",
            Refusal::RestRate => "rest_rate",
            Refusal::TokenRestRate => "token_rest_rate",
            Refusal::RestBatchTooLarge => "rest_batch_too_large",
            Refusal::RestBusy => "rest_busy",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::PrivateChannel => "private_channel",
            Refusal::Draining => "draining",
            Refusal::SlowConsumer => "slow_consumer",
            Refusal::FrameTooLarge => "frame_too_large",
            Refusal::Budget => "budget",
            Refusal::PendingPushes => "pending_pushes",
            Refusal::InboxRate => "inbox_rate",
        }
    }
}

/// Why a socket was closed as a slow consumer; the `cause` label of `realtime_slow_consumer_closes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowClose {
    Overflow,
    WriteTimeout,
    FlushDeadline,
}

impl SlowClose {
    const ALL: [SlowClose; 3] = [SlowClose::Overflow, SlowClose::WriteTimeout, SlowClose::FlushDeadline];

    pub fn as_str(self) -> &'static str {
        match self {
            SlowClose::Overflow => "outbox_full",
            SlowClose::WriteTimeout => "write_timeout",
            SlowClose::FlushDeadline => "flush_deadline",
        }
    }
}

/// Why a message a peer shipped about Postgres Changes was not taken; the `reason` label of
/// `realtime_cdc_rejected_total` (see [`crate::cdc::guard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CdcRejected {
    /// Not sent by the node raft names as the current leader.
    NotLeader,
    /// A transaction's position is not after the one it says precedes it.
    Backwards,
    /// A transaction's position is past what PostgreSQL has written.
    BeyondWal,
    /// A change names a relation (oid, schema, table) the catalog does not resolve.
    UnknownRelation,
    /// A change names a column the catalog does not have.
    UnknownColumn,
    /// A row whose cells do not match its relation's columns.
    MalformedRow,
    /// The catalog could not be asked; the node asks the leader to replay instead.
    Unverifiable,
    /// Not decodable as a CDC message.
    Undecodable,
    /// A peer's delivered position past anything this node's stream has taken.
    DeliveredAhead,
}

impl CdcRejected {
    const ALL: [CdcRejected; 9] = [
        CdcRejected::NotLeader,
        CdcRejected::Backwards,
        CdcRejected::BeyondWal,
        CdcRejected::UnknownRelation,
        CdcRejected::UnknownColumn,
        CdcRejected::MalformedRow,
        CdcRejected::Unverifiable,
        CdcRejected::Undecodable,
        CdcRejected::DeliveredAhead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CdcRejected::NotLeader => "not_leader",
            CdcRejected::Backwards => "backwards",
            CdcRejected::BeyondWal => "beyond_wal",
            CdcRejected::UnknownRelation => "unknown_relation",
            CdcRejected::UnknownColumn => "unknown_column",
            CdcRejected::MalformedRow => "malformed_row",
            CdcRejected::Unverifiable => "unverifiable",
            CdcRejected::Undecodable => "undecodable",
            CdcRejected::DeliveredAhead => "delivered_ahead",
        }
    }
}

/// A task of the Postgres Changes path; the `stage` label of `realtime_cdc_task_restarts_total`
/// (see [`crate::cdc::supervisor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CdcStage {
    /// The replication consumer (single node, or the raft leader).
    Consumer,
    /// Matching, RLS and delivery.
    Hub,
    /// Recording delivered positions.
    Recorder,
    /// In a cluster: taking the leader's shipments and reporting positions.
    Cluster,
}

impl CdcStage {
    const ALL: [CdcStage; 4] = [CdcStage::Consumer, CdcStage::Hub, CdcStage::Recorder, CdcStage::Cluster];

    pub fn as_str(self) -> &'static str {
        match self {
            CdcStage::Consumer => "consumer",
            CdcStage::Hub => "hub",
            CdcStage::Recorder => "recorder",
            CdcStage::Cluster => "cluster",
        }
    }
}

/// Registered metric handles.
pub struct Metrics {
    pub connections: Gauge,
    pub channels: Gauge,
    pub channel_members: Gauge,
    pub joins: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub malformed_frames: Counter,
    pub rest_messages: Counter,
    pub presence_events: Counter,
    pub delivery_latency: Histogram,
    pub cdc_changes: Counter,
    pub cdc_transactions: Counter,
    pub cdc_stream_lost: Counter,
    pub cdc_delay_notices: Counter,
    pub database_reachable: Gauge,
    /// Stream restarts that could not give this node's subscribers what it missed (see `cdc::gap`).
    pub cdc_gaps: Counter,
    pub cluster: ClusterMetrics,
    pub resume: ResumeMetrics,
    pub webhooks: WebhookMetrics,
    refusals: Vec<Counter>,
    slow_closes: Vec<Counter>,
    cdc_rejected: Vec<Counter>,
    cdc_restarts: Vec<Counter>,
}

impl Metrics {
    pub fn refused(&self, reason: Refusal) {
        let index = Refusal::ALL.iter().position(|r| *r == reason).expect("every refusal is listed");
        self.refusals[index].increment(1);
    }

    /// Counts a slow consumer's close (also counted as a `slow_consumer` refusal).
    pub fn slow_closed(&self, cause: SlowClose) {
        let index = SlowClose::ALL.iter().position(|c| *c == cause).expect("every cause is listed");
        self.slow_closes[index].increment(1);
        self.refused(Refusal::SlowConsumer);
    }

    /// Counts a peer's CDC message (or one change of it) that was not taken.
    pub fn cdc_rejected(&self, reason: CdcRejected) {
        let index = CdcRejected::ALL.iter().position(|r| *r == reason).expect("every reason is listed");
        self.cdc_rejected[index].increment(1);
    }

    /// Counts a CDC task restarted after a panic.
    pub fn cdc_task_restarted(&self, stage: CdcStage) {
        let index = CdcStage::ALL.iter().position(|s| *s == stage).expect("every stage is listed");
        self.cdc_restarts[index].increment(1);
    }
}

/// Resumable channels (`crate::resume`).
pub struct ResumeMetrics {
    pub stored: Counter,
    pub store_failures: Counter,
    pub filled: Counter,
    pub gaps: Counter,
    pub retained_messages: Gauge,
    pub retained_bytes: Gauge,
}

impl Metrics {
    /// Counts a batch of socket or REST messages the resumable writer stored, or failed to.
    pub fn resumable_written(&self, messages: usize, ok: bool) {
        let counter = if ok { &self.resume.stored } else { &self.resume.store_failures };
        counter.increment(messages as u64);
    }
}

/// Lifecycle webhooks ([`crate::webhooks`]).
pub struct WebhookMetrics {
    /// Events in batches the receiver accepted (2xx).
    pub sent: Counter,
    /// Events in batches given up: refused (4xx) or still failing after the last attempt.
    pub failed: Counter,
    /// Events dropped because the queue was full (or closed by the drain).
    pub dropped: Counter,
    /// HTTP attempts, retries included.
    pub requests: Counter,
}

/// The cluster's state, read from its view when `/metrics` is scraped.
pub struct ClusterMetrics {
    pub peers_alive: Gauge,
    pub peers_down: Gauge,
    pub link_queued_bytes: Gauge,
    pub link_cuts: Counter,
    /// Written to peers and not yet acknowledged (all links), and the oldest such write's age (the
    /// largest over links): lag the queues do not show.
    pub link_unacked_bytes: Gauge,
    pub link_oldest_unacked: Gauge,
    /// Links that made no progress within the stall bound (each stall once), and peers unreachable
    /// for delivery now (their data link stalled).
    pub link_stalls: Counter,
    pub peers_unreachable: Gauge,
    /// Peer frames dropped for arriving after newer ones from the same sender and lane.
    pub stale_frames_dropped: Counter,
    pub relays: Counter,
    pub relay_drops: Counter,
    pub presence_remote_entries: Gauge,
    /// Peer traffic refused for not proving the cluster secret: TCP links, membership packets, and
    /// packets that opened but were replayed (or sent outside the time window).
    pub refused_links: Counter,
    pub refused_packets: Counter,
    pub refused_replays: Counter,
    /// Peer frames refused by the cluster's checks: member counts, leaves, presence.
    pub rejected: [Counter; 3],
    /// Raft (absent without raft): the term, whether this node leads with a quorum within the lease,
    /// whether it runs CDC, whether its election timer runs.
    pub raft_term: Gauge,
    pub raft_leader: Gauge,
    pub cdc_leader: Gauge,
    pub raft_campaign: Gauge,
}

impl ClusterMetrics {
    /// Copies a `/cluster` view into the metrics.
    pub fn observe(&self, view: &realtime_cluster::ClusterView) {
        let alive = view.members.iter().filter(|m| m.state != "down").count();
        self.peers_alive.set(alive as f64);
        self.peers_down.set((view.members.len() - alive) as f64);
        self.link_queued_bytes.set(view.links.iter().map(|l| l.queued_bytes as f64).sum::<f64>());
        self.link_cuts.absolute(view.links.iter().map(|l| l.cuts).sum());
        self.link_unacked_bytes.set(view.links.iter().map(|l| l.unacked_bytes as f64).sum::<f64>());
        let oldest_ms = view.links.iter().map(|l| l.oldest_unacked_ms).max().unwrap_or(0);
        self.link_oldest_unacked.set(oldest_ms as f64 / 1000.0);
        self.link_stalls.absolute(view.links.iter().map(|l| l.stalls).sum());
        self.peers_unreachable
            .set(view.links.iter().filter(|l| l.lane == "data" && l.stalled).count() as f64);
        self.stale_frames_dropped.absolute(view.stale_frames_dropped);
        self.relays.absolute(view.relayed);
        self.relay_drops.absolute(view.relay_drops);
        self.presence_remote_entries.set(view.presence.remote_entries as f64);
        self.refused_links.absolute(view.refused.links);
        self.refused_packets.absolute(view.refused.packets);
        self.refused_replays.absolute(view.refused.replays);
        let rejected = &view.rejected;
        for (counter, total) in
            self.rejected.iter().zip([rejected.member_counts, rejected.leaves, rejected.presence])
        {
            counter.absolute(total);
        }
        if let Some(raft) = &view.raft {
            let flag = |on: bool| if on { 1.0 } else { 0.0 };
            self.raft_term.set(raft.term as f64);
            self.raft_leader.set(flag(raft.has_quorum));
            self.cdc_leader.set(flag(raft.is_me));
            self.raft_campaign.set(flag(raft.campaign));
        }
    }
}

const DELIVERY_LATENCY: &str = "realtime_delivery_latency_seconds";
const CLUSTER_REJECTED: &str = "realtime_cluster_peer_frames_rejected_total";

/// The handles; the first call registers them with whatever recorder is installed.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        describe_gauge!("realtime_connections", "Open WebSocket connections on this node");
        describe_gauge!("realtime_channels", "Channels (topics) with members on this node");
        describe_gauge!("realtime_channel_members", "Channel memberships (socket × topic) on this node");
        describe_counter!("realtime_joins_total", "Successful channel joins");
        describe_counter!("realtime_messages_in_total", "Client frames received");
        describe_counter!("realtime_messages_out_total", "Frames written to clients");
        describe_counter!("realtime_bytes_in_total", Unit::Bytes, "Bytes of client frames received");
        describe_counter!("realtime_bytes_out_total", Unit::Bytes, "Bytes of frames written to clients");
        describe_counter!("realtime_malformed_frames_total", "Client frames that could not be decoded");
        describe_counter!("realtime_rest_messages_total", "Messages accepted by the REST broadcast API");
        describe_counter!("realtime_presence_events_total", "Presence track/untrack operations");
        describe_counter!("realtime_cdc_changes_total", "Row changes decoded from the replication stream");
        describe_counter!("realtime_cdc_transactions_total", "Committed transactions handed to the CDC hub");
        describe_counter!(
            "realtime_cdc_stream_lost_total",
            "Times this node's replication stream was lost (failed, or silent past the replication timeout)"
        );
        describe_gauge!(
            "realtime_database_reachable",
            "1 when this node's last probe of PostgreSQL was answered, 0 when not"
        );
        describe_counter!(
            "realtime_cdc_delay_notices_total",
            "Times this node told its Postgres Changes subscribers that changes are delayed"
        );
        describe_counter!(
            "realtime_cdc_gaps_total",
            "Committed changes this node could not be given (its subscribers were told and their channels closed)"
        );
        describe_counter!(
            "realtime_cdc_rejected_total",
            "Postgres Changes messages (or changes) from peers that were not taken, by reason"
        );
        describe_counter!(
            "realtime_cdc_task_restarts_total",
            "Postgres Changes tasks restarted after a panic, by stage"
        );
        describe_counter!("realtime_refusals_total", "Refused connections, joins and messages by reason");
        describe_gauge!("realtime_cluster_peers_alive", "Peers the failure detector holds alive or suspect");
        describe_gauge!("realtime_cluster_peers_down", "Peers declared down (still remembered)");
        describe_gauge!(
            "realtime_cluster_link_queued_bytes",
            Unit::Bytes,
            "Bytes queued on peer links (lag)"
        );
        describe_counter!(
            "realtime_cluster_link_cuts_total",
            "Peer links cut for being over their queue bound or stalled"
        );
        describe_gauge!(
            "realtime_cluster_link_unacked_bytes",
            Unit::Bytes,
            "Bytes written on peer links and not yet acknowledged by the peer"
        );
        describe_gauge!(
            "realtime_cluster_link_oldest_unacked_seconds",
            Unit::Seconds,
            "Age of the oldest write on any peer link not yet acknowledged by the peer"
        );
        describe_counter!(
            "realtime_cluster_link_stalls_total",
            "Peer links that made no progress within the stall bound (cut, peer unreachable until progress)"
        );
        describe_gauge!(
            "realtime_cluster_peers_unreachable",
            "Peers whose data link is stalled: no relays or Postgres Changes go to them"
        );
        describe_counter!(
            "realtime_cluster_stale_frames_dropped_total",
            "Peer frames dropped for arriving after newer ones from the same sender (an old connection)"
        );
        describe_counter!("realtime_cluster_relays_total", "Broadcasts relayed to peers (one per peer)");
        describe_counter!(
            "realtime_cluster_relay_drops_total",
            "Relays dropped: no link, or a link being cut"
        );
        describe_gauge!("realtime_cluster_raft_term", "The raft term this node is in");
        describe_gauge!(
            "realtime_cluster_raft_leader",
            "1 while this node leads raft with a quorum acknowledgement within the lease"
        );
        describe_gauge!("realtime_cluster_cdc_leader", "1 while this node may run the Postgres Changes consumer");
        describe_gauge!(
            "realtime_cluster_raft_campaign",
            "1 while this node's raft election timer runs (it could win a pre-vote and may lead)"
        );
        describe_gauge!(
            "realtime_cluster_presence_remote_entries",
            "Presence entries replicated from other nodes"
        );
        describe_counter!(
            "realtime_cluster_peer_refused_total",
            "Peer traffic refused for not holding the cluster secret, by kind (link, packet, replay)"
        );
        describe_counter!(
            CLUSTER_REJECTED,
            "Peer frames refused because they could not be true, by kind (member_counts, leave, presence)"
        );
        describe_counter!(
            "realtime_slow_consumer_closes_total",
            "Sockets closed because they did not keep up, by cause"
        );
        describe_counter!(
            "realtime_resumable_stored_total",
            "Socket and REST broadcasts on resumable channels stored in realtime.messages"
        );
        describe_counter!(
            "realtime_resumable_store_failures_total",
            "Socket and REST broadcasts on resumable channels that could not be stored"
        );
        describe_counter!(
            "realtime_resumes_total",
            "Joins with a resume position, by outcome (filled: every missed message sent; gap)"
        );
        describe_gauge!("realtime_resumable_retained_messages", "Messages held for resuming clients");
        describe_gauge!(
            "realtime_resumable_retained_bytes",
            Unit::Bytes,
            "Bytes (approximate) held for resuming clients"
        );
        describe_counter!("realtime_webhook_events_sent_total", "Webhook events the receiver accepted");
        describe_counter!(
            "realtime_webhook_events_failed_total",
            "Webhook events given up: refused, or failing after the last attempt"
        );
        describe_counter!(
            "realtime_webhook_events_dropped_total",
            "Webhook events dropped because the queue was full"
        );
        describe_counter!("realtime_webhook_requests_total", "Webhook HTTP attempts, retries included");
        describe_histogram!(
            DELIVERY_LATENCY,
            Unit::Seconds,
            "Broadcast delivery latency: from receipt by the node to the write to a subscriber"
        );
        Metrics {
            connections: metrics::gauge!("realtime_connections"),
            channels: metrics::gauge!("realtime_channels"),
            channel_members: metrics::gauge!("realtime_channel_members"),
            joins: metrics::counter!("realtime_joins_total"),
            messages_in: metrics::counter!("realtime_messages_in_total"),
            messages_out: metrics::counter!("realtime_messages_out_total"),
            bytes_in: metrics::counter!("realtime_bytes_in_total"),
            bytes_out: metrics::counter!("realtime_bytes_out_total"),
            malformed_frames: metrics::counter!("realtime_malformed_frames_total"),
            rest_messages: metrics::counter!("realtime_rest_messages_total"),
            presence_events: metrics::counter!("realtime_presence_events_total"),
            delivery_latency: metrics::histogram!(DELIVERY_LATENCY),
            cdc_changes: metrics::counter!("realtime_cdc_changes_total"),
            cdc_transactions: metrics::counter!("realtime_cdc_transactions_total"),
            cdc_stream_lost: metrics::counter!("realtime_cdc_stream_lost_total"),
            cdc_delay_notices: metrics::counter!("realtime_cdc_delay_notices_total"),
            database_reachable: metrics::gauge!("realtime_database_reachable"),
            cdc_gaps: metrics::counter!("realtime_cdc_gaps_total"),
            cluster: ClusterMetrics {
                peers_alive: metrics::gauge!("realtime_cluster_peers_alive"),
                peers_down: metrics::gauge!("realtime_cluster_peers_down"),
                link_queued_bytes: metrics::gauge!("realtime_cluster_link_queued_bytes"),
                link_cuts: metrics::counter!("realtime_cluster_link_cuts_total"),
                link_unacked_bytes: metrics::gauge!("realtime_cluster_link_unacked_bytes"),
                link_oldest_unacked: metrics::gauge!("realtime_cluster_link_oldest_unacked_seconds"),
                link_stalls: metrics::counter!("realtime_cluster_link_stalls_total"),
                peers_unreachable: metrics::gauge!("realtime_cluster_peers_unreachable"),
                stale_frames_dropped: metrics::counter!("realtime_cluster_stale_frames_dropped_total"),
                relays: metrics::counter!("realtime_cluster_relays_total"),
                relay_drops: metrics::counter!("realtime_cluster_relay_drops_total"),
                presence_remote_entries: metrics::gauge!("realtime_cluster_presence_remote_entries"),
                refused_links: metrics::counter!("realtime_cluster_peer_refused_total", "kind" => "link"),
                refused_packets: metrics::counter!("realtime_cluster_peer_refused_total", "kind" => "packet"),
                refused_replays: metrics::counter!("realtime_cluster_peer_refused_total", "kind" => "replay"),
                rejected: ["member_counts", "leave", "presence"]
                    .map(|kind| metrics::counter!(CLUSTER_REJECTED, "kind" => kind)),
                raft_term: metrics::gauge!("realtime_cluster_raft_term"),
                raft_leader: metrics::gauge!("realtime_cluster_raft_leader"),
                cdc_leader: metrics::gauge!("realtime_cluster_cdc_leader"),
                raft_campaign: metrics::gauge!("realtime_cluster_raft_campaign"),
            },
            resume: ResumeMetrics {
                stored: metrics::counter!("realtime_resumable_stored_total"),
                store_failures: metrics::counter!("realtime_resumable_store_failures_total"),
                filled: metrics::counter!("realtime_resumes_total", "outcome" => "filled"),
                gaps: metrics::counter!("realtime_resumes_total", "outcome" => "gap"),
                retained_messages: metrics::gauge!("realtime_resumable_retained_messages"),
                retained_bytes: metrics::gauge!("realtime_resumable_retained_bytes"),
            },
            webhooks: WebhookMetrics {
                sent: metrics::counter!("realtime_webhook_events_sent_total"),
                failed: metrics::counter!("realtime_webhook_events_failed_total"),
                dropped: metrics::counter!("realtime_webhook_events_dropped_total"),
                requests: metrics::counter!("realtime_webhook_requests_total"),
            },
            refusals: Refusal::ALL
                .iter()
                .map(|r| metrics::counter!("realtime_refusals_total", "reason" => r.as_str()))
                .collect(),
            slow_closes: SlowClose::ALL
                .iter()
                .map(|c| metrics::counter!("realtime_slow_consumer_closes_total", "cause" => c.as_str()))
                .collect(),
            cdc_rejected: CdcRejected::ALL
                .iter()
                .map(|r| metrics::counter!("realtime_cdc_rejected_total", "reason" => r.as_str()))
                .collect(),
            cdc_restarts: CdcStage::ALL
                .iter()
                .map(|s| metrics::counter!("realtime_cdc_task_restarts_total", "stage" => s.as_str()))
                .collect(),
        }
    })
}

/// Installs the Prometheus recorder (once per process) and registers the handles.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(DELIVERY_LATENCY.into()),
            &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
        )?
        .install_recorder()?;
    metrics();
    Ok(handle)
}
