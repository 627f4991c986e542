//! Trust between nodes: only a process holding the cluster secret speaks for a node.
//!
//! Every node of a cluster is given the same secret (`REALTIME_CLUSTER_SECRET`), from which two keys
//! are derived (HKDF-SHA256, one label each, so neither use weakens the other):
//! - **links** (TCP): a Noise `NNpsk0` handshake ([`handshake`], with `snow`) keyed by the secret.
//!   Both ends prove they hold it before the first frame, every frame after is encrypted and
//!   authenticated ([`codec`]), and fresh ephemeral keys per connection give forward secrecy.
//! - **membership** (UDP, SWIM): every packet is sealed with XChaCha20-Poly1305 under the second key
//!   and carries its send time; a receiver drops packets it cannot open, packets outside a time
//!   window, and packets it has seen before ([`packet`]).
//!
//! Why a shared secret and Noise rather than TLS with a cluster CA: one value for an operator to make
//! and rotate (the Helm chart generates it), no certificate lifetimes to watch, and rustls has no
//! certificate-less pre-shared-key mode. The peers are symmetric and equally trusted, so per-node
//! certificates would add no authority a shared secret does not already give.
//!
//! **Rotation without downtime.** A [`Keyring`] holds up to [`MAX_KEYS`] secrets: the first is used to
//! send, every one is accepted. Rotate in three steps (each a config change every node picks up):
//! add the new secret second, move it first, remove the old one. With `REALTIME_CLUSTER_SECRET_FILE`
//! the file is read again every [`RELOAD_INTERVAL`] (and on SIGHUP), so a Kubernetes Secret update needs
//! no restart; links accepted under a secret that is no longer accepted are closed (and redialled
//! under the current one), so a removed secret stops working at once, not at the next reconnect.
//!
//! Without a secret ([`PeerAuth::insecure`]) nodes trust every packet, as before; the node refuses to
//! start that way on a non-loopback address unless told `REALTIME_CLUSTER_INSECURE=true`.

pub mod codec;
pub mod handshake;
pub mod packet;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hkdf::Hkdf;
use sha2::Sha256;
use thiserror::Error;

use crate::sync::{lock, read, write};

/// Shortest secret accepted, in bytes (256 bits of key material if the bytes are random).
pub const MIN_SECRET_BYTES: usize = 32;
/// Secrets a keyring holds at once: the current one and those being rotated in or out.
pub const MAX_KEYS: usize = 4;
/// How often a secret file is read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Why a set of secrets cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("no cluster secret given")]
    Empty,
    #[error("cluster secret {index} is {len} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `openssl rand -base64 48`)")]
    TooShort { index: usize, len: usize },
    #[error("at most {MAX_KEYS} cluster secrets at once (the current one and those being rotated)")]
    TooMany,
    #[error("cannot read the cluster secret file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// The keys derived from one secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivedKeys {
    /// The Noise pre-shared key of the TCP links.
    pub(crate) link_psk: [u8; 32],
    /// The XChaCha20-Poly1305 key of membership packets.
    pub(crate) packet_key: [u8; 32],
}

impl DerivedKeys {
    fn derive(secret: &[u8]) -> DerivedKeys {
        let hkdf = Hkdf::<Sha256>::new(Some(b"realtime-cluster"), secret);
        let mut link_psk = [0u8; 32];
        let mut packet_key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32: expansion cannot fail.
        let _ = hkdf.expand(b"link psk v1", &mut link_psk);
        let _ = hkdf.expand(b"membership packet key v1", &mut packet_key);
        DerivedKeys { link_psk, packet_key }
    }
}

