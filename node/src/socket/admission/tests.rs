//! The admission pipeline's checks: each one's refusal (the text the client reads, the counter it
//! increments), the order between any two that fail together, which gates each outcome consulted (a
//! refused join spends no rate it did not reach), and the admitted join.

use std::cell::RefCell;

use realtime_proto::join::JoinConfig;
use serde_json::{json, Map};

use super::*;

const SOCKET_TOKEN: &str = "socket-token";

fn claims(sub: Option<&str>) -> Claims {
    Claims { role: "authenticated".into(), exp: 0, sub: sub.map(str::to_owned), all: Map::new() }
}

/// [`Gates`] answering set values, recording what was asked, in order.
#[derive(Debug, Clone)]
struct FakeGates {
    verified: Result<Claims, TokenError>,
    resumable: bool,
    token_rate: bool,
    node_rate: bool,
    asked: RefCell<Vec<String>>,
}

impl FakeGates {
    fn asked(&self) -> Vec<String> {
        self.asked.borrow().clone()
    }
}

impl Gates for FakeGates {
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.asked.borrow_mut().push(format!("verify {token}"));
        self.verified.clone()
    }

    fn is_resumable(&self, key: &TopicKey) -> bool {
        self.asked.borrow_mut().push(format!("resumable {} private={}", key.sub_topic, key.private));
        self.resumable
    }

    fn allow_token_join(&mut self, key: &str) -> bool {
        self.asked.borrow_mut().push(format!("token_join {key}"));
        self.token_rate
    }

    fn allow_node_join(&mut self) -> bool {
        self.asked.borrow_mut().push("node_join".into());
        self.node_rate
    }
}

/// One join with its facts; [`Case::base`] is admitted, [`Case::with`] makes one check fail.
#[derive(Debug, Clone)]
struct Case {
    sub_topic: String,
    access_token: Option<String>,
    config: JoinConfig,
    draining: bool,
    channels: usize,
    budget: Budget,
    private_available: bool,
    private_only: bool,
    gates: FakeGates,
}

const MAX_CHANNELS: usize = 3;

impl Case {
    fn base() -> Case {
        Case {
            sub_topic: "room".into(),
            access_token: None,
            config: JoinConfig { private: true, ..JoinConfig::default() },
            draining: false,
            channels: MAX_CHANNELS - 1,
            budget: Budget {
                max_topic_bytes: 100,
                max_ref_bytes: 10,
                max_presence_key_bytes: 4,
                max_presence_depth: 3,
                max_postgres_changes: 2,
                max_filter_bytes: 100,
            },
            private_available: true,
            private_only: false,
            gates: FakeGates {
                verified: Ok(claims(Some("me"))),
                resumable: true,
                token_rate: true,
                node_rate: true,
                asked: RefCell::default(),
            },
        }
    }

    /// This case with `check` failing (and only it, unless another fault touches the same field).
    fn with(mut self, check: Check) -> Case {
        let broadcast = &mut self.config.broadcast;
        match check {
            Check::Draining => self.draining = true,
            Check::TopicName => self.sub_topic = String::new(),
            Check::ChannelsPerSocket => self.channels = MAX_CHANNELS,
            Check::Token => self.gates.verified = Err(TokenError::Expired(7)),
            Check::InboxOwner => self.sub_topic = "notifications:someone-else".into(),
            Check::Budget => self.config.presence.key = Some("too-long".into()),
            Check::ReplayOnPublic => {
                broadcast.replay = Some(json!({"since": 0}));
                self.config.private = false;
            }
            Check::PrivateAvailable => self.private_available = false,
            Check::Replay => broadcast.replay = Some(json!("yesterday")),
            Check::Resume => broadcast.resume = Some(json!(5)),
            Check::ResumeAvailable => {
                broadcast.resume = Some(json!(true));
                self.gates.resumable = false;
            }
            Check::PrivateOnly => {
                self.config.private = false;
                self.private_only = true;
            }
            Check::TokenRate => self.gates.token_rate = false,
            Check::NodeRate => self.gates.node_rate = false,
        }
        self
    }

