//! Whether this node can reach PostgreSQL, leader or not: asked on a connection of its own every
//! [`PROBE_EVERY`], each answer bounded by [`PROBE_TIMEOUT`], shown in `/cluster` (`database`) and as
//! the gauge `realtime_database_reachable`, and logged once per change (WARN when lost, INFO with how
//! long it was out when back).
//!
//! Only the CDC leader streams, so only it notices a lost replication stream; a follower that cannot
//! reach the database would look healthy until it led. In a cluster each answer is also handed to
//! raft as whether this node can lead ([`Reach::watch`], `ClusterHandle::set_can_lead`): a node that
//! cannot reach the database does not campaign while one that can is in reach, and a leader that
//! cannot for `REALTIME_CDC_HANDOVER_MS` hands over to one that can.
//!
//! The probe is frequent and its bound short because it decides how soon a leader that lost the
//! database is replaced: a cut path (packets dropped, nothing refused) is noticed only by a probe
//! that goes unanswered, at most [`PROBE_EVERY`] + [`PROBE_TIMEOUT`] after the cut. `select 1` on
//! an open connection answers in milliseconds; a database too slow for the bound is reported
//! unreachable by every node alike, and then nobody hands over (no node can do better).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::catalog;
use super::error::CdcError;
use crate::metrics::metrics;
use crate::sync::lock;

/// How often the database is asked.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// How long an answer (a new connection included) may take before the database counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The latest answer, shared by the probe, `/cluster` and raft.
#[derive(Debug)]
pub struct Reach {
    state: Mutex<State>,
    /// The latest answer (`None` before the first).
    reachable: watch::Sender<Option<bool>>,
}

#[derive(Debug)]
struct State {
    /// `None` until the first answer.
    reachable: Option<bool>,
    /// Since when `reachable` holds.
    since: Instant,
    /// Why it is not reachable.
    error: Option<String>,
}

impl Default for Reach {
    fn default() -> Reach {
        Reach {
            state: Mutex::new(State { reachable: None, since: Instant::now(), error: None }),
            reachable: watch::Sender::new(None),
        }
    }
}

impl Reach {
    /// `{"reachable": true|false|null, "for_ms": …, "error": …|null}` for `/cluster`.
    pub fn view(&self) -> Value {
        let state = lock(&self.state);
        let for_ms = u64::try_from(state.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        json!({ "reachable": state.reachable, "for_ms": for_ms, "error": state.error })
    }

    /// Every answer: `Some(reachable)`, `None` before the first.
    pub fn watch(&self) -> watch::Receiver<Option<bool>> {
        self.reachable.subscribe()
    }

    fn record(&self, answer: Result<(), String>) {
        let mut state = lock(&self.state);
        let reachable = answer.is_ok();
        self.reachable.send_if_modified(|current| current.replace(reachable) != Some(reachable));
        metrics().database_reachable.set(if reachable { 1.0 } else { 0.0 });
        let was = state.reachable.replace(reachable);
        match (was, answer) {
            (Some(true) | None, Err(error)) => {
                tracing::warn!(%error, "PostgreSQL is not reachable from this node");
                state.since = Instant::now();
                state.error = Some(error);
            }
            (Some(false), Err(error)) => state.error = Some(error),
            (Some(false), Ok(())) => {
                tracing::info!(down_for = ?state.since.elapsed(), "PostgreSQL is reachable again from this node");
                state.since = Instant::now();
                state.error = None;
            }
            (None, Ok(())) => state.since = Instant::now(),
            (Some(true), Ok(())) => {}
        }
    }
}

/// Tells raft, on every change, whether this node can lead: it can unless the last probe went
/// unanswered (before the first answer it counts as able, as a node without a database would).
pub async fn share(reach: Arc<Reach>, cluster: realtime_cluster::ClusterHandle) {
    let mut answers = reach.watch();
    loop {
        let reachable = *answers.borrow_and_update();
        cluster.set_can_lead(reachable != Some(false));
        if answers.changed().await.is_err() {
            return;
        }
    }
}

/// Asks the database every [`PROBE_EVERY`] until the task is dropped.
pub async fn probe(reach: Arc<Reach>, database_url: String) {
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reused = client.take().filter(|c| !c.is_closed());
        let ask = async {
            let client = match reused {
                Some(client) => client,
                None => catalog::connect(&database_url).await?,
            };
            client.simple_query("select 1").await?;
            Ok::<_, CdcError>(client)
        };
        // A connection that did not answer in time is dropped: the next probe opens another.
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, ask).await {
            Ok(Ok(answered)) => {
                client = Some(answered);
                Ok(())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        reach.record(answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_follows_the_answers() {
        let reach = Reach::default();
        assert_eq!(reach.view()["reachable"], Value::Null);
        let answers = reach.watch();
        reach.record(Ok(()));
        assert_eq!(reach.view()["reachable"], true);
        assert_eq!(*answers.borrow(), Some(true));
        reach.record(Err("refused".into()));
        assert_eq!(*answers.borrow(), Some(false));
        let view = reach.view();
        assert_eq!((view["reachable"].clone(), view["error"].clone()), (json!(false), json!("refused")));
        reach.record(Ok(()));
        assert_eq!(
            (reach.view()["reachable"].clone(), reach.view()["error"].clone()),
            (json!(true), Value::Null)
        );
    }
}
