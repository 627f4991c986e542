//! The node's one typed configuration struct, built from flags, environment and an optional TOML file.
//!
//! Every setting is an environment variable and the same flag (`--bind` for `REALTIME_BIND`); the
//! precedence is flag > environment > file (`--config` / `REALTIME_CONFIG`, keys are the flag names with
//! `_`) > default. A value that is given but wrong stops the node at start-up: nothing falls back silently.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use thiserror::Error;

use realtime_cluster::secure::SecretError;
use realtime_cluster::{ClusterSecret, Keyring};

use crate::auth::AdminToken;
use crate::resume::{LogLimits, ResumableTopics, ResumeConfig};

/// Why the configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML for this node: {source}")]
    ParseFile { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{name} must be greater than zero")]
    Zero { name: &'static str },
    #[error("{name} must be between {min} and {max}")]
    Range { name: &'static str, min: usize, max: usize },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("{0}")]
    Resume(String),
    #[error("webhooks: {0}")]
    Webhook(String),
    #[error("cannot read JWKS file {path}: {reason}")]
    Jwks { path: PathBuf, reason: String },
    #[error("admin token: {0}")]
    AdminToken(String),
}

/// Flags; each also reads its environment variable. All optional so the file and defaults can fill in.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "realtime", version, about = "Supabase Realtime compatible server")]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Settings {
    /// TOML file with any of these settings (keys are the flag names with `_`).
    #[arg(long, env = "REALTIME_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// HTTP and WebSocket listener.
    #[arg(long, env = "REALTIME_BIND")]
    pub bind: Option<SocketAddr>,
    /// HS256/384/512 secret for client JWTs (a dev secret is generated and printed when unset).
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// JWKS file (`{"keys": [...]}`) for RS*/ES*/EdDSA tokens, selected by `kid`.
    #[arg(long, env = "REALTIME_JWKS")]
    pub jwks: Option<PathBuf>,
    /// Bearer token `/cluster` and `/metrics` require (at least 16 characters); a `service_role` JWT
    /// is accepted too. Unset: they answer anyone.
    #[arg(long, env = "REALTIME_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin token (a mounted Secret); instead of `--admin-token`.
    #[arg(long, env = "REALTIME_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Stable node name (defaults to the hostname).
    #[arg(long, env = "REALTIME_NODE_ID")]
    pub node_id: Option<String>,
    /// WebSocket connections per node.
    #[arg(long, env = "REALTIME_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Members per channel.
    #[arg(long, env = "REALTIME_MAX_CHANNEL_MEMBERS")]
    pub max_channel_members: Option<usize>,
    /// Channels per socket.
    #[arg(long, env = "REALTIME_MAX_CHANNELS_PER_CLIENT")]
    pub max_channels_per_client: Option<usize>,
    /// Broadcast and presence pushes per socket per second.
    #[arg(long, env = "REALTIME_MAX_EVENTS_PER_SECOND")]
    pub max_events_per_second: Option<u32>,
    /// Channel joins per node per second.
    #[arg(long, env = "REALTIME_MAX_JOINS_PER_SECOND")]
    pub max_joins_per_second: Option<u32>,
    /// Largest broadcast payload or presence meta, in bytes of JSON.
    #[arg(long, env = "REALTIME_MAX_PAYLOAD_BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// REST broadcast messages per node per second.
    #[arg(long, env = "REALTIME_MAX_REST_EVENTS_PER_SECOND")]
    pub max_rest_events_per_second: Option<u32>,
    /// REST broadcast messages per sender (the token's `sub`, or the token itself) per second.
    #[arg(long, env = "REALTIME_MAX_TOKEN_REST_EVENTS_PER_SECOND")]
    pub max_token_rest_events_per_second: Option<u32>,
    /// Presence pushes per channel per presence window.
    #[arg(long, env = "REALTIME_PRESENCE_MAX_CALLS")]
    pub presence_max_calls: Option<u32>,
    /// The presence rate window in milliseconds.
    #[arg(long, env = "REALTIME_PRESENCE_WINDOW_MS")]
    pub presence_window_ms: Option<u64>,
    /// Close a socket that sent nothing (not even a heartbeat) for this long.
    #[arg(long, env = "REALTIME_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Delay before a join error reply, so retrying clients do not hammer the node.
    #[arg(long, env = "REALTIME_JOIN_ERROR_DELAY_MS")]
    pub join_error_delay_ms: Option<u64>,
    /// Delay before a refused WebSocket handshake is answered.
    #[arg(long, env = "REALTIME_CONNECT_ERROR_DELAY_MS")]
    pub connect_error_delay_ms: Option<u64>,
    /// Budget for the SIGTERM drain.
    #[arg(long, env = "REALTIME_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// HTTP worker threads (defaults to the number of cores).
    #[arg(long, env = "REALTIME_WORKERS")]
    pub workers: Option<usize>,
    /// Refuse public channels: every join must be `private` and pass the RLS read check.
    #[arg(long, env = "REALTIME_PRIVATE_ONLY")]
    pub private_only: Option<bool>,
    /// Bytes of frames queued for one socket before it is closed as a slow consumer.
    #[arg(long, env = "REALTIME_MAX_OUTBOX_BYTES")]
    pub max_outbox_bytes: Option<usize>,
    /// Frames queued for one socket before it is closed as a slow consumer.
    #[arg(long, env = "REALTIME_MAX_OUTBOX_FRAMES")]
    pub max_outbox_frames: Option<usize>,
    /// A socket whose queued frames make no write progress for this long is closed as a slow consumer.
    #[arg(long, env = "REALTIME_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    /// Largest WebSocket frame (and reassembled message), checked from the frame header.
    #[arg(long, env = "REALTIME_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Channel joins per socket per second (refused joins count too).
    #[arg(long, env = "REALTIME_MAX_CLIENT_JOINS_PER_SECOND")]
    pub max_client_joins_per_second: Option<u32>,
    /// Channel joins per token (its `sub`, or the token itself) per second, across sockets.
    #[arg(long, env = "REALTIME_MAX_TOKEN_JOINS_PER_SECOND")]
    pub max_token_joins_per_second: Option<u32>,
    /// Longest topic, in bytes (at most 255, what binary frames carry).
    #[arg(long, env = "REALTIME_MAX_TOPIC_BYTES")]
    pub max_topic_bytes: Option<usize>,
    /// Longest `ref` / `join_ref`, in bytes.
    #[arg(long, env = "REALTIME_MAX_REF_BYTES")]
    pub max_ref_bytes: Option<usize>,
    /// Longest presence key, in bytes.
    #[arg(long, env = "REALTIME_MAX_PRESENCE_KEY_BYTES")]
    pub max_presence_key_bytes: Option<usize>,
    /// Deepest nesting of a presence meta (objects and arrays).
    #[arg(long, env = "REALTIME_MAX_PRESENCE_DEPTH")]
    pub max_presence_depth: Option<usize>,
    /// Most `postgres_changes` entries in one join.
    #[arg(long, env = "REALTIME_MAX_POSTGRES_CHANGES")]
    pub max_postgres_changes: Option<usize>,
    /// Longest `postgres_changes` entry (its JSON: schema, table, filter, …), in bytes.
    #[arg(long, env = "REALTIME_MAX_FILTER_BYTES")]
    pub max_filter_bytes: Option<usize>,
    /// Most messages in one REST batch (counted while parsing).
    #[arg(long, env = "REALTIME_MAX_REST_BATCH")]
    pub max_rest_batch: Option<usize>,
    /// REST broadcast requests processed at once per node; more are refused with 429.
    #[arg(long, env = "REALTIME_MAX_REST_CONCURRENCY")]
    pub max_rest_concurrency: Option<usize>,
    /// Time a REST or GraphQL request body has to arrive whole once its handler reads it; slower → 408.
    #[arg(long, env = "REALTIME_REQUEST_BODY_TIMEOUT_MS")]
    pub request_body_timeout_ms: Option<u64>,
    /// PostgreSQL (wal_level=logical) for Postgres Changes; unset disables them.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Publication whose tables are streamed (created empty if missing).
    #[arg(long, env = "REALTIME_PUBLICATION")]
    pub publication: Option<String>,
    /// Permanent pgoutput replication slot (created if missing).
    #[arg(long, env = "REALTIME_SLOT")]
    pub slot: Option<String>,
    /// Where the node keeps its state (the last delivered WAL position).
    #[arg(long, env = "REALTIME_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Peer transport listener: UDP for membership, TCP for data (same port).
    #[arg(long, env = "REALTIME_CLUSTER_BIND")]
    pub cluster_bind: Option<SocketAddr>,
    /// The address peers reach this node at (defaults to the cluster bind address, or the address the
    /// hostname resolves to when bound to 0.0.0.0).
    #[arg(long, env = "REALTIME_CLUSTER_ADVERTISE")]
    pub cluster_advertise: Option<SocketAddr>,
    /// Peers: comma-separated `host:port`, or a DNS name resolving to every pod (empty: single node).
    #[arg(long, env = "REALTIME_SEEDS")]
    pub seeds: Option<String>,
    /// Failure detector: how often a random peer is probed.
    #[arg(long, env = "REALTIME_CLUSTER_PROBE_MS")]
    pub cluster_probe_ms: Option<u64>,
    /// Failure detector: how long a suspected peer has to answer before it is declared down.
    #[arg(long, env = "REALTIME_CLUSTER_SUSPECT_MS")]
    pub cluster_suspect_ms: Option<u64>,
    /// A raft member not seen alive for this long is removed from the membership (scale-down).
    #[arg(long, env = "REALTIME_CLUSTER_REMOVE_AFTER_MS")]
    pub cluster_remove_after_ms: Option<u64>,
    /// Shared secret(s) that nodes prove to each other (≥ 32 bytes each, comma-separated; the first
    /// is used to send, all are accepted: rotation).
    #[arg(long, env = "REALTIME_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret(s), one per line; read again every 10 s (rotation without restart).
    #[arg(long, env = "REALTIME_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Run a cluster without a secret on a non-loopback address (every peer packet is trusted).
    #[arg(long, env = "REALTIME_CLUSTER_INSECURE")]
    pub cluster_insecure: Option<bool>,
    /// Largest change record delivered whole; larger ones follow the 413 rule.
    #[arg(long, env = "REALTIME_MAX_RECORD_BYTES")]
    pub max_record_bytes: Option<usize>,
    /// After a restart, wait this long before resuming the stream so clients resubscribe first.
    #[arg(long, env = "REALTIME_CDC_RESUME_GRACE_MS")]
    pub cdc_resume_grace_ms: Option<u64>,
    /// How long the replication stream may stay silent (heartbeats go every third of it) before its
    /// connection is taken as dead and opened again.
    #[arg(long, env = "REALTIME_REPLICATION_TIMEOUT_MS")]
    pub replication_timeout_ms: Option<u64>,
    /// In a cluster, how long the CDC leader keeps the slot at the position of a node that dropped
    /// out (WAL kept on the database) so the stream can be replayed for it if it comes back.
    #[arg(long, env = "REALTIME_CDC_HOLD_MS")]
    pub cdc_hold_ms: Option<u64>,
    /// In a cluster, how long the CDC leader may be unable to reach PostgreSQL before it hands
    /// leadership to a node that can.
    #[arg(long, env = "REALTIME_CDC_HANDOVER_MS")]
    pub cdc_handover_ms: Option<u64>,
    /// Hours `realtime.messages` rows are kept (whole daily partitions are dropped after this).
    #[arg(long, env = "REALTIME_MESSAGES_RETENTION_HOURS")]
    pub messages_retention_hours: Option<u64>,
    /// Topics whose broadcasts are stored and carry positions, so a client can resume after a
    /// disconnect: comma-separated names, `prefix*`, or `*` (needs `DATABASE_URL`).
    #[arg(long, env = "REALTIME_RESUMABLE_TOPICS")]
    pub resumable_topics: Option<String>,
    /// Seconds a resumable channel's messages are held for resuming clients.
    #[arg(long, env = "REALTIME_RESUME_RETENTION_SECS")]
    pub resume_retention_secs: Option<u64>,
    /// Messages held per resumable channel at most.
    #[arg(long, env = "REALTIME_RESUME_RETENTION_COUNT")]
    pub resume_retention_count: Option<usize>,
    /// Bytes held for all resumable channels of a node at most (the oldest messages go first).
    #[arg(long, env = "REALTIME_RESUME_MAX_BYTES")]
    pub resume_max_bytes: Option<usize>,
    /// `http://` URL that receives lifecycle webhooks (unset: webhooks off).
    #[arg(long, env = "REALTIME_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of the `X-Realtime-Signature` header (required with a webhook URL).
    #[arg(long, env = "REALTIME_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// A user is reported offline once their last socket in the cluster has been gone this long.
    #[arg(long, env = "REALTIME_OFFLINE_GRACE_MS")]
    pub offline_grace_ms: Option<u64>,
    /// Most events in one webhook request.
    #[arg(long, env = "REALTIME_WEBHOOK_BATCH_MAX")]
    pub webhook_batch_max: Option<usize>,
    /// How long a webhook batch waits for more events after its first.
    #[arg(long, env = "REALTIME_WEBHOOK_BATCH_MS")]
    pub webhook_batch_ms: Option<u64>,
    /// Events waiting to be sent; more are dropped (and counted).
    #[arg(long, env = "REALTIME_WEBHOOK_QUEUE")]
    pub webhook_queue: Option<usize>,
    /// Attempts per webhook batch (connection errors, timeouts, 5xx and 429 are retried).
    #[arg(long, env = "REALTIME_WEBHOOK_MAX_ATTEMPTS")]
    pub webhook_max_attempts: Option<u32>,
    /// Wait before the first retry; doubles per attempt, at most 10 s.
    #[arg(long, env = "REALTIME_WEBHOOK_BACKOFF_MS")]
    pub webhook_backoff_ms: Option<u64>,
    /// Timeout of one webhook request.
    #[arg(long, env = "REALTIME_WEBHOOK_TIMEOUT_MS")]
    pub webhook_timeout_ms: Option<u64>,
    /// PEM file of CA certificates trusted for an `https://` webhook URL, besides the Mozilla roots
    /// (a receiver with a private or self-signed certificate).
    #[arg(long, env = "REALTIME_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Answer GraphQL introspection (`__schema`, `__type`) at `/graphql`.
    #[arg(long, env = "REALTIME_GRAPHQL_INTROSPECTION")]
    pub graphql_introspection: Option<bool>,
    /// Deepest GraphQL query accepted (nesting of selection sets, introspection included).
    #[arg(long, env = "REALTIME_GRAPHQL_MAX_DEPTH")]
    pub graphql_max_depth: Option<usize>,
    /// Largest GraphQL query complexity accepted (every field counts 1, `notifications` its `limit` more).
    #[arg(long, env = "REALTIME_GRAPHQL_MAX_COMPLEXITY")]
    pub graphql_max_complexity: Option<usize>,
    /// Largest GraphQL request body, in bytes (larger → 413).
    #[arg(long, env = "REALTIME_GRAPHQL_MAX_BODY_BYTES")]
    pub graphql_max_body_bytes: Option<usize>,
    /// `notifications` queries per user per minute (more → 429 `RATE_LIMITED`).
    #[arg(long, env = "REALTIME_NOTIFICATIONS_LIST_PER_MINUTE")]
    pub notifications_list_per_minute: Option<u32>,
    /// `markNotificationRead` mutations per user per minute.
    #[arg(long, env = "REALTIME_NOTIFICATIONS_MARK_READ_PER_MINUTE")]
    pub notifications_mark_read_per_minute: Option<u32>,
    /// `deleteNotification` mutations per user per minute.
    #[arg(long, env = "REALTIME_NOTIFICATIONS_DELETE_PER_MINUTE")]
    pub notifications_delete_per_minute: Option<u32>,
    /// Largest `content` of a notification created with `POST /api/notifications`, in bytes of JSON.
    #[arg(long, env = "REALTIME_NOTIFICATIONS_MAX_CONTENT_BYTES")]
    pub notifications_max_content_bytes: Option<usize>,
    /// Connections of the inbox's pool (REST inserts and GraphQL queries).
    #[arg(long, env = "REALTIME_NOTIFICATIONS_POOL_SIZE")]
    pub notifications_pool_size: Option<usize>,
}

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

/// Defaults shared by `Config` and the README's table.
pub mod defaults {
    pub const BIND: &str = "0.0.0.0:4000";
    pub const MAX_CONNECTIONS: usize = 100_000;
    pub const MAX_CHANNEL_MEMBERS: usize = 10_000;
    pub const MAX_CHANNELS_PER_CLIENT: usize = 100;
    pub const MAX_EVENTS_PER_SECOND: u32 = 100;
    pub const MAX_JOINS_PER_SECOND: u32 = 5_000;
    pub const MAX_PAYLOAD_BYTES: usize = 262_144;
    pub const MAX_REST_EVENTS_PER_SECOND: u32 = 1_000;
    pub const MAX_TOKEN_REST_EVENTS_PER_SECOND: u32 = 200;
    pub const PRESENCE_MAX_CALLS: u32 = 5;
    pub const PRESENCE_WINDOW_MS: u64 = 30_000;
    pub const IDLE_TIMEOUT_MS: u64 = 60_000;
    pub const JOIN_ERROR_DELAY_MS: u64 = 1_000;
    pub const CONNECT_ERROR_DELAY_MS: u64 = 1_000;
    pub const SHUTDOWN_GRACE_MS: u64 = 20_000;
    pub const MAX_FRAME_BYTES: usize = 5_000_000;
    pub const MAX_OUTBOX_BYTES: usize = 4 * 1024 * 1024;
    pub const MAX_OUTBOX_FRAMES: usize = 16_384;
    pub const WRITE_TIMEOUT_MS: u64 = 5_000;
    pub const MAX_CLIENT_JOINS_PER_SECOND: u32 = 100;
    pub const MAX_TOKEN_JOINS_PER_SECOND: u32 = 500;
    pub const MAX_TOPIC_BYTES: usize = 255;
    pub const MAX_REF_BYTES: usize = 64;
    pub const MAX_PRESENCE_KEY_BYTES: usize = 256;
    pub const MAX_PRESENCE_DEPTH: usize = 32;
    pub const MAX_POSTGRES_CHANGES: usize = 100;
    pub const MAX_FILTER_BYTES: usize = 4_096;
    pub const MAX_REST_BATCH: usize = 1_000;
    pub const MAX_REST_CONCURRENCY: usize = 16;
    pub const REQUEST_BODY_TIMEOUT_MS: u64 = 10_000;
    pub const PUBLICATION: &str = "supabase_realtime";
    pub const SLOT: &str = "realtime_cdc";
    pub const DATA_DIR: &str = "./data";
    pub const CLUSTER_BIND: &str = "0.0.0.0:4100";
    pub const CLUSTER_PROBE_MS: u64 = 300;
    pub const CLUSTER_SUSPECT_MS: u64 = 900;
    pub const CLUSTER_REMOVE_AFTER_MS: u64 = 300_000;
    pub const MAX_RECORD_BYTES: usize = 1_048_576;
    pub const CDC_RESUME_GRACE_MS: u64 = 5_000;
    pub const REPLICATION_TIMEOUT_MS: u64 = 6_000;
    pub const CDC_HOLD_MS: u64 = 30_000;
    pub const CDC_HANDOVER_MS: u64 = 1_000;
    pub const MESSAGES_RETENTION_HOURS: u64 = 72;
    pub const OFFLINE_GRACE_MS: u64 = 5_000;
    pub const WEBHOOK_BATCH_MAX: usize = 100;
    pub const WEBHOOK_BATCH_MS: u64 = 200;
    pub const WEBHOOK_QUEUE: usize = 10_000;
    pub const WEBHOOK_MAX_ATTEMPTS: u32 = 5;
    pub const WEBHOOK_BACKOFF_MS: u64 = 250;
    pub const WEBHOOK_TIMEOUT_MS: u64 = 5_000;
    /// Deep enough for GraphiQL's full introspection query (12 levels).
    pub const GRAPHQL_MAX_DEPTH: usize = 15;
    pub const GRAPHQL_MAX_COMPLEXITY: usize = 500;
    pub const GRAPHQL_MAX_BODY_BYTES: usize = 65_536;
    pub const NOTIFICATIONS_LIST_PER_MINUTE: u32 = 100;
    pub const NOTIFICATIONS_MARK_READ_PER_MINUTE: u32 = 200;
    pub const NOTIFICATIONS_DELETE_PER_MINUTE: u32 = 100;
    pub const NOTIFICATIONS_MAX_CONTENT_BYTES: usize = 16_384;
    pub const NOTIFICATIONS_POOL_SIZE: usize = 4;
}

impl Settings {
    /// Fills every unset field from `file`.
    fn or(self, file: Settings) -> Settings {
        Settings {
            config: self.config,
            bind: self.bind.or(file.bind),
            jwt_secret: self.jwt_secret.or(file.jwt_secret),
            jwks: self.jwks.or(file.jwks),
            admin_token: self.admin_token.or(file.admin_token),
            admin_token_file: self.admin_token_file.or(file.admin_token_file),
            node_id: self.node_id.or(file.node_id),
            max_connections: self.max_connections.or(file.max_connections),
            max_channel_members: self.max_channel_members.or(file.max_channel_members),
            max_channels_per_client: self.max_channels_per_client.or(file.max_channels_per_client),
            max_events_per_second: self.max_events_per_second.or(file.max_events_per_second),
            max_joins_per_second: self.max_joins_per_second.or(file.max_joins_per_second),
            max_payload_bytes: self.max_payload_bytes.or(file.max_payload_bytes),
            max_rest_events_per_second: self.max_rest_events_per_second.or(file.max_rest_events_per_second),
            max_token_rest_events_per_second: self
                .max_token_rest_events_per_second
                .or(file.max_token_rest_events_per_second),
            presence_max_calls: self.presence_max_calls.or(file.presence_max_calls),
            presence_window_ms: self.presence_window_ms.or(file.presence_window_ms),
            idle_timeout_ms: self.idle_timeout_ms.or(file.idle_timeout_ms),
            join_error_delay_ms: self.join_error_delay_ms.or(file.join_error_delay_ms),
            connect_error_delay_ms: self.connect_error_delay_ms.or(file.connect_error_delay_ms),
            shutdown_grace_ms: self.shutdown_grace_ms.or(file.shutdown_grace_ms),
            workers: self.workers.or(file.workers),
            private_only: self.private_only.or(file.private_only),
            max_outbox_bytes: self.max_outbox_bytes.or(file.max_outbox_bytes),
            max_outbox_frames: self.max_outbox_frames.or(file.max_outbox_frames),
            write_timeout_ms: self.write_timeout_ms.or(file.write_timeout_ms),
            max_frame_bytes: self.max_frame_bytes.or(file.max_frame_bytes),
            max_client_joins_per_second: self
                .max_client_joins_per_second
                .or(file.max_client_joins_per_second),
            max_token_joins_per_second: self.max_token_joins_per_second.or(file.max_token_joins_per_second),
            max_topic_bytes: self.max_topic_bytes.or(file.max_topic_bytes),
            max_ref_bytes: self.max_ref_bytes.or(file.max_ref_bytes),
            max_presence_key_bytes: self.max_presence_key_bytes.or(file.max_presence_key_bytes),
            max_presence_depth: self.max_presence_depth.or(file.max_presence_depth),
            max_postgres_changes: self.max_postgres_changes.or(file.max_postgres_changes),
            max_filter_bytes: self.max_filter_bytes.or(file.max_filter_bytes),
            max_rest_batch: self.max_rest_batch.or(file.max_rest_batch),
            max_rest_concurrency: self.max_rest_concurrency.or(file.max_rest_concurrency),
            request_body_timeout_ms: self.request_body_timeout_ms.or(file.request_body_timeout_ms),
            database_url: self.database_url.or(file.database_url),
            publication: self.publication.or(file.publication),
            slot: self.slot.or(file.slot),
            data_dir: self.data_dir.or(file.data_dir),
            cluster_bind: self.cluster_bind.or(file.cluster_bind),
            cluster_advertise: self.cluster_advertise.or(file.cluster_advertise),
            seeds: self.seeds.or(file.seeds),
            cluster_probe_ms: self.cluster_probe_ms.or(file.cluster_probe_ms),
            cluster_suspect_ms: self.cluster_suspect_ms.or(file.cluster_suspect_ms),
            cluster_remove_after_ms: self.cluster_remove_after_ms.or(file.cluster_remove_after_ms),
            cluster_secret: self.cluster_secret.or(file.cluster_secret),
            cluster_secret_file: self.cluster_secret_file.or(file.cluster_secret_file),
            cluster_insecure: self.cluster_insecure.or(file.cluster_insecure),
            max_record_bytes: self.max_record_bytes.or(file.max_record_bytes),
            cdc_resume_grace_ms: self.cdc_resume_grace_ms.or(file.cdc_resume_grace_ms),
            replication_timeout_ms: self.replication_timeout_ms.or(file.replication_timeout_ms),
            cdc_hold_ms: self.cdc_hold_ms.or(file.cdc_hold_ms),
            cdc_handover_ms: self.cdc_handover_ms.or(file.cdc_handover_ms),
            messages_retention_hours: self.messages_retention_hours.or(file.messages_retention_hours),
            resumable_topics: self.resumable_topics.or(file.resumable_topics),
            resume_retention_secs: self.resume_retention_secs.or(file.resume_retention_secs),
            resume_retention_count: self.resume_retention_count.or(file.resume_retention_count),
            resume_max_bytes: self.resume_max_bytes.or(file.resume_max_bytes),
            webhook_url: self.webhook_url.or(file.webhook_url),
            webhook_secret: self.webhook_secret.or(file.webhook_secret),
            offline_grace_ms: self.offline_grace_ms.or(file.offline_grace_ms),
            webhook_batch_max: self.webhook_batch_max.or(file.webhook_batch_max),
            webhook_batch_ms: self.webhook_batch_ms.or(file.webhook_batch_ms),
            webhook_queue: self.webhook_queue.or(file.webhook_queue),
            webhook_max_attempts: self.webhook_max_attempts.or(file.webhook_max_attempts),
            webhook_backoff_ms: self.webhook_backoff_ms.or(file.webhook_backoff_ms),
            webhook_timeout_ms: self.webhook_timeout_ms.or(file.webhook_timeout_ms),
            webhook_ca_file: self.webhook_ca_file.or(file.webhook_ca_file),
            graphql_introspection: self.graphql_introspection.or(file.graphql_introspection),
            graphql_max_depth: self.graphql_max_depth.or(file.graphql_max_depth),
            graphql_max_complexity: self.graphql_max_complexity.or(file.graphql_max_complexity),
            graphql_max_body_bytes: self.graphql_max_body_bytes.or(file.graphql_max_body_bytes),
            notifications_list_per_minute: self
                .notifications_list_per_minute
                .or(file.notifications_list_per_minute),
            notifications_mark_read_per_minute: self
                .notifications_mark_read_per_minute
                .or(file.notifications_mark_read_per_minute),
            notifications_delete_per_minute: self
                .notifications_delete_per_minute
                .or(file.notifications_delete_per_minute),
            notifications_max_content_bytes: self
                .notifications_max_content_bytes
                .or(file.notifications_max_content_bytes),
            notifications_pool_size: self.notifications_pool_size.or(file.notifications_pool_size),
        }
    }
}

fn read_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    toml::from_str(&text)
        .map_err(|source| ConfigError::ParseFile { path: path.to_owned(), source: Box::new(source) })
}

