//! The inbox's GraphQL schema (async-graphql): the caller's own notifications, newest first, and
//! marking one read or deleting it. The caller ([`Caller`]) is put into each request by the HTTP
//! handler from a verified token; every resolver passes its user id down to [`super::store`], whose
//! SQL is scoped to it, and counts against that user's per-minute limit ([`super::Rates`]).
//!
//! What one request may cost is bounded before anything runs, by async-graphql's complexity limit
//! (`REALTIME_GRAPHQL_MAX_COMPLEXITY`): every field counts 1, and `notifications` counts the rows it
//! may return, its clamped `limit`, plus its selection ([`list_complexity`]). Aliases add up, so 250
//! aliased `notifications(limit: 100)` (which made a 160 MB answer from a 12 KB request) cost 25,000
//! and are refused, while four full pages fit the default 500. Behind it, the HTTP handler refuses an
//! answer larger than [`MAX_RESPONSE_BYTES`] (an operator may raise the complexity limit or the
//! content size).
//!
//! Errors a client can act on carry `extensions.code`: `RATE_LIMITED` (the handler answers it with
//! HTTP 429), `NOT_FOUND`, `BAD_USER_INPUT`, `INTERNAL` (the database failed), `RESPONSE_TOO_LARGE`.

use async_graphql::{Context, EmptySubscription, ErrorExtensions, Json, Object, Schema, ID};

use super::store::{Notification, Page};
use super::{Inbox, InboxError};
use crate::config::InboxSettings;

/// The schema served at `/graphql`.
pub type InboxSchema = Schema<Query, Mutation, EmptySubscription>;

/// `extensions.code` of a refused-for-rate error.
pub const RATE_LIMITED: &str = "RATE_LIMITED";

/// `extensions.code` of a query over the complexity limit (see [`explain_too_complex`]).
pub const TOO_COMPLEX: &str = "TOO_COMPLEX";

/// async-graphql's message for a query over the complexity limit.
const TOO_COMPLEX_MESSAGE: &str = "Query is too complex.";

/// `extensions.code` of an answer over [`MAX_RESPONSE_BYTES`].
pub const RESPONSE_TOO_LARGE: &str = "RESPONSE_TOO_LARGE";

/// `notifications(limit)`: when absent, and the range it is clamped to.
pub const DEFAULT_LIMIT: i32 = 50;
pub const MAX_LIMIT: i32 = 100;

/// Largest answer, in bytes of JSON. With the defaults the complexity limit keeps answers under about
/// 8 MB (500 rows of 16 KiB contents); this holds should either be raised.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The verified caller: its token's `sub`, a UUID.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: uuid::Uuid,
}

/// Builds the schema with the configured depth, complexity and introspection.
pub fn schema(inbox: Inbox, settings: &InboxSettings) -> InboxSchema {
    let builder = Schema::build(Query, Mutation, EmptySubscription)
        .data(inbox)
        .limit_depth(settings.max_depth)
        .limit_complexity(settings.max_complexity);
    if settings.introspection {
        builder.finish()
    } else {
        builder.disable_introspection().finish()
    }
}

fn coded(message: impl Into<String>, code: &'static str) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

impl ErrorExtensions for InboxError {
    fn extend(&self) -> async_graphql::Error {
        let code = match self {
            InboxError::RateLimited { .. } => RATE_LIMITED,
            InboxError::BadCursor(_) => "BAD_USER_INPUT",
            InboxError::Db(_) => "INTERNAL",
        };
        coded(self.to_string(), code)
    }
}

fn parts<'a>(ctx: &Context<'a>) -> (&'a Inbox, String) {
    let inbox = ctx.data_unchecked::<Inbox>();
    let caller = ctx.data_unchecked::<Caller>();
    (inbox, caller.user_id.to_string())
}

/// `limit` clamped to 1..=[`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn clamp_limit(limit: Option<i32>) -> i64 {
    i64::from(limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT))
}

/// The complexity of a `notifications` field: the rows it may return, plus its selection (each
/// field 1, counted once, not per row).
pub fn list_complexity(limit: Option<i32>, child_complexity: usize) -> usize {
    clamp_limit(limit) as usize + child_complexity
}

/// Says what the complexity limit counts in async-graphql's bare `Query is too complex.` (a client
/// asking for many aliased lists needs to know that their limits add up), with code [`TOO_COMPLEX`].
pub fn explain_too_complex(response: &mut async_graphql::Response, max_complexity: usize) {
    for error in response.errors.iter_mut().filter(|e| e.message == TOO_COMPLEX_MESSAGE) {
        error.message = format!(
            "Query is too complex: at most {max_complexity}, where every field counts 1 and \
             `notifications` also counts its `limit` (the rows it may return), across aliases"
        );
        error.extensions.get_or_insert_with(Default::default).set("code", TOO_COMPLEX);
    }
}

pub struct Query;

