//! Row Level Security, per subscriber: may this JWT see these rows? Asked of PostgreSQL itself, in one
//! pipelined round trip per (table, distinct claims) for a whole batch of changes: a read-only
//! transaction that sets `role` and `request.jwt.claims` (so `auth.uid()` / `auth.jwt()` policies work
//! unchanged), selects the batch's rows by primary key, and rolls back. Like the reference, it sees the
//! table as it is now: a row deleted or hidden since the change is not delivered.
//!
//! A check whose connection is lost (the database restarted, ended it, or the path to it broke) is not
//! a policy's answer: it is asked again on a new connection for up to [`RECONNECT_WITHIN`]. Only then,
//! or when PostgreSQL itself answers with an error (a failing policy, a missing privilege), is the
//! error the answer, and the hub tells the subscriber (`Row Level Security check failed …`) rather than
//! drop its rows without a word.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use realtime_proto::postgres::table::{quote_ident, TableMeta};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::db::pg_error_text;

/// Who is asking: the role and the claims JSON of a subscriber's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Viewer {
    pub role: String,
    pub claims_json: String,
    pub sub: Option<String>,
}

/// `select pk::text, … from t where (pk, …) in (select * from unnest($1::text[]::type[], …))`: which of
/// the given primary keys the current role can see.
pub fn visibility_query(table: &TableMeta) -> String {
    let keys: Vec<_> = table.columns.iter().filter(|c| c.primary_key).collect();
    let select: Vec<String> = keys.iter().map(|c| format!("t.{}::text", quote_ident(&c.name))).collect();
    let tuple: Vec<String> = keys.iter().map(|c| format!("t.{}", quote_ident(&c.name))).collect();
    let arrays: Vec<String> =
        keys.iter().enumerate().map(|(i, c)| format!("${}::text[]::{}[]", i + 1, c.sql_type)).collect();
    format!(
        "select {} from {} t where ({}) in (select * from unnest({}))",
        select.join(", "),
        table.qualified_name(),
        tuple.join(", "),
        arrays.join(", ")
    )
}

/// True when every given (32-bit) transaction id is visible to a new snapshot. The 32-bit ids are
/// widened with the epoch of the snapshot's `xmax` (one epoch back if they are above its low half).
const VISIBLE: &str =
    "select coalesce(bool_and(pg_visible_in_snapshot(((((pg_snapshot_xmax(s)::text::bigint >> 32) \
    - (x > (pg_snapshot_xmax(s)::text::bigint & 4294967295))::int) << 32) | x)::text::xid8, s)), true) \
    from pg_current_snapshot() s, unnest($1::bigint[]) x";

/// How long to wait for committed transactions to become visible, and how often to look.
const VISIBLE_WAIT: Duration = Duration::from_secs(2);
const VISIBLE_POLL: Duration = Duration::from_millis(1);

/// Waits until the transactions are visible to other sessions. The commit record reaches the WAL (and
/// so this stream) a moment before the committing backend makes the transaction visible; an RLS check
/// in that moment would not find the row and drop a change its subscriber may see.
pub async fn wait_visible(client: &Client, xids: &[u32]) -> Result<bool, tokio_postgres::Error> {
    let xids: Vec<i64> = xids.iter().map(|x| i64::from(*x)).collect();
    let started = Instant::now();
    loop {
        if client.query_one(VISIBLE, &[&xids]).await?.get::<_, bool>(0) {
            return Ok(true);
        }
        if started.elapsed() > VISIBLE_WAIT {
            return Ok(false);
        }
        tokio::time::sleep(VISIBLE_POLL).await;
    }
}

const CONTEXT: &str = "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
    set_config('request.jwt.claim.sub', $3, true), set_config('request.jwt.claim.role', $1, true)";

/// Prepared statements, so a batch's checks are one pipelined round trip (prepared once per table).
#[derive(Default)]
pub struct RlsStatements {
    context: Option<Statement>,
    by_table: HashMap<u32, Statement>,
}

/// The visible primary keys of one question.
pub type Visible = HashSet<Vec<String>>;

impl RlsStatements {
    /// Forgets a table's statement (its definition changed).
    pub fn forget(&mut self, oid: u32) {
        self.by_table.remove(&oid);
    }

    async fn context(&mut self, client: &Client) -> Result<Statement, tokio_postgres::Error> {
        match &self.context {
            Some(statement) => Ok(statement.clone()),
            None => Ok(self.context.insert(client.prepare(CONTEXT).await?).clone()),
        }
    }

    async fn check(
        &mut self,
        client: &Client,
        table: &TableMeta,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.by_table.get(&table.oid) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(&visibility_query(table)).await?;
        self.by_table.insert(table.oid, statement.clone());
        Ok(statement)
    }

