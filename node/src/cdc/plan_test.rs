//! Unit tests of the delivery planning: which subscriptions match each event, schema, table and
//! filter; which RLS questions and privileges that needs; what each answer does to the deliveries
//! (hidden rows, failing checks, columns a role may not read, `select`); and their order and sharing.

use bytes::Bytes;
use realtime_proto::postgres::change::{Cell, OldRow};
use realtime_proto::postgres::parse_params;
use realtime_proto::postgres::table::ColumnMeta;
use serde_json::{json, Value};

use super::*;
use crate::cdc::rls::Viewer;
use crate::cdc::subscriptions::NewEntry;

/// `schema.name` (an oid of its own), columns `id int4` (the primary key when `pk`), `title text`,
/// `done bool`.
fn table(schema: &str, name: &str, rls: bool, pk: bool) -> Arc<TableMeta> {
    let col = |name: &str, typname: &str, primary_key: bool| ColumnMeta {
        name: name.into(),
        typname: typname.into(),
        sql_type: typname.into(),
        primary_key,
    };
    let number = ["todos", "notes", "plain"].iter().position(|n| *n == name).unwrap_or(9) as u32;
    let oid = 16384 + number + 100 * u32::from(schema != "public");
    Arc::new(TableMeta {
        oid,
        schema: schema.into(),
        name: name.into(),
        columns: vec![col("id", "int4", pk), col("title", "text", false), col("done", "bool", false)],
        rls,
    })
}

fn todos() -> Arc<TableMeta> {
    table("public", "todos", false, true)
}

fn text(s: &str) -> Cell {
    Cell::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn row(id: u32, title: &str) -> Vec<Cell> {
    vec![text(&id.to_string()), text(title), text("f")]
}

fn insert(table: &Arc<TableMeta>, id: u32, title: &str) -> Change {
    Change { kind: ChangeKind::Insert, table: table.clone(), new: Some(row(id, title)), old: None }
}

fn update(table: &Arc<TableMeta>, id: u32, title: &str) -> Change {
    Change { kind: ChangeKind::Update, table: table.clone(), new: Some(row(id, title)), old: None }
}

fn delete(table: &Arc<TableMeta>, id: u32, title: &str) -> Change {
    let old = OldRow { full: true, cells: row(id, title) };
    Change { kind: ChangeKind::Delete, table: table.clone(), new: None, old: Some(old) }
}

fn viewer(role: &str, sub: &str) -> Viewer {
    Viewer { role: role.into(), claims_json: format!("{{\"sub\":\"{sub}\"}}"), sub: Some(sub.into()) }
}

fn channel(conn: u64) -> ChannelKey {
    (conn, format!("realtime:c{conn}").into())
}

/// Subscribes channel `conn` (as `who`) with `(id, entry)`s.
fn subscribe(index: &mut SubscriptionIndex, conn: u64, who: Viewer, entries: &[(u32, Value)]) {
    let entries = entries
        .iter()
        .map(|(id, raw)| NewEntry {
            id: *id,
            canonical: raw.to_string().into(),
            params: parse_params(raw.as_object().unwrap()).unwrap(),
        })
        .collect();
    index.insert(channel(conn), entries, who);
}

/// An index of channels subscribed to every change of `public.todos`: (conn, role, sub, entry id).
fn on_todos(subscribers: &[(u64, &str, &str, u32)]) -> SubscriptionIndex {
    let mut index = SubscriptionIndex::default();
    for (conn, role, sub, id) in subscribers {
        subscribe(&mut index, *conn, viewer(role, sub), &[(*id, json!({"table": "todos"}))]);
    }
    index
}

fn stamped(changes: &[Change]) -> Vec<Stamped<'_>> {
    changes.iter().map(|c| (c, "2026-12-07T00:00:00.000Z")).collect()
}

/// Per change, the channels it matched (sorted).
fn matched(changes: &[Change], index: &SubscriptionIndex) -> Vec<Vec<u64>> {
    let changes = stamped(changes);
    let matches = match_changes(&changes, index);
    let mut out = vec![Vec::new(); changes.len()];
    for (at, key) in matches.pairs() {
        out[*at].extend(index.group(key).unwrap().members.keys().map(|(conn, _)| *conn));
    }
    for conns in &mut out {
        conns.sort_unstable();
    }
    out
}

