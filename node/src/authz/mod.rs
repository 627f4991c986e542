//! Private channels: who may read and write a topic is decided by the application's RLS policies on
//! `realtime.messages`, asked of PostgreSQL itself (PROTOCOL.md §6.2).
//!
//! A channel joined with `config.private: true` is authorised under the joining token's role and
//! claims, so policies written for Supabase (`realtime.topic()`, `auth.uid()`, `auth.jwt()`,
//! `realtime.messages.extension`) work unchanged:
//! - **read** (at join, again on `access_token` refresh): can the role `SELECT` a probe row of this
//!   topic for `broadcast`, and one for `presence`? The join needs one of them;
//! - **write** (the first broadcast, the first track, a private REST send): can the role `INSERT` one?
//!
//! Every check runs in a transaction that is rolled back, so nothing is left behind; a policy that
//! raises makes only that check fail (as "not allowed", logged), never the connection or other joins.
//! Decisions are cached per (topic, role, claims) until the token expires ([`cache`]), so a room of
//! many users with the same claims costs one round trip, and a refreshed token is asked again.
//! The checks use a small pool of their own connections on the DB arbiter ([`crate::db`]), apart from
//! the CDC stream's; a private join's replay (`crate::replay`) reads through it too.

pub mod cache;
pub mod checks;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::ArbiterHandle;

use crate::auth::jwt::{now_secs, Claims};
use crate::db::{Db, DbError, Pooled};
use crate::sync::lock;

pub use checks::{Extension, ReadAccess};

use cache::DecisionCache;

/// Connections kept for authorization checks.
pub const POOL_SIZE: usize = 4;
/// Decisions remembered at most (the oldest go first).
const CACHE_ENTRIES: usize = 10_000;
/// A decision is never kept longer than this, even for a token that lives longer: policies change.
const CACHE_MAX_AGE: Duration = Duration::from_secs(300);

/// Why a check could not be made (the caller refuses, the client sees an `Unauthorized` reason).
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("the authorization check failed: {0}")]
    Db(#[from] DbError),
}

/// Who is asking, and about which topic: the context the policies see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub topic: String,
    pub role: String,
    pub claims_json: String,
    pub sub: Option<String>,
}

impl Caller {
    pub fn new(topic: &str, claims: &Claims) -> Caller {
        Caller {
            topic: topic.to_owned(),
            role: claims.role.clone(),
            claims_json: serde_json::Value::Object(claims.all.clone()).to_string(),
            sub: claims.sub.clone(),
        }
    }
}

/// The node's authorizer for private channels; present when `DATABASE_URL` is set. Cheap to clone.
///
/// Checks run on the DB arbiter ([`crate::db`], where their connections live), so a slow database never
/// holds up the socket workers; a cached decision is answered without leaving the caller's thread.
#[derive(Clone)]
pub struct Authorizer {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    reads: Mutex<DecisionCache<Caller, ReadAccess>>,
    writes: Mutex<DecisionCache<(Caller, Extension), bool>>,
}

impl Authorizer {
    pub fn new(database_url: &str, arbiter: ArbiterHandle) -> Authorizer {
        let inner = Inner {
            db: Db::new(database_url, POOL_SIZE, arbiter),
            reads: Mutex::new(DecisionCache::new(CACHE_ENTRIES)),
            writes: Mutex::new(DecisionCache::new(CACHE_ENTRIES)),
        };
        Authorizer { inner: Arc::new(inner) }
    }

    /// May `caller` read the topic's broadcasts and presence? Cached until `exp` (token expiry).
    pub async fn read(&self, caller: Caller, exp: i64) -> Result<ReadAccess, AuthzError> {
        if let Some(access) = lock(&self.inner.reads).get(&caller, Instant::now()) {
            return Ok(access);
        }
        let asked = caller.clone();
        let access =
            self.with_client(move |mut c| async move { checks::read(c.client(), &asked).await }).await?;
        lock(&self.inner.reads).put(caller, access, valid_until(exp));
        Ok(access)
    }

    /// May `caller` write `extension` messages to the topic? Cached until `exp`.
    pub async fn write(&self, caller: Caller, extension: Extension, exp: i64) -> Result<bool, AuthzError> {
        let key = (caller, extension);
        if let Some(allowed) = lock(&self.inner.writes).get(&key, Instant::now()) {
            return Ok(allowed);
        }
        let asked = key.0.clone();
        let allowed = self
            .with_client(move |mut c| async move { checks::write(c.client(), &asked, extension).await })
            .await?;
        lock(&self.inner.writes).put(key, allowed, valid_until(exp));
        Ok(allowed)
    }

    /// A private channel's stored broadcasts to replay (asked once its read check has passed); on the
    /// same arbiter and connections as the checks.
    pub async fn replay(
        &self,
        sub_topic: String,
        request: crate::replay::ReplayRequest,
        max_payload: usize,
    ) -> Result<crate::replay::Replay, AuthzError> {
        self.with_client(move |mut c| async move {
            crate::replay::fetch(c.client(), &sub_topic, request, max_payload).await
        })
        .await
    }

    /// Runs `work` with a pooled connection, on the DB arbiter (where its connections live).
    async fn with_client<T, F, Fut>(&self, work: F) -> Result<T, AuthzError>
    where
        T: Send + 'static,
        F: FnOnce(Pooled) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        Ok(self.inner.db.with_client(work).await?)
    }
}

/// Until the token expires, and at most [`CACHE_MAX_AGE`].
fn valid_until(exp: i64) -> Instant {
    let left = Duration::from_secs(exp.saturating_sub(now_secs()).max(0) as u64);
    Instant::now() + left.min(CACHE_MAX_AGE)
}