/// `s.<field>`, or its default; refused when zero (named after the field).
/// The cluster secret from `REALTIME_CLUSTER_SECRET` or `REALTIME_CLUSTER_SECRET_FILE`. Without
/// either, peers are trusted blindly: allowed when the cluster port is only on loopback (local
/// development), or when the operator says so with `REALTIME_CLUSTER_INSECURE=true`.
fn cluster_secret(
    inline: Option<&str>,
    file: Option<&Path>,
    insecure: bool,
    bind: SocketAddr,
    advertise: SocketAddr,
) -> Result<ClusterSecret, ConfigError> {
    let invalid = |e: SecretError| ConfigError::Cluster(e.to_string());
    match (inline.filter(|s| !s.trim().is_empty()), file) {
        (Some(_), Some(_)) => Err(ConfigError::Cluster(
            "set REALTIME_CLUSTER_SECRET or REALTIME_CLUSTER_SECRET_FILE, not both".into(),
        )),
        (Some(text), None) => Keyring::parse(text).map(ClusterSecret::Fixed).map_err(invalid),
        (None, Some(path)) => {
            let keys = Keyring::read(path).map_err(invalid)?;
            Ok(ClusterSecret::File { path: path.to_owned(), keys })
        }
        (None, None) if insecure || (bind.ip().is_loopback() && advertise.ip().is_loopback()) => {
            Ok(ClusterSecret::Insecure)
        }
        (None, None) => Err(ConfigError::Cluster(format!(
            "the cluster port {bind} (advertised as {advertise}) is reachable from other hosts, and \
             without REALTIME_CLUSTER_SECRET (or _FILE) anyone who reaches it can speak for a node; \
             set a secret (e.g. `openssl rand -base64 48`), or REALTIME_CLUSTER_INSECURE=true on a \
             network you trust"
        ))),
    }
}

