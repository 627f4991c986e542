'use strict';
// 10. Postgres Changes through the real client: INSERT/UPDATE/DELETE listeners yield
//     {schema, table, commit_timestamp, eventType, new, old, errors}; event-specific listeners,
//     filters, "Subscribed to PostgreSQL", a table not in the publication, postgres_changes_options.wait.
//     Needs REALTIME_TEST_DATABASE_URL (scripts/test.sh sets it).
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const pg = require('./pg');

const SCHEMA = `
create table todos (id int8 primary key, title text, done bool not null default false);
create table notpub (id int8 primary key);
alter publication supabase_realtime add table todos;
`;

/** A channel with one collector per postgres_changes filter (`ch.got[i]`), subscribed. */
function pgChannel(client, filters, config = {}) {
  const ch = h.openChannel(client, h.uniqueTopic('pg'), { config, subscribe: false });
  ch.got = filters.map(() => []);
  filters.forEach((f, i) => ch.on('postgres_changes', f, (m) => ch.got[i].push(m)));
  ch.subscribe((status, err) => ch.statuses.push({ status, err, at: Date.now() }));
  return ch;
}

async function subscribedPg(client, filters, config) {
  const ch = pgChannel(client, filters, config);
  const first = await h.waitFor(() => ch.statuses[0], 20000, `${ch.topic} first status`);
  assert.equal(first.status, 'SUBSCRIBED', `${ch.topic}: ${first.status} ${first.err ? first.err.message : ''}`);
  await pg.waitPgSubscribed(ch);
  return ch;
}

async function waitGot(ch, i, n, ms = 10000) {
  await h.waitFor(() => ch.got[i].length >= n, ms, `${n} changes on listener ${i} of ${ch.topic}: ${JSON.stringify(ch.got)}`);
  return ch.got[i];
}

function checkTs(m) {
  assert.match(m.commit_timestamp, pg.TS_RE, `commit_timestamp ${m.commit_timestamp}`);
  const age = Math.abs(Date.now() - Date.parse(m.commit_timestamp));
  assert.ok(age < 60000, `commit_timestamp ${m.commit_timestamp} is about now`);
}

