//! The node-wide watchdog: closes sockets whose queued frames make no write progress for the write
//! timeout, and aborts connections whose close frame could not be written within the close grace.
//!
//! It runs on its own task and only reads outbox state, so it works even when every socket actor or
//! connection task involved is stuck.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::outbox::Outbox;
use crate::close::SlowCause;

/// Outboxes that started closing and whose connection may still be open.
#[derive(Debug, Default)]
pub struct Closing(Mutex<Vec<Outbox>>);

impl Closing {
    pub(super) fn add(&self, outbox: Outbox) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(outbox);
    }

    /// Aborts the overdue, forgets the finished; returns how many were aborted.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut aborted = 0;
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|outbox| match outbox.overdue(now) {
            None => false,
            Some(false) => true,
            Some(true) => {
                outbox.abort();
                aborted += 1;
                false
            }
        });
        aborted
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How often the watchdog looks, for a given write timeout.
pub fn tick(write_timeout: Duration) -> Duration {
    (write_timeout / 4).clamp(Duration::from_millis(25), Duration::from_secs(1))
}

/// One round: closes the stalled among `live`, then sweeps `closing`.
pub fn check(live: &[Outbox], closing: &Closing, write_timeout: Duration, now: Instant) {
    for outbox in live {
        if outbox.stalled(now, write_timeout) {
            outbox.close_slow(SlowCause::WriteTimeout);
        }
    }
    let aborted = closing.sweep(now);
    if aborted > 0 {
        tracing::debug!(aborted, "connections aborted: close frame not written in time");
    }
}

/// Runs until aborted: each [`tick`], checks the outboxes `live` returns (every live socket's) and
/// sweeps `closing`.
pub async fn run(write_timeout: Duration, closing: Arc<Closing>, live: impl Fn() -> Vec<Outbox>) {
    let mut interval = tokio::time::interval(tick(write_timeout));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        check(&live(), &closing, write_timeout, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Link, OutboxLimits, WireFrame};

    #[test]
    fn stalled_sockets_are_closed_then_aborted_after_the_grace() {
        let closing = Arc::new(Closing::default());
        let limits = OutboxLimits { max_bytes: 100, max_frames: 10, close_grace: Duration::from_secs(10) };
        let link = Link::default();
        let outbox = Outbox::new(limits, link.clone(), closing.clone());
        outbox.offer(WireFrame::Text("x".into()), None);
        let now = Instant::now();
        check(std::slice::from_ref(&outbox), &closing, Duration::from_secs(1), now);
        assert!(outbox.is_open(), "not stalled yet");
        let later = now + Duration::from_secs(2);
        check(std::slice::from_ref(&outbox), &closing, Duration::from_secs(1), later);
        assert!(!outbox.is_open(), "stalled: closed");
        assert_eq!(closing.len(), 1);
        assert!(!link.is_aborted(), "within the grace");
        check(&[], &closing, Duration::from_secs(1), later + Duration::from_secs(20));
        assert!(link.is_aborted(), "close frame never written: aborted");
        assert!(closing.is_empty());
    }
}