#[Object]
impl Query {
    /// The caller's notifications, newest first: `limit` (default 50, clamped to 1..100) rows created
    /// before `before` (a `createdAt`), only unread ones with `unreadOnly: true`. Counts `limit` toward
    /// the query's complexity.
    #[graphql(complexity = "list_complexity(limit, child_complexity)")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        unread_only: Option<bool>,
        limit: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Vec<Notification>> {
        let (inbox, user) = parts(ctx);
        inbox.rates.list.check(&user).map_err(|e| e.extend())?;
        let page = Page { unread_only: unread_only.unwrap_or(false), limit: clamp_limit(limit), before };
        inbox.list(user, page).await.map_err(|e| e.extend())
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Marks one of the caller's notifications read (`readAt` is set the first time only) and returns
    /// it; null with a `NOT_FOUND` error when the caller has no notification with this id.
    async fn mark_notification_read(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Notification>> {
        let (inbox, user) = parts(ctx);
        inbox.rates.mark_read.check(&user).map_err(|e| e.extend())?;
        let Ok(id) = uuid::Uuid::parse_str(&id) else { return Err(not_found()) };
        inbox.mark_read(user, id).await.map_err(|e| e.extend())?.map(Some).ok_or_else(not_found)
    }

    /// Deletes one of the caller's notifications; false when the caller has no notification with this id.
    async fn delete_notification(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let (inbox, user) = parts(ctx);
        inbox.rates.delete.check(&user).map_err(|e| e.extend())?;
        let Ok(id) = uuid::Uuid::parse_str(&id) else { return Ok(false) };
        inbox.delete(user, id).await.map_err(|e| e.extend())
    }
}

fn not_found() -> async_graphql::Error {
    coded("notification not found", "NOT_FOUND")
}

#[Object(name = "Notification")]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    async fn user_id(&self) -> ID {
        ID(self.user_id.clone())
    }
    #[graphql(name = "type")]
    async fn kind(&self) -> &str {
        &self.kind
    }
    /// Any JSON object.
    async fn content(&self) -> Json<&serde_json::Value> {
        Json(&self.content)
    }
    /// RFC 3339, UTC; null while unread.
    async fn read_at(&self) -> Option<&str> {
        self.read_at.as_deref()
    }
    /// RFC 3339, UTC, microseconds: the `before` cursor of the next page.
    async fn created_at(&self) -> &str {
        &self.created_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_defaults_to_50_and_is_clamped() {
        assert_eq!(clamp_limit(None), 50);
        assert_eq!(clamp_limit(Some(0)), 1);
        assert_eq!(clamp_limit(Some(-5)), 1);
        assert_eq!(clamp_limit(Some(100)), 100);
        assert_eq!(clamp_limit(Some(101)), 100);
        assert_eq!(clamp_limit(Some(7)), 7);
    }

    /// A notifications query as the complexity limit sees it (counted before anything runs, so no
    /// inbox is needed to be refused): async-graphql's messages.
    async fn complexity_errors(query: &str, variables: serde_json::Value) -> Vec<String> {
        let schema = Schema::build(Query, Mutation, EmptySubscription)
            .limit_complexity(
                crate::config::Settings::default().graphql_max_complexity().expect("the default is valid"),
            )
            .finish();
        let request = async_graphql::Request::new(query)
            .variables(async_graphql::Variables::from_json(variables))
            .data(Caller { user_id: uuid::Uuid::nil() });
        let response = schema.execute(request).await;
        response.errors.into_iter().map(|e| e.message).collect()
    }

    #[test]
    fn too_complex_is_explained_with_a_code() {
        let error = async_graphql::ServerError::new(TOO_COMPLEX_MESSAGE, None);
        let mut response = async_graphql::Response::from_errors(vec![error]);
        explain_too_complex(&mut response, 500);
        let error = &response.errors[0];
        assert!(error.message.starts_with("Query is too complex: at most 500,"), "{}", error.message);
        let code = error.extensions.as_ref().and_then(|e| e.get("code")).cloned();
        assert_eq!(code, Some(async_graphql::Value::from(TOO_COMPLEX)));
    }

    #[tokio::test]
    async fn list_limits_add_up_across_aliases() {
        assert_eq!(list_complexity(Some(100), 1), 101);
        assert_eq!(list_complexity(None, 6), 56);
        assert_eq!(list_complexity(Some(i32::MAX), 0), 100, "clamped");
        let aliases: String =
            (0..250).map(|i| format!("a{i}: notifications(limit: 100) {{ content }} ")).collect();
        assert_eq!(
            complexity_errors(&format!("{{ {aliases} }}"), serde_json::json!({})).await,
            ["Query is too complex."]
        );
        // Through a variable too: five pages of 100 are 505.
        let five = "query($n: Int) { a: notifications(limit: $n) { id } b: notifications(limit: $n) { id } \
                    c: notifications(limit: $n) { id } d: notifications(limit: $n) { id } \
                    e: notifications(limit: $n) { id } }";
        assert_eq!(complexity_errors(five, serde_json::json!({"n": 100})).await, ["Query is too complex."]);
    }

    #[test]
    fn the_schema_has_the_documented_shape() {
        let sdl = Schema::build(Query, Mutation, EmptySubscription).finish().sdl();
        for part in [
            "notifications(unreadOnly: Boolean, limit: Int, before: String): [Notification!]!",
            "markNotificationRead(id: ID!): Notification",
            "deleteNotification(id: ID!): Boolean!",
            "type: String!",
            "content: JSON!",
            "readAt: String",
            "createdAt: String!",
        ] {
            assert!(sdl.contains(part), "{part} missing from\n{sdl}");
        }
    }
}