    /// Which of its rows each question's viewer may see, all in one read-only transaction sent as one
    /// pipeline: `begin`, then per question the viewer's role and claims and the select, `rollback`.
    ///
    /// PostgreSQL answers in order, and an error aborts the transaction: the answers are those up to
    /// and including the first error; the questions after it are not answered (fewer answers than
    /// questions) and must be asked again in a new transaction. `Err` only when the transaction
    /// itself could not be run. A table whose select cannot be prepared answers its first question
    /// with that error, and the questions before it are asked without it.
    pub async fn visible_rows<K>(
        &mut self,
        client: &Client,
        asks: &[Ask<K>],
    ) -> Result<Vec<Result<Visible, tokio_postgres::Error>>, tokio_postgres::Error> {
        let context = self.context(client).await?;
        let mut checks = Vec::with_capacity(asks.len());
        for ask in asks {
            match self.check(client, &ask.table).await {
                Ok(check) => checks.push(check),
                Err(e) if checks.is_empty() => return Ok(vec![Err(e)]),
                Err(_) => break,
            }
        }
        let questions = asks
            .iter()
            .zip(&checks)
            .map(|(ask, check)| one_question(client, &context, check, &ask.pks, &ask.viewer));
        // Each question's statements are queued when it is first polled; `join!` and `join_all` poll
        // in order, so the pipeline is begin, the questions in order, rollback.
        let begin = client.batch_execute("begin read only");
        let all = futures_util::future::join_all(questions);
        let end = client.batch_execute("rollback");
        let (begun, answers, ended) = tokio::join!(begin, all, end);
        begun?;
        ended?;
        let mut kept = Vec::with_capacity(answers.len());
        for answer in answers {
            let failed = answer.is_err();
            kept.push(answer);
            if failed {
                break;
            }
        }
        Ok(kept)
    }
}

/// One question inside the batch's transaction: set the viewer's role and claims, select the rows.
async fn one_question(
    client: &Client,
    context: &Statement,
    check: &Statement,
    pks: &[Vec<String>],
    viewer: &Viewer,
) -> Result<Visible, tokio_postgres::Error> {
    let width = pks.first().map_or(0, Vec::len);
    let columns: Vec<Vec<&str>> = (0..width).map(|i| pks.iter().map(|pk| pk[i].as_str()).collect()).collect();
    let params: Vec<&(dyn ToSql + Sync)> = columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
    let sub = viewer.sub.as_deref().unwrap_or_default();
    let context_params: [&(dyn ToSql + Sync); 3] = [&viewer.role, &viewer.claims_json, &sub];
    let (set, rows) = tokio::join!(client.query(context, &context_params), client.query(check, &params));
    set?;
    Ok(rows?.iter().map(|row| (0..width).map(|i| row.get::<_, String>(i)).collect()).collect())
}

/// One question: may `viewer` see these rows of `table`? Answered with the visible keys.
pub struct Ask<K> {
    pub key: K,
    pub table: std::sync::Arc<TableMeta>,
    pub pks: Vec<Vec<String>>,
    pub viewer: std::sync::Arc<Viewer>,
}

/// A connection of the pool and its prepared statements.
#[derive(Default)]
struct PoolConnection {
    client: Option<Client>,
    statements: RlsStatements,
}

/// How long a check that lost its connection is retried on new ones.
pub const RECONNECT_WITHIN: Duration = Duration::from_secs(5);

/// The pause between two attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Why a check has no answer.
#[derive(Debug)]
enum Failure {
    /// PostgreSQL answered with an error: that is the answer.
    Refused(String),
    /// The connection is gone or could not be made: ask again on a new one.
    Lost(String),
}

/// Whether a query's `error` means the connection is gone rather than the question refused: no
/// SQLSTATE (I/O, closed), or one of the classes that end a session (08 connection exception, 57P
/// operator intervention: terminated, shutting down). Any failure to connect counts as lost.
fn lost(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        }
    }
}

/// A few connections that answer a batch's questions in parallel, each its share in one transaction.
pub struct RlsPool {
    database_url: String,
    connections: Vec<PoolConnection>,
}

impl RlsPool {
    pub fn new(database_url: &str, size: usize) -> RlsPool {
        RlsPool {
            database_url: database_url.to_owned(),
            connections: (0..size.max(1)).map(|_| PoolConnection::default()).collect(),
        }
    }

    /// Forgets a table's statements on every connection.
    pub fn forget(&mut self, oid: u32) {
        for connection in &mut self.connections {
            connection.statements.forget(oid);
        }
    }

