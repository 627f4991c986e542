//! The channel's ordering decisions, case by case: which live broadcasts a member gets, holds or
//! skips, and what follows its join reply in which order.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;

use super::messages::{Held, Resuming};
use super::ordering::{plan_reply, route, Live, Out, Receiver, Route};
use crate::delivery::WireFrame;
use crate::replay::Replay;
use crate::resume::{Owed, Position};
use crate::vocab::BroadcastBody;

fn at(commit_lsn: u64) -> Position {
    Position { commit_lsn, index: 0 }
}

fn body(text: &str) -> BroadcastBody {
    BroadcastBody::Json(text.into())
}

fn held(text: &str, id: Option<&str>) -> Held {
    Held {
        frame: WireFrame::Text(ByteString::from(text)),
        received_at: Instant::now(),
        id: id.map(Arc::from),
    }
}

/// What a member is sent, as text: bodies and held frames by their text, the gap notice by position.
fn texts(out: &[Out]) -> Vec<String> {
    out.iter()
        .map(|out| match out {
            Out::Body(BroadcastBody::Json(text)) => text.to_string(),
            Out::Body(other) => format!("{other:?}"),
            Out::ResumeGap { after } => format!("gap after {}", after.commit_lsn),
            Out::Held(held) => match &held.frame {
                WireFrame::Text(text) => format!("held {text}"),
                WireFrame::Binary(bytes) => format!("held {bytes:?}"),
            },
        })
        .collect()
}

/// A member with conn 1, receiving broadcasts, not its own, holding nothing, live.
struct Member {
    receives: bool,
    self_broadcast: bool,
    skip: Option<HashSet<Arc<str>>>,
    resume: Resuming,
    holding: bool,
}

impl Member {
    fn live() -> Member {
        Member { receives: true, self_broadcast: false, skip: None, resume: Resuming::Live, holding: false }
    }

    fn route(&mut self, from: Option<u64>, id: Option<&str>, position: Option<Position>) -> Route {
        let id: Option<Arc<str>> = id.map(Arc::from);
        let receiver = Receiver {
            conn: 1,
            receives_broadcasts: self.receives,
            self_broadcast: self.self_broadcast,
            skip_live: self.skip.as_ref(),
            resume: &mut self.resume,
            holding: self.holding,
        };
        route(receiver, Live { from, id: id.as_ref(), position })
    }
}

#[test]
fn a_live_member_gets_others_broadcasts_and_its_own_only_with_self() {
    let mut member = Member::live();
    assert_eq!(member.route(Some(2), None, None), Route::Send);
    assert_eq!(member.route(None, None, None), Route::Send, "REST and other nodes' broadcasts");
    assert_eq!(member.route(Some(1), None, None), Route::Skip, "its own, without self");
    member.self_broadcast = true;
    assert_eq!(member.route(Some(1), None, None), Route::Send);
    member.receives = false;
    assert_eq!(member.route(Some(2), None, None), Route::Skip, "a channel whose policies deny reads");
}

#[test]
fn a_member_waiting_for_its_reply_holds_and_rows_its_replay_had_are_skipped() {
    let mut member = Member::live();
    member.holding = true;
    assert_eq!(member.route(Some(2), Some("r1"), None), Route::Hold);
    member.holding = false;
    member.skip = Some(["r1".into()].into_iter().collect());
    assert_eq!(member.route(Some(2), Some("r1"), None), Route::Skip, "replayed to it at join");
    assert_eq!(member.route(Some(2), Some("r2"), None), Route::Send);
    assert_eq!(member.route(Some(2), None, None), Route::Send, "an unstored broadcast has no id to skip");
}

