//! The open-files limit (`RLIMIT_NOFILE`). Every socket holds one file, and the node needs some of its
//! own: the listener, PostgreSQL connections, peer links, raft and resume files, REST requests in
//! flight ([`RESERVED`]). A process starts with a soft limit often far below its hard one (1,024
//! against 524,288 on many systems), so at start the node raises the soft limit to the hard limit (the
//! most it may hold without privileges) and works out how many sockets fit ([`FileLimit::sockets`]).
//! Past that a handshake is refused with 503 (`Server is at its open-files limit`, counted as refusal
//! `file_limit`) instead of the listener failing to accept on EMFILE, and a limit that cannot hold
//! `REALTIME_MAX_CONNECTIONS` is named in a warning at start.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Files kept for the node's own use, beside its sockets.
pub const RESERVED: u64 = 512;

/// The open-files limit in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

impl FileLimit {
    /// How many sockets the soft limit leaves room for, beside [`RESERVED`] (unbounded when the
    /// limit is `RLIM_INFINITY`).
    pub fn sockets(&self) -> usize {
        if self.soft == nix::sys::resource::RLIM_INFINITY {
            return usize::MAX;
        }
        usize::try_from(self.soft.saturating_sub(RESERVED)).unwrap_or(usize::MAX)
    }
}

/// Raises the soft limit to the hard limit (when the kernel refuses that, as for an unlimited hard
/// limit above `fs.nr_open`, the soft limit stays); the limit in force afterwards.
pub fn raise() -> nix::Result<FileLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::debug!(%error, soft, hard, "the open-files soft limit cannot be raised to the hard one");
        }
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(FileLimit { soft, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_what_the_soft_limit_leaves_beside_the_reserve() {
        assert_eq!(FileLimit { soft: 20_000, hard: 20_000 }.sockets(), 19_488);
        assert_eq!(FileLimit { soft: 100, hard: 1_000 }.sockets(), 0, "below the reserve: none");
        assert_eq!(FileLimit { soft: u64::MAX, hard: u64::MAX }.sockets(), usize::MAX);
    }

    #[test]
    fn raising_reaches_the_hard_limit_and_stays_there() {
        let first = raise().expect("the limit can be read");
        assert!(first.soft <= first.hard);
        assert_eq!(raise().expect("again"), first, "raising twice changes nothing");
    }
}
