//! Rate windows used by the limits of PROTOCOL.md §7 and DESIGN.md's configuration contract.
//!
//! [`RateWindow`] is owned by one actor (events per socket, presence calls per channel);
//! [`SharedRate`] is shared by every worker thread (joins per node, REST messages per node);
//! [`KeyedRate`] is one window per key across threads (joins and REST messages per token per second,
//! inbox GraphQL operations per user per minute). All count in fixed windows: cheap, and exact about "at most N per
//! window".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most `limit` events per `window`, for a single owner.
#[derive(Debug, Clone)]
pub struct RateWindow {
    limit: u32,
    window: Duration,
    started: Instant,
    count: u32,
}

impl RateWindow {
    pub fn new(limit: u32, window: Duration) -> RateWindow {
        RateWindow::starting(limit, window, Instant::now())
    }

    /// A window whose first period starts at `now`.
    pub fn starting(limit: u32, window: Duration, now: Instant) -> RateWindow {
        RateWindow { limit, window, started: now, count: 0 }
    }

    /// Whether one more event at `now` would be allowed (nothing is counted).
    pub fn would_allow(&self, now: Instant) -> bool {
        now.duration_since(self.started) >= self.window || self.count < self.limit
    }

    /// Whether the current window is over, so this window remembers nothing.
    pub fn is_idle(&self, now: Instant) -> bool {
        now.duration_since(self.started) >= self.window
    }

    /// Counts one event at `now`; `false` when it is over the limit.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.allow_n(1, now)
    }

    /// Counts `n` events at `now`; `false` (and nothing counted) when they would pass the limit.
    pub fn allow_n(&mut self, n: u32, now: Instant) -> bool {
        if now.duration_since(self.started) >= self.window {
            self.started = now;
            self.count = 0;
        }
        match self.count.checked_add(n) {
            Some(count) if count <= self.limit => {
                self.count = count;
                true
            }
            _ => false,
        }
    }
}

/// At most `limit` events per window per key (a token, a user), across threads. Keys are hashed with a
/// random key so clients cannot aim collisions. Memory is bounded: once the table holds `max_keys`, a
/// new key first makes it forget every idle key (whose window is over, so it remembers nothing), and
/// is refused only if all `max_keys` are still inside their window.
#[derive(Debug)]
pub struct KeyedRate {
    limit: u32,
    window: Duration,
    max_keys: usize,
    hasher: std::collections::hash_map::RandomState,
    windows: std::sync::Mutex<std::collections::HashMap<u64, RateWindow>>,
}

impl KeyedRate {
    const MAX_KEYS: usize = 65_536;

    pub fn per_second(limit: u32) -> KeyedRate {
        KeyedRate::new(limit, Duration::from_secs(1), Self::MAX_KEYS)
    }

    pub fn per_minute(limit: u32) -> KeyedRate {
        KeyedRate::new(limit, Duration::from_secs(60), Self::MAX_KEYS)
    }

    /// At most `limit` per `window` per key, remembering at most `max_keys` keys.
    pub fn new(limit: u32, window: Duration, max_keys: usize) -> KeyedRate {
        KeyedRate { limit, window, max_keys, hasher: Default::default(), windows: Default::default() }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, key: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// Whether `key` may have one more event now (nothing is counted).
    pub fn would_allow(&self, key: &str, now: Instant) -> bool {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(&self.slot(key)) {
            Some(window) => window.would_allow(now),
            None => true,
        }
    }

    /// Counts one event for `key` now; `false` when over the limit.
    pub fn allow(&self, key: &str, now: Instant) -> bool {
        self.allow_n(key, 1, now)
    }

    /// Counts `n` events for `key` now; `false` (and nothing counted) when they would pass the limit.
    pub fn allow_n(&self, key: &str, n: u32, now: Instant) -> bool {
        let slot = self.slot(key);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= self.max_keys && !windows.contains_key(&slot) {
            windows.retain(|_, w| !w.is_idle(now));
            if windows.len() >= self.max_keys {
                return false;
            }
        }
        let (limit, window) = (self.limit, self.window);
        windows.entry(slot).or_insert_with(|| RateWindow::starting(limit, window, now)).allow_n(n, now)
    }
}

/// At most `limit` events per second across threads. One atomic word holds the window's second (high
/// 32 bits) and its count (low 32 bits), so a window change and a count never tear.
#[derive(Debug)]
pub struct SharedRate {
    limit: u32,
    epoch: Instant,
    state: AtomicU64,
}

impl SharedRate {
    pub fn per_second(limit: u32) -> SharedRate {
        SharedRate { limit, epoch: Instant::now(), state: AtomicU64::new(0) }
    }