describe('postgres changes', () => {
  let db;
  let server;
  let nextId = 1;
  before(async () => {
    pg.requireDatabaseUrl();
    db = await pg.createDb(SCHEMA);
    server = await pg.startPgServer(db);
  });
  after(async () => {
    if (server) await server.stop();
    if (db) await db.drop();
  });

  for (const vsn of h.VERSIONS) {
    describe(`vsn ${vsn}`, () => {
      it('INSERT, UPDATE, DELETE reach "*" and the matching event listeners with the realtime-js payload', async (t) => {
        const { token } = pg.user();
        const client = h.newClient(t, server, { vsn, apikey: token });
        const filters = ['*', 'INSERT', 'UPDATE', 'DELETE'].map((event) => ({ event, schema: 'public', table: 'todos' }));
        const ch = await subscribedPg(client, filters);
        assert.deepEqual(ch.sys[0], {
          extension: 'postgres_changes',
          status: 'ok',
          message: 'Subscribed to PostgreSQL',
          channel: ch.subTopic,
        });
        const id = nextId++;
        await db.sql(`insert into todos (id, title) values (${id}, 'first');`);
        await db.sql(`update todos set title = 'second', done = true where id = ${id};`);
        await db.sql(`delete from todos where id = ${id};`);
        const all = await waitGot(ch, 0, 3);
        const [ins, upd, del] = all;
        for (const m of all) checkTs(m);
        const strip = ({ commit_timestamp, ...rest }) => rest;
        assert.deepEqual(strip(ins), {
          schema: 'public',
          table: 'todos',
          eventType: 'INSERT',
          new: { id, title: 'first', done: false },
          old: {},
          errors: null,
        });
        assert.deepEqual(strip(upd), {
          schema: 'public',
          table: 'todos',
          eventType: 'UPDATE',
          new: { id, title: 'second', done: true },
          old: { id },
          errors: null,
        });
        assert.deepEqual(strip(del), {
          schema: 'public',
          table: 'todos',
          eventType: 'DELETE',
          new: {},
          old: { id },
          errors: null,
        });
        await h.sleep(500);
        assert.equal(ch.got[0].length, 3);
        assert.deepEqual(ch.got.slice(1).map((g) => g.map((m) => m.eventType)), [['INSERT'], ['UPDATE'], ['DELETE']]);
        assert.deepEqual(ch.statuses.map((s) => s.status), ['SUBSCRIBED']);
      });

      it('filter: only matching rows, for each filter listener', async (t) => {
        const client = h.newClient(t, server, { vsn, apikey: pg.user().token });
        const base = nextId;
        nextId += 3;
        const filters = [
          { event: 'INSERT', schema: 'public', table: 'todos', filter: `id=eq.${base + 1}` },
          { event: 'INSERT', schema: 'public', table: 'todos', filter: `title=in.(a,c)` },
          { event: '*', schema: 'public', table: 'todos', filter: `id=gte.${base + 1},title=neq.c` },
        ];
        const ch = await subscribedPg(client, filters);
        await db.sql(`insert into todos (id, title) values (${base}, 'a'), (${base + 1}, 'b'), (${base + 2}, 'c');`);
        await waitGot(ch, 0, 1);
        await waitGot(ch, 1, 2);
        await waitGot(ch, 2, 1);
        await h.sleep(500);
        assert.deepEqual(ch.got[0].map((m) => m.new.id), [base + 1]);
        assert.deepEqual(ch.got[1].map((m) => m.new.title), ['a', 'c']);
        assert.deepEqual(ch.got[2].map((m) => m.new.id), [base + 1]);
      });

      it('a table that is not in the publication: system error, the channel stays subscribed', async (t) => {
        const client = h.newClient(t, server, { vsn, apikey: pg.user().token });
        const ch = pgChannel(client, [{ event: '*', schema: 'public', table: 'notpub' }]);
        await h.waitStatus(ch, 'SUBSCRIBED', 10000);
        const sys = await h.waitFor(() => ch.sys.find((s) => s.extension === 'postgres_changes'), 10000, 'system message');
        assert.deepEqual(sys, {
          extension: 'postgres_changes',
          status: 'error',
          message:
            'Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given ' +
            'connect parameters: [event: *, schema: public, table: notpub, filters: [], select: nil]',
          channel: ch.subTopic,
        });
        await db.sql(`insert into notpub values (${nextId++});`);
        await h.sleep(500);
        assert.deepEqual(ch.got[0], []);
        assert.deepEqual(ch.statuses.map((s) => s.status), ['SUBSCRIBED']);
      });

      it('postgres_changes_options.wait: SUBSCRIBED means live (an insert right after is delivered)', async (t) => {
        const client = h.newClient(t, server, { vsn, apikey: pg.user().token });
        const ch = pgChannel(client, [{ event: 'INSERT', schema: 'public', table: 'todos' }], {
          postgres_changes_options: { wait: true },
        });
        await h.waitStatus(ch, 'SUBSCRIBED', 20000);
        const id = nextId++;
        await db.sql(`insert into todos (id, title) values (${id}, 'waited');`);
        const [m] = await waitGot(ch, 0, 1);
        assert.deepEqual(m.new, { id, title: 'waited', done: false });
        assert.ok(ch.sys.some((s) => s.message === 'Subscribed to PostgreSQL'), JSON.stringify(ch.sys));
      });

      it('postgres_changes_options.wait on a table not in the publication: CHANNEL_ERROR RealtimeDisabledForConfiguration', async (t) => {
        const client = h.newClient(t, server, { vsn, apikey: pg.user().token });
        const ch = pgChannel(client, [{ event: '*', schema: 'public', table: 'notpub' }], {
          postgres_changes_options: { wait: true },
        });
        const st = await h.waitStatus(ch, 'CHANNEL_ERROR', 20000);
        assert.match(st.err.message, /^RealtimeDisabledForConfiguration: /);
        assert.ok(!ch.statuses.some((s) => s.status === 'SUBSCRIBED'), JSON.stringify(ch.statuses));
      });
    });
  }

  it('mixed: 1.0.0 and 2.0.0 subscribers of one table get the same changes', async (t) => {
    const filters = [{ event: '*', schema: 'public', table: 'todos' }];
    const a = await subscribedPg(h.newClient(t, server, { vsn: '1.0.0', apikey: pg.user().token }), filters);
    const b = await subscribedPg(h.newClient(t, server, { vsn: '2.0.0', apikey: pg.user().token }), filters);
    const id = nextId++;
    await db.sql(`insert into todos (id, title) values (${id}, 'both'); update todos set done = true where id = ${id};`);
    const ga = await waitGot(a, 0, 2);
    const gb = await waitGot(b, 0, 2);
    assert.deepEqual(ga, gb);
    assert.deepEqual(ga.map((m) => m.eventType), ['INSERT', 'UPDATE']);
  });

  it('server still serving', async (t) => {
    await h.assertServerServing(t, server);
  });
});