/// The address peers use when the cluster port is bound to every interface: the hostname's address
/// (a pod's IP in Kubernetes).
fn advertised(bind: SocketAddr, node_id: &str) -> Result<SocketAddr, ConfigError> {
    if !bind.ip().is_unspecified() {
        return Ok(bind);
    }
    let host = hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| node_id.to_owned());
    use std::net::ToSocketAddrs;
    let found = (host.as_str(), bind.port()).to_socket_addrs().map(|addrs| addrs.collect::<Vec<_>>());
    found
        .ok()
        .and_then(|addrs| {
            addrs.iter().find(|a| a.is_ipv4() && !a.ip().is_loopback()).or(addrs.first()).copied()
        })
        .ok_or_else(|| {
            ConfigError::Cluster(format!(
                "cannot tell which address peers reach this node at (hostname {host} does not resolve); set REALTIME_CLUSTER_ADVERTISE"
            ))
        })
}

macro_rules! setting {
    ($s:ident . $field:ident, $default:expr) => {
        positive(stringify!($field), $s.$field.unwrap_or($default))
    };
}

fn positive<T: PartialEq + Default>(name: &'static str, value: T) -> Result<T, ConfigError> {
    if value == T::default() {
        Err(ConfigError::Zero { name })
    } else {
        Ok(value)
    }
}

