//! The order a member's messages go out in, decided without I/O so it can be tested case by case
//! (`ordering_test.rs`); [`super::ChannelActor`] applies the decisions (encodes once, offers to the
//! member's outbox).
//!
//! Two decisions matter:
//! - [`route`]: what one member does with one live broadcast: skip it (its own without `self`, a row
//!   its replay already had, a resumable message it was sent or will get from the log), hold it
//!   (its join reply is not out yet), or send it. A resumable channel's position only moves forward.
//! - [`plan_reply`]: once the join reply is out, what goes first: the replayed rows, then what a
//!   resume owes (after a gap notice when the log no longer holds all of it), then the live messages
//!   held meanwhile minus those the replay had; and where the member then stands in the stream.

use std::collections::HashSet;
use std::sync::Arc;

use super::messages::{Held, Resuming};
use crate::replay::Replay;
use crate::resume::{Owed, Position};
use crate::vocab::{BroadcastBody, ConnId};

/// What one member does with one live broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Skip,
    /// Its join reply is not out yet: kept until it is.
    Hold,
    Send,
}

/// What [`route`] needs of a member.
pub struct Receiver<'a> {
    pub conn: ConnId,
    pub receives_broadcasts: bool,
    pub self_broadcast: bool,
    pub skip_live: Option<&'a HashSet<Arc<str>>>,
    /// Where it stands in a resumable channel's stream; moved forward by a resumable message.
    pub resume: &'a mut Resuming,
    /// It holds live frames until its join reply is out, and has room for this one.
    pub holding: bool,
}

/// What one broadcast is, for [`route`].
#[derive(Debug, Clone, Copy)]
pub struct Live<'a> {
    /// The sending connection on this node.
    pub from: Option<ConnId>,
    /// The row id of a stored message.
    pub id: Option<&'a Arc<str>>,
    /// Its position, when its channel is resumable.
    pub position: Option<Position>,
}

/// What `member` does with `live` (see the module doc).
pub fn route(member: Receiver<'_>, live: Live<'_>) -> Route {
    if !member.receives_broadcasts {
        return Route::Skip;
    }
    if let Some(position) = live.position {
        // A resumable channel's message: once per member, in order, after what it was owed.
        match *member.resume {
            Resuming::Pending { .. } => return Route::Skip,
            Resuming::After(Some(sent)) if position <= sent => return Route::Skip,
            Resuming::After(_) => *member.resume = Resuming::After(Some(position)),
            Resuming::Live | Resuming::Requested(_) => {}
        }
    }
    if Some(member.conn) == live.from && !member.self_broadcast {
        return Route::Skip;
    }
    if let (Some(skip), Some(id)) = (member.skip_live, live.id) {
        if skip.contains(id) {
            return Route::Skip; // replayed to it at join
        }
    }
    if member.holding {
        Route::Hold
    } else {
        Route::Send
    }
}

/// One thing a member is sent after its join reply, in order.
#[derive(Debug)]
pub enum Out {
    /// A replayed row, or a message a resume owes.
    Body(BroadcastBody),
    /// The resume cannot be filled from `after`: some messages are no longer held here.
    ResumeGap { after: Position },
    /// A live message held while the reply was not out.
    Held(Held),
}

/// What follows a member's join reply, and where it then stands.
#[derive(Debug)]
pub struct ReplyPlan {
    pub out: Vec<Out>,
    /// Its place in the resumable stream from now on, if it resumed.
    pub resume: Option<Resuming>,
    /// Row ids its replay had: those live broadcasts are skipped from now on.
    pub skip_live: Option<Arc<HashSet<Arc<str>>>>,
}

/// What a member whose reply is out is sent (see the module doc). `owed`: when it asked to resume
/// (`Resuming::Pending { after, baseline }`), what the log owes it after `after`.
pub fn plan_reply(
    replay: Replay,
    owed: Option<(Position, Option<Position>, Owed)>,
    held: Vec<Held>,
) -> ReplyPlan {
    let mut out: Vec<Out> = replay.bodies.into_iter().map(Out::Body).collect();
    let resume = owed.map(|(after, baseline, owed)| {
        let mut sent = if owed.gap { baseline } else { Some(after) };
        if owed.gap {
            out.push(Out::ResumeGap { after });
        }
        for (position, body) in owed.messages {
            out.push(Out::Body(body));
            sent = sent.max(Some(position));
        }
        Resuming::After(sent)
    });
    let skip = replay.skip_live;
    let replayed = |held: &Held| held.id.as_ref().is_some_and(|id| skip.contains(id));
    out.extend(held.into_iter().filter(|h| !replayed(h)).map(Out::Held));
    ReplyPlan { out, resume, skip_live: (!skip.is_empty()).then_some(skip) }
}
