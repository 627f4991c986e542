'use strict';
// 11. Postgres Changes under Row Level Security through the real client: two users' tokens, each
//     sees only their own rows (both serializers); setAuth() to another user switches the rows.
//     Needs REALTIME_TEST_DATABASE_URL (scripts/test.sh sets it).
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const pg = require('./pg');

const SCHEMA = `
create table items (id int8 primary key, user_id uuid not null, body text);
alter table items enable row level security;
create policy own_rows on items for select to authenticated using (user_id = auth.uid());
alter publication supabase_realtime add table items;
`;

function itemsChannel(client) {
  const ch = h.openChannel(client, h.uniqueTopic('rls'), {
    postgres: [{ event: '*', schema: 'public', table: 'items' }],
  });
  return ch;
}

async function subscribedItems(client) {
  const ch = itemsChannel(client);
  await h.waitStatus(ch, 'SUBSCRIBED', 10000);
  await pg.waitPgSubscribed(ch);
  return ch;
}

describe('postgres changes with RLS', () => {
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
    it(`vsn ${vsn}: two users each receive exactly their own rows`, async (t) => {
      const alice = pg.user();
      const bob = pg.user();
      const stranger = pg.user();
      const ca = await subscribedItems(h.newClient(t, server, { vsn, apikey: alice.token }));
      const cb = await subscribedItems(h.newClient(t, server, { vsn, apikey: bob.token }));
      const owners = [alice, bob, stranger, bob, alice, alice, stranger, bob];
      const ids = owners.map(() => nextId++);
      const values = ids.map((id, i) => `(${id}, '${owners[i].id}', 'row ${id}')`).join(', ');
      await db.sql(`insert into items values ${values};`);
      const mine = (u) => ids.filter((_, i) => owners[i] === u);
      await pg.waitChanges(ca, mine(alice).length);
      await pg.waitChanges(cb, mine(bob).length);
      await h.sleep(700);
      assert.deepEqual(ca.pg.map((m) => m.new.id), mine(alice), 'alice: only her rows');
      assert.deepEqual(cb.pg.map((m) => m.new.id), mine(bob), 'bob: only his rows');
      for (const m of ca.pg) {
        assert.deepEqual(m.new, { id: m.new.id, user_id: alice.id, body: `row ${m.new.id}` });
        assert.equal(m.eventType, 'INSERT');
        assert.equal(m.errors, null);
      }
      for (const m of cb.pg) assert.equal(m.new.user_id, bob.id);
    });

    it(`vsn ${vsn}: setAuth() with another user's token switches to that user's rows`, async (t) => {
      const alice = pg.user();
      const bob = pg.user();
      const client = h.newClient(t, server, { vsn, apikey: alice.token });
      await client.setAuth(alice.token);
      const ch = await subscribedItems(client);
      const [a1, b1] = [nextId++, nextId++];
      await db.sql(`insert into items values (${a1}, '${alice.id}', 'a'), (${b1}, '${bob.id}', 'b');`);
      await pg.waitChanges(ch, 1);
      await h.sleep(500);
      assert.deepEqual(ch.pg.map((m) => m.new.id), [a1]);
      await client.setAuth(bob.token);
      await h.waitFor(
        () => ch.sys.filter((s) => s.message === 'Subscribed to PostgreSQL').length >= 2,
        10000,
        `a second "Subscribed to PostgreSQL" (got ${JSON.stringify(ch.sys)})`,
      );
      const [a2, b2] = [nextId++, nextId++];
      await db.sql(`insert into items values (${a2}, '${alice.id}', 'a'), (${b2}, '${bob.id}', 'b');`);
      await pg.waitChanges(ch, 2);
      await h.sleep(500);
      assert.deepEqual(ch.pg.map((m) => m.new.id), [a1, b2]);
      assert.deepEqual(ch.statuses.map((s) => s.status), ['SUBSCRIBED']);
    });
  }

  it('server still serving', async (t) => {
    await h.assertServerServing(t, server);
  });
});
