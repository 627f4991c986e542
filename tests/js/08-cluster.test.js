'use strict';
// 8. a cluster of three nodes (127.0.0.81-83, cluster port 4100 each) seen through realtime-js: a
//    broadcast sent on one node reaches clients on the others with the exact payload, presence tracked
//    on each node shows the same state (same keys and presence_refs) in every client, and a node
//    killed with SIGKILL takes only its own client's presence with it.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const IPS = ['127.0.0.81', '127.0.0.82', '127.0.0.83'];

describe('cluster of three nodes', () => {
  let cluster;
  let nodes = [];
  before(async () => {
    cluster = await h.startCluster(IPS, { idPrefix: 'js-node', timeoutMs: 15000 });
    nodes = cluster.nodes;
  });
  after(async () => {
    if (cluster) await cluster.stop();
  });

  it('a broadcast sent on one node reaches clients on the other nodes, exactly', async (t) => {
    const topic = h.uniqueTopic('cluster');
    const sender = h.newClient(t, nodes[0], { vsn: '2.0.0' });
    const receivers = [h.newClient(t, nodes[1], { vsn: '1.0.0' }), h.newClient(t, nodes[2], { vsn: '2.0.0' })];
    const channels = [];
    for (const r of receivers) channels.push(await h.subscribed(r, topic, { presence: true }));
    const cs = await h.subscribed(sender, topic, { presence: true });
    // Member counts travel with presence: once the sender's client sees every presence sync the other
    // nodes know its channel; the other way round, send until the first one arrives.
    const payload = { text: 'héllo', n: [1, 2, 3], nested: { ok: true } };
    await h.waitFor(async () => {
      await cs.send({ type: 'broadcast', event: 'probe', payload: {} });
      await h.sleep(100);
      return channels.every((c) => c.rx.some((m) => m.event === 'probe'));
    }, 10000, 'relays reach both nodes');
    assert.equal(await cs.send({ type: 'broadcast', event: 'msg', payload }), 'ok');
    for (const c of channels) {
      const got = await h.waitBroadcast(c, 'msg');
      assert.deepEqual(got, { type: 'broadcast', event: 'msg', payload });
    }
    await h.sleep(300);
    for (const c of channels) assert.equal(c.rx.filter((m) => m.event === 'msg').length, 1, 'exactly once');
  });

  it('presence is one state on every node; a killed node takes only its own presence', async (t) => {
    const topic = h.uniqueTopic('cluster-presence');
    const names = ['ann', 'ben', 'cat'];
    const clients = nodes.map((node, i) => h.newClient(t, node, { vsn: i === 1 ? '1.0.0' : '2.0.0' }));
    const chans = [];
    for (let i = 0; i < 3; i++) {
      chans.push(await h.subscribed(clients[i], topic, { config: { presence: { key: names[i] } }, presence: true }));
    }
    for (let i = 0; i < 3; i++) {
      assert.equal(await h.withTimeout(chans[i].track({ name: names[i], node: i }), 11000, 'track'), 'ok');
    }
    const keys = (ch) => Object.keys(ch.presenceState()).sort();
    const refs = (ch) =>
      Object.values(ch.presenceState())
        .flat()
        .map((m) => m.presence_ref)
        .sort();
    await h.waitFor(() => chans.every((ch) => keys(ch).join() === 'ann,ben,cat'), 10000, 'all three everywhere');
    for (const ch of chans) {
      assert.deepEqual(refs(ch), refs(chans[0]), 'the same presence_refs on every node');
      assert.deepEqual(ch.presenceState().cat[0].node, 2);
    }

    const killedAt = Date.now();
    nodes[2].child.kill('SIGKILL');
    await h.waitFor(() => chans.slice(0, 2).every((ch) => keys(ch).join() === 'ann,ben'), 10000, 'cat left');
    t.diagnostic(`a killed node's presence left the other nodes' clients after ${Date.now() - killedAt} ms`);
    for (const ch of chans.slice(0, 2)) {
      assert.ok(ch.pres.some((e) => e.event === 'leave' && e.key === 'cat'), 'a leave event for cat');
    }
  });
});
