//! Broadcasts from sockets and REST on resumable channels are stored in `realtime.messages`, and
//! reach every subscriber (on every node) through the WAL stream like any database broadcast. That
//! gives them their position in the one order all nodes share, and makes an acknowledged message
//! durable: its `ok` (socket `ack`, REST `202`) is sent after the commit.
//!
//! One writer per node, with one connection of its own, writes in batches (one multi-row insert per
//! transaction), in the order the messages were handed to it. Handing over never waits: the queue is
//! bounded, and a full queue refuses the message at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

use super::lock;
use crate::db::pg_error_text;
use crate::vocab::{ConnId, TopicKey};

/// Messages waiting for the writer at most.
pub const QUEUE: usize = 8192;
/// Rows per insert at most.
const MAX_BATCH: usize = 512;
/// After a failed connection attempt, batches fail at once for this long instead of each waiting
/// for another attempt.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// A message's payload as stored: JSON text, or bytes for `binary_payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredPayload {
    Json(String),
    Binary(Vec<u8>),
}

/// One message to store.
#[derive(Debug)]
pub struct Write {
    pub key: TopicKey,
    pub event: String,
    pub payload: StoredPayload,
    /// The sending socket (skipped when the message comes back, unless it joined with `self`).
    pub from: Option<ConnId>,
    /// Told once the message is committed, or why it is not.
    pub done: Option<oneshot::Sender<Result<(), WriteError>>>,
}

/// Why a message was not stored (the sender's error reply says it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("ResumableWriteBusy: too many messages are waiting to be stored; try again")]
    Busy,
    #[error("ResumableWriteFailed: the message could not be stored: {0}")]
    Failed(String),
    #[error("ResumableWriteFailed: the node is stopping")]
    Stopped,
}

/// Senders of stored rows that have not come back through the stream yet, by row id.
pub type Senders = Arc<Mutex<HashMap<String, ConnId>>>;

/// Hands messages to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    queue: mpsc::Sender<Write>,
}

impl WriterHandle {
    /// Queues a message without waiting; a full queue or a stopped writer refuses it (and tells
    /// `done`).
    pub fn submit(&self, write: Write) -> Result<(), WriteError> {
        match self.queue.try_send(write) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(write)) => fail(write, WriteError::Busy),
            Err(mpsc::error::TrySendError::Closed(write)) => fail(write, WriteError::Stopped),
        }
    }

    /// Queues a message and waits for its commit.
    pub async fn store(&self, mut write: Write) -> Result<(), WriteError> {
        let (done, committed) = oneshot::channel();
        write.done = Some(done);
        self.submit(write)?;
        committed.await.unwrap_or(Err(WriteError::Stopped))
    }
}

fn fail(write: Write, error: WriteError) -> Result<(), WriteError> {
    if let Some(done) = write.done {
        let _ = done.send(Err(error.clone()));
    }
    Err(error)
}

/// Starts the writer on `arbiter`.
pub fn start(database_url: String, senders: Senders, arbiter: &actix::ArbiterHandle) -> WriterHandle {
    let (queue, writes) = mpsc::channel(QUEUE);
    arbiter.spawn(run(database_url, senders, writes));
    WriterHandle { queue }
}

const INSERT: &str =
    "insert into realtime.messages (id, topic, extension, event, payload, binary_payload, private) \
     select id::uuid, topic, 'broadcast', event, payload::jsonb, binary_payload, private \
     from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::bool[]) \
       as t(id, topic, event, payload, binary_payload, private)";

async fn run(database_url: String, senders: Senders, mut writes: mpsc::Receiver<Write>) {
    let mut client: Option<Client> = None;
    let mut failed_at: Option<tokio::time::Instant> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while writes.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if client.as_ref().is_none_or(Client::is_closed) {
            client = None;
            if failed_at.is_none_or(|at| at.elapsed() >= RECONNECT_PAUSE) {
                match tokio_postgres::connect(&database_url, NoTls).await {
                    Ok((c, connection)) => {
                        actix::spawn(async move {
                            let _ = connection.await;
                        });
                        client = Some(c);
                        failed_at = None;
                    }
                    Err(error) => {
                        tracing::warn!(error = %pg_error_text(&error), "resumable writer cannot connect");
                        failed_at = Some(tokio::time::Instant::now());
                    }
                }
            }
        }
        let result = match &client {
            Some(client) => insert(client, &senders, &batch).await,
            None => Err(WriteError::Failed("the database cannot be reached".into())),
        };
        if let Err(error) = &result {
            tracing::warn!(%error, messages = batch.len(), "resumable messages not stored");
        }
        crate::metrics::metrics().resumable_written(batch.len(), result.is_ok());
        for write in batch.drain(..) {
            if let Some(done) = write.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

/// One insert for the whole batch. The senders are known before the rows can come back.
async fn insert(client: &Client, senders: &Senders, batch: &[Write]) -> Result<(), WriteError> {
    let ids: Vec<String> = batch.iter().map(|_| uuid::Uuid::new_v4().to_string()).collect();
    {
        let mut senders = lock(senders);
        for (id, write) in ids.iter().zip(batch) {
            if let Some(from) = write.from {
                senders.insert(id.clone(), from);
            }
        }
    }
    let topics: Vec<&str> = batch.iter().map(|w| &*w.key.sub_topic).collect();
    let events: Vec<&str> = batch.iter().map(|w| w.event.as_str()).collect();
    let json: Vec<Option<&str>> = batch
        .iter()
        .map(|w| match &w.payload {
            StoredPayload::Json(text) => Some(text.as_str()),
            StoredPayload::Binary(_) => None,
        })
        .collect();
    let binary: Vec<Option<&[u8]>> = batch
        .iter()
        .map(|w| match &w.payload {
            StoredPayload::Binary(bytes) => Some(bytes.as_slice()),
            StoredPayload::Json(_) => None,
        })
        .collect();
    let private: Vec<bool> = batch.iter().map(|w| w.key.private).collect();
    let result = client.execute(INSERT, &[&ids, &topics, &events, &json, &binary, &private]).await;
    result.map(drop).map_err(|error| {
        let mut senders = lock(senders);
        for id in &ids {
            senders.remove(id);
        }
        WriteError::Failed(pg_error_text(&error))
    })
}
