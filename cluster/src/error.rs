//! Why the cluster could not start or a peer frame could not be read.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cluster configuration: {0}")]
    Config(String),
    #[error("cannot bind the cluster port {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot start the cluster runtime: {0}")]
    Runtime(std::io::Error),
    /// The raft store could not be opened (a `raft::StoreError`, which converts into this; boxed so
    /// that this module does not depend on raft, which depends on it).
    #[error("raft store: {0}")]
    RaftStore(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot start raft: {0}")]
    Raft(String),
}

/// A peer frame that cannot be decoded; the link carrying it is closed.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("empty frame")]
    Empty,
    #[error("peer speaks wire version {0}, this node speaks {1}")]
    Version(u8, u8),
    #[error("peer link frame of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("undecodable frame: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("unencodable frame: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}
