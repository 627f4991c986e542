'use strict';
// 7. An older real client: @supabase/realtime-js 2.10 (installed as `realtime-js-2-10`) joins with
//    `presence: {key}` and no `enabled`. Its presence listeners must see sync/join/leave like current
//    clients do (the node treats a presence object without `enabled` as enabled).
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { RealtimeClient } = require('realtime-js-2-10');
const h = require('./harness');

function legacyClient(server) {
  // No `transport`: 2.10's connect() with a custom transport never wires the socket's handlers; without
  // one, on Node 20 it loads its own `ws` dependency, as its users' apps do.
  const client = new RealtimeClient(`${server.wsBase}/socket`, {
    params: { apikey: h.tokens.valid() },
  });
  client.connect();
  return client;
}

/** A subscribed 2.10 channel recording its presence events. */
async function legacyChannel(client, topic, key) {
  const ch = client.channel(topic, { config: { presence: { key } } });
  ch.events = [];
  ch.on('presence', { event: 'sync' }, () => ch.events.push({ event: 'sync' }))
    .on('presence', { event: 'join' }, ({ key: k }) => ch.events.push({ event: 'join', key: k }))
    .on('presence', { event: 'leave' }, ({ key: k }) => ch.events.push({ event: 'leave', key: k }));
  const status = new Promise((resolve) => ch.subscribe((s) => resolve(s)));
  assert.equal(await h.withTimeout(status, 5000, `${topic} subscribe`), 'SUBSCRIBED');
  return ch;
}

describe('realtime-js 2.10 (legacy presence config)', () => {
  let server;
  before(async () => {
    server = await h.startServer();
  });
  after(() => server && server.stop());

  it('gets presence_state and diffs without sending presence.enabled', async () => {
    const topic = h.uniqueTopic('legacy');
    const [ca, cb] = [legacyClient(server), legacyClient(server)];
    try {
      const a = await legacyChannel(ca, topic, 'alice');
      const b = await legacyChannel(cb, topic, 'bob');
      await h.waitFor(() => a.events.some((e) => e.event === 'sync'), 5000, 'initial sync (presence_state)');
      assert.equal(await h.withTimeout(a.track({ online: true }), 5000, 'track alice'), 'ok');
      assert.equal(await h.withTimeout(b.track({ online: true }), 5000, 'track bob'), 'ok');
      for (const ch of [a, b]) {
        await h.waitFor(
          () => Object.keys(ch.presenceState()).sort().join() === 'alice,bob',
          5000,
          'both keys in presenceState',
        );
      }
      assert.ok(a.events.some((e) => e.event === 'join' && e.key === 'bob'), 'alice saw bob join');
      await h.withTimeout(b.untrack(), 5000, 'untrack bob');
      await h.waitFor(() => a.events.some((e) => e.event === 'leave' && e.key === 'bob'), 5000, 'bob leaves');
      assert.deepEqual(Object.keys(a.presenceState()), ['alice']);
    } finally {
      ca.disconnect();
      cb.disconnect();
    }
  });
});
