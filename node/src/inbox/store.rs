//! The inbox's SQL, run as the node's database user. Every statement that reads or changes a user's
//! rows is scoped `where user_id = <the caller>` in SQL itself, so ownership does not depend on the
//! code that calls it: another user's id simply matches no row.
//!
//! Rows come back with their timestamps as RFC 3339 text in UTC with microseconds (PostgreSQL's own
//! precision), so a `createdAt` handed back as a `before` cursor compares exactly.

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row};

use super::input::NewNotification;

/// One row of `realtime.notifications`, as the REST endpoint and GraphQL return it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub id: String,
    pub user_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: Value,
    pub read_at: Option<String>,
    pub created_at: String,
}

/// Which of a user's notifications to list (already clamped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub unread_only: bool,
    pub limit: i64,
    /// Only rows created strictly before this timestamp (any text PostgreSQL reads as timestamptz).
    pub before: Option<String>,
}

/// `before` is not a timestamp PostgreSQL can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("before must be a timestamp, such as a notification's createdAt (RFC 3339)")]
pub struct BadCursor;

/// The columns of a row, as [`from_row`] reads them. In `ORDER BY`, qualify the table's own columns
/// (`n.created_at`): a bare name could mean an output column.
const COLUMNS: &str = r#"id::text, user_id::text, type, content::text,
  to_char(read_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
  to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#;

fn from_row(row: &Row) -> Notification {
    let content: &str = row.get(3);
    Notification {
        id: row.get(0),
        user_id: row.get(1),
        kind: row.get(2),
        // jsonb text from PostgreSQL is always valid JSON.
        content: serde_json::from_str(content).unwrap_or(Value::Null),
        read_at: row.get(4),
        created_at: row.get(5),
    }
}

pub async fn insert(client: &Client, new: &NewNotification) -> Result<Notification, tokio_postgres::Error> {
    let sql = format!(
        "insert into realtime.notifications (user_id, type, content) \
         values ($1::text::uuid, $2, $3::text::jsonb) returning {COLUMNS}"
    );
    let row = client.query_one(&sql, &[&new.user_id.to_string(), &new.kind, &new.content]).await?;
    Ok(from_row(&row))
}

/// `user`'s notifications, newest first.
///
/// The order is exactly the index's, `(user_id, created_at desc)`, so a page is read straight off it
/// whatever the planner estimates. A tie-break on `id` looked harmless but made PostgreSQL read and
/// sort every row of a user its statistics did not know yet (estimated at one row): 30 ms instead of
/// 0.2 ms for a page of a 10,000-row inbox. Rows with the same `created_at` (one transaction's) come
/// in no particular order; the `before` cursor passes over such ties anyway.
pub async fn list(
    client: &Client,
    user: &str,
    page: &Page,
) -> Result<Result<Vec<Notification>, BadCursor>, tokio_postgres::Error> {
    let sql = format!(
        "select {COLUMNS} from realtime.notifications n \
         where n.user_id = $1::text::uuid and (not $2 or n.read_at is null) \
           and ($3::text is null or n.created_at < $3::text::timestamptz) \
         order by n.created_at desc limit $4"
    );
    match client.query(&sql, &[&user, &page.unread_only, &page.before, &page.limit]).await {
        Ok(rows) => Ok(Ok(rows.iter().map(from_row).collect())),
        Err(e) if e.code().is_some_and(is_bad_timestamp) => Ok(Err(BadCursor)),
        Err(e) => Err(e),
    }
}

fn is_bad_timestamp(code: &SqlState) -> bool {
    [
        SqlState::INVALID_DATETIME_FORMAT,
        SqlState::DATETIME_FIELD_OVERFLOW,
        SqlState::INVALID_TEXT_REPRESENTATION,
    ]
    .contains(code)
}

/// Marks `user`'s notification `id` read (the first time only); `None` when `user` has no such row.
pub async fn mark_read(
    client: &Client,
    user: &str,
    id: &uuid::Uuid,
) -> Result<Option<Notification>, tokio_postgres::Error> {
    let sql = format!(
        "update realtime.notifications set read_at = coalesce(read_at, now()) \
         where id = $1::text::uuid and user_id = $2::text::uuid returning {COLUMNS}"
    );
    Ok(client.query_opt(&sql, &[&id.to_string(), &user]).await?.as_ref().map(from_row))
}

/// Deletes `user`'s notification `id`; false when `user` has no such row.
pub async fn delete(client: &Client, user: &str, id: &uuid::Uuid) -> Result<bool, tokio_postgres::Error> {
    let sql = "delete from realtime.notifications where id = $1::text::uuid and user_id = $2::text::uuid";
    Ok(client.execute(sql, &[&id.to_string(), &user]).await? > 0)
}