/// The admin token from the flag/variable or from a file (one of them; a file's trailing newline is
/// not part of it). A token short enough to guess is refused.
fn admin_token(value: Option<&str>, file: Option<&Path>) -> Result<Option<AdminToken>, ConfigError> {
    const MIN_LEN: usize = 16;
    let bad = |why: String| Err(ConfigError::AdminToken(why));
    let token = match (value, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return bad("give REALTIME_ADMIN_TOKEN or REALTIME_ADMIN_TOKEN_FILE, not both".into());
        }
        (Some(token), None) => token.to_owned(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => text.trim_end_matches(['\n', '\r']).to_owned(),
            Err(e) => return bad(format!("cannot read REALTIME_ADMIN_TOKEN_FILE {}: {e}", path.display())),
        },
    };
    if token.chars().count() < MIN_LEN || token.chars().any(char::is_whitespace) {
        return bad(format!("it must be at least {MIN_LEN} characters, without spaces"));
    }
    Ok(Some(AdminToken::new(token)))
}

/// The webhook settings, when a URL is set: an `http://` or `https://` URL and a non-empty secret
/// are required; a CA file, when given, must hold at least one PEM certificate.
fn webhook_config(s: &Settings) -> Result<Option<WebhookConfig>, ConfigError> {
    use defaults as d;
    let Some(url) = s.webhook_url.as_deref().filter(|url| !url.is_empty()) else { return Ok(None) };
    let url = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::Webhook(format!("REALTIME_WEBHOOK_URL is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::Webhook(format!(
            "REALTIME_WEBHOOK_URL must be http:// or https://, not {}://",
            url.scheme()
        )));
    }
    let extra_roots = match &s.webhook_ca_file {
        None => Vec::new(),
        Some(path) => {
            let bad = |why: String| {
                ConfigError::Webhook(format!("REALTIME_WEBHOOK_CA_FILE {}: {why}", path.display()))
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if roots.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            roots
        }
    };
    let secret = s.webhook_secret.clone().filter(|secret| !secret.is_empty()).ok_or_else(|| {
        ConfigError::Webhook("REALTIME_WEBHOOK_SECRET is required with REALTIME_WEBHOOK_URL".into())
    })?;
    let ms = Duration::from_millis;
    Ok(Some(WebhookConfig {
        url,
        secret,
        offline_grace: ms(s.offline_grace_ms.unwrap_or(d::OFFLINE_GRACE_MS)),
        batch_max: setting!(s.webhook_batch_max, d::WEBHOOK_BATCH_MAX)?,
        batch_window: ms(s.webhook_batch_ms.unwrap_or(d::WEBHOOK_BATCH_MS)),
        queue: setting!(s.webhook_queue, d::WEBHOOK_QUEUE)?,
        max_attempts: setting!(s.webhook_max_attempts, d::WEBHOOK_MAX_ATTEMPTS)?,
        backoff: ms(setting!(s.webhook_backoff_ms, d::WEBHOOK_BACKOFF_MS)?),
        timeout: ms(setting!(s.webhook_timeout_ms, d::WEBHOOK_TIMEOUT_MS)?),
        extra_roots,
    }))
}

