//! Every setting, declared once: one entry of [`settings!`] gives its field, type, environment variable,
//! flag (the field's name with `-`), TOML key (the field's name), default, validation and help text.
//!
//! The macro generates [`Settings`] (clap reads flags and environment, serde reads the `--config` file,
//! `deny_unknown_fields`), the merge that lets flags and environment win over the file, one accessor
//! per setting with a default (`s.max_connections()`: the value given or the default, validated), and
//! [`declared`], the table `docs/configuration.md` is checked against (`node/tests/docs.rs`). The
//! settings without a default (a secret, a path, an address found at start-up, …) are read as they are
//! by [`super::decide`], which says what their absence means.
//!
//! Why a `macro_rules!` of ours and not a layering crate such as figment: clap already reads flags and
//! environment, and `toml` + serde already read the file with `deny_unknown_fields`; what was written
//! four times was the field, its merge, its default constant and its resolution. A layering crate would
//! still need the clap struct and would replace only the merge, and its environment provider would
//! compete with clap's for the same variables. The macro removes all four copies with no new dependency
//! and keeps `--help` as it was (clap still derives it from the same doc comments, in the same order).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use super::ConfigError;
use crate::telemetry::LogFormat;

/// One setting as the operator sees it: the row `docs/configuration.md` must have for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDoc {
    /// The field, and the key in the `--config` file.
    pub name: &'static str,
    pub env: &'static str,
    /// `--max-connections` for `max_connections`.
    pub flag: String,
    /// The declared default as the docs write it; `None` when the setting has none (what then happens is
    /// in its help and in the docs).
    pub default: Option<String>,
    /// The help text (`realtime --help`), one line.
    pub help: String,
}

impl SettingDoc {
    fn new(name: &'static str, env: &'static str, default: Option<String>, doc: &[&str]) -> SettingDoc {
        let help = doc.iter().map(|line| line.trim()).collect::<Vec<_>>().join(" ");
        SettingDoc { name, env, flag: format!("--{}", name.replace('_', "-")), default, help }
    }
}

/// A default as it is declared: the literal that reads best (`"0.0.0.0:4000"` for an address).
trait Declared<T> {
    fn value(self) -> T;
}

macro_rules! declared_as_itself {
    ($($ty:ty),*) => {$(
        impl Declared<$ty> for $ty {
            fn value(self) -> $ty {
                self
            }
        }
    )*};
}
declared_as_itself!(usize, u32, u64, bool);

impl Declared<SocketAddr> for &str {
    fn value(self) -> SocketAddr {
        self.parse().expect("a declared default address parses")
    }
}

impl Declared<String> for &str {
    fn value(self) -> String {
        self.to_owned()
    }
}

impl Declared<LogFormat> for &str {
    fn value(self) -> LogFormat {
        <LogFormat as clap::ValueEnum>::from_str(self, false).expect("a declared default log format parses")
    }
}

impl Declared<PathBuf> for &str {
    fn value(self) -> PathBuf {
        PathBuf::from(self)
    }
}

/// Validation: refused when zero (named after the setting).
fn positive<T: PartialEq + Default>(name: &'static str, value: T) -> Result<T, ConfigError> {
    if value == T::default() {
        Err(ConfigError::Zero { name })
    } else {
        Ok(value)
    }
}

/// Validation: every value of the type is accepted.
fn any<T>(_name: &'static str, value: T) -> Result<T, ConfigError> {
    Ok(value)
}

/// Validation: between `min` and `max`, both included.
fn within(min: usize, max: usize) -> impl Fn(&'static str, usize) -> Result<usize, ConfigError> {
    move |name, value| {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Range { name, min, max })
        }
    }
}

/// A declared default as the docs show it (`Display`: `4194304` for `4 * 1024 * 1024`).
macro_rules! doc_default {
    () => {
        None
    };
    ($default:expr) => {
        Some($default.to_string())
    };
}