/// Every needed privilege: all columns, one `Arc` per (role, table) as the hub caches them.
fn every_column(changes: &[Stamped], matches: &Matches, index: &SubscriptionIndex) -> Privileges {
    let mut per_role: HashMap<(String, u32), Arc<Vec<bool>>> = HashMap::new();
    let mut out = Privileges::new();
    for (viewer, table) in matches.privileges_needed(changes) {
        let role = index.viewer(viewer).unwrap().role.clone();
        let flags = per_role.entry((role, table.oid)).or_insert_with(|| Arc::new(vec![true; 3])).clone();
        out.insert((viewer, table.oid), Ok(flags));
    }
    out
}

/// A planned batch: the deliveries of each matched change, then what the checks said.
struct Plan {
    per_change: Vec<Vec<Delivery>>,
    failed: Vec<(ChannelKey, String)>,
    passed: HashSet<ChannelKey>,
}

impl Plan {
    /// Every delivery, in commit order.
    fn deliveries(&self) -> Vec<&Delivery> {
        self.per_change.iter().flatten().collect()
    }
}

/// What the hub found out about a batch; `selectable: None` grants every column.
struct Answers {
    visible: RlsAnswers,
    selectable: Option<Privileges>,
    failing: HashSet<ChannelKey>,
    max_record_bytes: usize,
}

impl Default for Answers {
    fn default() -> Answers {
        Answers {
            visible: RlsAnswers::new(),
            selectable: None,
            failing: HashSet::new(),
            max_record_bytes: 1 << 20,
        }
    }
}

/// Matches the changes against `matched_by`, then plans them with `index` (the same, or as it is after
/// a change since matching).
fn plan_matched(
    changes: &[Change],
    matched_by: &SubscriptionIndex,
    index: &SubscriptionIndex,
    answers: Answers,
) -> Plan {
    let changes = stamped(changes);
    let matches = match_changes(&changes, matched_by);
    let selectable = answers.selectable.unwrap_or_else(|| every_column(&changes, &matches, matched_by));
    let checked = Checked {
        visible: &answers.visible,
        selectable: &selectable,
        failing: &answers.failing,
        max_record_bytes: answers.max_record_bytes,
    };
    let mut planner = Planner::new(&changes, &matches, index, &checked);
    let per_change: Vec<Vec<Delivery>> = planner.by_ref().collect();
    let Verdicts { failed, passed } = planner.verdicts();
    Plan { per_change, failed, passed }
}

fn plan_batch(changes: &[Change], index: &SubscriptionIndex, answers: Answers) -> Plan {
    plan_matched(changes, index, index, answers)
}

fn plan_all(changes: &[Change], index: &SubscriptionIndex) -> Plan {
    plan_batch(changes, index, Answers::default())
}

/// (channel, ids, record title) per delivery.
fn summary(plan: &Plan) -> Vec<(u64, Vec<u32>, Value)> {
    let data = |d: &Delivery| serde_json::from_str::<Value>(&d.data).unwrap();
    plan.deliveries()
        .into_iter()
        .map(|d| {
            let data = data(d);
            let record = if data["type"] == "DELETE" { &data["old_record"] } else { &data["record"] };
            (d.channel.0, d.ids.clone(), record["title"].clone())
        })
        .collect()
}

fn viewer_of(index: &SubscriptionIndex, conn: u64) -> ViewerId {
    index.viewer_of(&channel(conn)).unwrap()
}

/// RLS answers for `table`, per channel's viewer: the ids it sees, or the check's error.
fn rls_answers(
    index: &SubscriptionIndex,
    table: &TableMeta,
    answers: &[(u64, Result<&[&str], &str>)],
) -> RlsAnswers {
    let answer = |a: &Result<&[&str], &str>| match a {
        Ok(ids) => Ok(ids.iter().map(|id| vec![(*id).to_owned()]).collect()),
        Err(error) => Err((*error).to_owned()),
    };
    answers.iter().map(|(conn, a)| ((table.oid, viewer_of(index, *conn)), answer(a))).collect()
}

