//! The inbox's GraphQL schema (async-graphql): the caller's own notifications, newest first, and
//! marking one read or deleting it. The caller ([`Caller`]) is put into each request by the HTTP
//! handler from a verified token; every resolver passes its user id down to [`super::store`], whose
//! SQL is scoped to it, and counts against that user's per-minute limit ([`super::Rates`]).
//!
//! Errors a client can act on carry `extensions.code`: `RATE_LIMITED` (the handler answers it with
//! HTTP 429), `NOT_FOUND`, `BAD_USER_INPUT`, `INTERNAL` (the database failed).

use async_graphql::{Context, EmptySubscription, ErrorExtensions, Json, Object, Schema, ID};

use super::store::{Notification, Page};
use super::{Inbox, InboxError};
use crate::config::InboxSettings;

/// The schema served at `/graphql`.
pub type InboxSchema = Schema<Query, Mutation, EmptySubscription>;

/// `extensions.code` of a refused-for-rate error.
pub const RATE_LIMITED: &str = "RATE_LIMITED";

/// `notifications(limit)`: when absent, and the range it is clamped to.
pub const DEFAULT_LIMIT: i32 = 50;
pub const MAX_LIMIT: i32 = 100;

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

pub struct Query;

#[Object]
impl Query {
    /// The caller's notifications, newest first: `limit` (default 50, clamped to 1..100) rows created
    /// before `before` (a `createdAt`), only unread ones with `unreadOnly: true`.
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
