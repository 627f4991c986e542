//! The fixed-rate schedule the inserters share (`cdc`, `private`): step `k` is due at
//! `start + k·period`, and the window ends at `start + duration`. A step that is late is taken at
//! once rather than pushed back, so after a stall (the database, or this process's CPU) the
//! schedule catches up instead of drifting: the rate over the window stays the one asked for when
//! it can be kept, and how late each step was is measured ([`Pacer::lag`]) rather than hidden.

use std::time::Duration;

use tokio::time::{sleep_until, Instant};

/// Hands out the steps of one schedule.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    period: Duration,
    duration: Duration,
    next: u32,
    /// No step starts once the window is over, even if it was due inside it.
    cutoff: bool,
}

impl Pacer {
    /// A schedule starting now.
    pub fn new(period: Duration, duration: Duration) -> Pacer {
        Pacer { start: Instant::now(), period, duration, next: 0, cutoff: false }
    }

    /// A schedule starting now whose steps still due when the window ends are dropped rather than
    /// caught up: bounded in time however far behind the work fell (the shortfall shows as steps
    /// due but not taken).
    pub fn with_cutoff(period: Duration, duration: Duration) -> Pacer {
        Pacer { cutoff: true, ..Pacer::new(period, duration) }
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
        let end = self.start + self.duration;
        if at >= end || (self.cutoff && Instant::now() >= end) {
            return None;
        }
        self.next = k.checked_add(1)?;
        sleep_until(at).await;
        Some(k)
    }

    /// How late step `k` is now, in µs.
    pub fn lag_us(&self, k: u32) -> u64 {
        u64::try_from(Instant::now().saturating_duration_since(self.due(k)).as_micros()).unwrap_or(u64::MAX)
    }

    /// The window so far: the duration, or longer when the last step overran it.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed().max(self.duration)
    }
}

/// Steps a schedule of `period` makes due in `duration` (the count [`Pacer::next`] hands out).
pub fn steps_in(period: Duration, duration: Duration) -> u64 {
    if period.is_zero() {
        return u64::MAX;
    }
    (duration.as_nanos().div_ceil(period.as_nanos())) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_fill_the_window_exactly() {
        assert_eq!(steps_in(Duration::from_millis(10), Duration::from_secs(1)), 100);
        assert_eq!(steps_in(Duration::from_millis(3), Duration::from_millis(10)), 4);
        assert_eq!(steps_in(Duration::from_millis(5), Duration::ZERO), 0);
        assert_eq!(steps_in(Duration::ZERO, Duration::from_secs(1)), u64::MAX);
    }

    #[tokio::test]
    async fn a_cutoff_drops_steps_still_due_when_the_window_ends() {
        let mut pacer = Pacer::with_cutoff(Duration::from_millis(1), Duration::from_millis(20));
        assert_eq!(pacer.next().await, Some(0));
        // Fall behind past the end of the window: the 19 steps due meanwhile are not caught up.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(pacer.next().await, None);
        let mut catching_up = Pacer::new(Duration::from_millis(1), Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut n = 0;
        while catching_up.next().await.is_some() {
            n += 1;
            assert!(n <= 20);
        }
        assert_eq!(n, 20);
    }

    #[tokio::test]
    async fn hands_out_each_step_once_and_stops_at_the_window() {
        let mut pacer = Pacer::new(Duration::from_millis(2), Duration::from_millis(9));
        let mut got = Vec::new();
        while let Some(k) = pacer.next().await {
            got.push(k);
            assert!(got.len() <= 10, "the window must end");
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(got.len() as u64, steps_in(Duration::from_millis(2), Duration::from_millis(9)));
        assert!(pacer.elapsed() >= Duration::from_millis(9));
        assert_eq!(pacer.due(3) - pacer.due(1), Duration::from_millis(4));
    }
}
