'use strict';
// 6. limits: --max-channel-members and --max-channels-per-client join errors; after each error
//    the socket and the server keep working.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const MEMBERS_REASON = 'ChannelMembersLimitReached: Too many members in this channel';
const CHANNELS_REASON = 'ChannelRateLimitReached: Too many channels';

describe('limits', () => {
  let server;
  before(async () => {
    server = await h.startServer(['--max-channel-members', '2', '--max-channels-per-client', '2']);
  });
  after(() => server && server.stop());

  const combos = [
    ['1.0.0', '1.0.0', '1.0.0'],
    ['2.0.0', '2.0.0', '2.0.0'],
    ['1.0.0', '2.0.0', '1.0.0'],
    ['2.0.0', '1.0.0', '2.0.0'],
  ];

  for (const vsns of combos) {
    it(`--max-channel-members 2 (vsn ${vsns.join(', ')}): third member gets CHANNEL_ERROR ChannelMembersLimitReached`, async (t) => {
      const topic = h.uniqueTopic('full');
      const [a, b, c] = vsns.map((vsn) => h.newClient(t, server, { vsn }));
      const ca = await h.subscribed(a, topic);
      const cb = await h.subscribed(b, topic);
      const cc = h.openChannel(c, topic);
      const err = await h.waitStatus(cc, 'CHANNEL_ERROR', 5000);
      assert.equal(err.err.message, MEMBERS_REASON);
      assert.ok(!cc.statuses.some((s) => s.status === 'SUBSCRIBED'));
      assert.equal(c.isConnected(), true, 'join error does not close the socket');

      // the two members still talk
      await ca.send({ type: 'broadcast', event: 'm', payload: { from: 'a' } });
      assert.deepEqual((await h.waitBroadcast(cb, 'm')).payload, { from: 'a' });
      await h.sleep(300);
      assert.equal(cc.rx.length, 0, 'refused member receives nothing');

      // the refused client can use another channel on the same socket
      const other = await h.subscribed(c, h.uniqueTopic('other'));
      assert.equal(other.state, 'joined');

      // a member leaves → realtime-js' automatic rejoin (1 s, 2 s, … backoff) now succeeds
      assert.equal(await h.withTimeout(ca.unsubscribe(), 5000), 'ok');
      await h.waitStatus(cc, 'SUBSCRIBED', 10000);
      await cb.send({ type: 'broadcast', event: 'm2', payload: { from: 'b' } });
      assert.deepEqual((await h.waitBroadcast(cc, 'm2')).payload, { from: 'b' });

      await h.assertServerServing(t, server);
    });
  }

  it('--max-channel-members counts a disconnected socket out', async (t) => {
    const topic = h.uniqueTopic('full');
    const a = h.newClient(t, server, { vsn: '2.0.0' });
    const b = h.newClient(t, server, { vsn: '1.0.0' });
    await h.subscribed(a, topic);
    await h.subscribed(b, topic);
    await h.closeClient(a);
    await h.sleep(300);
    const c = h.newClient(t, server, { vsn: '2.0.0' });
    await h.subscribed(c, topic);
  });

  for (const vsn of h.VERSIONS) {
    it(`--max-channels-per-client 2 (vsn ${vsn}): third channel gets CHANNEL_ERROR ChannelRateLimitReached, socket stays open`, async (t) => {
      const a = h.newClient(t, server, { vsn });
      const peer = h.newClient(t, server, { vsn: vsn === '1.0.0' ? '2.0.0' : '1.0.0' });
      const t1 = h.uniqueTopic('c1');
      const t2 = h.uniqueTopic('c2');
      const t3 = h.uniqueTopic('c3');
      const c1 = await h.subscribed(a, t1);
      const c2 = await h.subscribed(a, t2);
      const conn = h.connOf(a);
      const c3 = h.openChannel(a, t3);
      const err = await h.waitStatus(c3, 'CHANNEL_ERROR', 5000);
      assert.equal(err.err.message, CHANNELS_REASON);
      assert.ok(err.err.message.includes('ChannelRateLimitReached: Too many channels'));
      assert.equal(a.isConnected(), true);
      assert.equal(h.connOf(a), conn, 'socket stays open');

      // the two joined channels still receive
      const p1 = await h.subscribed(peer, t1);
      const p2 = await h.subscribed(peer, t2);
      await p1.send({ type: 'broadcast', event: 'x', payload: { ch: 1 } });
      await p2.send({ type: 'broadcast', event: 'x', payload: { ch: 2 } });
      assert.deepEqual((await h.waitBroadcast(c1, 'x')).payload, { ch: 1 });
      assert.deepEqual((await h.waitBroadcast(c2, 'x')).payload, { ch: 2 });

      // leaving one channel frees a slot: the client's automatic rejoin of the third succeeds
      assert.equal(await h.withTimeout(c1.unsubscribe(), 5000), 'ok');
      await h.waitStatus(c3, 'SUBSCRIBED', 10000);
      assert.equal(h.connOf(a), conn);
      const peer3 = h.newClient(t, server, { vsn }); // `peer` already holds its 2 channels
      const p3 = await h.subscribed(peer3, t3);
      await p3.send({ type: 'broadcast', event: 'y', payload: { ch: 3 } });
      assert.deepEqual((await h.waitBroadcast(c3, 'y')).payload, { ch: 3 });

      await h.assertServerServing(t, server);
    });
  }

  it('server still serving', async (t) => {
    await h.assertServerServing(t, server);
  });
});