#[test]
fn events_pick_the_change_kinds() {
    let mut index = SubscriptionIndex::default();
    let on = |event: &str| json!({"event": event, "schema": "public", "table": "todos"});
    subscribe(&mut index, 1, viewer("anon", "a"), &[(1, on("INSERT"))]);
    subscribe(&mut index, 2, viewer("anon", "a"), &[(1, on("UPDATE"))]);
    subscribe(&mut index, 3, viewer("anon", "a"), &[(1, on("DELETE"))]);
    subscribe(&mut index, 4, viewer("anon", "a"), &[(1, on("*"))]);
    subscribe(&mut index, 5, viewer("anon", "a"), &[(1, on("insert"))]);
    let t = todos();
    let changes = [insert(&t, 1, "a"), update(&t, 1, "b"), delete(&t, 1, "b")];
    assert_eq!(matched(&changes, &index), vec![vec![1, 4, 5], vec![2, 4], vec![3, 4]]);
}

#[test]
fn schemas_and_tables_match_by_name_or_wildcard() {
    let mut index = SubscriptionIndex::default();
    let anon = || viewer("anon", "a");
    subscribe(&mut index, 1, anon(), &[(1, json!({"schema": "public", "table": "todos"}))]);
    subscribe(&mut index, 2, anon(), &[(1, json!({"schema": "public"}))]);
    subscribe(&mut index, 3, anon(), &[(1, json!({"schema": "*", "table": "todos"}))]);
    subscribe(&mut index, 4, anon(), &[(1, json!({"schema": "*"}))]);
    subscribe(&mut index, 5, anon(), &[(1, json!({"table": "notes"}))]);
    subscribe(&mut index, 6, anon(), &[(1, json!({"schema": "private", "table": "todos"}))]);
    let changes = [
        insert(&todos(), 1, "a"),
        insert(&table("public", "notes", false, true), 2, "b"),
        insert(&table("private", "todos", false, true), 3, "c"),
        insert(&table("private", "notes", false, true), 4, "d"),
    ];
    assert_eq!(matched(&changes, &index), vec![vec![1, 2, 3, 4], vec![2, 4, 5], vec![3, 4, 6], vec![4]]);
}

#[test]
fn filters_read_the_new_row_or_the_old_one_of_a_delete() {
    let mut index = SubscriptionIndex::default();
    let filtered =
        |filter: &str| json!({"event": "*", "schema": "public", "table": "todos", "filter": filter});
    subscribe(&mut index, 1, viewer("anon", "a"), &[(1, filtered("id=eq.1"))]);
    subscribe(&mut index, 2, viewer("anon", "a"), &[(1, filtered("title=in.(x,y)"))]);
    subscribe(&mut index, 3, viewer("anon", "a"), &[(1, filtered("id=gt.1"))]);
    let t = todos();
    let changes = [insert(&t, 1, "x"), update(&t, 2, "z"), delete(&t, 1, "y"), delete(&t, 3, "q")];
    assert_eq!(matched(&changes, &index), vec![vec![1, 2], vec![3], vec![1, 2], vec![3]]);
}

#[test]
fn nothing_matched_asks_nothing_and_delivers_nothing() {
    let mut index = SubscriptionIndex::default();
    subscribe(&mut index, 1, viewer("anon", "a"), &[(1, json!({"event": "DELETE", "schema": "public"}))]);
    let rls = table("public", "todos", true, true);
    let changes = [insert(&rls, 1, "a")];
    let stamped = stamped(&changes);
    let matches = match_changes(&stamped, &index);
    assert!(matches.is_empty());
    assert!(matches.rls_asks(&stamped).is_empty());
    assert!(matches.privileges_needed(&stamped).is_empty());
    assert!(plan_all(&changes, &index).deliveries().is_empty());
}

#[test]
fn rls_is_needed_for_inserts_and_updates_of_rls_tables_with_a_key() {
    let rls = table("public", "todos", true, true);
    assert!(needs_rls(&insert(&rls, 1, "a")));
    assert!(needs_rls(&update(&rls, 1, "a")));
    assert!(!needs_rls(&delete(&rls, 1, "a")), "a deleted row cannot be read");
    assert!(!needs_rls(&insert(&todos(), 1, "a")), "no RLS");
    assert!(!needs_rls(&insert(&table("public", "todos", true, false), 1, "a")), "no key to ask about");
}

