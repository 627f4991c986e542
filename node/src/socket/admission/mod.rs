//! Join admission as an ordered pipeline of checks (PROTOCOL.md §2.4–2.7, issue 18).
//!
//! The checks a `phx_join` passes before the socket asks for a channel are a pure function of the
//! join and of what the socket and node know, so they live here rather than inline between the
//! actor's I/O: which refusal a client reads when several apply is then decided, and tested, in one
//! place ([`tests`]). The actor ([`super::join`]) gathers the facts, calls the stages and does the I/O.
//!
//! Two stages, because the actor acts between them:
//! 1. [`sub_topic`]: a topic without the `realtime:` prefix is answered `unmatched topic` at once (a
//!    plain error reply, without the refusal delay). Past it, the actor closes a channel this socket
//!    already joined on that topic, whatever the rest decides.
//! 2. [`admit`]: the checks of [`CHECKS`], in that order; the first that fails gives the [`Refused`]
//!    whose `Display` is the join's `reason`. The last two spend a rate (the token's and the node's
//!    joins per second), so they run only once every other check passed; they and the other facts
//!    that need the node's state (token verification, resumable topics) come through [`Gates`].
//!
//! Not here: the socket's own joins per second, counted as the frame arrives whatever becomes of the
//! join (`SocketActor::count_join`); the channel's capacity and a private channel's RLS check, which
//! need the registry and the database and come after.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use realtime_proto::join::JoinConfig;
use realtime_proto::system::reason;
use realtime_proto::topic;
use thiserror::Error;

use crate::auth::jwt::{Claims, TokenError};
use crate::budget::{Budget, BudgetError};
use crate::cdc::notifications;
use crate::metrics::Refusal;
use crate::replay::{self, ReplayRequest};
use crate::resume::{self, Position};
use crate::vocab::TopicKey;

/// One check of [`admit`]; their order is [`CHECKS`] (and `Ord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// The node is draining.
    Draining,
    /// `realtime:` with nothing after it.
    TopicName,
    /// The socket already holds its most channels.
    ChannelsPerSocket,
    /// The join's token (or the socket's) does not verify.
    Token,
    /// A `notifications:<user>` inbox joined by anyone but that user.
    InboxOwner,
    /// The join's config over its budget (presence key, `postgres_changes`).
    Budget,
    /// `broadcast.replay` on a public channel.
    ReplayOnPublic,
    /// A private channel on a node without RLS authorization.
    PrivateAvailable,
    /// An unreadable `broadcast.replay`.
    Replay,
    /// An unreadable `broadcast.resume`.
    Resume,
    /// `broadcast.resume` on a topic that keeps no resumable stream.
    ResumeAvailable,
    /// A public channel on a node that allows only private ones.
    PrivateOnly,
    /// The token's joins per second, across sockets.
    TokenRate,
    /// The node's joins per second.
    NodeRate,
}

/// The checks in the order [`admit`] runs them: the reference's order, then this server's own.
pub const CHECKS: [Check; 14] = [
    Check::Draining,
    Check::TopicName,
    Check::ChannelsPerSocket,
    Check::Token,
    Check::InboxOwner,
    Check::Budget,
    Check::ReplayOnPublic,
    Check::PrivateAvailable,
    Check::Replay,
    Check::Resume,
    Check::ResumeAvailable,
    Check::PrivateOnly,
    Check::TokenRate,
    Check::NodeRate,
];

/// A topic without the `realtime:` prefix: no channel can have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{}", reason::UNMATCHED_TOPIC)]
pub struct UnmatchedTopic;

/// Why a join was refused; the `Display` text is the reply's `reason`, as the client reads it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refused {
    #[error("{}", reason::SHUTTING_DOWN)]
    Draining,
    #[error("{}", reason::TOPIC_NAME_REQUIRED)]
    TopicNameRequired,
    #[error("{}", reason::TOO_MANY_CHANNELS)]
    TooManyChannels,
    #[error("{}", .0.join_reason())]
    Token(TokenError),
    /// The inbox's sub-topic.
    #[error("{}", reason::unauthorized_read(.0))]
    NotInboxOwner(String),
    #[error("{0}")]
    Budget(BudgetError),
    #[error("{}", reason::REPLAY_ON_PUBLIC)]
    ReplayOnPublic,
    #[error("{}", reason::PRIVATE_UNAVAILABLE)]
    PrivateUnavailable,
    /// [`replay::parse`]'s reason.
    #[error("{0}")]
    Replay(String),
    /// [`resume::parse_request`]'s reason.
    #[error("{0}")]
    Resume(String),
    #[error("{}", reason::RESUME_UNAVAILABLE)]
    ResumeUnavailable,
    #[error("{}", reason::PRIVATE_ONLY)]
    PrivateOnly,
    #[error("{}", reason::TOO_MANY_JOINS)]
    TokenJoinRate,
    #[error("{}", reason::TOO_MANY_JOINS)]
    NodeJoinRate,
}