/// The cluster's secrets, as keys: the first sends, all are accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<DerivedKeys>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    /// Secrets separated by commas or newlines (blank entries ignored), the sending one first.
    pub fn parse(text: &str) -> Result<Keyring, SecretError> {
        let secrets: Vec<&str> =
            text.split([',', '\n']).map(str::trim).filter(|secret| !secret.is_empty()).collect();
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        if secrets.len() > MAX_KEYS {
            return Err(SecretError::TooMany);
        }
        let mut keys = Vec::with_capacity(secrets.len());
        for (index, secret) in secrets.iter().enumerate() {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(SecretError::TooShort { index: index + 1, len: secret.len() });
            }
            keys.push(DerivedKeys::derive(secret.as_bytes()));
        }
        Ok(Keyring { keys })
    }

    /// Reads and parses a secret file.
    pub fn read(path: &std::path::Path) -> Result<Keyring, SecretError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SecretError::File { path: path.to_owned(), reason: e.to_string() })?;
        Keyring::parse(&text).map_err(|e| match e {
            SecretError::File { .. } => e,
            other => SecretError::File { path: path.to_owned(), reason: other.to_string() },
        })
    }

    /// The keys this node sends with.
    pub(crate) fn sending(&self) -> &DerivedKeys {
        &self.keys[0]
    }

    /// Every key a peer may use, the sending one first.
    pub(crate) fn accepted(&self) -> &[DerivedKeys] {
        &self.keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Where a node's secrets come from (part of [`crate::ClusterConfig`]).
#[derive(Debug, Clone, Default)]
pub enum ClusterSecret {
    /// No secret: every peer packet is trusted (local development on loopback).
    #[default]
    Insecure,
    /// Fixed secrets (`REALTIME_CLUSTER_SECRET`).
    Fixed(Keyring),
    /// A file read at start and again every [`RELOAD_INTERVAL`] (`REALTIME_CLUSTER_SECRET_FILE`).
    File { path: PathBuf, keys: Keyring },
}

/// Peer traffic refused, by kind, since start (exported as metrics).
#[derive(Debug, Default)]
pub struct Refusals {
    /// TCP connections whose peer could not prove it holds the secret (or spoke no Noise).
    pub links: AtomicU64,
    /// Membership packets that could not be opened with any key.
    pub packets: AtomicU64,
    /// Membership packets that opened but were replayed or outside the time window.
    pub replays: AtomicU64,
}

/// Counters as `/cluster` shows them.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RefusalView {
    pub links: u64,
    pub packets: u64,
    pub replays: u64,
}

/// What every link and the membership loop consult: the current keyring (none: insecure), the
/// membership replay window and the refusal counters.
pub struct PeerAuth {
    keys: RwLock<Option<Arc<Keyring>>>,
    /// Bumped whenever the keyring changes, so links accepted under a key no longer accepted close.
    rotations: tokio::sync::watch::Sender<u64>,
    replay: Mutex<packet::ReplayWindow>,
    pub(crate) refused: Refusals,
    warned: Mutex<Option<Instant>>,
}

impl PeerAuth {
    /// Trusts everyone.
    pub fn insecure() -> PeerAuth {
        PeerAuth::with(None)
    }

    /// Authenticates every peer with `keys`.
    pub fn new(keys: Keyring) -> PeerAuth {
        PeerAuth::with(Some(Arc::new(keys)))
    }

    fn with(keys: Option<Arc<Keyring>>) -> PeerAuth {
        PeerAuth {
            keys: RwLock::new(keys),
            rotations: tokio::sync::watch::Sender::new(0),
            replay: Mutex::new(packet::ReplayWindow::new(packet::WINDOW, packet::REPLAY_CAPACITY)),
            refused: Refusals::default(),
            warned: Mutex::new(None),
        }
    }

    /// The keyring in use; `None` when insecure.
    pub(crate) fn keys(&self) -> Option<Arc<Keyring>> {
        read(&self.keys).clone()
    }

    /// Replaces the keyring (a reloaded secret file); `true` when it changed.
    pub fn replace(&self, keys: Keyring) -> bool {
        let mut current = write(&self.keys);
        if current.as_deref() == Some(&keys) {
            return false;
        }
        *current = Some(Arc::new(keys));
        drop(current);
        self.rotations.send_modify(|n| *n += 1);
        true
    }