#[test]
fn rls_is_asked_once_per_table_and_viewer_with_every_key() {
    let mut index = SubscriptionIndex::default();
    let all = json!({"event": "*", "schema": "*"});
    subscribe(&mut index, 1, viewer("authenticated", "a"), &[(1, all.clone())]);
    subscribe(&mut index, 2, viewer("authenticated", "a"), &[(1, all.clone())]);
    subscribe(&mut index, 3, viewer("authenticated", "b"), &[(1, all.clone())]);
    let rls = table("public", "todos", true, true);
    let other = table("public", "notes", true, true);
    let changes = [
        insert(&rls, 1, "a"),
        update(&rls, 2, "b"),
        delete(&rls, 3, "c"),
        insert(&todos_without_rls(), 4, "d"),
        insert(&other, 5, "e"),
    ];
    let stamped = stamped(&changes);
    let matches = match_changes(&stamped, &index);
    let asks = matches.rls_asks(&stamped);
    let (a, b) = (viewer_of(&index, 1), viewer_of(&index, 3));
    let keys = |oid: u32, viewer: ViewerId| asks.get(&(oid, viewer)).map(|(t, pks)| (t.oid, pks.clone()));
    let pk = |id: &str| vec![id.to_owned()];
    assert_eq!(asks.len(), 4, "todos and notes, for a and b: {:?}", asks.keys());
    assert_eq!(keys(rls.oid, a), Some((rls.oid, vec![pk("1"), pk("2")])));
    assert_eq!(keys(rls.oid, b), Some((rls.oid, vec![pk("1"), pk("2")])));
    assert_eq!(keys(other.oid, a), Some((other.oid, vec![pk("5")])));
    assert_eq!(keys(other.oid, b), Some((other.oid, vec![pk("5")])));
}

fn todos_without_rls() -> Arc<TableMeta> {
    table("public", "plain", false, true)
}

#[test]
fn privileges_are_needed_once_per_viewer_and_table_in_match_order() {
    let mut index = SubscriptionIndex::default();
    let all = json!({"event": "*", "schema": "public"});
    subscribe(&mut index, 1, viewer("anon", "a"), &[(1, all.clone()), (2, json!({"table": "todos"}))]);
    subscribe(&mut index, 2, viewer("anon", "b"), &[(1, all)]);
    let notes = table("public", "notes", false, true);
    let changes = [insert(&todos(), 1, "a"), insert(&notes, 2, "b"), insert(&todos(), 3, "c")];
    let stamped = stamped(&changes);
    let matches = match_changes(&stamped, &index);
    let needed: Vec<(ViewerId, u32)> =
        matches.privileges_needed(&stamped).into_iter().map(|(viewer, t)| (viewer, t.oid)).collect();
    let (a, b) = (viewer_of(&index, 1), viewer_of(&index, 2));
    let first_change: Vec<ViewerId> =
        matches.pairs().iter().filter(|(at, _)| *at == 0).map(|(_, key)| key.1).collect();
    let mut expected: Vec<(ViewerId, u32)> = Vec::new();
    for viewer in first_change {
        if !expected.contains(&(viewer, todos().oid)) {
            expected.push((viewer, todos().oid));
        }
    }
    expected.extend(matches.pairs().iter().filter(|(at, _)| *at == 1).map(|(_, key)| (key.1, notes.oid)));
    assert_eq!(needed, expected);
    assert_eq!(needed.len(), 4);
    for pair in [(a, todos().oid), (b, todos().oid), (a, notes.oid), (b, notes.oid)] {
        assert!(needed.contains(&pair), "{pair:?} in {needed:?}");
    }
}

#[test]
fn rls_delivers_the_visible_rows_only() {
    let index = on_todos(&[(1, "authenticated", "a", 1), (2, "authenticated", "b", 1)]);
    let rls = table("public", "todos", true, true);
    let changes = [insert(&rls, 1, "mine"), insert(&rls, 2, "theirs"), delete(&rls, 3, "gone")];
    let visible = rls_answers(&index, &rls, &[(1, Ok(&["1"])), (2, Ok(&["2"]))]);
    let plan = plan_batch(&changes, &index, Answers { visible, ..Answers::default() });
    let mut got = summary(&plan);
    got.sort_by_key(|(conn, _, title)| (title.to_string(), *conn));
    // The DELETE is not checked: both get it, with its key only.
    assert_eq!(
        got,
        vec![
            (1, vec![1], json!("mine")),
            (2, vec![1], json!("theirs")),
            (1, vec![1], Value::Null),
            (2, vec![1], Value::Null)
        ]
    );
    assert!(plan.failed.is_empty() && plan.passed.is_empty());
}