    /// Counts `n` events now; `false` (and nothing counted) when they would pass the limit.
    pub fn allow(&self, n: u32) -> bool {
        self.allow_at(n, Instant::now())
    }

    fn allow_at(&self, n: u32, now: Instant) -> bool {
        let second = now.duration_since(self.epoch).as_secs() as u32 as u64;
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (window, count) = (current >> 32, current & 0xffff_ffff);
            let count = if window == second { count } else { 0 };
            let next = count + u64::from(n);
            if next > u64::from(self.limit) {
                return false;
            }
            match self.state.compare_exchange_weak(
                current,
                (second << 32) | next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_resets() {
        let mut w = RateWindow::new(2, Duration::from_secs(1));
        let t0 = w.started;
        assert!(w.allow(t0) && w.allow(t0));
        assert!(!w.allow(t0 + Duration::from_millis(500)));
        assert!(w.allow(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn keyed_rates_are_separate_and_peeking_counts_nothing() {
        let r = KeyedRate::per_second(2);
        let now = Instant::now();
        assert!(r.would_allow("a", now));
        assert!(r.allow("a", now) && r.allow("a", now));
        assert!(!r.would_allow("a", now) && !r.allow("a", now));
        assert!(r.allow("b", now), "another key has its own window");
        assert!(r.allow("a", now + Duration::from_secs(1)));
        let mut w = RateWindow::new(1, Duration::from_secs(1));
        assert!(w.would_allow(now) && w.would_allow(now));
        assert!(w.allow(now) && !w.would_allow(now));
    }

    #[test]
    fn batches_count_whole_or_not_at_all() {
        let r = KeyedRate::per_second(5);
        let now = Instant::now();
        assert!(r.allow_n("a", 3, now));
        assert!(!r.allow_n("a", 3, now), "3 + 3 > 5: refused, nothing counted");
        assert!(r.allow_n("a", 2, now));
        assert!(!r.allow("a", now));
        assert!(r.allow_n("b", 5, now), "another key has its own budget");
        assert!(!r.allow_n("c", u32::MAX, now) && r.allow_n("c", 5, now), "no overflow");
        assert!(r.allow_n("a", 5, now + Duration::from_secs(1)));
    }

    #[test]
    fn a_minute_window_counts_per_key_and_resets_after_a_minute() {
        let r = KeyedRate::per_minute(3);
        let t0 = Instant::now();
        assert!((0..3).all(|i| r.allow("u1", t0 + Duration::from_secs(i))));
        assert!(!r.allow("u1", t0 + Duration::from_secs(59)), "the 4th within the minute");
        assert!(r.allow("u2", t0 + Duration::from_secs(59)), "another user is not affected");
        assert!(r.allow("u1", t0 + Duration::from_secs(60)), "a new minute");
    }

    #[test]
    fn keyed_rate_forgets_idle_keys_and_stays_bounded() {
        let r = KeyedRate::new(1, Duration::from_secs(60), 3);
        let t0 = Instant::now();
        assert!(r.allow("a", t0) && r.allow("b", t0) && r.allow("c", t0));
        assert_eq!(r.len(), 3);
        // Full, and every key is inside its window: a new key is refused rather than growing the table.
        assert!(!r.allow("d", t0 + Duration::from_secs(30)));
        assert_eq!(r.len(), 3);
        // Once their minute is over the idle keys are forgotten to make room.
        assert!(r.allow("d", t0 + Duration::from_secs(61)));
        assert_eq!(r.len(), 1);
        assert!(r.allow("a", t0 + Duration::from_secs(61)), "a forgotten key starts afresh");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn shared_rate_counts_batches() {
        let r = SharedRate::per_second(5);
        let t0 = r.epoch;
        assert!(r.allow_at(3, t0));
        assert!(!r.allow_at(3, t0), "3 + 3 > 5");
        assert!(r.allow_at(2, t0));
        assert!(!r.allow_at(1, t0));
        assert!(r.allow_at(5, t0 + Duration::from_secs(1)));
    }
}