    /// This case with what makes `check` fail undone (as in [`Case::base`]); a public channel stays
    /// public when only its replay request is undone.
    fn repaired(mut self, check: Check) -> Case {
        let base = Case::base();
        let broadcast = &mut self.config.broadcast;
        match check {
            Check::Draining => self.draining = base.draining,
            Check::TopicName | Check::InboxOwner => self.sub_topic = base.sub_topic,
            Check::ChannelsPerSocket => self.channels = base.channels,
            Check::Token => self.gates.verified = base.gates.verified,
            Check::Budget => self.config.presence.key = None,
            Check::ReplayOnPublic => broadcast.replay = None,
            Check::PrivateAvailable => self.private_available = base.private_available,
            Check::Replay => broadcast.replay = None,
            Check::Resume => broadcast.resume = None,
            Check::ResumeAvailable => {
                broadcast.resume = None;
                self.gates.resumable = base.gates.resumable;
            }
            Check::PrivateOnly => {
                self.config.private = base.config.private;
                self.private_only = base.private_only;
            }
            Check::TokenRate => self.gates.token_rate = base.gates.token_rate,
            Check::NodeRate => self.gates.node_rate = base.gates.node_rate,
        }
        self
    }

    fn run(&mut self) -> Result<Admitted, Refused> {
        let request = Request {
            sub_topic: &self.sub_topic,
            access_token: self.access_token.as_deref(),
            config: &self.config,
        };
        let socket_token: Arc<str> = SOCKET_TOKEN.into();
        let facts = Facts {
            draining: self.draining,
            channels: self.channels,
            max_channels: MAX_CHANNELS,
            budget: &self.budget,
            socket_token: &socket_token,
            private_available: self.private_available,
            private_only: self.private_only,
        };
        admit(&request, &facts, &mut self.gates)
    }

    fn refusal(mut self) -> Refused {
        self.run().expect_err("refused")
    }
}

#[test]
fn the_base_case_is_admitted_and_spends_the_token_then_the_node_rate() {
    let mut case = Case::base();
    let admitted = case.run().expect("admitted");
    assert_eq!(
        admitted,
        Admitted { token: SOCKET_TOKEN.into(), claims: claims(Some("me")), replay: None, resume: None }
    );
    assert_eq!(case.gates.asked(), ["verify socket-token", "token_join me", "node_join"]);
}

#[test]
fn an_admitted_join_carries_its_parsed_replay_and_resume() {
    let mut case = Case::base();
    case.config.broadcast.replay = Some(json!({"since": 1_700_000_000_000i64, "limit": 1000}));
    case.config.broadcast.resume = Some(json!({"position": "0000000000000001000000002"}));
    assert!(matches!(case.clone().run(), Err(Refused::Resume(_))), "25 hex digits is no position");
    case.config.broadcast.resume = Some(json!({"position": "000000000000000100000002"}));
    let admitted = case.run().expect("admitted");
    assert_eq!(
        admitted.replay,
        Some(ReplayRequest { since_ms: 1_700_000_000_000, limit: replay::MAX_LIMIT })
    );
    assert_eq!(admitted.resume, Some(Position::parse("000000000000000100000002").unwrap()));
    // A resume at the live end is admitted without a position.
    for live in [json!(true), json!({}), json!({"position": null})] {
        let mut case = Case::base();
        case.config.broadcast.resume = Some(live.clone());
        assert_eq!(case.run().expect("admitted").resume, None, "{live}");
    }
}

