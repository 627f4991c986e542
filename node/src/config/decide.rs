//! From settings to configuration without touching the machine: every default, every validation and
//! every rule that ties settings together (a webhook URL needs a secret, resumable topics need
//! `DATABASE_URL`, a cluster port needs a fixed port). A pure function of the settings and of the two
//! facts start-up gathers about the machine ([`Machine`]), so it is tested without files or a network.
//!
//! What needs a file read or a name looked up is not done here: it is left, named, in the [`Draft`], and
//! [`Draft::start`](super::startup) does it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use realtime_cluster::Keyring;

use super::model::{Budget, CdcConfig, Config, InboxSettings, Limits, WebhookConfig};
use super::settings::Settings;
use super::startup::Machine;
use super::ConfigError;
use crate::auth::AdminToken;
use crate::resume::{LogLimits, ResumableTopics, ResumeConfig};

/// The configuration as the settings decide it, and what start-up still has to read or look up.
///
/// `config` is whole but for the fields start-up fills from the rest: `jwks_json` (from `jwks`),
/// `admin_token` when it is in a file, the webhooks' `extra_roots` (from `webhook_ca_file`) and `cluster`
/// (from the [`ClusterDraft`]). Nothing outside this module and [`super::startup`] can see it, so the only
/// way to a [`Config`] is through [`Draft::start`](super::startup).
#[derive(Debug)]
pub struct Draft {
    pub(super) config: Config,
    pub(super) jwks: Option<PathBuf>,
    pub(super) admin_token_file: Option<PathBuf>,
    pub(super) webhook_ca_file: Option<PathBuf>,
    pub(super) cluster: Option<ClusterDraft>,
}

/// The cluster settings before start-up: the address may need a lookup, the secret a file.
#[derive(Debug)]
pub(super) struct ClusterDraft {
    pub bind: SocketAddr,
    pub advertise: Advertise,
    pub seeds: Vec<String>,
    pub probe_period: Duration,
    pub suspect_to_down: Duration,
    pub raft_remove_after: Duration,
    pub secret: SecretSource,
}

/// The address peers reach this node at: given (or the bind address), or the hostname's, looked up at
/// start-up when the cluster port is bound to every interface (a pod's IP in Kubernetes).
#[derive(Debug)]
pub(super) enum Advertise {
    Known(SocketAddr),
    LookUp { host: String },
}

/// Where the cluster secret comes from (`REALTIME_CLUSTER_SECRET`, `_FILE`, or neither).
#[derive(Debug)]
pub(super) enum SecretSource {
    Fixed(Keyring),
    File(PathBuf),
    /// Neither: allowed only on loopback or with `REALTIME_CLUSTER_INSECURE` (checked once the advertised
    /// address is known).
    Unset {
        insecure: bool,
    },
}

const ADMIN_TOKEN_MIN_LEN: usize = 16;

/// An admin token, from the flag/variable or a file: one short enough to guess is refused.
pub(super) fn admin_token(token: String) -> Result<AdminToken, ConfigError> {
    if token.chars().count() < ADMIN_TOKEN_MIN_LEN || token.chars().any(char::is_whitespace) {
        return Err(ConfigError::AdminToken(format!(
            "it must be at least {ADMIN_TOKEN_MIN_LEN} characters, without spaces"
        )));
    }
    Ok(AdminToken::new(token))
}

/// The webhook settings, when a URL is set: an `http://` or `https://` URL and a non-empty secret are
/// required (the CA file is read at start-up).
fn webhook_config(s: &Settings) -> Result<Option<WebhookConfig>, ConfigError> {
    let Some(url) = s.webhook_url.as_deref().filter(|url| !url.is_empty()) else { return Ok(None) };
    let url = reqwest::Url::parse(url)
        .map_err(|e| ConfigError::Webhook(format!("REALTIME_WEBHOOK_URL is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::Webhook(format!(
            "REALTIME_WEBHOOK_URL must be http:// or https://, not {}://",
            url.scheme()
        )));
    }
    let secret = s.webhook_secret.clone().filter(|secret| !secret.is_empty()).ok_or_else(|| {
        ConfigError::Webhook("REALTIME_WEBHOOK_SECRET is required with REALTIME_WEBHOOK_URL".into())
    })?;
    let ms = Duration::from_millis;
    Ok(Some(WebhookConfig {
        url,
        secret,
        offline_grace: ms(s.offline_grace_ms()?),
        batch_max: s.webhook_batch_max()?,
        batch_window: ms(s.webhook_batch_ms()?),
        queue: s.webhook_queue()?,
        max_attempts: s.webhook_max_attempts()?,
        backoff: ms(s.webhook_backoff_ms()?),
        timeout: ms(s.webhook_timeout_ms()?),
        extra_roots: Vec::new(),
    }))
}