impl Refused {
    /// The check that refused.
    pub fn check(&self) -> Check {
        match self {
            Refused::Draining => Check::Draining,
            Refused::TopicNameRequired => Check::TopicName,
            Refused::TooManyChannels => Check::ChannelsPerSocket,
            Refused::Token(_) => Check::Token,
            Refused::NotInboxOwner(_) => Check::InboxOwner,
            Refused::Budget(_) => Check::Budget,
            Refused::ReplayOnPublic => Check::ReplayOnPublic,
            Refused::PrivateUnavailable => Check::PrivateAvailable,
            Refused::Replay(_) => Check::Replay,
            Refused::Resume(_) => Check::Resume,
            Refused::ResumeUnavailable => Check::ResumeAvailable,
            Refused::PrivateOnly => Check::PrivateOnly,
            Refused::TokenJoinRate => Check::TokenRate,
            Refused::NodeJoinRate => Check::NodeRate,
        }
    }

    /// The refusal counter it increments, if any (a malformed replay or resume request counts none).
    pub fn metric(&self) -> Option<Refusal> {
        match self {
            Refused::Draining => Some(Refusal::Draining),
            Refused::TooManyChannels => Some(Refusal::ChannelsPerClient),
            Refused::Token(_) => Some(Refusal::InvalidToken),
            Refused::NotInboxOwner(_) | Refused::PrivateUnavailable | Refused::PrivateOnly => {
                Some(Refusal::PrivateChannel)
            }
            Refused::Budget(_) => Some(Refusal::Budget),
            Refused::TokenJoinRate => Some(Refusal::TokenJoinRate),
            Refused::NodeJoinRate => Some(Refusal::JoinRate),
            Refused::TopicNameRequired
            | Refused::ReplayOnPublic
            | Refused::Replay(_)
            | Refused::Resume(_)
            | Refused::ResumeUnavailable => None,
        }
    }
}

/// The join as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The topic after `realtime:` ([`sub_topic`]).
    pub sub_topic: &'a str,
    /// The payload's `access_token`, if any.
    pub access_token: Option<&'a str>,
    pub config: &'a JoinConfig,
}

/// What the socket and node know when the join is decided: plain values.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub draining: bool,
    /// Channels this socket holds (a channel replaced by this join no longer counts).
    pub channels: usize,
    pub max_channels: usize,
    pub budget: &'a Budget,
    /// The token the socket connected (or last refreshed) with.
    pub socket_token: &'a Arc<str>,
    /// RLS authorization is configured (`DATABASE_URL`), so private channels can be checked.
    pub private_available: bool,
    /// `REALTIME_PRIVATE_ONLY`.
    pub private_only: bool,
}

/// What the pipeline asks of the node's state. The two rates are spent when asked: [`admit`] asks
/// them last and only when every other check passed, the token's before the node's.
pub trait Gates {
    /// Verifies a token now.
    fn verify(&self, token: &str) -> Result<Claims, TokenError>;
    /// Whether broadcasts on `key` are stored with positions (`REALTIME_RESUMABLE_TOPICS`).
    fn is_resumable(&self, key: &TopicKey) -> bool;
    /// Spends one of the joins per second of `key` (a token's subject, or the token).
    fn allow_token_join(&mut self, key: &str) -> bool;
    /// Spends one of the node's joins per second.
    fn allow_node_join(&mut self) -> bool;
}

/// An admitted join: what the actor needs to build the channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The token the channel runs under (the socket's own allocation when it is the socket's).
    pub token: Arc<str>,
    pub claims: Claims,
    pub replay: Option<ReplayRequest>,
    /// Resume after this position; `None` also for a resume at the live end.
    pub resume: Option<Position>,
}

