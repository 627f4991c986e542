//! The node's own PostgreSQL work, apart from the replication stream: how a connection is opened
//! ([`connect`], the CDC pipeline's too), and small pools of connections ([`pool`]) whose queries all
//! run on one actix arbiter of their own (the "DB arbiter").
//!
//! Why an arbiter: a `tokio_postgres` connection is driven by a task on the thread that made it, and
//! HTTP workers and socket actors must never wait on a slow database. So every query is spawned onto
//! the DB arbiter and its result sent back ([`Db::with_client`]); the caller only awaits a oneshot.
//! The private channels' RLS checks ([`crate::authz`]) and the notifications inbox
//! ([`crate::inbox`]) each have a [`Db`] with a pool of their own (so a burst of inbox queries cannot
//! starve join checks), on the same arbiter; the resumable channels' writer
//! ([`crate::resume::writer`]) runs there too, on one connection of its own.

pub mod client;
pub mod pool;

use std::sync::Arc;

use actix::ArbiterHandle;

pub use client::{connect, pg_error_text, ConnectError};
pub use pool::{Pool, PoolError, Pooled};

/// Why a piece of database work did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database could not be reached: {0}")]
    Pool(#[from] PoolError),
    #[error("{0}")]
    Query(String),
    #[error("the node is stopping")]
    Stopped,
}

/// A pool of connections and the arbiter its queries run on. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Arc<Pool>,
    arbiter: ArbiterHandle,
}

impl Db {
    /// At most `size` connections to `database_url`, used on `arbiter` (the DB arbiter).
    pub fn new(database_url: &str, size: usize, arbiter: ArbiterHandle) -> Db {
        Db { pool: Arc::new(Pool::new(database_url, size)), arbiter }
    }

    /// Runs `work` with a pooled connection, on the DB arbiter (where the connections live).
    pub async fn with_client<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(Pooled) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let pool = self.pool.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = self.arbiter.spawn(async move {
            let result = match pool.get().await {
                Ok(client) => work(client).await.map_err(|e| DbError::Query(pg_error_text(&e))),
                Err(error) => Err(error.into()),
            };
            let _ = tx.send(result);
        });
        if !spawned {
            return Err(DbError::Stopped);
        }
        rx.await.map_err(|_| DbError::Stopped)?
    }
}