fn limits(s: &Settings) -> Result<Limits, ConfigError> {
    let ms = Duration::from_millis;
    Ok(Limits {
        max_connections: s.max_connections()?,
        sockets_by_files: usize::MAX,
        max_channel_members: s.max_channel_members()?,
        max_channels_per_client: s.max_channels_per_client()?,
        max_events_per_second: s.max_events_per_second()?,
        max_joins_per_second: s.max_joins_per_second()?,
        max_payload_bytes: s.max_payload_bytes()?,
        max_rest_events_per_second: s.max_rest_events_per_second()?,
        max_token_rest_events_per_second: s.max_token_rest_events_per_second()?,
        presence_max_calls: s.presence_max_calls()?,
        presence_window: ms(s.presence_window_ms()?),
        presence_batch: ms(s.presence_batch_ms()?),
        max_frame_bytes: s.max_frame_bytes()?,
        max_outbox_bytes: s.max_outbox_bytes()?,
        max_outbox_frames: s.max_outbox_frames()?,
        write_timeout: ms(s.write_timeout_ms()?),
        max_client_joins_per_second: s.max_client_joins_per_second()?,
        max_token_joins_per_second: s.max_token_joins_per_second()?,
        budget: Budget {
            max_topic_bytes: s.max_topic_bytes()?,
            max_ref_bytes: s.max_ref_bytes()?,
            max_presence_key_bytes: s.max_presence_key_bytes()?,
            max_presence_depth: s.max_presence_depth()?,
            max_postgres_changes: s.max_postgres_changes()?,
            max_filter_bytes: s.max_filter_bytes()?,
        },
        max_rest_batch: s.max_rest_batch()?,
        max_rest_concurrency: s.max_rest_concurrency()?,
        request_body_timeout: ms(s.request_body_timeout_ms()?),
    })
}

/// Postgres Changes, when `DATABASE_URL` is set.
fn cdc(s: &Settings, limits: &Limits) -> Result<Option<CdcConfig>, ConfigError> {
    let Some(database_url) = s.database_url.clone().filter(|url| !url.is_empty()) else { return Ok(None) };
    let ms = Duration::from_millis;
    Ok(Some(CdcConfig {
        database_url,
        publication: s.publication()?,
        slot: s.slot()?,
        max_record_bytes: s.max_record_bytes()?,
        resume_grace: ms(s.cdc_resume_grace_ms()?),
        hold: ms(s.cdc_hold_ms()?),
        handover: ms(s.cdc_handover_ms()?),
        flush_deadline: limits.write_timeout,
        replication_timeout: ms(s.replication_timeout_ms()?),
    }))
}

/// The cluster, when `REALTIME_SEEDS` names a peer.
fn cluster(s: &Settings, host: &str) -> Result<Option<ClusterDraft>, ConfigError> {
    let seeds: Vec<String> = s
        .seeds
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|seed| !seed.is_empty())
        .map(str::to_owned)
        .collect();
    if seeds.is_empty() {
        return Ok(None);
    }
    let bind = s.cluster_bind()?;
    if bind.port() == 0 {
        return Err(ConfigError::Cluster("REALTIME_CLUSTER_BIND needs a fixed port".into()));
    }
    let advertise = match s.cluster_advertise {
        Some(addr) => Advertise::Known(addr),
        None if !bind.ip().is_unspecified() => Advertise::Known(bind),
        None => Advertise::LookUp { host: host.to_owned() },
    };
    let secret = match (s.cluster_secret.as_deref().filter(|s| !s.trim().is_empty()), &s.cluster_secret_file)
    {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Cluster(
                "set REALTIME_CLUSTER_SECRET or REALTIME_CLUSTER_SECRET_FILE, not both".into(),
            ))
        }
        (Some(text), None) => {
            SecretSource::Fixed(Keyring::parse(text).map_err(|e| ConfigError::Cluster(e.to_string()))?)
        }
        (None, Some(path)) => SecretSource::File(path.clone()),
        (None, None) => SecretSource::Unset { insecure: s.cluster_insecure()? },
    };
    let ms = Duration::from_millis;
    Ok(Some(ClusterDraft {
        bind,
        advertise,
        seeds,
        probe_period: ms(s.cluster_probe_ms()?),
        suspect_to_down: ms(s.cluster_suspect_ms()?),
        raft_remove_after: ms(s.cluster_remove_after_ms()?),
        secret,
    }))
}