    /// Answers every question, spread over the pool; an error is the answer of that question only.
    pub async fn answer<K>(&mut self, asks: Vec<Ask<K>>) -> Vec<(K, Result<Visible, String>)> {
        let width = self.connections.len();
        let mut buckets: Vec<Vec<Ask<K>>> = (0..width).map(|_| Vec::new()).collect();
        for (i, ask) in asks.into_iter().enumerate() {
            buckets[i % width].push(ask);
        }
        let url = self.database_url.as_str();
        let work = self.connections.iter_mut().zip(buckets).map(|(connection, asks)| async move {
            let answers = connection.answer_all(url, &asks).await;
            asks.into_iter().map(|ask| ask.key).zip(answers).collect::<Vec<_>>()
        });
        futures_util::future::join_all(work).await.into_iter().flatten().collect()
    }
}

impl PoolConnection {
    /// Every question's answer, in order. A refused question ends its transaction: the ones after
    /// it are asked again in a new one, so each question gets its own answer (at most one
    /// transaction per refusal).
    async fn answer_all<K>(&mut self, url: &str, asks: &[Ask<K>]) -> Vec<Result<Visible, String>> {
        let mut answers = Vec::with_capacity(asks.len());
        while answers.len() < asks.len() {
            let rest = &asks[answers.len()..];
            match self.visible_rows(url, rest).await {
                Ok(got) => answers.extend(got),
                // The connection could not be re-established: every question left has that answer.
                Err(error) => answers.extend(rest.iter().map(|_| Err(error.clone()))),
            }
        }
        answers
    }

    /// Answers from the start of `asks` (at least one), asked again on a new connection while the
    /// connection is what fails (at most [`RECONNECT_WITHIN`]).
    async fn visible_rows<K>(
        &mut self,
        url: &str,
        asks: &[Ask<K>],
    ) -> Result<Vec<Result<Visible, String>>, String> {
        let deadline = Instant::now() + RECONNECT_WITHIN;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(left, self.try_visible_rows(url, asks)).await {
                Ok(Ok(answers)) => {
                    if attempts > 1 {
                        tracing::info!(attempts, "rls checks answered on a new database connection");
                    }
                    return Ok(answers);
                }
                Ok(Err(error)) => error,
                Err(_) => format!("no answer within {RECONNECT_WITHIN:?}"),
            };
            self.client = None;
            if Instant::now() + RETRY_PAUSE >= deadline {
                tracing::warn!(%error, attempts, "rls check: the database connection could not be re-established");
                return Err(format!(
                    "the database connection was lost and not re-established within {RECONNECT_WITHIN:?} ({error})"
                ));
            }
            tracing::info!(%error, attempt = attempts, "rls check lost its database connection: asking again");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// One transaction's answers (at least one, ending at the first refusal); `Err` when the
    /// connection is lost.
    async fn try_visible_rows<K>(
        &mut self,
        url: &str,
        asks: &[Ask<K>],
    ) -> Result<Vec<Result<Visible, String>>, String> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.statements = RlsStatements::default();
            let client = super::catalog::connect(url).await.map_err(|e| e.to_string())?;
            self.client = Some(client);
        }
        let client = self.client.as_ref().expect("connected above");
        let classify = |e: &tokio_postgres::Error| {
            if lost(e) || client.is_closed() {
                Failure::Lost(pg_error_text(e))
            } else {
                Failure::Refused(pg_error_text(e))
            }
        };
        let answers = match self.statements.visible_rows(client, asks).await {
            Ok(answers) => answers,
            Err(e) => match classify(&e) {
                Failure::Lost(error) => return Err(error),
                // The transaction itself was refused: the first question carries it.
                Failure::Refused(error) => return Ok(vec![Err(error)]),
            },
        };
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            match answer.map_err(|e| classify(&e)) {
                Ok(rows) => out.push(Ok(rows)),
                Err(Failure::Refused(error)) => out.push(Err(error)),
                Err(Failure::Lost(error)) => return Err(error),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use realtime_proto::postgres::table::ColumnMeta;

    use super::*;

    #[test]
    fn query_uses_every_key_column_with_its_type() {
        let col = |name: &str, sql_type: &str, primary_key: bool| ColumnMeta {
            name: name.into(),
            typname: sql_type.into(),
            sql_type: sql_type.into(),
            primary_key,
        };
        let table = TableMeta {
            oid: 1,
            schema: "public".into(),
            name: "we\"ird".into(),
            columns: vec![col("a", "integer", true), col("b", "text", false), col("c", "uuid", true)],
            rls: true,
        };
        assert_eq!(
            visibility_query(&table),
            "select t.\"a\"::text, t.\"c\"::text from \"public\".\"we\"\"ird\" t where (t.\"a\", t.\"c\") in \
             (select * from unnest($1::text[]::integer[], $2::text[]::uuid[]))"
        );
    }
}
