//! Who a member is: its stable name, the run (incarnation) and the rejoin epoch, and where it listens.
//!
//! A restarted node keeps its name but gets a new incarnation, so peers never mistake it for a stale
//! view of its old self; a node that was declared down while alive (a long pause, a partition) renews
//! its epoch and rejoins, and its presence entries come back under the new epoch.

use std::fmt;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A member's identity in SWIM membership (foca).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId {
    pub node: NodeId,
    pub incarnation: u64,
    pub epoch: u64,
    pub addr: SocketAddr,
}

impl PeerId {
    /// This run's identity: the incarnation is the start time in microseconds, which only grows across
    /// restarts of one node.
    pub fn start(node: NodeId, addr: SocketAddr) -> PeerId {
        let incarnation =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(1);
        PeerId { node, incarnation, epoch: 0, addr }
    }

    /// A stand-in for a seed address whose identity is not known yet: announcements go to its
    /// address, and the answer comes from the real identity.
    pub fn seed(addr: SocketAddr) -> PeerId {
        PeerId { node: NodeId(format!("seed {addr}")), incarnation: 0, epoch: 0, addr }
    }

    /// The `(incarnation, epoch)` pair that orders two identities of one node.
    pub fn run(&self) -> (u64, u64) {
        (self.incarnation, self.epoch)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}.{}@{}", self.node, self.incarnation, self.epoch, self.addr)
    }
}

impl foca::Identity for PeerId {
    /// Members are unique by address: a seed is only known by its address, and foca accepts an
    /// announcement addressed to any identity with our address. A restarted pod on a new IP is a new
    /// member; its old address is declared down by the detector, and the driver keys links and
    /// presence by node name and run, so the newer run wins there.
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(PeerId { epoch: self.epoch + 1, ..self.clone() })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.run() > adversary.run()
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    #[test]
    fn a_restart_and_a_renewal_win_over_the_old_identity() {
        let addr: SocketAddr = "127.0.0.1:4100".parse().unwrap();
        let old = PeerId { node: NodeId("a".into()), incarnation: 5, epoch: 3, addr };
        let renewed = old.renew().unwrap();
        assert_eq!(renewed.epoch, 4);
        assert!(renewed.win_addr_conflict(&old) && !old.win_addr_conflict(&renewed));
        let restarted = PeerId { incarnation: 6, epoch: 0, ..old.clone() };
        assert!(restarted.win_addr_conflict(&renewed));
        assert_eq!(old.addr(), restarted.addr());
    }
}