impl Config {
    /// Resolves flags + environment + file + defaults and validates the result.
    pub fn load(settings: Settings) -> Result<Config, ConfigError> {
        let settings = match settings.config.clone() {
            Some(path) => settings.or(read_file(&path)?),
            None => settings,
        };
        Config::from_settings(settings)
    }

    fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        use defaults as d;
        let webhooks = webhook_config(&s)?;
        let jwks_json = match &s.jwks {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Jwks { path: path.clone(), reason: e.to_string() })?,
            ),
            None => None,
        };
        let admin_token = admin_token(s.admin_token.as_deref(), s.admin_token_file.as_deref())?;
        let node_id = s.node_id.unwrap_or_else(|| {
            hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "realtime".into())
        });
        let limits = Limits {
            max_connections: setting!(s.max_connections, d::MAX_CONNECTIONS)?,
            max_channel_members: setting!(s.max_channel_members, d::MAX_CHANNEL_MEMBERS)?,
            max_channels_per_client: setting!(s.max_channels_per_client, d::MAX_CHANNELS_PER_CLIENT)?,
            max_events_per_second: setting!(s.max_events_per_second, d::MAX_EVENTS_PER_SECOND)?,
            max_joins_per_second: setting!(s.max_joins_per_second, d::MAX_JOINS_PER_SECOND)?,
            max_payload_bytes: setting!(s.max_payload_bytes, d::MAX_PAYLOAD_BYTES)?,
            max_rest_events_per_second: setting!(
                s.max_rest_events_per_second,
                d::MAX_REST_EVENTS_PER_SECOND
            )?,
            max_token_rest_events_per_second: setting!(
                s.max_token_rest_events_per_second,
                d::MAX_TOKEN_REST_EVENTS_PER_SECOND
            )?,
            presence_max_calls: setting!(s.presence_max_calls, d::PRESENCE_MAX_CALLS)?,
            presence_window: Duration::from_millis(setting!(s.presence_window_ms, d::PRESENCE_WINDOW_MS)?),
            max_frame_bytes: setting!(s.max_frame_bytes, d::MAX_FRAME_BYTES)?,
            max_outbox_bytes: setting!(s.max_outbox_bytes, d::MAX_OUTBOX_BYTES)?,
            max_outbox_frames: setting!(s.max_outbox_frames, d::MAX_OUTBOX_FRAMES)?,
            write_timeout: Duration::from_millis(setting!(s.write_timeout_ms, d::WRITE_TIMEOUT_MS)?),
            max_client_joins_per_second: setting!(
                s.max_client_joins_per_second,
                d::MAX_CLIENT_JOINS_PER_SECOND
            )?,
            max_token_joins_per_second: setting!(
                s.max_token_joins_per_second,
                d::MAX_TOKEN_JOINS_PER_SECOND
            )?,
            budget: Budget {
                max_topic_bytes: match s.max_topic_bytes.unwrap_or(d::MAX_TOPIC_BYTES) {
                    n @ 1..=255 => n,
                    _ => return Err(ConfigError::Range { name: "max_topic_bytes", min: 1, max: 255 }),
                },
                max_ref_bytes: setting!(s.max_ref_bytes, d::MAX_REF_BYTES)?,
                max_presence_key_bytes: setting!(s.max_presence_key_bytes, d::MAX_PRESENCE_KEY_BYTES)?,
                max_presence_depth: setting!(s.max_presence_depth, d::MAX_PRESENCE_DEPTH)?,
                max_postgres_changes: setting!(s.max_postgres_changes, d::MAX_POSTGRES_CHANGES)?,
                max_filter_bytes: setting!(s.max_filter_bytes, d::MAX_FILTER_BYTES)?,
            },
            max_rest_batch: setting!(s.max_rest_batch, d::MAX_REST_BATCH)?,
            max_rest_concurrency: setting!(s.max_rest_concurrency, d::MAX_REST_CONCURRENCY)?,
            request_body_timeout: Duration::from_millis(setting!(
                s.request_body_timeout_ms,
                d::REQUEST_BODY_TIMEOUT_MS
            )?),
        };
        let cdc = match s.database_url.filter(|url| !url.is_empty()) {
            Some(database_url) => Some(CdcConfig {
                database_url,
                publication: s.publication.unwrap_or_else(|| d::PUBLICATION.into()),
                slot: s.slot.unwrap_or_else(|| d::SLOT.into()),
                max_record_bytes: setting!(s.max_record_bytes, d::MAX_RECORD_BYTES)?,
                resume_grace: Duration::from_millis(s.cdc_resume_grace_ms.unwrap_or(d::CDC_RESUME_GRACE_MS)),
                hold: Duration::from_millis(setting!(s.cdc_hold_ms, d::CDC_HOLD_MS)?),
                handover: Duration::from_millis(setting!(s.cdc_handover_ms, d::CDC_HANDOVER_MS)?),
                flush_deadline: limits.write_timeout,
                replication_timeout: Duration::from_millis(setting!(
                    s.replication_timeout_ms,
                    d::REPLICATION_TIMEOUT_MS
                )?),
            }),
            None => None,
        };
        let seeds: Vec<String> = s
            .seeds
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .map(str::to_owned)
            .collect();
        let cluster = if seeds.is_empty() {
            None
        } else {
            let bind =
                s.cluster_bind.unwrap_or_else(|| d::CLUSTER_BIND.parse().expect("default cluster address"));
            if bind.port() == 0 {
                return Err(ConfigError::Cluster("REALTIME_CLUSTER_BIND needs a fixed port".into()));
            }
            let advertise = match s.cluster_advertise {
                Some(addr) => addr,
                None => advertised(bind, &node_id)?,
            };
            Some(ClusterSettings {
                bind,
                advertise,
                seeds,
                probe_period: Duration::from_millis(setting!(s.cluster_probe_ms, d::CLUSTER_PROBE_MS)?),
                suspect_to_down: Duration::from_millis(setting!(
                    s.cluster_suspect_ms,
                    d::CLUSTER_SUSPECT_MS
                )?),
                raft_remove_after: Duration::from_millis(setting!(
                    s.cluster_remove_after_ms,
                    d::CLUSTER_REMOVE_AFTER_MS
                )?),
                secret: cluster_secret(
                    s.cluster_secret.as_deref(),
                    s.cluster_secret_file.as_deref(),
                    s.cluster_insecure.unwrap_or(false),
                    bind,
                    advertise,
                )?,
            })
        };
        let messages_retention = Duration::from_secs(
            setting!(s.messages_retention_hours, d::MESSAGES_RETENTION_HOURS)?.saturating_mul(3600),
        );
        let resume = ResumeConfig {
            topics: ResumableTopics::parse(s.resumable_topics.as_deref().unwrap_or(""))
                .map_err(|e| ConfigError::Resume(e.to_string()))?,
            limits: LogLimits {
                max_age: Duration::from_secs(setting!(
                    s.resume_retention_secs,
                    ResumeConfig::DEFAULT_RETENTION.as_secs()
                )?),
                max_per_channel: setting!(s.resume_retention_count, ResumeConfig::DEFAULT_RETENTION_COUNT)?,
                max_bytes: setting!(s.resume_max_bytes, ResumeConfig::DEFAULT_MAX_BYTES)?,
            },
        };
        if resume.topics.any() && cdc.is_none() {
            return Err(ConfigError::Resume(
                "REALTIME_RESUMABLE_TOPICS needs DATABASE_URL: resumable messages are stored there".into(),
            ));
        }
        let inbox = InboxSettings {
            introspection: s.graphql_introspection.unwrap_or(true),
            max_depth: setting!(s.graphql_max_depth, d::GRAPHQL_MAX_DEPTH)?,
            max_complexity: setting!(s.graphql_max_complexity, d::GRAPHQL_MAX_COMPLEXITY)?,
            max_body_bytes: setting!(s.graphql_max_body_bytes, d::GRAPHQL_MAX_BODY_BYTES)?,
            list_per_minute: setting!(s.notifications_list_per_minute, d::NOTIFICATIONS_LIST_PER_MINUTE)?,
            mark_read_per_minute: setting!(
                s.notifications_mark_read_per_minute,
                d::NOTIFICATIONS_MARK_READ_PER_MINUTE
            )?,
            delete_per_minute: setting!(
                s.notifications_delete_per_minute,
                d::NOTIFICATIONS_DELETE_PER_MINUTE
            )?,
            max_content_bytes: setting!(
                s.notifications_max_content_bytes,
                d::NOTIFICATIONS_MAX_CONTENT_BYTES
            )?,
            pool_size: setting!(s.notifications_pool_size, d::NOTIFICATIONS_POOL_SIZE)?,
        };
        Ok(Config {
            webhooks,
            inbox,
            cluster,
            cdc,
            resume,
            messages_retention,
            data_dir: s.data_dir.unwrap_or_else(|| d::DATA_DIR.into()),
            bind: s.bind.unwrap_or_else(|| d::BIND.parse().expect("default bind address")),
            jwt_secret: s.jwt_secret.filter(|secret| !secret.is_empty()),
            jwks_json,
            admin_token,
            node_id,
            limits,
            idle_timeout: Duration::from_millis(setting!(s.idle_timeout_ms, d::IDLE_TIMEOUT_MS)?),
            join_error_delay: Duration::from_millis(s.join_error_delay_ms.unwrap_or(d::JOIN_ERROR_DELAY_MS)),
            connect_error_delay: Duration::from_millis(
                s.connect_error_delay_ms.unwrap_or(d::CONNECT_ERROR_DELAY_MS),
            ),
            shutdown_grace: Duration::from_millis(s.shutdown_grace_ms.unwrap_or(d::SHUTDOWN_GRACE_MS)),
            private_only: s.private_only.unwrap_or(false),
            workers: s
                .workers
                .filter(|w| *w > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)),
        })
    }

    /// A configuration for tests: loopback, port 0, a fixed secret, no delays.
    pub fn for_test(secret: &str) -> Config {
        let settings = Settings {
            bind: Some("127.0.0.1:0".parse().expect("loopback")),
            jwt_secret: Some(secret.to_owned()),
            node_id: Some("test".into()),
            join_error_delay_ms: Some(0),
            connect_error_delay_ms: Some(0),
            ..Settings::default()
        };
        Config::from_settings(settings).expect("test config is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_contract() {
        let c = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(c.bind.to_string(), "0.0.0.0:4000");
        assert_eq!(c.limits.max_connections, 100_000);
        assert_eq!(c.limits.max_channel_members, 10_000);
        assert_eq!(c.limits.max_channels_per_client, 100);
        assert_eq!(c.limits.max_events_per_second, 100);
        assert_eq!(c.limits.max_joins_per_second, 5_000);
        assert_eq!(c.limits.max_payload_bytes, 262_144);
        assert_eq!(c.limits.max_rest_events_per_second, 1_000);
        assert_eq!(c.limits.max_token_rest_events_per_second, 200);
        assert_eq!(c.limits.request_body_timeout, Duration::from_secs(10));
        assert_eq!(c.messages_retention, Duration::from_secs(72 * 3600));
        assert!(c.jwt_secret.is_none());
        assert!(c.inbox.introspection);
        assert_eq!(
            (c.inbox.list_per_minute, c.inbox.mark_read_per_minute, c.inbox.delete_per_minute),
            (100, 200, 100)
        );
    }

    #[test]
    fn flags_and_env_win_over_file_and_zero_is_refused() {
        let dir = std::env::temp_dir().join(format!("realtime-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("realtime.toml");
        std::fs::write(
            &path,
            "max_connections = 7\nmax_channel_members = 3\nmax_token_rest_events_per_second = 50\n\
             request_body_timeout_ms = 2500\n",
        )
        .unwrap();
        let settings =
            Settings { config: Some(path.clone()), max_connections: Some(9), ..Settings::default() };
        let c = Config::load(settings).unwrap();
        assert_eq!(c.limits.max_connections, 9);
        assert_eq!(c.limits.max_channel_members, 3);
        assert_eq!(c.limits.max_token_rest_events_per_second, 50);
        assert_eq!(c.limits.request_body_timeout, Duration::from_millis(2500));
        std::fs::write(&path, "max_conections = 7\n").unwrap();
        let err = Config::load(Settings { config: Some(path), ..Settings::default() }).unwrap_err();
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err}");
        let err = Config::from_settings(Settings { max_joins_per_second: Some(0), ..Settings::default() });
        assert!(matches!(err, Err(ConfigError::Zero { name: "max_joins_per_second" })));
        let err = Config::from_settings(Settings { max_topic_bytes: Some(256), ..Settings::default() });
        assert!(
            matches!(err, Err(ConfigError::Range { name: "max_topic_bytes", .. })),
            "binary frames carry ≤ 255"
        );
        let c = Config::from_settings(Settings::default()).unwrap();
        assert_eq!(c.limits.max_outbox_bytes, 4 * 1024 * 1024);
        assert_eq!(c.limits.budget.max_topic_bytes, 255);
    }

    #[test]
    fn webhooks_need_an_http_or_https_url_and_a_secret() {
        let with = |url: &str, secret: Option<&str>| {
            Config::from_settings(Settings {
                webhook_url: Some(url.into()),
                webhook_secret: secret.map(str::to_owned),
                ..Settings::default()
            })
        };
        assert!(Config::from_settings(Settings::default()).unwrap().webhooks.is_none());
        assert!(with("", None).unwrap().webhooks.is_none(), "empty URL: off");
        let c = with("http://127.0.0.1:9/hook", Some("s")).unwrap().webhooks.unwrap();
        assert_eq!(c.offline_grace, Duration::from_millis(5_000));
        assert_eq!((c.batch_max, c.queue, c.max_attempts), (100, 10_000, 5));
        assert!(matches!(with("http://127.0.0.1:9/hook", None), Err(ConfigError::Webhook(_))));
        assert!(with("https://example.com/hook", Some("s")).is_ok(), "https is accepted");
        assert!(matches!(with("ftp://example.com/hook", Some("s")), Err(ConfigError::Webhook(_))));
        let ca = |path: &Path| {
            Config::from_settings(Settings {
                webhook_url: Some("https://127.0.0.1:9/hook".into()),
                webhook_secret: Some("s".into()),
                webhook_ca_file: Some(path.to_owned()),
                ..Settings::default()
            })
        };
        let dir = std::env::temp_dir().join(format!("webhook-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        assert!(matches!(ca(&not_pem), Err(ConfigError::Webhook(_))), "a CA file without a certificate");
        assert!(matches!(ca(&dir.join("missing.pem")), Err(ConfigError::Webhook(_))));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(with("not a url", Some("s")), Err(ConfigError::Webhook(_))));
        let zero = Settings {
            webhook_url: Some("http://h/".into()),
            webhook_secret: Some("s".into()),
            webhook_queue: Some(0),
            ..Settings::default()
        };
        assert!(matches!(Config::from_settings(zero), Err(ConfigError::Zero { name: "webhook_queue" })));
    }

    #[test]
    fn a_reachable_cluster_port_needs_a_secret_or_an_explicit_insecure() {
        let cluster = |bind: &str, secret: Option<&str>, file: Option<&Path>, insecure: Option<bool>| {
            Config::from_settings(Settings {
                seeds: Some("127.0.0.2:4100".into()),
                cluster_bind: Some(bind.parse().unwrap()),
                cluster_advertise: Some(bind.replace("0.0.0.0", "10.0.0.7").parse().unwrap()),
                cluster_secret: secret.map(str::to_owned),
                cluster_secret_file: file.map(Path::to_owned),
                cluster_insecure: insecure,
                ..Settings::default()
            })
            .map(|c| c.cluster.map(|c| c.secret))
        };
        let good = "0123456789abcdef0123456789abcdef";
        assert!(matches!(cluster("127.0.0.1:4100", None, None, None), Ok(Some(ClusterSecret::Insecure))));
        let refused = cluster("0.0.0.0:4100", None, None, None).err().unwrap().to_string();
        assert!(refused.contains("REALTIME_CLUSTER_SECRET"), "{refused}");
        assert!(matches!(cluster("0.0.0.0:4100", None, None, Some(true)), Ok(Some(ClusterSecret::Insecure))));
        assert!(matches!(cluster("0.0.0.0:4100", Some(good), None, None), Ok(Some(ClusterSecret::Fixed(_)))));
        let short = cluster("0.0.0.0:4100", Some("short"), None, None).err().unwrap().to_string();
        assert!(short.contains("at least 32"), "{short}");
        let dir = std::env::temp_dir().join(format!("realtime-cluster-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, format!("{good}\n")).unwrap();
        assert!(matches!(
            cluster("0.0.0.0:4100", None, Some(&path), None),
            Ok(Some(ClusterSecret::File { .. }))
        ));
        assert!(cluster("0.0.0.0:4100", Some(good), Some(&path), None).is_err(), "not both");
        let missing =
            cluster("0.0.0.0:4100", None, Some(&dir.join("missing")), None).err().unwrap().to_string();
        assert!(missing.contains("missing"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_admin_token_comes_from_one_place_and_must_be_long() {
        let dir = std::env::temp_dir().join(format!("realtime-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-a-mounted-secret-0123\n").unwrap();
        let with = |token: Option<&str>, file: Option<&Path>| {
            Config::from_settings(Settings {
                admin_token: token.map(str::to_owned),
                admin_token_file: file.map(Path::to_path_buf),
                ..Settings::default()
            })
        };
        assert!(with(None, None).unwrap().admin_token.is_none());
        assert!(with(Some("0123456789abcdef"), None).unwrap().admin_token.is_some());
        assert!(with(None, Some(&file)).unwrap().admin_token.is_some());
        for (token, path, why) in [
            (Some("short"), None, "at least 16"),
            (Some("0123456789 abcdef"), None, "at least 16"),
            (Some("0123456789abcdef"), Some(file.as_path()), "not both"),
            (None, Some(dir.join("missing").as_path()), "cannot read"),
        ] {
            match with(token, path) {
                Err(error @ ConfigError::AdminToken(_)) => {
                    assert!(error.to_string().contains(why), "{error}")
                }
                other => panic!("{token:?} {path:?}: {other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parses_flags() {
        let s = Settings::try_parse_from([
            "realtime",
            "--bind",
            "127.0.0.1:0",
            "--max-payload-bytes",
            "10",
            "--messages-retention-hours",
            "24",
        ])
        .unwrap();
        let c = Config::from_settings(s).unwrap();
        assert_eq!(c.limits.max_payload_bytes, 10);
        assert_eq!(c.messages_retention, Duration::from_secs(24 * 3600));
        let zero = Settings { messages_retention_hours: Some(0), ..Settings::default() };
        assert!(matches!(
            Config::from_settings(zero),
            Err(ConfigError::Zero { name: "messages_retention_hours" })
        ));
        assert_eq!(c.bind.port(), 0);
        let s = Settings::try_parse_from([
            "realtime",
            "--graphql-introspection",
            "false",
            "--graphql-max-depth",
            "3",
        ])
        .unwrap();
        let c = Config::from_settings(s).unwrap();
        assert!(!c.inbox.introspection);
        assert_eq!(c.inbox.max_depth, 3);
    }
}