#[test]
fn each_check_alone_refuses_with_the_clients_reason_and_its_counter() {
    let expected: [(Check, &str, Option<Refusal>); 14] = [
        (Check::Draining, "ServerShuttingDown: The server is shutting down", Some(Refusal::Draining)),
        (Check::TopicName, "TopicNameRequired: You must provide a topic name", None),
        (
            Check::ChannelsPerSocket,
            "ChannelRateLimitReached: Too many channels",
            Some(Refusal::ChannelsPerClient),
        ),
        (Check::Token, "InvalidJWTToken: Token has expired 7 seconds ago", Some(Refusal::InvalidToken)),
        (
            Check::InboxOwner,
            "Unauthorized: You do not have permissions to read from this Channel topic: \
             notifications:someone-else",
            Some(Refusal::PrivateChannel),
        ),
        (Check::Budget, "PresenceKeyTooLong: a presence key may have at most 4 bytes", Some(Refusal::Budget)),
        (Check::ReplayOnPublic, "UnableToReplayMessages: Replay is not allowed for public channels", None),
        (
            Check::PrivateAvailable,
            "PrivateChannelsUnavailable: Private channels need DATABASE_URL for RLS authorization",
            Some(Refusal::PrivateChannel),
        ),
        (Check::Replay, "UnableToReplayMessages: replay must be an object {since, limit}", None),
        (Check::Resume, "UnableToResume: resume must be an object {\"position\": …}", None),
        (
            Check::ResumeAvailable,
            "ResumeUnavailable: This topic keeps no resumable stream (see REALTIME_RESUMABLE_TOPICS)",
            None,
        ),
        (
            Check::PrivateOnly,
            "PrivateOnly: This project only allows private channels",
            Some(Refusal::PrivateChannel),
        ),
        (
            Check::TokenRate,
            "ClientJoinRateLimitReached: Too many joins per second",
            Some(Refusal::TokenJoinRate),
        ),
        (Check::NodeRate, "ClientJoinRateLimitReached: Too many joins per second", Some(Refusal::JoinRate)),
    ];
    assert_eq!(expected.map(|(check, ..)| check), CHECKS, "one row per check, in order");
    for (check, reason, counter) in expected {
        let refused = Case::base().with(check).refusal();
        assert_eq!(refused.check(), check, "{refused:?}");
        assert_eq!(refused.to_string(), reason, "{check:?}");
        assert_eq!(refused.metric(), counter, "{check:?}");
    }
}

#[test]
fn checks_are_ordered_as_declared() {
    let mut sorted = CHECKS;
    sorted.sort();
    assert_eq!(sorted, CHECKS, "`Check`'s order is `CHECKS`'s");
}

/// Pairs that cannot fail together: their faults set the same field, or together they make an
/// earlier check fail (a bad replay on a public channel is refused as a replay on a public channel).
const EXCLUSIVE: [(Check, Check); 6] = [
    (Check::TopicName, Check::InboxOwner),
    (Check::ReplayOnPublic, Check::PrivateAvailable),
    (Check::ReplayOnPublic, Check::Replay),
    (Check::PrivateAvailable, Check::PrivateOnly),
    (Check::Replay, Check::PrivateOnly),
    (Check::Resume, Check::ResumeAvailable),
];

#[test]
fn when_two_checks_fail_the_earlier_one_answers() {
    let mut pairs = 0;
    for (i, &first) in CHECKS.iter().enumerate() {
        for &later in &CHECKS[i + 1..] {
            let case = Case::base().with(later).with(first);
            let answer = case.clone().refusal().check();
            // Without the first fault, the later check still refuses: both failed together.
            let later_alone = case.repaired(first).run().map_err(|r| r.check());
            if EXCLUSIVE.contains(&(first, later)) {
                let both = answer == first && later_alone == Err(later);
                assert!(!both, "{first:?} and {later:?} can fail together: not exclusive");
            } else {
                assert_eq!(answer, first, "{first:?} before {later:?}");
                assert_eq!(later_alone, Err(later), "{first:?} with {later:?}");
                pairs += 1;
            }
        }
    }
    assert_eq!(pairs, 14 * 13 / 2 - EXCLUSIVE.len());
}