/// `name: Type, "ENV" [, default VALUE, CHECK] [, hide_env_values = true];` per setting, its doc comment
/// first (the help text). `CHECK` is [`positive`], [`any`] or [`within`]. See the module doc. The first
/// entry, `config: PathBuf, "REALTIME_CONFIG", names_the_file;`, names the file the others are read from,
/// so it is neither a key of that file nor merged.
macro_rules! settings {
    (
        $(#[doc = $config_doc:literal])+
        $config:ident: $config_ty:ty, $config_env:literal, names_the_file;
        $(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty, $env:literal
        $(, default $default:expr, $check:expr)?
        $(, hide_env_values = $hide:literal)?;
    )+) => {
        /// Flags; each also reads its environment variable. All optional so the file and defaults can
        /// fill in.
        #[derive(Debug, Default, Parser, Deserialize)]
        #[command(name = "realtime", version, about = "Supabase Realtime compatible server")]
        #[serde(deny_unknown_fields, rename_all = "snake_case")]
        pub struct Settings {
            $(#[doc = $config_doc])+
            #[arg(long, env = $config_env)]
            #[serde(skip)]
            pub $config: Option<$config_ty>,
            $(
                $(#[doc = $doc])+
                #[arg(long, env = $env $(, hide_env_values = $hide)?)]
                pub $name: Option<$ty>,
            )+
        }

        impl Settings {
            /// Fills every unset field from `file`.
            fn or(self, file: Settings) -> Settings {
                Settings { $config: self.$config, $($name: self.$name.or(file.$name),)+ }
            }

            $($(
                #[doc = concat!("`", stringify!($name), "` as given, or its default; validated.")]
                pub fn $name(&self) -> Result<$ty, ConfigError> {
                    let value = self.$name.clone().unwrap_or_else(|| Declared::value($default));
                    ($check)(stringify!($name), value)
                }
            )?)+
        }

        /// Every setting, in the order of `--help`.
        pub fn declared() -> Vec<SettingDoc> {
            vec![
                SettingDoc::new(stringify!($config), $config_env, None, &[$($config_doc),+]),
                $(SettingDoc::new(stringify!($name), $env, doc_default!($($default)?), &[$($doc),+]),)+
            ]
        }
    };
}

settings! {
    /// TOML file with any of these settings (keys are the flag names with `_`).
    config: PathBuf, "REALTIME_CONFIG", names_the_file;
    /// HTTP and WebSocket listener.
    bind: SocketAddr, "REALTIME_BIND", default "0.0.0.0:4000", any;
    /// HS256/384/512 secret for client JWTs (a dev secret is generated and printed when unset).
    jwt_secret: String, "REALTIME_JWT_SECRET", hide_env_values = true;
    /// JWKS file (`{"keys": [...]}`) for RS*/ES*/EdDSA tokens, selected by `kid`.
    jwks: PathBuf, "REALTIME_JWKS";
    /// Bearer token `/cluster` and `/metrics` require (at least 16 characters); a `service_role` JWT
    /// is accepted too. Unset: they answer anyone.
    admin_token: String, "REALTIME_ADMIN_TOKEN", hide_env_values = true;
    /// File holding the admin token (a mounted Secret); instead of `--admin-token`.
    admin_token_file: PathBuf, "REALTIME_ADMIN_TOKEN_FILE";
    /// Stable node name (defaults to the hostname).
    node_id: String, "REALTIME_NODE_ID";
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object per line, with the
    /// fields of the span it happened in), for log shippers. `RUST_LOG` filters either.
    log_format: LogFormat, "REALTIME_LOG_FORMAT", default "text", any;
    /// WebSocket connections per node.
    max_connections: usize, "REALTIME_MAX_CONNECTIONS", default 100_000, positive;
    /// Members per channel.
    max_channel_members: usize, "REALTIME_MAX_CHANNEL_MEMBERS", default 10_000, positive;
    /// Channels per socket.
    max_channels_per_client: usize, "REALTIME_MAX_CHANNELS_PER_CLIENT", default 100, positive;
    /// Broadcast and presence pushes per socket per second.
    max_events_per_second: u32, "REALTIME_MAX_EVENTS_PER_SECOND", default 100, positive;
    /// Channel joins per node per second.
    max_joins_per_second: u32, "REALTIME_MAX_JOINS_PER_SECOND", default 5_000, positive;
    /// Largest broadcast payload or presence meta, in bytes of JSON.
    max_payload_bytes: usize, "REALTIME_MAX_PAYLOAD_BYTES", default 262_144, positive;
    /// REST broadcast messages per node per second.
    max_rest_events_per_second: u32, "REALTIME_MAX_REST_EVENTS_PER_SECOND", default 1_000, positive;
    /// REST broadcast messages per sender (the token's `sub`, or the token itself) per second.
    max_token_rest_events_per_second: u32, "REALTIME_MAX_TOKEN_REST_EVENTS_PER_SECOND", default 200, positive;
    /// Presence pushes per channel per presence window.
    presence_max_calls: u32, "REALTIME_PRESENCE_MAX_CALLS", default 5, positive;
    /// The presence rate window in milliseconds.
    presence_window_ms: u64, "REALTIME_PRESENCE_WINDOW_MS", default 30_000, positive;
    /// Least time between two `presence_diff`s of a channel, in milliseconds: the changes of the
    /// interval go out as one diff (a lone change at once). 0 sends every change at once.
    presence_batch_ms: u64, "REALTIME_PRESENCE_BATCH_MS", default 50, any;
    /// Close a socket that sent nothing (not even a heartbeat) for this long.
    idle_timeout_ms: u64, "REALTIME_IDLE_TIMEOUT_MS", default 60_000, positive;
    /// Delay before a join error reply, so retrying clients do not hammer the node.
    join_error_delay_ms: u64, "REALTIME_JOIN_ERROR_DELAY_MS", default 1_000, any;
    /// Delay before a refused WebSocket handshake is answered.
    connect_error_delay_ms: u64, "REALTIME_CONNECT_ERROR_DELAY_MS", default 1_000, any;
    /// Budget for the SIGTERM drain.
    shutdown_grace_ms: u64, "REALTIME_SHUTDOWN_GRACE_MS", default 20_000, any;
    /// HTTP worker threads (defaults to the number of cores).
    workers: usize, "REALTIME_WORKERS";
    /// Refuse public channels: every join must be `private` and pass the RLS read check.
    private_only: bool, "REALTIME_PRIVATE_ONLY", default false, any;
    /// Serve the inspector at `/inspector`: a page that shows the cluster and this node's channels
    /// (its API needs a `service_role` JWT) and joins a channel with a pasted token.
    inspector: bool, "REALTIME_INSPECTOR", default false, any;
    /// Bytes of frames queued for one socket before it is closed as a slow consumer.
    max_outbox_bytes: usize, "REALTIME_MAX_OUTBOX_BYTES", default 4 * 1024 * 1024, positive;
    /// Frames queued for one socket before it is closed as a slow consumer.
    max_outbox_frames: usize, "REALTIME_MAX_OUTBOX_FRAMES", default 16_384, positive;
    /// A socket whose queued frames make no write progress for this long is closed as a slow consumer.
    write_timeout_ms: u64, "REALTIME_WRITE_TIMEOUT_MS", default 5_000, positive;
    /// Largest WebSocket frame (and reassembled message), checked from the frame header.
    max_frame_bytes: usize, "REALTIME_MAX_FRAME_BYTES", default 5_000_000, positive;
    /// Channel joins per socket per second (refused joins count too).
    max_client_joins_per_second: u32, "REALTIME_MAX_CLIENT_JOINS_PER_SECOND", default 100, positive;
    /// Channel joins per user (the token's `sub`) per second, across sockets; tokens without `sub`
    /// (anonymous visitors) are held per socket and by the node's rate.
    max_token_joins_per_second: u32, "REALTIME_MAX_TOKEN_JOINS_PER_SECOND", default 500, positive;
    /// Longest topic, in bytes (at most 255, what binary frames carry).
    max_topic_bytes: usize, "REALTIME_MAX_TOPIC_BYTES", default 255, within(1, 255);
    /// Longest `ref` / `join_ref`, in bytes.
    max_ref_bytes: usize, "REALTIME_MAX_REF_BYTES", default 64, positive;
    /// Longest presence key, in bytes.
    max_presence_key_bytes: usize, "REALTIME_MAX_PRESENCE_KEY_BYTES", default 256, positive;
    /// Deepest nesting of a presence meta (objects and arrays).
    max_presence_depth: usize, "REALTIME_MAX_PRESENCE_DEPTH", default 32, positive;
    /// Most `postgres_changes` entries in one join.
    max_postgres_changes: usize, "REALTIME_MAX_POSTGRES_CHANGES", default 100, positive;
    /// Longest `postgres_changes` entry (its JSON: schema, table, filter, …), in bytes.
    max_filter_bytes: usize, "REALTIME_MAX_FILTER_BYTES", default 4_096, positive;
    /// Most messages in one REST batch (counted while parsing).
    max_rest_batch: usize, "REALTIME_MAX_REST_BATCH", default 1_000, positive;
    /// REST broadcast requests processed at once per node; more are refused with 429.
    max_rest_concurrency: usize, "REALTIME_MAX_REST_CONCURRENCY", default 16, positive;
    /// Time a REST or GraphQL request body has to arrive whole once its handler reads it; slower → 408.
    request_body_timeout_ms: u64, "REALTIME_REQUEST_BODY_TIMEOUT_MS", default 10_000, positive;
    /// PostgreSQL (wal_level=logical) for Postgres Changes; unset disables them.
    database_url: String, "DATABASE_URL", hide_env_values = true;
    /// Publication whose tables are streamed (created empty if missing).
    publication: String, "REALTIME_PUBLICATION", default "supabase_realtime", any;
    /// Permanent pgoutput replication slot (created if missing).
    slot: String, "REALTIME_SLOT", default "realtime_cdc", any;
    /// Where the node keeps its state (the last delivered WAL position).
    data_dir: PathBuf, "REALTIME_DATA_DIR", default "./data", any;
    /// Peer transport listener: UDP for membership, TCP for data (same port).
    cluster_bind: SocketAddr, "REALTIME_CLUSTER_BIND", default "0.0.0.0:4100", any;
    /// The address peers reach this node at (defaults to the cluster bind address, or the address the
    /// hostname resolves to when bound to 0.0.0.0).
    cluster_advertise: SocketAddr, "REALTIME_CLUSTER_ADVERTISE";
    /// Peers: comma-separated `host:port`, or a DNS name resolving to every pod (empty: single node).
    seeds: String, "REALTIME_SEEDS";
    /// Failure detector: how often a random peer is probed.
    cluster_probe_ms: u64, "REALTIME_CLUSTER_PROBE_MS", default 300, positive;
    /// Failure detector: how long a suspected peer has to answer before it is declared down.
    cluster_suspect_ms: u64, "REALTIME_CLUSTER_SUSPECT_MS", default 900, positive;
    /// A raft member not seen alive for this long is removed from the membership (scale-down).
    cluster_remove_after_ms: u64, "REALTIME_CLUSTER_REMOVE_AFTER_MS", default 300_000, positive;
    /// Shared secret(s) that nodes prove to each other (≥ 32 bytes each, comma-separated; the first
    /// is used to send, all are accepted: rotation).
    cluster_secret: String, "REALTIME_CLUSTER_SECRET", hide_env_values = true;
    /// File holding the cluster secret(s), one per line; read again every 10 s (rotation without restart).
    cluster_secret_file: PathBuf, "REALTIME_CLUSTER_SECRET_FILE";
    /// Run a cluster without a secret on a non-loopback address (every peer packet is trusted).
    cluster_insecure: bool, "REALTIME_CLUSTER_INSECURE", default false, any;
    /// Largest change record delivered whole; larger ones follow the 413 rule.
    max_record_bytes: usize, "REALTIME_MAX_RECORD_BYTES", default 1_048_576, positive;
    /// After a restart, wait this long before resuming the stream so clients resubscribe first.
    cdc_resume_grace_ms: u64, "REALTIME_CDC_RESUME_GRACE_MS", default 5_000, any;
    /// How long the replication stream may stay silent (heartbeats go every third of it) before its
    /// connection is taken as dead and opened again.
    replication_timeout_ms: u64, "REALTIME_REPLICATION_TIMEOUT_MS", default 6_000, positive;
    /// In a cluster, how long the CDC leader keeps the slot at the position of a node that dropped
    /// out (WAL kept on the database) so the stream can be replayed for it if it comes back.
    cdc_hold_ms: u64, "REALTIME_CDC_HOLD_MS", default 30_000, positive;
    /// In a cluster, how long the CDC leader may be unable to reach PostgreSQL before it hands
    /// leadership to a node that can.
    cdc_handover_ms: u64, "REALTIME_CDC_HANDOVER_MS", default 1_000, positive;
    /// Hours `realtime.messages` rows are kept (whole daily partitions are dropped after this).
    messages_retention_hours: u64, "REALTIME_MESSAGES_RETENTION_HOURS", default 72, positive;
    /// Topics whose broadcasts are stored and carry positions, so a client can resume after a
    /// disconnect: comma-separated names, `prefix*`, or `*` (needs `DATABASE_URL`).
    resumable_topics: String, "REALTIME_RESUMABLE_TOPICS";
    /// Seconds a resumable channel's messages are held for resuming clients.
    resume_retention_secs: u64, "REALTIME_RESUME_RETENTION_SECS", default 300, positive;
    /// Messages held per resumable channel at most.
    resume_retention_count: usize, "REALTIME_RESUME_RETENTION_COUNT", default 1_000, positive;
    /// Bytes held for all resumable channels of a node at most (the oldest messages go first).
    resume_max_bytes: usize, "REALTIME_RESUME_MAX_BYTES", default 64 << 20, positive;
    /// `http://` URL that receives lifecycle webhooks (unset: webhooks off).
    webhook_url: String, "REALTIME_WEBHOOK_URL";
    /// HMAC-SHA256 key of the `X-Realtime-Signature` header (required with a webhook URL).
    webhook_secret: String, "REALTIME_WEBHOOK_SECRET", hide_env_values = true;
    /// A user is reported offline once their last socket in the cluster has been gone this long.
    offline_grace_ms: u64, "REALTIME_OFFLINE_GRACE_MS", default 5_000, any;
    /// Most events in one webhook request.
    webhook_batch_max: usize, "REALTIME_WEBHOOK_BATCH_MAX", default 100, positive;
    /// How long a webhook batch waits for more events after its first.
    webhook_batch_ms: u64, "REALTIME_WEBHOOK_BATCH_MS", default 200, any;
    /// Events waiting to be sent; more are dropped (and counted).
    webhook_queue: usize, "REALTIME_WEBHOOK_QUEUE", default 10_000, positive;
    /// Attempts per webhook batch (connection errors, timeouts, 5xx and 429 are retried).
    webhook_max_attempts: u32, "REALTIME_WEBHOOK_MAX_ATTEMPTS", default 5, positive;
    /// Wait before the first retry; doubles per attempt, at most 10 s.
    webhook_backoff_ms: u64, "REALTIME_WEBHOOK_BACKOFF_MS", default 250, positive;
    /// Timeout of one webhook request.
    webhook_timeout_ms: u64, "REALTIME_WEBHOOK_TIMEOUT_MS", default 5_000, positive;
    /// PEM file of CA certificates trusted for an `https://` webhook URL, besides the Mozilla roots
    /// (a receiver with a private or self-signed certificate).
    webhook_ca_file: PathBuf, "REALTIME_WEBHOOK_CA_FILE";
    /// Answer GraphQL introspection (`__schema`, `__type`) at `/graphql`.
    graphql_introspection: bool, "REALTIME_GRAPHQL_INTROSPECTION", default true, any;
    /// Deepest GraphQL query accepted (nesting of selection sets, introspection included).
    graphql_max_depth: usize, "REALTIME_GRAPHQL_MAX_DEPTH", default 15, positive;
    /// Largest GraphQL query complexity accepted (every field counts 1, `notifications` its `limit` more).
    graphql_max_complexity: usize, "REALTIME_GRAPHQL_MAX_COMPLEXITY", default 500, positive;
    /// Largest GraphQL request body, in bytes (larger → 413).
    graphql_max_body_bytes: usize, "REALTIME_GRAPHQL_MAX_BODY_BYTES", default 65_536, positive;
    /// `notifications` queries per user per minute (more → 429 `RATE_LIMITED`).
    notifications_list_per_minute: u32, "REALTIME_NOTIFICATIONS_LIST_PER_MINUTE", default 100, positive;
    /// `markNotificationRead` mutations per user per minute.
    notifications_mark_read_per_minute: u32, "REALTIME_NOTIFICATIONS_MARK_READ_PER_MINUTE",
        default 200, positive;
    /// `deleteNotification` mutations per user per minute.
    notifications_delete_per_minute: u32, "REALTIME_NOTIFICATIONS_DELETE_PER_MINUTE", default 100, positive;
    /// Largest `content` of a notification created with `POST /api/notifications`, in bytes of JSON.
    notifications_max_content_bytes: usize, "REALTIME_NOTIFICATIONS_MAX_CONTENT_BYTES",
        default 16_384, positive;
    /// Connections of the inbox's pool (REST inserts and GraphQL queries).
    notifications_pool_size: usize, "REALTIME_NOTIFICATIONS_POOL_SIZE", default 4, positive;
}

impl Settings {
    /// These settings with every unset one filled from the `--config` file, when there is one: flags and
    /// environment win over the file.
    pub fn with_file(self) -> Result<Settings, ConfigError> {
        match self.config.clone() {
            Some(path) => Ok(self.or(read_file(&path)?)),
            None => Ok(self),
        }
    }
}

fn read_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    toml::from_str(&text)
        .map_err(|source| ConfigError::ParseFile { path: path.to_owned(), source: Box::new(source) })
}
