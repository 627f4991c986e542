'use strict';
// 4. presence with three clients: track → sync/join everywhere, update (re-track), untrack,
//    unsubscribe and disconnect → leave; presenceState() contents.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const keysOf = (ch) => Object.keys(ch.presenceState()).sort();
const joinsFor = (ch, key) => ch.pres.filter((e) => e.event === 'join' && e.key === key);
const leavesFor = (ch, key) => ch.pres.filter((e) => e.event === 'leave' && e.key === key);

function assertMeta(meta, expectedFields, label) {
  assert.equal(typeof meta.presence_ref, 'string', `${label}: presence_ref must be a string`);
  assert.ok(meta.presence_ref.length > 0, `${label}: presence_ref must not be empty`);
  assert.equal('phx_ref' in meta, false, `${label}: phx_ref is renamed by the client`);
  const { presence_ref, ...rest } = meta;
  assert.deepEqual(rest, expectedFields, label);
}

async function presenceScenario(t, server, versions) {
  const topic = h.uniqueTopic('presence');
  const names = ['alice', 'bob', 'carol'];
  const clients = names.map((n, i) => h.newClient(t, server, { vsn: versions[i] }));
  const chans = [];
  for (let i = 0; i < 3; i++) {
    chans.push(
      await h.subscribed(clients[i], topic, { config: { presence: { key: names[i] } }, presence: true }),
    );
  }
  const [ca, cb, cc] = chans;

  // presence_state is pushed after each join (presence enabled) → a 'sync' event even when empty
  for (const ch of chans) {
    await h.waitFor(() => ch.pres.some((e) => e.event === 'sync'), 5000, `initial sync on ${ch.socket.__vsn}`);
  }

  // everyone tracks
  for (let i = 0; i < 3; i++) {
    const res = await h.withTimeout(chans[i].track({ user: names[i], status: 'online', i }), 11000, 'track');
    assert.equal(res, 'ok', `track by ${names[i]}`);
  }
  for (const ch of chans) {
    await h.waitFor(() => keysOf(ch).length === 3, 5000, `3 keys in presenceState of ${ch.socket.__vsn} (have ${keysOf(ch)})`);
    assert.deepEqual(keysOf(ch), ['alice', 'bob', 'carol']);
    const st = ch.presenceState();
    for (let i = 0; i < 3; i++) {
      assert.equal(st[names[i]].length, 1, `one meta for ${names[i]}`);
      assertMeta(st[names[i]][0], { user: names[i], status: 'online', i }, `${names[i]} meta seen by ${ch.socket.__vsn}`);
    }
    // join event for each key, with newPresences carrying the payload
    for (let i = 0; i < 3; i++) {
      const j = joinsFor(ch, names[i]);
      assert.ok(j.length >= 1, `join event for ${names[i]}`);
      assert.equal(j[0].newPresences.length, 1);
      assertMeta(j[0].newPresences[0], { user: names[i], status: 'online', i }, `join.newPresences ${names[i]}`);
    }
    assert.ok(ch.pres.filter((e) => e.event === 'sync').length >= 2, 'sync after diffs');
  }
  // the same presence_ref is seen by everybody
  const refA = ca.presenceState().alice[0].presence_ref;
  for (const ch of chans) assert.equal(ch.presenceState().alice[0].presence_ref, refA);

  // update: alice re-tracks with a new payload → still one meta, new content, new ref
  for (const ch of chans) ch.pres.length = 0;
  assert.equal(await h.withTimeout(ca.track({ user: 'alice', status: 'away', i: 0 }), 11000), 'ok');
  for (const ch of chans) {
    await h.waitFor(
      () => (ch.presenceState().alice || []).some((m) => m.status === 'away'),
      5000,
      `alice update seen by ${ch.socket.__vsn}`,
    );
    const metas = ch.presenceState().alice;
    assert.equal(metas.length, 1, 'update replaces the meta');
    assertMeta(metas[0], { user: 'alice', status: 'away', i: 0 }, 'updated meta');
    assert.notEqual(metas[0].presence_ref, refA, 'update gets a new presence_ref');
    const j = joinsFor(ch, 'alice');
    const l = leavesFor(ch, 'alice');
    assert.equal(j.length, 1, 'update → one join event');
    assert.equal(l.length, 1, 'update → one leave event (old meta)');
    assertMeta(l[0].leftPresences[0], { user: 'alice', status: 'online', i: 0 }, 'leave.leftPresences on update');
    assert.equal(l[0].leftPresences[0].presence_ref, refA);
    assert.deepEqual(keysOf(ch), ['alice', 'bob', 'carol']);
  }

  // untrack: alice disappears for everybody
  for (const ch of chans) ch.pres.length = 0;
  assert.equal(await h.withTimeout(ca.untrack(), 11000), 'ok');
  for (const ch of chans) {
    await h.waitFor(() => !ch.presenceState().alice, 5000, `alice untrack seen by ${ch.socket.__vsn}`);
    assert.deepEqual(keysOf(ch), ['bob', 'carol']);
    const l = leavesFor(ch, 'alice');
    assert.equal(l.length, 1);
    assert.deepEqual(l[0].currentPresences, []);
    assertMeta(l[0].leftPresences[0], { user: 'alice', status: 'away', i: 0 }, 'leftPresences on untrack');
  }
  assert.equal(ca.state, 'joined', 'untrack does not leave the channel');

  // carol's socket goes away (disconnect) → leave seen by alice and bob
  for (const ch of chans) ch.pres.length = 0;
  await h.closeClient(clients[2]);
  for (const ch of [ca, cb]) {
    await h.waitFor(() => leavesFor(ch, 'carol').length === 1, 5000, `carol disconnect leave seen by ${ch.socket.__vsn}`);
    assert.deepEqual(keysOf(ch), ['bob']);
    assertMeta(leavesFor(ch, 'carol')[0].leftPresences[0], { user: 'carol', status: 'online', i: 2 }, 'carol left');
  }

  // bob unsubscribes → leave seen by alice (who still listens, not tracked)
  assert.equal(await h.withTimeout(cb.unsubscribe(), 5000), 'ok');
  await h.waitFor(() => leavesFor(ca, 'bob').length === 1, 5000, 'bob unsubscribe leave seen by alice');
  assert.deepEqual(ca.presenceState(), {});

  // a late joiner gets the current (empty) state; then alice re-tracks and the newcomer sees it
  const dave = h.newClient(t, server, { vsn: versions[1] });
  const cd = await h.subscribed(dave, topic, { config: { presence: { key: 'dave' } }, presence: true });
  await h.waitFor(() => cd.pres.some((e) => e.event === 'sync'), 5000, 'dave initial sync');
  assert.deepEqual(cd.presenceState(), {});
  assert.equal(await h.withTimeout(ca.track({ user: 'alice', back: true }), 11000), 'ok');
  await h.waitFor(() => cd.presenceState().alice, 5000, 'dave sees alice');
  assertMeta(cd.presenceState().alice[0], { user: 'alice', back: true }, 'alice re-tracked');
}

