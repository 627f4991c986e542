'use strict';
// 1. subscribe → SUBSCRIBED; postgres_changes bindings echoed (no client "mismatch"), then the
//    contract's "Postgres changes are disabled" system error; heartbeat; both WS paths.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const PG_DISABLED_MSG =
  'Unable to subscribe to changes with given parameters. Postgres changes are disabled on this server (DATABASE_URL is not set)';

describe('subscribe', () => {
  let server;
  before(async () => {
    server = await h.startServer();
  });
  after(() => server && server.stop());

  for (const vsn of h.VERSIONS) {
    describe(`vsn ${vsn}`, () => {
      it('subscribe reports SUBSCRIBED and the channel is joined', async (t) => {
        const client = h.newClient(t, server, { vsn });
        const topic = h.uniqueTopic();
        const ch = await h.subscribed(client, topic);
        assert.equal(ch.state, 'joined');
        assert.equal(ch.statuses.length, 1);
        assert.equal(client.isConnected(), true);
        // endpoint URL the client really used: /socket/websocket?apikey=…&vsn=…
        assert.match(client.endpointURL(), new RegExp(`/socket/websocket\\?apikey=[^&]+&vsn=${vsn.replace(/\./g, '\\.')}$`));
        // no error-ish statuses or system errors arrive afterwards
        await h.sleep(300);
        assert.deepEqual(ch.statuses.map((s) => s.status), ['SUBSCRIBED']);
        assert.deepEqual(ch.sys.filter((s) => s.status === 'error'), []);
      });

      it('unsubscribe resolves ok and reports CLOSED', async (t) => {
        const client = h.newClient(t, server, { vsn });
        const ch = await h.subscribed(client, h.uniqueTopic());
        const res = await h.withTimeout(ch.unsubscribe(), 5000, 'unsubscribe');
        assert.equal(res, 'ok');
        await h.waitStatus(ch, 'CLOSED', 2000);
        assert.equal(ch.state, 'closed');
      });

      it('heartbeat is answered with ok', async (t) => {
        const client = h.newClient(t, server, { vsn });
        await h.subscribed(client, h.uniqueTopic());
        const seen = [];
        client.onHeartbeat((status) => seen.push(status));
        await client.sendHeartbeat();
        await h.waitFor(() => seen.includes('ok') || seen.includes('error'), 5000, 'heartbeat reply');
        assert.deepEqual(seen.filter((s) => s !== 'sent'), ['ok']);
      });

      it('/realtime/v1/websocket path works too', async (t) => {
        const client = h.newClient(t, server, { vsn, endpointPath: '/realtime/v1' });
        const ch = await h.subscribed(client, h.uniqueTopic());
        assert.equal(ch.state, 'joined');
      });

      it('postgres_changes bindings: SUBSCRIBED (ids echoed in order), then a postgres_changes system error', async (t) => {
        const client = h.newClient(t, server, { vsn });
        const topic = h.uniqueTopic('pg');
        const filters = [
          { event: '*', schema: 'public', table: 'todos' },
          { event: 'INSERT', schema: 'public', table: 'messages', filter: 'id=eq.1' },
          { event: 'DELETE', schema: 'private' },
        ];
        const ch = h.openChannel(client, topic, { postgres: filters });
        const first = await h.waitFor(() => ch.statuses[0], 5000, 'first status');
        assert.equal(
          first.status,
          'SUBSCRIBED',
          `expected SUBSCRIBED, got ${first.status} ${first.err ? first.err.message : ''}`,
        );
        // the client matched every server entry to its binding and stored the server id
        const bound = ch.bindings.postgres_changes;
        assert.equal(bound.length, 3);
        for (let i = 0; i < 3; i++) {
          assert.equal(bound[i].filter.event, filters[i].event);
          assert.ok(Number.isInteger(bound[i].id), `binding ${i} id should be an integer, got ${JSON.stringify(bound[i].id)}`);
        }
        const sys = await h.waitFor(
          () => ch.sys.find((s) => s.extension === 'postgres_changes'),
          5000,
          'postgres_changes system message',
        );
        assert.deepEqual(sys, {
          extension: 'postgres_changes',
          status: 'error',
          message: PG_DISABLED_MSG,
          channel: topic,
        });
        // no CHANNEL_ERROR (binding mismatch) and the channel stays joined for broadcast
        await h.sleep(300);
        assert.deepEqual(ch.statuses.map((s) => s.status), ['SUBSCRIBED']);
        assert.equal(ch.state, 'joined');
      });
    });
  }

  it('mixed: 1.0.0 and 2.0.0 clients subscribe to the same topic', async (t) => {
    const topic = h.uniqueTopic('mixed');
    const a = h.newClient(t, server, { vsn: '1.0.0' });
    const b = h.newClient(t, server, { vsn: '2.0.0' });
    const ca = await h.subscribed(a, topic);
    const cb = await h.subscribed(b, topic);
    assert.equal(ca.state, 'joined');
    assert.equal(cb.state, 'joined');
  });

  it('server still serving', async (t) => {
    await h.assertServerServing(t, server);
  });
});
