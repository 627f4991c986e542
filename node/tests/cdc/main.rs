//! Black-box tests of Postgres Changes (PROTOCOL.md §5, §2.6, §2.9, §2.10, §11): the `realtime` binary
//! with `--database-url` against a real PostgreSQL (wal_level=logical).
//!
//! PostgreSQL: `REALTIME_TEST_DATABASE_URL` (a superuser URL, as `scripts/test.sh` exports); when unset,
//! the first test starts a throwaway cluster with `scripts/pg.sh start /tmp/realtime-cdc-pg-<pid>`,
//! stopped by a watcher once the test process exits. Each test makes its own database `t_<id>`
//! (Supabase-like schema: roles `anon`/`authenticated`/`service_role`, `auth.uid()`/`auth.jwt()`, the
//! `supabase_realtime` publication), its own slot `s_<id>` and data directory, and its own server
//! processes; at the end servers are killed and the slot and the database dropped.
//!
//! Modules: `basic` (payloads, events, ordering, wildcards, select, replica identity), `filters`
//! (every operator against PostgreSQL's own evaluation), `errors` (subscription errors, 400, 413),
//! `values` (JSON typing), `guard` (changes the node cannot trust: dropped tables, forged shipments),
//! `slot` (a slot of another database or node), `rls` (row level security, column privileges, failing
//! policies, token refresh), `wait` (`postgres_changes_options.wait`), `restart` (SIGKILL and resume), `liveness` (a walsender
//! ended or paused: noticed, subscribers told, nothing lost), `resume` (resumable
//! delivery), `inbox` (the notifications REST and GraphQL API), `schema` (the
//! `realtime` schema the node installs: migrations, `realtime.send`, policies, the partition janitor).
//!
//! `IT_KEEP_LOGS=1` keeps every server's stderr log; a failing test prints the tail of its logs.

mod basic;
mod cluster;
mod common;
mod db_broadcast;
mod errors;
mod filters;
mod guard;
mod handover;
mod inbox;
mod liveness;
mod notifications;
mod private;
mod restart;
mod resume;
mod rls;
mod schema;
mod slot;
mod stalled;
mod values;
mod wait;

/// The harness shared with the other test binary (`node/tests/support`).
#[path = "../support/mod.rs"]
mod support;
