'use strict';
// 16. Resumable delivery through the real client: on a topic of REALTIME_RESUMABLE_TOPICS every
//     broadcast carries meta.position. The app keeps the last one in its channel config
//     (`broadcast.resume.position`), which realtime-js sends again when it rejoins by itself after
//     the connection was cut: the messages sent meanwhile (socket, REST, SQL) arrive once, in order,
//     before live ones. Needs REALTIME_TEST_DATABASE_URL.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const pg = require('./pg');

describe('resumable delivery', () => {
  const env = pg.usePgServer({ args: ['--resumable-topics', 'room:*'], table: 'realtime.messages' });

  for (const vsn of h.VERSIONS) {
    it(`vsn ${vsn}: a client cut off rejoins by itself and gets what it missed, once, in order`, async (t) => {
      const { db, server } = env;
      const topic = `room:${pg.user().id}`;
      // The app's part: remember the last position in the channel's own config.
      const resume = { position: null };
      const listener = h.newClient(t, server, { vsn, reconnectAfterMs: () => 1500 });
      const ch = h.openChannel(listener, topic, { config: { broadcast: { self: false, resume } }, subscribe: false });
      ch.on('broadcast', { event: '*' }, (m) => {
        resume.position = m.meta.position;
      });
      ch.subscribe((status, err) => ch.statuses.push({ status, err, at: Date.now() }));
      await h.waitStatus(ch, 'SUBSCRIBED', 10000);
      const sender = await h.subscribed(h.newClient(t, server, { vsn }), topic, { config: { broadcast: { ack: true } } });
      const send = async (n) => {
        const status = await sender.send({ type: 'broadcast', event: 'm', payload: { n } });
        assert.equal(status, 'ok', `send ${n} is acknowledged once stored`);
      };

      // The stream may still be starting: probe until one arrives.
      await h.waitFor(
        async () => {
          await sender.send({ type: 'broadcast', event: 'probe', payload: {} });
          await h.sleep(200);
          return ch.rx.some((m) => m.event === 'probe');
        },
        20000,
        'resumable broadcasts live',
      );
      await h.sleep(300);
      const firstLive = ch.rx.length;
      for (const n of [1, 2, 3]) await send(n);
      await h.waitFor(() => ch.rx.length >= firstLive + 3, 10000, 'the first three');

      h.connOf(listener).terminate(); // the connection is lost (no close handshake)
      for (const n of [4, 5]) await send(n);
      const rest = await fetch(`${server.url}/api/broadcast`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${h.tokens.valid()}` },
        body: JSON.stringify({ messages: [{ topic, event: 'm', payload: { n: 6 } }] }),
      });
      assert.equal(rest.status, 202);
      await db.sql(`select realtime.send('{"n": 7}', 'm', '${topic}', false)`);

      // realtime-js reconnects and rejoins with the config above, now holding the last position.
      await h.waitFor(() => ch.rx.length >= firstLive + 7, 15000, 'the missed messages after the rejoin');
      await send(8);
      await h.waitFor(() => ch.rx.length >= firstLive + 8, 10000, 'live again');
      await h.sleep(500);
      const got = ch.rx.slice(firstLive);
      assert.deepEqual(
        got.map((m) => m.payload.n),
        [1, 2, 3, 4, 5, 6, 7, 8],
        'every message once, in order, across the cut',
      );
      const positions = got.map((m) => m.meta.position);
      assert.ok(positions.every((p, i) => i === 0 || p > positions[i - 1]), `positions increase: ${positions}`);
      assert.ok(ch.statuses.filter((s) => s.status === 'SUBSCRIBED').length >= 2, 'it did rejoin');
    });
  }
});