fn resume(s: &Settings, with_database: bool) -> Result<ResumeConfig, ConfigError> {
    let resume = ResumeConfig {
        topics: ResumableTopics::parse(s.resumable_topics.as_deref().unwrap_or(""))
            .map_err(|e| ConfigError::Resume(e.to_string()))?,
        limits: LogLimits {
            max_age: Duration::from_secs(s.resume_retention_secs()?),
            max_per_channel: s.resume_retention_count()?,
            max_bytes: s.resume_max_bytes()?,
        },
    };
    if resume.topics.any() && !with_database {
        return Err(ConfigError::Resume(
            "REALTIME_RESUMABLE_TOPICS needs DATABASE_URL: resumable messages are stored there".into(),
        ));
    }
    Ok(resume)
}

fn inbox(s: &Settings) -> Result<InboxSettings, ConfigError> {
    Ok(InboxSettings {
        introspection: s.graphql_introspection()?,
        max_depth: s.graphql_max_depth()?,
        max_complexity: s.graphql_max_complexity()?,
        max_body_bytes: s.graphql_max_body_bytes()?,
        list_per_minute: s.notifications_list_per_minute()?,
        mark_read_per_minute: s.notifications_mark_read_per_minute()?,
        delete_per_minute: s.notifications_delete_per_minute()?,
        max_content_bytes: s.notifications_max_content_bytes()?,
        pool_size: s.notifications_pool_size()?,
    })
}

impl Config {
    /// Decides the configuration from `settings` (the `--config` file already merged, see
    /// [`Settings::with_file`]) and the machine's facts: defaults, validation, no I/O.
    pub fn decide(s: Settings, machine: &Machine) -> Result<Draft, ConfigError> {
        let webhooks = webhook_config(&s)?;
        let (admin_token, admin_token_file) = match (s.admin_token.clone(), s.admin_token_file.clone()) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::AdminToken(
                    "give REALTIME_ADMIN_TOKEN or REALTIME_ADMIN_TOKEN_FILE, not both".into(),
                ));
            }
            (Some(token), None) => (Some(admin_token(token)?), None),
            (None, file) => (None, file),
        };
        let node_id =
            s.node_id.clone().or_else(|| machine.hostname.clone()).unwrap_or_else(|| "realtime".into());
        let limits = limits(&s)?;
        let cdc = cdc(&s, &limits)?;
        let cluster = cluster(&s, machine.hostname.as_deref().unwrap_or(&node_id))?;
        let messages_retention = Duration::from_secs(s.messages_retention_hours()?.saturating_mul(3600));
        let resume = resume(&s, cdc.is_some())?;
        let ms = Duration::from_millis;
        let config = Config {
            webhooks,
            inbox: inbox(&s)?,
            cluster: None,
            cdc,
            resume,
            messages_retention,
            data_dir: s.data_dir()?,
            bind: s.bind()?,
            jwt_secret: s.jwt_secret.clone().filter(|secret| !secret.is_empty()),
            jwks_json: None,
            admin_token,
            node_id,
            limits,
            idle_timeout: ms(s.idle_timeout_ms()?),
            join_error_delay: ms(s.join_error_delay_ms()?),
            connect_error_delay: ms(s.connect_error_delay_ms()?),
            shutdown_grace: ms(s.shutdown_grace_ms()?),
            private_only: s.private_only()?,
            inspector: s.inspector()?,
            workers: s.workers.filter(|w| *w > 0).unwrap_or(machine.cores),
        };
        Ok(Draft { config, jwks: s.jwks, admin_token_file, webhook_ca_file: s.webhook_ca_file, cluster })
    }
}
