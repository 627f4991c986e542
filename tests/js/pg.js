'use strict';
// PostgreSQL helpers for the Postgres Changes files (1*-pg-*.test.js).
//
// - REALTIME_TEST_DATABASE_URL (superuser URL of a wal_level=logical server; scripts/test.sh starts
//   one with scripts/pg.sh) is required: requireDatabaseUrl() throws a clear error without it.
// - createDb(sql)   a database of its own (t_<id>) with a Supabase-like schema (roles anon /
//                   authenticated / service_role, auth.uid(), auth.jwt(), grants, an empty
//                   supabase_realtime publication) plus `sql`; a slot name and a data directory.
//                   db.sql(q) runs SQL, db.rows(q) returns the first column of each row (text),
//                   db.drop() removes the slot, the database and the data directory.
// - startPgServer(db, extraArgs)   the server (harness.startServer) on that database.
// - usePgServer({args, table, setup})   in a describe: database + server for its tests, dropped after.
// - waitForTable(db, 'realtime.messages')   waits for a table the node's schema creates after it listens.
// - user(role)      {id, token} for a fresh uuid user.
// Everything goes through `psql` (no npm dependency).

const { execFile } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const h = require('./harness');

function requireDatabaseUrl() {
  const url = process.env.REALTIME_TEST_DATABASE_URL;
  if (!url) {
    throw new Error(
      'REALTIME_TEST_DATABASE_URL is not set: the Postgres Changes tests need a PostgreSQL with ' +
        'wal_level=logical (scripts/test.sh starts one; or `scripts/pg.sh start /tmp/pg` and export the URL it prints)',
    );
  }
  return url;
}

/** Runs `sql` (any number of statements) with psql; resolves to stdout (unaligned, tuples only). */
function psql(url, sql, { timeoutMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'psql',
      [url, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-f', '-'],
      { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`psql failed: ${err.message}\n${stderr}\nSQL:\n${sql}`));
        else resolve(stdout);
      },
    );
    child.stdin.end(sql);
  });
}

const ROLES_SQL = `
do $$ begin
  begin create role anon nologin noinherit; exception when duplicate_object or unique_violation then null; end;
  begin create role authenticated nologin noinherit; exception when duplicate_object or unique_violation then null; end;
  begin create role service_role nologin noinherit bypassrls; exception when duplicate_object or unique_violation then null; end;
end $$;
`;

const SCHEMA_SQL = `
create schema auth;
create function auth.uid() returns uuid language sql stable as $$
  select nullif(coalesce(current_setting('request.jwt.claim.sub', true),
                         current_setting('request.jwt.claims', true)::jsonb ->> 'sub'), '')::uuid
$$;
create function auth.role() returns text language sql stable as $$
  select nullif(coalesce(current_setting('request.jwt.claim.role', true),
                         current_setting('request.jwt.claims', true)::jsonb ->> 'role'), '')::text
$$;
create function auth.jwt() returns jsonb language sql stable as $$
  select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
grant usage on schema public to anon, authenticated, service_role;
grant usage on schema auth to anon, authenticated, service_role;
grant execute on all functions in schema auth to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
create publication supabase_realtime;
`;

async function createDb(extraSql = '') {
  const admin = requireDatabaseUrl();
  const id = crypto.randomBytes(6).toString('hex');
  const name = `t_${id}`;
  await psql(admin, ROLES_SQL);
  await psql(admin, `create database ${name};`);
  await psql(admin, `alter database ${name} set timezone to 'UTC';`);
  const url = admin.replace(/\/[^/]*$/, `/${name}`);
  await psql(url, SCHEMA_SQL + extraSql);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'realtime-js-pg-'));
  const slot = `s_${id}`;
  const db = {
    name,
    url,
    slot,
    dataDir,
    sql: (q) => psql(url, q),
    /** First column of each row, as text. */
    rows: async (q) => (await psql(url, q)).split('\n').filter((l) => l.length > 0),
    async drop() {
      // The server (stopped before) may still hold the slot for a moment.
      for (let i = 0; i < 50; i++) {
        try {
          await psql(
            url,
            `select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = '${slot}' and active_pid is not null;
             select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '${slot}';`,
          );
          break;
        } catch (e) {
          if (i === 49) console.error(`could not drop slot ${slot}: ${e.message}`);
          await h.sleep(200);
        }
      }
      await psql(admin, `drop database if exists ${name} with (force);`).catch((e) =>
        console.error(`could not drop database ${name}: ${e.message}`),
      );
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return db;
}

/** The server on `db` (its own slot and data directory). */
function startPgServer(db, extraArgs = []) {
  return h.startServer([
    '--database-url', db.url,
    '--slot', db.slot,
    '--data-dir', db.dataDir,
    '--shutdown-grace-ms', '500',
    ...extraArgs,
  ]);
}

/**
 * Waits until `table` exists: the node prints its listening line before it has applied its
 * `realtime` schema, so tests that write policies on (or rows into) its tables wait for them first.
 */
function waitForTable(db, table, ms = 15000) {
  return h.waitFor(async () => (await db.rows(`select to_regclass('${table}') is not null`))[0] === 't', ms, table);
}

/** A fresh user: uuid and a token for `role`. */
function user(role = 'authenticated') {
  const id = crypto.randomUUID();
  return { id, token: h.signJwt({ role, sub: id, aud: 'authenticated', iat: h.nowSec(), exp: h.nowSec() + 3600 }) };
}

/** Waits for `Subscribed to PostgreSQL` on a channel opened with harness.openChannel. */
function waitPgSubscribed(ch, ms = 10000) {
  return h.waitFor(
    () => ch.sys.find((s) => s.extension === 'postgres_changes' && s.status === 'ok'),
    ms,
    `${ch.topic}: "Subscribed to PostgreSQL" (system messages: ${JSON.stringify(ch.sys)})`,
  );
}

/** Waits until `ch.pg` holds `n` changes; returns them. */
async function waitChanges(ch, n, ms = 10000) {
  await h.waitFor(() => ch.pg.length >= n, ms, `${n} postgres changes on ${ch.topic} (got ${JSON.stringify(ch.pg)})`);
  return ch.pg.slice(0, n);
}

const TS_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/**
 * Inside a `describe`: a fresh database and a server on it (with `args`) for the block's tests, once
 * the node has created `table`, then `setup` SQL; both dropped after the block. Returns `{db, server}`,
 * filled in before the first test.
 */
function usePgServer({ args = [], table = 'realtime.messages', setup = '' } = {}) {
  const { before, after } = require('node:test');
  const env = { db: null, server: null };
  before(async () => {
    requireDatabaseUrl();
    env.db = await createDb('');
    env.server = await startPgServer(env.db, args);
    await waitForTable(env.db, table);
    if (setup) await env.db.sql(setup);
  });
  after(async () => {
    if (env.server) await env.server.stop();
    if (env.db) await env.db.drop();
  });
  return env;
}

module.exports = {
  usePgServer,
  requireDatabaseUrl,
  psql,
  createDb,
  startPgServer,
  waitForTable,
  user,
  waitPgSubscribed,
  waitChanges,
  TS_RE,
};
