//! The notifications inbox's API (issue 10): backends create notifications with
//! `POST /api/notifications` (a `service_role` token), users read, mark and delete their own through
//! GraphQL at `/graphql`. The push of each new row to `notifications:<user_id>` is the CDC stream's
//! job ([`crate::cdc::notifications`]), so a row inserted here and one inserted with plain SQL reach
//! the user the same way.
//!
//! - [`input`]: the pure check of a REST body;
//! - [`store`]: the SQL, always scoped to the caller's user id;
//! - [`graphql`]: the schema, its limits and error codes.
//!
//! The HTTP side (tokens, bodies, status codes) is in `crate::http::notifications` and
//! `crate::http::graphql`. Queries run on the DB arbiter through the inbox's own small pool
//! ([`crate::db`]).

pub mod graphql;
pub mod input;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use actix::ArbiterHandle;

use crate::config::InboxSettings;
use crate::db::{Db, DbError};
use crate::limits::KeyedRate;
use input::NewNotification;
use store::{BadCursor, Notification, Page};

/// Why an inbox operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("rate limit exceeded: at most {per_minute} {operation} per user per minute")]
    RateLimited { operation: &'static str, per_minute: u32 },
    #[error(transparent)]
    BadCursor(#[from] BadCursor),
    #[error("the notifications could not be read or written: {0}")]
    Db(#[from] DbError),
}

/// The node's inbox: present when `DATABASE_URL` is set. Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    db: Db,
    pub(crate) rates: Arc<Rates>,
}

/// Per-user limits of the GraphQL operations.
pub(crate) struct Rates {
    pub(crate) list: OperationRate,
    pub(crate) mark_read: OperationRate,
    pub(crate) delete: OperationRate,
}

pub(crate) struct OperationRate {
    operation: &'static str,
    per_minute: u32,
    users: KeyedRate,
}

impl OperationRate {
    fn new(operation: &'static str, per_minute: u32) -> OperationRate {
        OperationRate { operation, per_minute, users: KeyedRate::per_minute(per_minute) }
    }

    /// Counts one operation of `user`; refused over the limit.
    pub(crate) fn check(&self, user: &str) -> Result<(), InboxError> {
        if self.users.allow(user, Instant::now()) {
            Ok(())
        } else {
            crate::metrics::metrics().refused(crate::metrics::Refusal::InboxRate);
            Err(InboxError::RateLimited { operation: self.operation, per_minute: self.per_minute })
        }
    }
}

impl Inbox {
    pub fn new(database_url: &str, settings: &InboxSettings, arbiter: ArbiterHandle) -> Inbox {
        let rates = Rates {
            list: OperationRate::new("notifications queries", settings.list_per_minute),
            mark_read: OperationRate::new("markNotificationRead mutations", settings.mark_read_per_minute),
            delete: OperationRate::new("deleteNotification mutations", settings.delete_per_minute),
        };
        Inbox { db: Db::new(database_url, settings.pool_size, arbiter), rates: Arc::new(rates) }
    }

    pub async fn insert(&self, new: NewNotification) -> Result<Notification, InboxError> {
        Ok(self.db.with_client(move |mut c| async move { store::insert(c.client(), &new).await }).await?)
    }

    pub async fn list(&self, user: String, page: Page) -> Result<Vec<Notification>, InboxError> {
        let rows = self
            .db
            .with_client(move |mut c| async move { store::list(c.client(), &user, &page).await })
            .await?;
        Ok(rows?)
    }

    pub async fn mark_read(&self, user: String, id: uuid::Uuid) -> Result<Option<Notification>, InboxError> {
        Ok(self
            .db
            .with_client(move |mut c| async move { store::mark_read(c.client(), &user, &id).await })
            .await?)
    }

    pub async fn delete(&self, user: String, id: uuid::Uuid) -> Result<bool, InboxError> {
        Ok(self
            .db
            .with_client(move |mut c| async move { store::delete(c.client(), &user, &id).await })
            .await?)
    }
}
