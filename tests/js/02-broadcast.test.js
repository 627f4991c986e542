'use strict';
// 2. broadcast over the WebSocket: self / ack / exact payload / oversized payload / unicode /
//    mixed 1.0.0 + 2.0.0 subscribers in one channel.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const NEGATIVE_WAIT_MS = 500; // how long we wait to claim "did not receive"

describe('broadcast', () => {
  let server;
  before(async () => {
    // 1000-byte payload limit so the oversized case is cheap; all other payloads are tiny.
    server = await h.startServer(['--max-payload-bytes', '1000']);
  });
  after(() => server && server.stop());

  for (const vsn of h.VERSIONS) {
    describe(`vsn ${vsn}`, () => {
      it('self:false sender does not receive, the other member receives the exact payload', async (t) => {
        const topic = h.uniqueTopic();
        const sender = h.newClient(t, server, { vsn });
        const receiver = h.newClient(t, server, { vsn });
        const cs = await h.subscribed(sender, topic, { config: { broadcast: { self: false } } });
        const cr = await h.subscribed(receiver, topic);
        const res = await cs.send({ type: 'broadcast', event: 'cursor', payload: { x: 1 } });
        assert.equal(res, 'ok');
        const msg = await h.waitBroadcast(cr, 'cursor');
        assert.deepEqual(msg, { type: 'broadcast', event: 'cursor', payload: { x: 1 } });
        await h.sleep(NEGATIVE_WAIT_MS);
        assert.deepEqual(cs.rx, [], 'self:false sender must not receive its own broadcast');
        assert.equal(cr.rx.length, 1, 'exactly one delivery');
      });

      it('self:true sender receives its own broadcast', async (t) => {
        const topic = h.uniqueTopic();
        const sender = h.newClient(t, server, { vsn });
        const receiver = h.newClient(t, server, { vsn });
        const cs = await h.subscribed(sender, topic, { config: { broadcast: { self: true } } });
        const cr = await h.subscribed(receiver, topic);
        await cs.send({ type: 'broadcast', event: 'cursor', payload: { x: 2, y: [1, 2, 3], z: null, ok: true } });
        const own = await h.waitBroadcast(cs, 'cursor');
        const other = await h.waitBroadcast(cr, 'cursor');
        const expected = { type: 'broadcast', event: 'cursor', payload: { x: 2, y: [1, 2, 3], z: null, ok: true } };
        assert.deepEqual(own, expected);
        assert.deepEqual(other, expected);
        await h.sleep(200);
        assert.equal(cs.rx.length, 1, 'sender receives its message exactly once');
      });

      it('event filter: .on(broadcast, {event}) only fires for that event (case-insensitive)', async (t) => {
        const topic = h.uniqueTopic();
        const sender = h.newClient(t, server, { vsn });
        const receiver = h.newClient(t, server, { vsn });
        const cs = await h.subscribed(sender, topic);
        const only = [];
        const cr = h.openChannel(receiver, topic, { subscribe: false });
        cr.on('broadcast', { event: 'wanted' }, (m) => only.push(m));
        cr.subscribe((status, err) => cr.statuses.push({ status, err }));
        await h.waitStatus(cr, 'SUBSCRIBED');
        await cs.send({ type: 'broadcast', event: 'other', payload: { n: 1 } });
        await cs.send({ type: 'broadcast', event: 'WANTED', payload: { n: 2 } });
        await h.waitFor(() => cr.rx.length >= 2, 5000, 'two broadcasts');
        assert.deepEqual(only, [{ type: 'broadcast', event: 'WANTED', payload: { n: 2 } }]);
      });

      it('ack:true → send() resolves ok after the server reply', async (t) => {
        const topic = h.uniqueTopic();
        const sender = h.newClient(t, server, { vsn });
        const receiver = h.newClient(t, server, { vsn });
        const cs = await h.subscribed(sender, topic, { config: { broadcast: { ack: true } } });
        const cr = await h.subscribed(receiver, topic);
        const res = await h.withTimeout(
          cs.send({ type: 'broadcast', event: 'acked', payload: { v: 'a' } }),
          11000,
          'acked send',
        );
        assert.equal(res, 'ok');
        const msg = await h.waitBroadcast(cr, 'acked');
        assert.deepEqual(msg.payload, { v: 'a' });
      });

      it('ack:true + payload over --max-payload-bytes → send() resolves "error"; nothing delivered', async (t) => {
        // RealtimeChannel.send(): push.receive('error', r => resolve(args.persist && typeof r.error === 'string' ? r.error : 'error'))
        const topic = h.uniqueTopic();
        const sender = h.newClient(t, server, { vsn });
        const receiver = h.newClient(t, server, { vsn });
        const cs = await h.subscribed(sender, topic, { config: { broadcast: { ack: true, self: true } } });
        const cr = await h.subscribed(receiver, topic);
        const big = { blob: 'x'.repeat(2000) };
        const replies = [];
        // capture the raw reply the client got for the push
        const sock = sender.socketAdapter.getSocket();
        const ref = sock.onMessage((m) => {
          if (m.event === 'phx_reply' && m.topic === cs.topic) replies.push(m.payload);
        });
        const res = await h.withTimeout(
          cs.send({ type: 'broadcast', event: 'big', payload: big }),
          11000,
          'oversized acked send',
        );
        sock.off([ref]);
        assert.equal(res, 'error', `oversized acked send resolved ${JSON.stringify(res)}`);
        assert.deepEqual(replies[replies.length - 1], { status: 'error', response: 'payload_size_exceeded' });
        await h.sleep(NEGATIVE_WAIT_MS);
        assert.equal(cr.rx.filter((m) => m.event === 'big').length, 0, 'oversized payload must not be delivered');
        assert.equal(cs.rx.filter((m) => m.event === 'big').length, 0, 'oversized payload must not be echoed (self)');
        // the channel is still usable
        assert.equal(await cs.send({ type: 'broadcast', event: 'small', payload: { ok: 1 } }), 'ok');
        await h.waitBroadcast(cr, 'small');
        await h.assertServerServing(t, server);
      });

      it('payload over the limit without ack is dropped silently; channel stays joined', async (t) => {
        const topic = h.uniqueTopic();
        const sender = h.newClient(t, server, { vsn });
        const receiver = h.newClient(t, server, { vsn });
        const cs = await h.subscribed(sender, topic);
        const cr = await h.subscribed(receiver, topic);
        assert.equal(await cs.send({ type: 'broadcast', event: 'big', payload: { blob: 'y'.repeat(2000) } }), 'ok');
        assert.equal(await cs.send({ type: 'broadcast', event: 'after', payload: { n: 1 } }), 'ok');
        await h.waitBroadcast(cr, 'after');
        await h.sleep(200);
        assert.deepEqual(cr.rx.map((m) => m.event), ['after']);
        assert.equal(cs.state, 'joined');
        assert.deepEqual(cs.statuses.map((s) => s.status), ['SUBSCRIBED']);
      });

      it('unicode payload and event name round-trip exactly', async (t) => {
        const topic = h.uniqueTopic();
        const sender = h.newClient(t, server, { vsn });
        const receiver = h.newClient(t, server, { vsn });
        const cs = await h.subscribed(sender, topic);
        const cr = await h.subscribed(receiver, topic);
        const payload = {
          s: 'é',
          cjk: '中文字符',
          emoji: '😀👍🏽🏳️‍🌈',
          rtl: 'שלום עולם',
          esc: 'quote " backslash \\ newline \n tab \t nul-ish \u0001',
          nested: { 'clé-ü': ['ñ', { 'ключ': 'значение' }] },
        };
        await cs.send({ type: 'broadcast', event: 'événement', payload });
        const msg = await h.waitBroadcast(cr, 'événement');
        assert.deepEqual(msg, { type: 'broadcast', event: 'événement', payload });
      });

      it('order of several broadcasts from one sender is preserved', async (t) => {
        const topic = h.uniqueTopic();
        const sender = h.newClient(t, server, { vsn });
        const receiver = h.newClient(t, server, { vsn });
        const cs = await h.subscribed(sender, topic);
        const cr = await h.subscribed(receiver, topic);
        for (let i = 0; i < 20; i++) await cs.send({ type: 'broadcast', event: 'seq', payload: { i } });
        await h.waitFor(() => cr.rx.length >= 20, 5000, '20 broadcasts');
        assert.deepEqual(cr.rx.map((m) => m.payload.i), [...Array(20).keys()]);
      });
    });
  }

  describe('mixed 1.0.0 + 2.0.0 in one channel', () => {
    it('each version receives the other version’s broadcasts with identical shape', async (t) => {
      const topic = h.uniqueTopic('mixed');
      const v1 = h.newClient(t, server, { vsn: '1.0.0' });
      const v2 = h.newClient(t, server, { vsn: '2.0.0' });
      const v1b = h.newClient(t, server, { vsn: '1.0.0' });
      const v2b = h.newClient(t, server, { vsn: '2.0.0' });
      const c1 = await h.subscribed(v1, topic, { config: { broadcast: { self: true } } });
      const c2 = await h.subscribed(v2, topic, { config: { broadcast: { self: true } } });
      const c1b = await h.subscribed(v1b, topic);
      const c2b = await h.subscribed(v2b, topic);

      const p1 = { from: 'v1', s: 'é', n: [1, 2] };
      const p2 = { from: 'v2', s: '😀', n: { a: 1 } };
      await c1.send({ type: 'broadcast', event: 'cursor', payload: p1 });
      await c2.send({ type: 'broadcast', event: 'cursor', payload: p2 });

      for (const ch of [c1, c2, c1b, c2b]) {
        const m1 = await h.waitBroadcast(ch, 'cursor', 5000, (m) => m.payload && m.payload.from === 'v1');
        const m2 = await h.waitBroadcast(ch, 'cursor', 5000, (m) => m.payload && m.payload.from === 'v2');
        assert.deepEqual(m1, { type: 'broadcast', event: 'cursor', payload: p1 }, `${ch.topic} on ${ch.socket.__vsn}`);
        assert.deepEqual(m2, { type: 'broadcast', event: 'cursor', payload: p2 }, `${ch.topic} on ${ch.socket.__vsn}`);
      }
      await h.sleep(200);
      for (const ch of [c1, c2, c1b, c2b]) assert.equal(ch.rx.length, 2, 'each member receives each message once');
    });

    it('ack:true works for both versions in the same channel', async (t) => {
      const topic = h.uniqueTopic('mixed');
      const v1 = h.newClient(t, server, { vsn: '1.0.0' });
      const v2 = h.newClient(t, server, { vsn: '2.0.0' });
      const c1 = await h.subscribed(v1, topic, { config: { broadcast: { ack: true } } });
      const c2 = await h.subscribed(v2, topic, { config: { broadcast: { ack: true } } });
      assert.equal(await h.withTimeout(c1.send({ type: 'broadcast', event: 'e', payload: { a: 1 } }), 11000), 'ok');
      assert.equal(await h.withTimeout(c2.send({ type: 'broadcast', event: 'e', payload: { b: 2 } }), 11000), 'ok');
      assert.deepEqual((await h.waitBroadcast(c2, 'e')).payload, { a: 1 });
      assert.deepEqual((await h.waitBroadcast(c1, 'e')).payload, { b: 2 });
    });
  });

  it('server still serving', async (t) => {
    await h.assertServerServing(t, server);
  });
});
