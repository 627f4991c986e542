//! A few PostgreSQL connections, connected when first needed and replaced when they break. A caller
//! waits for a free connection at most [`WAIT`]; the pool never grows past its size.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

/// How long a caller waits for a connection (free, or newly made) before giving up.
const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no connection free within {0:?}")]
    Busy(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
}

pub struct Pool {
    database_url: String,
    idle: std::sync::Arc<Mutex<Vec<Client>>>,
    permits: std::sync::Arc<Semaphore>,
}

/// A connection taken from the pool; it goes back when dropped, unless it broke.
pub struct Pooled {
    client: Option<Client>,
    idle: std::sync::Arc<Mutex<Vec<Client>>>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    pub fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(client);
            }
        }
    }
}

impl Pool {
    pub fn new(database_url: &str, size: usize) -> Pool {
        Pool {
            database_url: database_url.to_owned(),
            idle: Default::default(),
            permits: std::sync::Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// A connection: an idle one, or a new one while the pool has room.
    pub async fn get(&self) -> Result<Pooled, PoolError> {
        let permit = tokio::time::timeout(WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy(WAIT))?
            .expect("the semaphore is never closed");
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(client) => client,
            None => tokio::time::timeout(WAIT, super::connect(&self.database_url))
                .await
                .map_err(|_| PoolError::Connect(format!("timed out after {WAIT:?}")))?
                .map_err(|e| PoolError::Connect(e.to_string()))?,
        };
        Ok(Pooled { client: Some(client), idle: self.idle.clone(), _permit: permit })
    }
}