#[test]
fn a_viewer_without_an_answer_gets_nothing() {
    let index = on_todos(&[(1, "authenticated", "a", 1)]);
    let rls = table("public", "todos", true, true);
    let plan = plan_all(&[insert(&rls, 1, "a")], &index);
    assert!(plan.deliveries().is_empty() && plan.failed.is_empty());
}

#[test]
fn a_failing_rls_check_fails_every_member_of_the_group_and_nobody_else() {
    let index =
        on_todos(&[(1, "authenticated", "a", 1), (2, "authenticated", "a", 4), (3, "authenticated", "b", 1)]);
    let rls = table("public", "todos", true, true);
    let visible = rls_answers(&index, &rls, &[(1, Err("permission denied")), (3, Ok(&["1"]))]);
    let plan = plan_batch(&[insert(&rls, 1, "a")], &index, Answers { visible, ..Answers::default() });
    assert_eq!(summary(&plan), vec![(3, vec![1], json!("a"))]);
    let mut failed = plan.failed.clone();
    failed.sort();
    assert_eq!(
        failed,
        vec![(channel(1), "permission denied".into()), (channel(2), "permission denied".into())]
    );
}

#[test]
fn failing_channels_pass_again_when_their_check_succeeds() {
    let index =
        on_todos(&[(1, "authenticated", "a", 1), (2, "authenticated", "a", 1), (3, "authenticated", "b", 1)]);
    let rls = table("public", "todos", true, true);
    let visible = rls_answers(&index, &rls, &[(1, Ok(&["1"])), (3, Ok(&[]))]);
    let failing: HashSet<ChannelKey> = [channel(1), channel(3), channel(9)].into();
    let answers = Answers { visible: visible.clone(), failing, ..Answers::default() };
    let plan = plan_batch(&[insert(&rls, 1, "a")], &index, answers);
    assert_eq!(plan.passed, [channel(1)].into(), "2 was not failing; 3 saw no row");
    assert_eq!(plan.deliveries().len(), 2);
    // Nothing failing: nothing to pass.
    let plan = plan_batch(&[insert(&rls, 1, "a")], &index, Answers { visible, ..Answers::default() });
    assert!(plan.passed.is_empty());
}

#[test]
fn privileges_that_could_not_be_read_fail_and_missing_ones_skip() {
    let index = on_todos(&[(1, "anon", "a", 1), (2, "authenticated", "b", 1), (3, "service_role", "c", 1)]);
    let t = todos();
    let changes = [insert(&t, 1, "a")];
    let selectable: Privileges = [
        ((viewer_of(&index, 1), t.oid), Err("role \"anon\" does not exist".to_owned())),
        ((viewer_of(&index, 2), t.oid), Ok(Arc::new(vec![true; 3]))),
    ]
    .into();
    let plan = plan_batch(&changes, &index, Answers { selectable: Some(selectable), ..Answers::default() });
    assert_eq!(summary(&plan), vec![(2, vec![1], json!("a"))]);
    assert_eq!(plan.failed, vec![(channel(1), "role \"anon\" does not exist".to_owned())]);
}

#[test]
fn columns_follow_privileges_and_select() {
    let mut index = on_todos(&[(1, "anon", "a", 1), (3, "limited", "c", 1)]);
    let done = json!({"schema": "public", "table": "todos", "select": ["done"]});
    subscribe(&mut index, 2, viewer("anon", "a"), &[(1, done)]);
    let t = todos();
    let changes = [insert(&t, 7, "x")];
    let everything = Arc::new(vec![true; 3]);
    let no_title = Arc::new(vec![true, false, true]);
    let selectable: Privileges =
        [((viewer_of(&index, 1), t.oid), Ok(everything)), ((viewer_of(&index, 3), t.oid), Ok(no_title))]
            .into();
    let plan = plan_batch(&changes, &index, Answers { selectable: Some(selectable), ..Answers::default() });
    let record = |conn: u64| {
        let d = plan.deliveries().into_iter().find(|d| d.channel.0 == conn).unwrap();
        serde_json::from_str::<Value>(&d.data).unwrap()["record"].clone()
    };
    assert_eq!(record(1), json!({"id": 7, "title": "x", "done": false}));
    assert_eq!(record(2), json!({"id": 7, "done": false}), "select keeps the primary key");
    assert_eq!(record(3), json!({"id": 7, "done": false}), "no privilege on title");
}

