'use strict';
// 12. Private channels through the real client (`config: { private: true }`): joins allowed or
//     refused by RLS policies on realtime.messages written the Supabase way (realtime.topic(),
//     auth.uid()), for both serializers; broadcasts and presence between two users; a topic they may
//     read but not write; setAuth() to another user revoking a channel the new claims may not read.
//     Needs REALTIME_TEST_DATABASE_URL (scripts/test.sh sets it); the node creates the realtime schema.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const pg = require('./pg');

// `team-*`: authenticated users read and write; `notice-*`: they read only; `inbox-<uid>`: only that
// user reads.
const POLICIES = `
create policy read_topics on realtime.messages for select to authenticated
  using (realtime.topic() like 'team-%' or realtime.topic() like 'notice-%'
         or realtime.topic() = 'inbox-' || auth.uid()::text);
create policy write_topics on realtime.messages for insert to authenticated
  with check (realtime.topic() like 'team-%' and realtime.messages.extension in ('broadcast', 'presence'));
`;

function privateClient(t, server, user, vsn) {
  return h.newClient(t, server, { vsn, apikey: user.token });
}

async function privateChannel(client, topic, opts = {}) {
  const ch = h.openChannel(client, topic, {
    config: { private: true, broadcast: { ack: true, self: false }, ...(opts.config || {}) },
    presence: opts.presence || false,
  });
  await h.waitFor(() => ch.statuses[0], 10000, `${topic} first status`);
  return ch;
}

describe('private channels', () => {
  let db;
  let server;
  before(async () => {
    pg.requireDatabaseUrl();
    // The policies need the realtime schema, which the node creates at start: start it first.
    db = await pg.createDb('');
    server = await pg.startPgServer(db);
    await pg.waitForTable(db, 'realtime.messages');
    await db.sql(POLICIES);
  });
  after(async () => {
    if (server) await server.stop();
    if (db) await db.drop();
  });

  for (const vsn of h.VERSIONS) {
    describe(`vsn ${vsn}`, () => {
      it('a topic the policies let the user read joins; one they do not is refused with the reason', async (t) => {
        const ann = pg.user();
        const client = privateClient(t, server, ann, vsn);
        const team = await privateChannel(client, h.uniqueTopic('team'));
        assert.equal(team.statuses[0].status, 'SUBSCRIBED');
        const inbox = await privateChannel(client, `inbox-${ann.id}`);
        assert.equal(inbox.statuses[0].status, 'SUBSCRIBED');
        const other = `inbox-${pg.user().id}`;
        const refused = await privateChannel(client, other);
        assert.equal(refused.statuses[0].status, 'CHANNEL_ERROR');
        assert.match(
          refused.statuses[0].err.message,
          new RegExp(`Unauthorized: You do not have permissions to read from this Channel topic: ${other}`),
        );
        await h.assertServerServing(t, server);
      });

      it('two users exchange broadcasts and presence on a writable topic; writes to a read-only one are refused', async (t) => {
        const [ann, ben] = [pg.user(), pg.user()];
        const topic = h.uniqueTopic('team');
        const a = await privateChannel(privateClient(t, server, ann, vsn), topic, {
          presence: true,
          config: { presence: { key: 'ann' } },
        });
        const b = await privateChannel(privateClient(t, server, ben, vsn), topic, {
          presence: true,
          config: { presence: { key: 'ben' } },
        });
        assert.equal(await a.send({ type: 'broadcast', event: 'hi', payload: { from: 'ann' } }), 'ok');
        const got = await h.waitBroadcast(b, 'hi');
        assert.deepEqual(got.payload, { from: 'ann' });
        assert.equal(await h.withTimeout(a.track({ online: true }), 11000, 'track'), 'ok');
        assert.equal(await h.withTimeout(b.track({ online: true }), 11000, 'track'), 'ok');
        await h.waitFor(() => Object.keys(a.presenceState()).sort().join() === 'ann,ben', 10000, 'both present at ann');

        const notice = h.uniqueTopic('notice');
        const n = await privateChannel(privateClient(t, server, ann, vsn), notice);
        assert.equal(n.statuses[0].status, 'SUBSCRIBED', 'readable');
        assert.equal(await n.send({ type: 'broadcast', event: 'nope', payload: {} }), 'error');
        assert.equal(await h.withTimeout(n.track({ online: true }), 11000, 'track'), 'error');
      });

      it('realtime.send() in SQL reaches the private subscribers of the topic, with meta.id', async (t) => {
        const topic = h.uniqueTopic('team');
        const ch = await privateChannel(privateClient(t, server, pg.user(), vsn), topic);
        assert.equal(ch.statuses[0].status, 'SUBSCRIBED');
        // The stream may still be starting: send until the first one arrives.
        await h.waitFor(
          async () => {
            await db.sql(`select realtime.send('{"probe": true}', 'probe', '${topic}')`);
            await h.sleep(200);
            return ch.rx.some((m) => m.event === 'probe');
          },
          20000,
          'database broadcast live',
        );
        await db.sql(`select realtime.send('{"text": "from sql"}', 'note', '${topic}')`);
        const got = await h.waitBroadcast(ch, 'note');
        const [id] = await db.rows(`select id::text from realtime.messages where topic = '${topic}' and event = 'note'`);
        assert.deepEqual(got, { type: 'broadcast', event: 'note', payload: { text: 'from sql', id }, meta: { id } });
      });

      it('broadcast.replay: the stored messages since a time, in the order sent, then live ones, none twice', async (t) => {
        const topic = h.uniqueTopic('team');
        const since = Date.now() - 60000;
        const sends = [0, 1, 2, 3, 4].map((n) => `select realtime.send('{"n": ${n}}', 'm', '${topic}');`).join('');
        await db.sql(`begin; ${sends} commit;`);
        const ch = await privateChannel(privateClient(t, server, pg.user(), vsn), topic, {
          config: { broadcast: { replay: { since, limit: 3 } } },
        });
        assert.equal(ch.statuses[0].status, 'SUBSCRIBED');
        await h.waitFor(() => ch.rx.length >= 3, 10000, 'three replayed');
        assert.deepEqual(ch.rx.map((m) => m.payload.n), [2, 3, 4]);
        assert.ok(ch.rx.every((m) => m.meta.replayed === true && typeof m.meta.id === 'string'));
        await h.waitFor(
          async () => {
            await db.sql(`select realtime.send('{"n": 5}', 'm', '${topic}')`);
            await h.sleep(200);
            return ch.rx.some((m) => m.payload.n === 5);
          },
          20000,
          'a live message after the replay',
        );
        const ns = ch.rx.map((m) => m.payload.n).filter((n) => n !== 5);
        assert.deepEqual(ns, [2, 3, 4], 'replayed rows never arrive live again');
      });

      it('setAuth() with another user closes the inbox the new claims may not read', async (t) => {
        const ann = pg.user();
        const client = privateClient(t, server, ann, vsn);
        const inbox = await privateChannel(client, `inbox-${ann.id}`);
        assert.equal(inbox.statuses[0].status, 'SUBSCRIBED');
        await client.setAuth(pg.user().token);
        await h.waitFor(
          () => inbox.sys.some((m) => /You no longer have permission to read from this Channel topic/.test(m.message)),
          10000,
          'the revocation system message',
        );
        await h.waitStatus(inbox, 'CLOSED', 10000);
      });
    });
  }
});