    /// Changes whenever the keyring is replaced.
    pub(crate) fn rotations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rotations.subscribe()
    }

    /// Whether a link pre-shared key is still accepted (after a rotation removed a secret).
    pub(crate) fn accepts_link_key(&self, psk: &[u8; 32]) -> bool {
        self.keys().is_some_and(|keys| keys.accepted().iter().any(|key| &key.link_psk == psk))
    }

    pub fn is_secure(&self) -> bool {
        read(&self.keys).is_some()
    }

    pub fn refusals(&self) -> RefusalView {
        RefusalView {
            links: self.refused.links.load(Ordering::Relaxed),
            packets: self.refused.packets.load(Ordering::Relaxed),
            replays: self.refused.replays.load(Ordering::Relaxed),
        }
    }

    /// Seals a membership packet (as it is, when insecure).
    pub(crate) fn seal_packet<'a>(&self, plain: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self.keys() {
            Some(keys) => std::borrow::Cow::Owned(packet::seal(&keys, plain)),
            None => std::borrow::Cow::Borrowed(plain),
        }
    }

    /// Opens a membership packet (as it is, when insecure); a refusal is counted and logged.
    pub(crate) fn open_packet<'a>(
        &self,
        sealed: &'a [u8],
        from: std::net::SocketAddr,
    ) -> Option<std::borrow::Cow<'a, [u8]>> {
        let Some(keys) = self.keys() else { return Some(std::borrow::Cow::Borrowed(sealed)) };
        let opened = {
            let mut window = lock(&self.replay);
            packet::open(&keys, &mut window, sealed)
        };
        match opened {
            Ok(plain) => Some(std::borrow::Cow::Owned(plain)),
            Err(refused) => {
                let counter = if refused.is_replay() { &self.refused.replays } else { &self.refused.packets };
                counter.fetch_add(1, Ordering::Relaxed);
                self.log_refusal("a membership packet", from, &refused);
                None
            }
        }
    }

    /// Logs a refusal at WARN at most every 10 s (a flood must not flood the log too), else at DEBUG.
    pub(crate) fn log_refusal(&self, what: &str, from: std::net::SocketAddr, reason: &dyn fmt::Display) {
        let now = Instant::now();
        let loud = {
            let mut warned = lock(&self.warned);
            let loud = warned.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10));
            if loud {
                *warned = Some(now);
            }
            loud
        };
        let refused = self.refusals();
        if loud {
            tracing::warn!(%from, %reason, ?refused, "refused {what}: the peer does not hold the cluster secret");
        } else {
            tracing::debug!(%from, %reason, "refused {what}");
        }
    }
}

/// Reads the secret file every [`RELOAD_INTERVAL`] (and at once on SIGHUP) and swaps the keyring when
/// it changed; a file that became unreadable or invalid keeps the old keys (and says so).
pub(crate) async fn reload(auth: Arc<PeerAuth>, path: PathBuf, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!(path = %path.display(), "SIGHUP: reading the cluster secret file");
            }
        }
        let read = tokio::task::spawn_blocking({
            let path = path.clone();
            move || Keyring::read(&path)
        })
        .await;
        match read {
            Ok(Ok(keys)) => {
                let count = keys.len();
                if auth.replace(keys) {
                    tracing::info!(path = %path.display(), keys = count, "cluster secrets reloaded");
                }
            }
            Ok(Err(error)) => tracing::error!(%error, "keeping the current cluster secrets"),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn secrets_parse_in_order_and_refuse_short_or_too_many() {
        let ring = Keyring::parse(&format!(" {A} ,\n{B}\n\n")).unwrap();
        assert_eq!(ring.len(), 2);
        assert!(ring.sending() == &DerivedKeys::derive(A.as_bytes()));
        assert_eq!(Keyring::parse(" , \n"), Err(SecretError::Empty));
        assert_eq!(Keyring::parse(&format!("{A},short")), Err(SecretError::TooShort { index: 2, len: 5 }));
        assert_eq!(Keyring::parse(&[A; 5].join(",")), Err(SecretError::TooMany));
    }

    #[test]
    fn the_two_derived_keys_differ_and_depend_on_the_secret() {
        let a = DerivedKeys::derive(A.as_bytes());
        let b = DerivedKeys::derive(B.as_bytes());
        assert_ne!(a.link_psk, a.packet_key);
        assert_ne!(a.link_psk, b.link_psk);
        assert_ne!(a.packet_key, b.packet_key);
    }

    #[test]
    fn a_reloaded_keyring_replaces_only_when_it_changed() {
        let auth = PeerAuth::new(Keyring::parse(A).unwrap());
        assert!(!auth.replace(Keyring::parse(A).unwrap()));
        assert!(auth.replace(Keyring::parse(&format!("{B},{A}")).unwrap()));
        assert_eq!(auth.keys().unwrap().len(), 2);
        assert!(!PeerAuth::insecure().is_secure());
    }

    #[test]
    fn a_secret_file_is_read_and_its_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("realtime-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, format!("{A}\n")).unwrap();
        assert_eq!(Keyring::read(&path).unwrap().len(), 1);
        std::fs::write(&path, "short\n").unwrap();
        let error = Keyring::read(&path).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()) && error.contains("5 bytes"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