/// Stage one: the sub-topic of `topic`.
pub fn sub_topic(topic: &str) -> Result<&str, UnmatchedTopic> {
    topic::sub_topic(topic).ok_or(UnmatchedTopic)
}

/// Stage two: runs [`CHECKS`] in order and answers the first refusal, or the admitted join.
pub fn admit(request: &Request<'_>, facts: &Facts<'_>, gates: &mut impl Gates) -> Result<Admitted, Refused> {
    let config = request.config;
    open(facts)?;
    named(request.sub_topic)?;
    room_on_socket(facts)?;
    let token = token_for(request.access_token, facts.socket_token);
    let claims = gates.verify(&token).map_err(Refused::Token)?;
    inbox_owner(request.sub_topic, &claims)?;
    facts.budget.check_join(config).map_err(Refused::Budget)?;
    replay_on_private(config)?;
    private_available(config, facts)?;
    let replay = config.broadcast.replay.as_ref().map(replay::parse).transpose().map_err(Refused::Replay)?;
    let resume = match config.broadcast.resume.as_ref().map(resume::parse_request) {
        None => None,
        Some(parsed) => parsed.map_err(Refused::Resume)?,
    };
    resumable(request, gates)?;
    private_allowed(config, facts)?;
    // The same user flooding from many sockets: per identified user (the token's `sub`). A token
    // without one is every anonymous visitor's (the anon key): one bucket for all of them would let a
    // crowd of visitors be refused while the node has room, so they are held per socket (the
    // socket's join rate) and by the node's rate instead.
    if let Some(user) = claims.sub.as_deref() {
        if !gates.allow_token_join(user) {
            return Err(Refused::TokenJoinRate);
        }
    }
    if !gates.allow_node_join() {
        return Err(Refused::NodeJoinRate);
    }
    Ok(Admitted { token, claims, replay, resume })
}

/// The token the channel runs under: the join's own, unless absent or an `sb_…` API key (not a JWT),
/// then the socket's (shared, also when the join repeats the socket's token).
pub fn token_for(access_token: Option<&str>, socket_token: &Arc<str>) -> Arc<str> {
    match access_token {
        Some(token) if !token.starts_with("sb_") && token != &**socket_token => token.into(),
        _ => Arc::clone(socket_token),
    }
}

fn open(facts: &Facts<'_>) -> Result<(), Refused> {
    if facts.draining {
        return Err(Refused::Draining);
    }
    Ok(())
}

fn named(sub_topic: &str) -> Result<(), Refused> {
    if sub_topic.is_empty() {
        return Err(Refused::TopicNameRequired);
    }
    Ok(())
}

fn room_on_socket(facts: &Facts<'_>) -> Result<(), Refused> {
    if facts.channels >= facts.max_channels {
        return Err(Refused::TooManyChannels);
    }
    Ok(())
}

/// A notifications inbox is its user's alone (public or private).
fn inbox_owner(sub_topic: &str, claims: &Claims) -> Result<(), Refused> {
    if notifications::owner_of(sub_topic).is_some_and(|owner| claims.sub.as_deref() != Some(owner)) {
        return Err(Refused::NotInboxOwner(sub_topic.to_owned()));
    }
    Ok(())
}

fn replay_on_private(config: &JoinConfig) -> Result<(), Refused> {
    if config.broadcast.replay.is_some() && !config.private {
        return Err(Refused::ReplayOnPublic);
    }
    Ok(())
}

fn private_available(config: &JoinConfig, facts: &Facts<'_>) -> Result<(), Refused> {
    if config.private && !facts.private_available {
        return Err(Refused::PrivateUnavailable);
    }
    Ok(())
}

fn resumable(request: &Request<'_>, gates: &impl Gates) -> Result<(), Refused> {
    let config = request.config;
    if config.broadcast.resume.is_some() {
        let key = TopicKey { sub_topic: request.sub_topic.into(), private: config.private };
        if !gates.is_resumable(&key) {
            return Err(Refused::ResumeUnavailable);
        }
    }
    Ok(())
}

fn private_allowed(config: &JoinConfig, facts: &Facts<'_>) -> Result<(), Refused> {
    if !config.private && facts.private_only {
        return Err(Refused::PrivateOnly);
    }
    Ok(())
}
