//! The two questions a private channel asks PostgreSQL, each in a transaction that is rolled back:
//! - [`read`]: as the connection's own (privileged) user, insert one probe row per extension for the
//!   topic; then, as the caller's role with its claims, select them back. What RLS lets the role see
//!   is what it may read.
//! - [`write`]: as the caller's role, insert a row for the topic and extension. What RLS lets the role
//!   insert is what it may write; `insufficient_privilege` (a policy's `with check`, a missing grant)
//!   means no.
//!
//! The caller's context is set the way Supabase sets it, transaction-local: `role`, `realtime.topic`
//! (read by `realtime.topic()`), `request.jwt.claims`, `request.jwt.claim.sub` and `.role`.

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::Caller;

/// Which kind of message a check is about (`realtime.messages.extension`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extension {
    Broadcast,
    Presence,
}

impl Extension {
    pub fn as_str(self) -> &'static str {
        match self {
            Extension::Broadcast => "broadcast",
            Extension::Presence => "presence",
        }
    }
}

/// What a caller may read on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadAccess {
    pub broadcast: bool,
    pub presence: bool,
}

impl ReadAccess {
    /// A join needs one of them (PROTOCOL.md §6.2).
    pub fn any(self) -> bool {
        self.broadcast || self.presence
    }
}

const PROBES: &str = "insert into realtime.messages (topic, extension, private) \
     values ($1, 'broadcast', true), ($1, 'presence', true) returning id::text, extension";

const CONTEXT: &str = "select set_config('role', $1, true), set_config('realtime.topic', $2, true), \
     set_config('request.jwt.claims', $3, true), set_config('request.jwt.claim.sub', $4, true), \
     set_config('request.jwt.claim.role', $1, true), set_config('request.headers', '{}', true)";

const VISIBLE: &str = "select extension from realtime.messages where id = any($1::text[]::uuid[])";

const WRITE: &str = "insert into realtime.messages (topic, extension, private) values ($1, $2, true)";

/// Sets the caller's role and claims for the rest of the transaction.
async fn apply_context(
    tx: &tokio_postgres::Transaction<'_>,
    caller: &Caller,
) -> Result<(), tokio_postgres::Error> {
    let sub = caller.sub.clone().unwrap_or_default();
    tx.execute(CONTEXT, &[&caller.role, &caller.topic, &caller.claims_json, &sub]).await?;
    Ok(())
}

/// May the caller read the topic's broadcasts and presence?
pub async fn read(client: &mut Client, caller: &Caller) -> Result<ReadAccess, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let probes = tx.query(PROBES, &[&caller.topic]).await?;
    let ids: Vec<String> = probes.iter().map(|row| row.get(0)).collect();
    apply_context(&tx, caller).await?;
    let visible = tx.query(VISIBLE, &[&ids]).await?;
    tx.rollback().await?;
    let mut access = ReadAccess::default();
    for row in visible {
        match row.get::<_, &str>(0) {
            "broadcast" => access.broadcast = true,
            "presence" => access.presence = true,
            _ => {}
        }
    }
    Ok(access)
}

/// May the caller write `extension` messages to the topic?
pub async fn write(
    client: &mut Client,
    caller: &Caller,
    extension: Extension,
) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    apply_context(&tx, caller).await?;
    let allowed = match tx.execute(WRITE, &[&caller.topic, &extension.as_str()]).await {
        Ok(_) => true,
        Err(error) if error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => false,
        Err(error) => return Err(error),
    };
    tx.rollback().await?;
    Ok(allowed)
}