describe('presence', () => {
  let server;
  before(async () => {
    server = await h.startServer();
  });
  after(() => server && server.stop());

  for (const vsn of h.VERSIONS) {
    it(`three clients on vsn ${vsn}: sync/join/update/untrack/leave`, async (t) => {
      await presenceScenario(t, server, [vsn, vsn, vsn]);
    });
  }

  it('mixed versions (1.0.0, 2.0.0, 1.0.0): sync/join/update/untrack/leave', async (t) => {
    await presenceScenario(t, server, ['1.0.0', '2.0.0', '1.0.0']);
  });

  it('late joiner receives presence_state with already tracked members', async (t) => {
    const topic = h.uniqueTopic('presence');
    const a = h.newClient(t, server, { vsn: '2.0.0' });
    const ca = await h.subscribed(a, topic, { config: { presence: { key: 'early' } }, presence: true });
    assert.equal(await h.withTimeout(ca.track({ role: 'host', emoji: '🎉' }), 11000), 'ok');
    await h.waitFor(() => ca.presenceState().early, 5000, 'own presence (diffs reach the tracker too)');
    for (const vsn of h.VERSIONS) {
      const b = h.newClient(t, server, { vsn });
      const cb = await h.subscribed(b, topic, { config: { presence: { key: `late-${vsn}` } }, presence: true });
      await h.waitFor(() => cb.presenceState().early, 5000, `late joiner ${vsn} sees early`);
      assertMeta(cb.presenceState().early[0], { role: 'host', emoji: '🎉' }, `early meta seen by ${vsn}`);
      assert.ok(joinsFor(cb, 'early').length >= 1, 'join event from presence_state');
    }
  });

  it('empty presence key → server-generated key; two channels with no key get distinct keys', async (t) => {
    const topic = h.uniqueTopic('presence');
    const a = h.newClient(t, server, { vsn: '1.0.0' });
    const b = h.newClient(t, server, { vsn: '2.0.0' });
    const ca = await h.subscribed(a, topic, { presence: true });
    const cb = await h.subscribed(b, topic, { presence: true });
    assert.equal(await h.withTimeout(ca.track({ who: 'a' }), 11000), 'ok');
    assert.equal(await h.withTimeout(cb.track({ who: 'b' }), 11000), 'ok');
    await h.waitFor(() => keysOf(ca).length === 2 && keysOf(cb).length === 2, 5000, 'two generated keys');
    const keys = keysOf(ca);
    assert.deepEqual(keysOf(cb), keys);
    for (const k of keys) assert.ok(k.length > 0, 'generated key is non-empty');
  });

  it('a burst of tracks: every member ends with the same presenceState, with fewer syncs than tracks', async (t) => {
    const topic = h.uniqueTopic('presence-burst');
    const watcher = h.newClient(t, server, { vsn: '2.0.0' });
    const cw = await h.subscribed(watcher, topic, { config: { presence: { key: 'watcher' } }, presence: true });
    await h.waitFor(() => cw.pres.some((e) => e.event === 'sync'), 5000, 'watcher initial sync');
    cw.pres.length = 0;
    const names = Array.from({ length: 12 }, (_, i) => `m${i}`);
    const chans = await Promise.all(
      names.map(async (name, i) => {
        const c = h.newClient(t, server, { vsn: h.VERSIONS[i % 2] });
        return h.subscribed(c, topic, { config: { presence: { key: name } }, presence: true });
      }),
    );
    // All track at once: the node batches the changes (REALTIME_PRESENCE_BATCH_MS).
    const replies = await Promise.all(chans.map((ch, i) => h.withTimeout(ch.track({ i }), 11000, 'track')));
    assert.deepEqual(replies, names.map(() => 'ok'));
    const all = [...names].sort();
    for (const ch of [cw, ...chans]) {
      await h.waitFor(() => JSON.stringify(keysOf(ch)) === JSON.stringify(all), 5000, `all keys on ${ch.socket.__vsn}`);
    }
    const refs = (ch) => JSON.stringify(Object.values(ch.presenceState()).flat().map((m) => m.presence_ref).sort());
    for (const ch of chans) assert.equal(refs(ch), refs(cw), 'the same metas everywhere');
    for (const name of names) assert.equal(joinsFor(cw, name).length, 1, `one join event for ${name}`);
    const syncs = cw.pres.filter((e) => e.event === 'sync').length;
    assert.ok(syncs < names.length, `the watcher synced ${syncs} times for ${names.length} tracks`);
  });

  it('counts_only: a member of a large room gets the counts as a system message, not the metas', async (t) => {
    const topic = h.uniqueTopic('presence-counts');
    const fan = h.newClient(t, server, { vsn: '2.0.0' });
    const cf = await h.subscribed(fan, topic, { config: { presence: { key: 'fan', counts_only: true } }, presence: true });
    const counts = () => cf.sys.filter((m) => m.extension === 'presence');
    const last = () => counts().at(-1);
    await h.waitFor(() => last() && last().count === 0, 5000, 'counts at join');
    assert.deepEqual(last(), { extension: 'presence', status: 'ok', message: 'presence count', channel: topic, count: 0, keys: 0 });
    const others = [];
    for (const [i, key] of ['ann', 'ann', 'ben'].entries()) {
      const c = h.newClient(t, server, { vsn: h.VERSIONS[i % 2] });
      const ch = await h.subscribed(c, topic, { config: { presence: { key } }, presence: true });
      assert.equal(await h.withTimeout(ch.track({ i }), 11000), 'ok');
      others.push(c);
    }
    await h.waitFor(() => last().count === 3, 5000, `counts after three tracks (have ${JSON.stringify(last())})`);
    assert.equal(last().keys, 2);
    await h.closeClient(others[0]);
    await h.waitFor(() => last().count === 2, 5000, 'counts after a leave');
    assert.deepEqual(cf.presenceState(), {}, 'no metas for a counts-only member');
    assert.equal(cf.pres.filter((e) => e.event !== 'sync').length, 0, 'no presence join/leave events');
  });

  it('server still serving', async (t) => {
    await h.assertServerServing(t, server);
  });
});
