//! The `presence` scenario's driver: its view of each client (joined, alive, the version it tracks,
//! its recent presence calls), the choice of the next change, the kill, and the final comparison of
//! every client's view. The scenario module wires it to the clients and prints the table.
//!
//! The driver registers a change with the [`Tracker`] *before* telling the client (so no sighting is
//! missed), leaving out observers that already show the expected state, and never sends a client more
//! track/untrack calls in a window than the node allows (`--presence-max-calls` per
//! `--presence-window-ms`, plus a second of slack), since a client over the limit loses its channel.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};

use crate::presence_client::{lock, Command, PresenceShared, Spec, Status};
use crate::presence_model::PresenceModel;

/// How often [`Driver::wait`] looks again.
const POLL: Duration = Duration::from_millis(50);

/// A small xorshift generator: which client changes next (no need for more).
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.below(1_000_000) as f64) < p * 1_000_000.0
    }
}

/// The driver's side of each client.
pub struct Slot {
    pub spec: Spec,
    pub commands: mpsc::Sender<Command>,
    pub joined: bool,
    pub alive: bool,
    /// The version it tracks, as the driver asked.
    pub tracked: Option<u64>,
    /// When its recent track/untrack calls went out.
    pub calls: VecDeque<Instant>,
}

/// What a run counted, for the table.
#[derive(Default)]
pub struct Counts {
    pub tracks: u64,
    pub updates: u64,
    pub untracks: u64,
    pub rejoins: u64,
    /// Ticks when no client was idle and within its call limit.
    pub skipped: u64,
}

pub struct Driver {
    pub shared: Arc<PresenceShared>,
    pub slots: Vec<Slot>,
    pub next_version: u64,
    pub rng: Rng,
    pub counts: Counts,
    pub max_calls: usize,
    /// The node's presence window plus slack.
    pub window: Duration,
    pub rejoin_share: f64,
}

impl Driver {
    pub fn apply_status(&mut self, id: usize, status: Status) {
        match status {
            Status::Joined => self.slots[id].joined = true,
            Status::Gone => self.slots[id].alive = false,
        }
    }