#[test]
fn a_resumable_stream_goes_out_once_in_order_and_not_before_the_resume() {
    let mut member = Member::live();
    member.resume = Resuming::Pending { after: at(10), baseline: Some(at(20)) };
    assert_eq!(member.route(Some(2), None, Some(at(21))), Route::Skip, "the log will owe it");
    assert_eq!(member.resume, Resuming::Pending { after: at(10), baseline: Some(at(20)) });

    member.resume = Resuming::After(Some(at(21)));
    assert_eq!(member.route(Some(2), None, Some(at(21))), Route::Skip, "sent already");
    assert_eq!(member.route(Some(2), None, Some(at(5))), Route::Skip, "older than what it has");
    assert_eq!(member.route(Some(2), None, Some(at(22))), Route::Send);
    assert_eq!(member.resume, Resuming::After(Some(at(22))), "the position only moves forward");
    assert_eq!(member.route(Some(2), None, Some(at(22))), Route::Skip, "a duplicate is skipped");
    // Its own message still advances its place though it is not sent to it.
    assert_eq!(member.route(Some(1), None, Some(at(23))), Route::Skip);
    assert_eq!(member.resume, Resuming::After(Some(at(23))));
    // Resumed to an empty log: anything comes.
    member.resume = Resuming::After(None);
    assert_eq!(member.route(Some(2), None, Some(at(1))), Route::Send);
    // A member that never asked to resume takes positions as they come and keeps no place.
    let mut live = Member::live();
    assert_eq!(live.route(Some(2), None, Some(at(9))), Route::Send);
    assert_eq!(live.route(Some(2), None, Some(at(3))), Route::Send);
    assert_eq!(live.resume, Resuming::Live);
}

#[test]
fn after_the_reply_the_replay_comes_first_then_the_held_messages_minus_replayed_rows() {
    let replay = Replay {
        bodies: vec![body("r1"), body("r2")],
        skip_live: Arc::new(["r2".into()].into_iter().collect()),
    };
    let plan =
        plan_reply(replay, None, vec![held("x", None), held("r2 again", Some("r2")), held("y", Some("r9"))]);
    assert_eq!(texts(&plan.out), ["r1", "r2", "held x", "held y"]);
    assert_eq!(plan.resume, None, "it did not resume");
    assert!(plan.skip_live.is_some_and(|skip| skip.contains("r2")), "later live copies are skipped too");
    let plain = plan_reply(Replay::default(), None, vec![held("x", None)]);
    assert_eq!(texts(&plain.out), ["held x"]);
    assert!(plain.skip_live.is_none(), "nothing replayed, nothing to skip");
}

#[test]
fn a_resume_sends_what_is_owed_in_order_before_the_held_messages() {
    let owed = Owed { gap: false, messages: vec![(at(11), body("m11")), (at(12), body("m12"))] };
    let plan = plan_reply(Replay::default(), Some((at(10), Some(at(12)), owed)), vec![held("live", None)]);
    assert_eq!(texts(&plan.out), ["m11", "m12", "held live"]);
    assert_eq!(plan.resume, Some(Resuming::After(Some(at(12)))));
    // Nothing owed: it stands where it asked.
    let none = plan_reply(
        Replay::default(),
        Some((at(10), Some(at(10)), Owed { gap: false, messages: vec![] })),
        vec![],
    );
    assert_eq!(none.resume, Some(Resuming::After(Some(at(10)))));
}

#[test]
fn a_resume_past_what_the_log_holds_is_told_first_then_gets_what_came_since_it_joined() {
    let owed = Owed { gap: true, messages: vec![(at(31), body("m31"))] };
    let replay = Replay { bodies: vec![body("r1")], skip_live: Arc::default() };
    let plan = plan_reply(replay, Some((at(10), Some(at(30)), owed)), vec![held("live", None)]);
    assert_eq!(texts(&plan.out), ["r1", "gap after 10", "m31", "held live"]);
    assert_eq!(plan.resume, Some(Resuming::After(Some(at(31)))));
    // A gap with nothing since it joined: it stands at the baseline, so older messages stay skipped.
    let empty = plan_reply(
        Replay::default(),
        Some((at(10), Some(at(30)), Owed { gap: true, messages: vec![] })),
        vec![],
    );
    assert_eq!(texts(&empty.out), ["gap after 10"]);
    assert_eq!(empty.resume, Some(Resuming::After(Some(at(30)))));
}
