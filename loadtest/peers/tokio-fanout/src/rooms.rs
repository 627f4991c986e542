//! The rooms: each room's members as the senders of their bounded writer queues, and the fan-out of
//! one published frame to every other member. Kept apart from the sockets so the no-drop rule (a full
//! queue is waited on, never skipped) lives, and is tested, in one place.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

/// An encoded WebSocket frame, its bytes shared by every member it is queued for.
pub type Frame = Bytes;

/// A member's id, unique for the server's life.
pub type MemberId = u64;

/// Every room's members. One lock, held only to walk a room without awaiting.
#[derive(Default)]
pub struct Rooms {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: MemberId,
    rooms: HashMap<String, Vec<(MemberId, Sender<Frame>)>>,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing is left half-done under the lock, so a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a member whose writer queue is `tx` to `room`.
    pub fn join(&self, room: &str, tx: Sender<Frame>) -> MemberId {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.rooms.entry(room.to_owned()).or_default().push((id, tx));
        id
    }

    /// Removes member `id` from `room` (and the room once empty).
    pub fn leave(&self, room: &str, id: MemberId) {
        let mut inner = self.lock();
        if let Some(members) = inner.rooms.get_mut(room) {
            members.retain(|(m, _)| *m != id);
            if members.is_empty() {
                inner.rooms.remove(room);
            }
        }
    }

    /// Queues `frame` (its bytes shared, not copied) for every
    /// member of `room` but `from`. Queues with room take it at once under the lock; for a full queue
    /// the publisher waits until it has room (backpressure on the publishing connection), after the
    /// lock is released. Only a member that has gone (its writer ended) does not get it. Returns how
    /// many members it was queued for.
    pub async fn publish(&self, room: &str, from: MemberId, frame: Frame) -> usize {
        let mut queued = 0;
        let mut full = Vec::new();
        {
            let inner = self.lock();
            let Some(members) = inner.rooms.get(room) else { return 0 };
            for (id, tx) in members {
                if *id == from {
                    continue;
                }
                match tx.try_send(frame.clone()) {
                    Ok(()) => queued += 1,
                    Err(TrySendError::Full(frame)) => full.push((tx.clone(), frame)),
                    Err(TrySendError::Closed(_)) => {}
                }
            }
        }
        for (tx, frame) in full {
            if tx.send(frame).await.is_ok() {
                queued += 1;
            }
        }
        queued
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc::channel;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn fans_out_to_others_and_waits_on_a_full_queue() {
        let rooms = Rooms::default();
        let (tx_a, mut rx_a) = channel(1);
        let (tx_b, mut rx_b) = channel(1);
        let (tx_c, mut rx_c) = channel(4);
        let a = rooms.join("r", tx_a);
        rooms.join("r", tx_b);
        let c = rooms.join("other", tx_c);
        assert_eq!(rooms.publish("r", a, Frame::from_static(b"1")).await, 1);
        assert!(rx_a.try_recv().is_err(), "the publisher does not get its own message");
        assert!(rx_c.try_recv().is_err(), "another room does not get it");

        // b's queue (1 slot) is full: the second publish waits until b's writer takes the first.
        let second = rooms.publish("r", a, Frame::from_static(b"2"));
        let reader = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let first = rx_b.recv().await;
            (first, rx_b.recv().await)
        };
        let (queued, (first, then)) = tokio::join!(second, reader);
        assert_eq!(queued, 1);
        assert_eq!((first, then), (Some(Frame::from_static(b"1")), Some(Frame::from_static(b"2"))));

        // A member that has gone is skipped; an empty room is removed.
        drop(rx_b);
        assert_eq!(rooms.publish("r", a, Frame::from_static(b"3")).await, 0);
        rooms.leave("r", a);
        assert_eq!(rooms.lock().rooms.get("r").map(Vec::len), Some(1));
        rooms.leave("other", c);
        assert!(!rooms.lock().rooms.contains_key("other"));
    }
}