#[test]
fn a_refused_join_spends_no_rate_it_did_not_reach() {
    for check in CHECKS {
        let mut case = Case::base().with(check);
        let _ = case.run().expect_err("refused");
        let verify = "verify socket-token";
        let expected: &[&str] = match check {
            Check::Draining | Check::TopicName | Check::ChannelsPerSocket => &[],
            Check::ResumeAvailable => &[verify, "resumable room private=true"],
            Check::TokenRate => &[verify, "token_join me"],
            Check::NodeRate => &[verify, "token_join me", "node_join"],
            _ => &[verify],
        };
        assert_eq!(case.gates.asked(), expected, "{check:?}");
    }
}

#[test]
fn the_channel_runs_under_the_joins_token_unless_it_is_an_api_key() {
    let socket: Arc<str> = SOCKET_TOKEN.into();
    assert_eq!(&*token_for(Some("eyJ.join"), &socket), "eyJ.join");
    // The socket's token is shared, not copied, also when the join repeats it.
    for access_token in [None, Some("sb_publishable_abc"), Some(SOCKET_TOKEN)] {
        assert!(Arc::ptr_eq(&token_for(access_token, &socket), &socket), "{access_token:?}");
    }
    let mut case = Case::base();
    case.access_token = Some("eyJ.join".into());
    assert_eq!(&*case.run().expect("admitted").token, "eyJ.join");
    assert_eq!(case.gates.asked()[0], "verify eyJ.join");
    case.access_token = Some("sb_publishable_abc".into());
    assert_eq!(&*case.run().expect("admitted").token, SOCKET_TOKEN);
}

#[test]
fn the_user_rate_is_keyed_by_subject_and_anonymous_tokens_share_no_bucket() {
    let mut case = Case::base();
    case.gates.verified = Ok(claims(None));
    case.access_token = Some("eyJ.anonymous".into());
    case.run().expect("admitted");
    assert_eq!(case.gates.asked(), ["verify eyJ.anonymous", "node_join"], "no per-token bucket");
    // Even with the user rate spent, an anonymous visitor's join is held by the node's rate only.
    let mut spent = Case::base();
    spent.gates.verified = Ok(claims(None));
    spent.gates.token_rate = false;
    assert!(spent.run().is_ok());
}

#[test]
fn an_inbox_is_joined_by_its_owner_only() {
    let mut own = Case::base();
    own.sub_topic = "notifications:me".into();
    own.run().expect("the owner is admitted");
    for sub in [None, Some("someone")] {
        let mut other = Case::base();
        other.sub_topic = "notifications:me".into();
        other.gates.verified = Ok(claims(sub));
        assert_eq!(other.refusal(), Refused::NotInboxOwner("notifications:me".into()), "{sub:?}");
    }
    // A public inbox too.
    let mut public = Case::base().with(Check::InboxOwner);
    public.config.private = false;
    assert_eq!(public.refusal().check(), Check::InboxOwner);
}

#[test]
fn public_joins_pass_without_private_channel_support() {
    let mut case = Case::base().with(Check::PrivateAvailable);
    case.config.private = false;
    case.run().expect("a public join needs no RLS");
}

#[test]
fn a_topic_needs_the_realtime_prefix() {
    assert_eq!(sub_topic("realtime:room"), Ok("room"));
    assert_eq!(sub_topic("realtime:"), Ok(""));
    assert_eq!(sub_topic("room"), Err(UnmatchedTopic));
    assert_eq!(UnmatchedTopic.to_string(), "unmatched topic");
}

#[test]
fn budget_refusals_pass_the_budgets_reason_through() {
    let mut case = Case::base();
    case.config.postgres_changes = vec![Map::new(), Map::new(), Map::new()];
    assert_eq!(
        case.refusal().to_string(),
        "TooManyPostgresChanges: a join may have at most 2 postgres_changes entries"
    );
    let mut case = Case::base();
    let long = json!({"filter": "x".repeat(100)});
    case.config.postgres_changes = vec![long.as_object().unwrap().clone()];
    assert_eq!(case.refusal(), Refused::Budget(BudgetError::PostgresChangeTooLong { max: 100 }));
}
