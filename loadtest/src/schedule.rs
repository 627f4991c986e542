//! The fixed-rate schedule the inserters share (`cdc`, `private`): step `k` is due at
//! `start + k·period`, and the window ends at `start + duration`. A step that is late is taken at
//! once rather than pushed back, so after a stall (the database, or this process's CPU) the
//! schedule catches up instead of drifting: the rate over the window stays the one asked for when
//! it can be kept, and the window's real length is reported ([`Pacer::elapsed`]).

use std::time::Duration;

use tokio::time::{sleep_until, Instant};

/// Hands out the steps of one schedule.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    period: Duration,
    duration: Duration,
    next: u32,
}

impl Pacer {
    /// A schedule starting now.
    pub fn new(period: Duration, duration: Duration) -> Pacer {
        Pacer { start: Instant::now(), period, duration, next: 0 }
    }

    /// When step `k` is due.
    pub fn due(&self, k: u32) -> Instant {
        self.start + self.period.saturating_mul(k)
    }

    /// Waits until the next step is due and returns its number; `None` once the next step would fall
    /// outside the window (or the step count would overflow).
    pub async fn next(&mut self) -> Option<u32> {
        let k = self.next;
        let at = self.due(k);
        if at >= self.start + self.duration {
            return None;
        }
        self.next = k.checked_add(1)?;
        sleep_until(at).await;
        Some(k)
    }

    /// The window so far: the duration, or longer when the last step overran it.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed().max(self.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hands_out_each_step_once_and_stops_at_the_window() {
        let mut pacer = Pacer::new(Duration::from_millis(2), Duration::from_millis(9));
        let mut got = Vec::new();
        while let Some(k) = pacer.next().await {
            got.push(k);
            assert!(got.len() <= 10, "the window must end");
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert!(pacer.elapsed() >= Duration::from_millis(9));
        assert_eq!(pacer.due(3) - pacer.due(1), Duration::from_millis(4));
    }
}
