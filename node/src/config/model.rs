//! The typed configuration every component reads: [`Config`] and its parts, as start-up leaves them.
//! Only types live here; [`super::decide`] builds them from the settings and [`super::startup`] adds what
//! needs reading or looking up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use realtime_cluster::ClusterSecret;

use crate::auth::AdminToken;
use crate::resume::ResumeConfig;

/// The resolved configuration every component reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// `None` until resolved by [`crate::auth`]: a dev secret is generated then.
    pub jwt_secret: Option<String>,
    /// Raw JWKS JSON, read at start-up.
    pub jwks_json: Option<String>,
    /// What `/cluster` and `/metrics` require ([`crate::http::admin`]); `None`: open to anyone.
    pub admin_token: Option<AdminToken>,
    pub node_id: String,
    pub limits: Limits,
    pub idle_timeout: Duration,
    pub join_error_delay: Duration,
    pub connect_error_delay: Duration,
    pub shutdown_grace: Duration,
    pub workers: usize,
    /// Refuse joins of public channels (`PrivateOnly`).
    pub private_only: bool,
    /// Serve the inspector page and its API (`crate::http::inspector`); off: they are 404.
    pub inspector: bool,
    /// `None`: Postgres Changes are disabled.
    pub cdc: Option<CdcConfig>,
    pub data_dir: PathBuf,
    /// `None`: a single node (no `REALTIME_SEEDS`).
    pub cluster: Option<ClusterSettings>,
    /// How long `realtime.messages` rows are kept (with `DATABASE_URL`; see [`crate::schema`]).
    pub messages_retention: Duration,
    /// Resumable channels ([`crate::resume`]); no topics: off.
    pub resume: ResumeConfig,
    /// `None`: lifecycle webhooks are off (no `REALTIME_WEBHOOK_URL`).
    pub webhooks: Option<WebhookConfig>,
    /// The notifications inbox's REST and GraphQL API ([`crate::inbox`]).
    pub inbox: InboxSettings,
}

/// Lifecycle webhooks ([`crate::webhooks`]), present when `REALTIME_WEBHOOK_URL` is set.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: reqwest::Url,
    pub secret: String,
    pub offline_grace: Duration,
    pub batch_max: usize,
    pub batch_window: Duration,
    pub queue: usize,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub timeout: Duration,
    /// Trusted for `https://` besides the Mozilla roots (`REALTIME_WEBHOOK_CA_FILE`).
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_str())
            .field("offline_grace", &self.offline_grace)
            .field("batch_max", &self.batch_max)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// Limits and switches of the notifications inbox's API (REST insert, GraphQL).
#[derive(Debug, Clone, Copy)]
pub struct InboxSettings {
    pub introspection: bool,
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_body_bytes: usize,
    pub list_per_minute: u32,
    pub mark_read_per_minute: u32,
    pub delete_per_minute: u32,
    pub max_content_bytes: usize,
    pub pool_size: usize,
}

/// Cluster settings, present when `REALTIME_SEEDS` is set.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub bind: SocketAddr,
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub probe_period: Duration,
    pub suspect_to_down: Duration,
    pub raft_remove_after: Duration,
    /// Who may speak for a node (`REALTIME_CLUSTER_SECRET[_FILE]`), or nobody checked.
    pub secret: ClusterSecret,
}

/// Postgres Changes settings, present when `DATABASE_URL` is set.
#[derive(Clone)]
pub struct CdcConfig {
    pub database_url: String,
    pub publication: String,
    pub slot: String,
    pub max_record_bytes: usize,
    pub resume_grace: Duration,
    /// In a cluster: how long a node that dropped out still holds the slot's acknowledgement back.
    /// Longer keeps more WAL on the database; shorter means a node out for longer cannot be given
    /// the rows it missed (its subscribers are then told, see `cdc::hub`).
    pub hold: Duration,
    /// In a cluster: how long the CDC leader may be unable to reach PostgreSQL, while a voter that
    /// can is in contact, before it stops its raft heartbeats so that voter takes over
    /// (`REALTIME_CDC_HANDOVER_MS`; see `realtime_cluster`'s `raft::campaign`).
    pub handover: Duration,
    /// How long a batch's sockets have to write it before they are closed (the write timeout).
    pub flush_deadline: Duration,
    /// How long the replication stream may stay silent before it is taken as dead
    /// (`REALTIME_REPLICATION_TIMEOUT_MS`; see [`crate::cdc::consumer`]).
    pub replication_timeout: Duration,
}

impl std::fmt::Debug for CdcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdcConfig")
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("max_record_bytes", &self.max_record_bytes)
            .finish_non_exhaustive()
    }
}

/// Limits applied to clients (PROTOCOL.md §7 and DESIGN.md's configuration contract).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Sockets the open-files limit holds (`crate::open_files`), set at start-up; unbounded until then.
    pub sockets_by_files: usize,
    pub max_channel_members: usize,
    pub max_channels_per_client: usize,
    pub max_events_per_second: u32,
    pub max_joins_per_second: u32,
    pub max_payload_bytes: usize,
    pub max_rest_events_per_second: u32,
    /// REST broadcast messages per sender per second (besides the node's budget).
    pub max_token_rest_events_per_second: u32,
    pub presence_max_calls: u32,
    pub presence_window: Duration,
    /// Least time between two `presence_diff`s of a channel.
    pub presence_batch: Duration,
    /// Largest WebSocket frame accepted (the reference's `max_frame_size`).
    pub max_frame_bytes: usize,
    pub max_outbox_bytes: usize,
    pub max_outbox_frames: usize,
    pub write_timeout: Duration,
    pub max_client_joins_per_second: u32,
    pub max_token_joins_per_second: u32,
    pub budget: Budget,
    pub max_rest_batch: usize,
    pub max_rest_concurrency: usize,
    /// A REST or GraphQL body not received whole within this is answered 408 (and frees its slot).
    pub request_body_timeout: Duration,
}

/// Sizes of what a client chooses in a message (checked before anything is kept).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_topic_bytes: usize,
    pub max_ref_bytes: usize,
    pub max_presence_key_bytes: usize,
    pub max_presence_depth: usize,
    pub max_postgres_changes: usize,
    pub max_filter_bytes: usize,
}
