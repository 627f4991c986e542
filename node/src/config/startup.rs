//! The I/O the configuration needs, done once at start-up after [`Config::decide`] has decided
//! everything it can: the machine's hostname and cores ([`Machine`]), the JWKS file, the admin token
//! file, the webhooks' CA file, the cluster secret file and the lookup of the address peers reach this
//! node at. Each failure stops the node with the same message as before this was split from deciding.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use realtime_cluster::{ClusterSecret, Keyring};

use super::decide::{admin_token, Advertise, ClusterDraft, Draft, SecretSource};
use super::model::{ClusterSettings, Config};
use super::ConfigError;

/// What deciding needs to know about the machine: `REALTIME_NODE_ID` and `REALTIME_WORKERS` default to
/// these.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `None` when the hostname cannot be read (the node is then called `realtime`).
    pub hostname: Option<String>,
    pub cores: usize,
}

impl Machine {
    /// This machine.
    pub fn current() -> Machine {
        Machine {
            hostname: hostname::get().ok().and_then(|h| h.into_string().ok()),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        }
    }
}

impl Draft {
    /// Reads the files the settings name and looks up the advertised address: the whole [`Config`].
    pub fn start(self) -> Result<Config, ConfigError> {
        let Draft { mut config, jwks, admin_token_file, webhook_ca_file, cluster } = self;
        if let (Some(webhooks), Some(path)) = (config.webhooks.as_mut(), webhook_ca_file) {
            webhooks.extra_roots = read_ca_file(&path)?;
        }
        if let Some(path) = jwks {
            let json = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::Jwks { path: path.clone(), reason: e.to_string() })?;
            config.jwks_json = Some(json);
        }
        if let Some(path) = admin_token_file {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::AdminToken(format!(
                    "cannot read REALTIME_ADMIN_TOKEN_FILE {}: {e}",
                    path.display()
                ))
            })?;
            config.admin_token = Some(admin_token(text.trim_end_matches(['\n', '\r']).to_owned())?);
        }
        config.cluster = cluster.map(start_cluster).transpose()?;
        Ok(config)
    }
}

/// `REALTIME_WEBHOOK_CA_FILE`: at least one PEM certificate.
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let bad =
        |why: String| ConfigError::Webhook(format!("REALTIME_WEBHOOK_CA_FILE {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if roots.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(roots)
}

fn start_cluster(draft: ClusterDraft) -> Result<ClusterSettings, ConfigError> {
    let ClusterDraft { bind, advertise, seeds, probe_period, suspect_to_down, raft_remove_after, secret } =
        draft;
    let advertise = match advertise {
        Advertise::Known(addr) => addr,
        Advertise::LookUp { host } => look_up(&host, bind.port())?,
    };
    let secret = cluster_secret(secret, bind, advertise)?;
    Ok(ClusterSettings { bind, advertise, seeds, probe_period, suspect_to_down, raft_remove_after, secret })
}

/// The hostname's address (a pod's IP in Kubernetes): its first non-loopback IPv4 one, else its first.
fn look_up(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    let found = (host, port).to_socket_addrs().map(|addrs| addrs.collect::<Vec<_>>());
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

/// The cluster secret from `REALTIME_CLUSTER_SECRET` or `REALTIME_CLUSTER_SECRET_FILE`. Without either,
/// peers are trusted blindly: allowed when the cluster port is only on loopback (local development), or
/// when the operator says so with `REALTIME_CLUSTER_INSECURE=true`.
fn cluster_secret(
    source: SecretSource,
    bind: SocketAddr,
    advertise: SocketAddr,
) -> Result<ClusterSecret, ConfigError> {
    match source {
        SecretSource::Fixed(keys) => Ok(ClusterSecret::Fixed(keys)),
        SecretSource::File(path) => {
            let keys = Keyring::read(&path).map_err(|e| ConfigError::Cluster(e.to_string()))?;
            Ok(ClusterSecret::File { path, keys })
        }
        SecretSource::Unset { insecure }
            if insecure || (bind.ip().is_loopback() && advertise.ip().is_loopback()) =>
        {
            Ok(ClusterSecret::Insecure)
        }
        SecretSource::Unset { .. } => Err(ConfigError::Cluster(format!(
            "the cluster port {bind} (advertised as {advertise}) is reachable from other hosts, and \
             without REALTIME_CLUSTER_SECRET (or _FILE) anyone who reaches it can speak for a node; \
             set a secret (e.g. `openssl rand -base64 48`), or REALTIME_CLUSTER_INSECURE=true on a \
             network you trust"
        ))),
    }
}