    pub fn live(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.alive && s.joined)
    }

    /// The live clients on other nodes than `subject`'s, in its topic, not yet showing `expected`.
    pub fn observers(&self, subject: &Spec, expected: &[u64]) -> BTreeSet<usize> {
        self.live()
            .filter(|s| s.spec.node != subject.node && s.spec.topic == subject.topic)
            .filter(|s| lock(&self.shared.models[s.spec.id]).versions(&subject.key) != expected)
            .map(|s| s.spec.id)
            .collect()
    }

    /// Registers and sends `command` for client `id`; `false` if the client cannot take it.
    pub fn send(&mut self, id: usize, command: Command, now: Instant) -> bool {
        let expected = match command {
            Command::Track(v) => vec![v],
            Command::Untrack | Command::Rejoin => vec![],
        };
        let mut tracker = lock(&self.shared.tracker);
        let observers = self.observers(&self.slots[id].spec, &expected);
        tracker.register(&self.slots[id].spec.key, expected, observers, now);
        drop(tracker);
        let slot = &mut self.slots[id];
        if slot.commands.try_send(command).is_err() {
            lock(&self.shared.tracker).abandon(&slot.spec.key);
            return false;
        }
        slot.tracked = match command {
            Command::Track(v) => Some(v),
            _ => None,
        };
        if !matches!(command, Command::Rejoin) {
            slot.calls.push_back(now);
        }
        true
    }

    pub fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// One churn step: a random idle client within its call budget changes.
    pub fn churn(&mut self, now: Instant) {
        let n = self.slots.len();
        let start = self.rng.below(n);
        let tracker = lock(&self.shared.tracker);
        let pick = (0..n).map(|k| (start + k) % n).find(|&i| {
            let s = &self.slots[i];
            let recent = s.calls.iter().filter(|t| now.saturating_duration_since(**t) < self.window).count();
            s.alive && s.joined && !tracker.is_open(&s.spec.key) && recent < self.max_calls
        });
        drop(tracker);
        let Some(id) = pick else {
            self.counts.skipped += 1;
            return;
        };
        while self.slots[id].calls.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            self.slots[id].calls.pop_front();
        }
        let command = match self.slots[id].tracked {
            None => {
                self.counts.tracks += 1;
                Command::Track(self.version())
            }
            Some(_) if self.rng.chance(self.rejoin_share) => {
                self.counts.rejoins += 1;
                Command::Rejoin
            }
            Some(_) if self.rng.chance(0.5) => {
                self.counts.updates += 1;
                Command::Track(self.version())
            }
            Some(_) => {
                self.counts.untracks += 1;
                Command::Untrack
            }
        };
        self.send(id, command, now);
    }

    /// SIGKILLs `pid` (node `node`): its clients stop counting, the others' views are watched.
    pub fn kill(&mut self, pid: u32, node: usize) -> anyhow::Result<Instant> {
        self.shared.killed.store(node, std::sync::atomic::Ordering::Relaxed);
        let killed = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        let at = Instant::now();
        if !killed.context("running kill")?.success() {
            bail!("kill -KILL {pid} failed");
        }
        let mut clients = BTreeSet::new();
        let mut subjects = Vec::new();
        for slot in self.slots.iter_mut().filter(|s| s.spec.node == node) {
            slot.alive = false;
            clients.insert(slot.spec.id);
            subjects.push(slot.spec.key.clone());
        }
        let mut tracker = lock(&self.shared.tracker);
        let observers = self
            .live()
            .filter(|s| lock(&self.shared.models[s.spec.id]).shows_node(node))
            .map(|s| s.spec.id)
            .collect();
        tracker.killed(node, &clients, &subjects, observers, at);
        Ok(at)
    }

    /// Takes every status report waiting.
    pub fn drain(&mut self, status: &mut mpsc::UnboundedReceiver<(usize, Status)>) {
        while let Ok((id, st)) = status.try_recv() {
            self.apply_status(id, st);
        }
    }

    /// Waits (handling status reports) until `done` holds or `deadline`; returns whether it held.
    pub async fn wait(
        &mut self,
        status: &mut mpsc::UnboundedReceiver<(usize, Status)>,
        deadline: Instant,
        done: impl Fn(&Driver) -> bool,
    ) -> bool {
        loop {
            self.drain(status);
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL).await;
        }
    }

    /// Compares every live client's view with the presences the driver made in its topic and with the
    /// topic's first view; returns (views compared, mismatched, differing from the first, examples).
    pub fn final_check(&self) -> (usize, usize, usize, Vec<String>) {
        let mut expected: BTreeMap<&str, BTreeMap<String, Vec<u64>>> = BTreeMap::new();
        for slot in self.live() {
            let topic = expected.entry(slot.spec.topic.as_str()).or_default();
            if let Some(v) = slot.tracked {
                topic.insert(slot.spec.key.clone(), vec![v]);
            }
        }
        let (mut compared, mut mismatched, mut differing) = (0, 0, 0);
        let mut examples = Vec::new();
        let mut first: BTreeMap<&str, PresenceModel> = BTreeMap::new();
        for slot in self.live() {
            let model = lock(&self.shared.models[slot.spec.id]).clone();
            compared += 1;
            let want = &expected[slot.spec.topic.as_str()];
            let got = model.summary();
            if &got != want {
                mismatched += 1;
                if examples.len() < 5 {
                    let wrong = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).count();
                    let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
                    examples.push(format!(
                        "{} shows {} keys: {wrong} missing or stale, {extra} extra",
                        slot.spec.key,
                        got.len()
                    ));
                }
            }
            match first.get(slot.spec.topic.as_str()) {
                Some(reference) if reference != &model => differing += 1,
                Some(_) => {}
                None => {
                    first.insert(slot.spec.topic.as_str(), model);
                }
            }
        }
        (compared, mismatched, differing, examples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_spreads() {
        let mut rng = Rng(12_345);
        let mut seen = [0u32; 4];
        for _ in 0..4_000 {
            seen[rng.below(4)] += 1;
        }
        assert!(seen.iter().all(|n| (800..1_200).contains(n)), "{seen:?}");
        assert!(!(0..100).any(|_| rng.chance(0.0)));
        assert!((0..100).all(|_| rng.chance(1.0)));
    }
}