#[test]
fn a_channel_gets_one_message_per_distinct_data_with_its_ids_sorted() {
    let mut index = SubscriptionIndex::default();
    let t = json!({"schema": "public", "table": "todos"});
    let all = json!({"event": "*", "schema": "public"});
    let done = json!({"schema": "public", "table": "todos", "select": ["done"]});
    subscribe(&mut index, 1, viewer("anon", "a"), &[(9, t), (3, all), (5, done)]);
    let plan = plan_all(&[insert(&todos(), 1, "a")], &index);
    let mut got: Vec<(u64, Vec<u32>)> =
        plan.deliveries().into_iter().map(|d| (d.channel.0, d.ids.clone())).collect();
    got.sort();
    assert_eq!(got, vec![(1, vec![3, 9]), (1, vec![5])]);
}

#[test]
fn channels_that_see_a_change_alike_share_its_data() {
    let index = on_todos(&[(1, "anon", "a", 1), (2, "anon", "b", 1), (3, "anon", "a", 2)]);
    let plan = plan_all(&[insert(&todos(), 1, "a")], &index);
    assert_eq!(plan.deliveries().len(), 3);
    let first = &plan.deliveries()[0].data;
    assert!(plan.deliveries().into_iter().all(|d| Arc::ptr_eq(&d.data, first)), "one role, one column set");
}

#[test]
fn deliveries_follow_commit_order() {
    let mut index = SubscriptionIndex::default();
    subscribe(&mut index, 1, viewer("anon", "a"), &[(1, json!({"event": "*", "schema": "public"}))]);
    subscribe(&mut index, 2, viewer("anon", "b"), &[(1, json!({"table": "todos"}))]);
    let t = todos();
    let notes = table("public", "notes", false, true);
    let changes =
        [insert(&t, 1, "one"), insert(&notes, 2, "two"), update(&t, 1, "three"), delete(&t, 1, "four")];
    let plan = plan_all(&changes, &index);
    let titles = |conn: u64| -> Vec<Value> {
        summary(&plan).into_iter().filter(|(c, _, _)| *c == conn).map(|(_, _, title)| title).collect()
    };
    assert_eq!(titles(1), vec![json!("one"), json!("two"), json!("three"), json!("four")]);
    assert_eq!(titles(2), vec![json!("one"), json!("three"), json!("four")]);
    // One item per matched change, in commit order, each with that change's deliveries only.
    let titles: Vec<Vec<Value>> = plan
        .per_change
        .iter()
        .map(|deliveries| {
            let data = |d: &Delivery| serde_json::from_str::<Value>(&d.data).unwrap();
            deliveries.iter().map(|d| data(d)["record"]["title"].clone()).collect()
        })
        .collect();
    assert_eq!(titles.len(), 4);
    assert_eq!(titles[0], vec![json!("one"); 2]);
    assert_eq!(titles[1], vec![json!("two")]);
    assert_eq!(titles[2], vec![json!("three"); 2]);
    assert_eq!(titles[3], vec![Value::Null; 2], "a DELETE has no record");
}

#[test]
fn a_group_gone_since_matching_gets_nothing() {
    let index = on_todos(&[(1, "anon", "a", 1)]);
    let gone = SubscriptionIndex::default();
    let plan = plan_matched(&[insert(&todos(), 1, "a")], &index, &gone, Answers::default());
    assert!(plan.deliveries().is_empty() && plan.failed.is_empty());
}

#[test]
fn oversized_records_are_cut_as_the_payload_says() {
    let index = on_todos(&[(1, "anon", "a", 1)]);
    let changes = [insert(&todos(), 1, &"x".repeat(500))];
    let plan = plan_batch(&changes, &index, Answers { max_record_bytes: 100, ..Answers::default() });
    let data: Value = serde_json::from_str(&plan.deliveries()[0].data).unwrap();
    assert_eq!(data["errors"], json!(["Error 413: Payload Too Large"]));
    assert_eq!(data["record"], json!({"id": 1, "done": false}));
}
