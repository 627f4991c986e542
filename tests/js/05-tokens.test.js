'use strict';
// 5. tokens: setAuth refresh while joined, invalid/expired tokens pushed while joined (channel
//    closed, socket kept), expiry while joined, handshake refusal (401), join-time token errors.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const EXPIRED_SYS = /^Token has expired \d+ seconds ago$/;
const MISSING_CLAIMS = 'Fields `role` and `exp` are required in JWT';

/** A channel that has been shut down by the server: system error (exact message) and then CLOSED. */
async function assertServerClosedChannel(ch, messageMatcher, ms = 5000) {
  const closed = await h.waitStatus(ch, 'CLOSED', ms);
  const sys = ch.sys.find((s) => s.status === 'error');
  assert.ok(sys, `a system error must precede phx_close (system msgs: ${JSON.stringify(ch.sys)})`);
  assert.equal(sys.extension, 'system');
  assert.equal(sys.channel, ch.subTopic);
  if (messageMatcher instanceof RegExp) assert.match(sys.message, messageMatcher);
  else if (typeof messageMatcher === 'string') assert.equal(sys.message, messageMatcher);
  assert.equal(ch.state, 'closed');
  assert.ok(!ch.statuses.some((s) => s.status === 'CHANNEL_ERROR'), 'closed, not errored (no rejoin loop)');
  return closed;
}

/** Two-way broadcast check between two joined channels. */
async function assertBroadcastFlows(ca, cb, tag) {
  await ca.send({ type: 'broadcast', event: `a-${tag}`, payload: { tag } });
  await cb.send({ type: 'broadcast', event: `b-${tag}`, payload: { tag } });
  assert.deepEqual((await h.waitBroadcast(cb, `a-${tag}`)).payload, { tag });
  assert.deepEqual((await h.waitBroadcast(ca, `b-${tag}`)).payload, { tag });
}

describe('tokens', () => {
  let server;
  before(async () => {
    server = await h.startServer();
  });
  after(() => server && server.stop());

  for (const vsn of h.VERSIONS) {
    describe(`vsn ${vsn}`, () => {
      it('setAuth(newValidToken) while joined: access_token pushed, no reply needed, broadcast keeps flowing', async (t) => {
        const topic = h.uniqueTopic('auth');
        const a = h.newClient(t, server, { vsn });
        const b = h.newClient(t, server, { vsn });
        const ca = await h.subscribed(a, topic);
        const cb = await h.subscribed(b, topic);
        const conn = h.connOf(a);
        const newToken = h.tokens.valid({ role: 'authenticated' });
        await a.setAuth(newToken);
        assert.ok(
          a.__logs.some((l) => l.includes(`${ca.topic} access_token`)),
          'client pushed access_token to the joined channel',
        );
        await h.sleep(500);
        await assertBroadcastFlows(ca, cb, 'after-setauth');
        assert.deepEqual(ca.statuses.map((s) => s.status), ['SUBSCRIBED']);
        assert.deepEqual(ca.sys, []);
        assert.equal(h.connOf(a), conn, 'same WebSocket');
        // a new channel joins with the new token in its join payload
        const c2 = await h.subscribed(a, h.uniqueTopic('auth2'));
        assert.equal(c2.joinPush.payload().access_token, newToken);
      });

      it('setAuth(sb_… key) while joined is ignored by the server', async (t) => {
        const topic = h.uniqueTopic('auth');
        const a = h.newClient(t, server, { vsn });
        const b = h.newClient(t, server, { vsn });
        const ca = await h.subscribed(a, topic);
        const cb = await h.subscribed(b, topic);
        await a.setAuth('sb_publishable_abcdefghijklmnopqrstuv');
        await h.sleep(500);
        await assertBroadcastFlows(ca, cb, 'sb');
        assert.deepEqual(ca.statuses.map((s) => s.status), ['SUBSCRIBED']);
      });

      it('setAuth(expiredToken) while joined → system error "Token has expired N seconds ago", CLOSED; socket stays usable', async (t) => {
        const topic = h.uniqueTopic('auth');
        const a = h.newClient(t, server, { vsn });
        const b = h.newClient(t, server, { vsn });
        const ca = await h.subscribed(a, topic);
        const cb = await h.subscribed(b, topic);
        const conn = h.connOf(a);
        await a.setAuth(h.tokens.expired(30));
        await assertServerClosedChannel(ca, EXPIRED_SYS);
        // the other member is unaffected
        assert.equal(cb.state, 'joined');
        // the same socket stays open and can join again once the token is fixed
        await h.sleep(200);
        assert.equal(a.isConnected(), true, 'socket stays open');
        assert.equal(h.connOf(a), conn, 'same WebSocket (no reconnect)');
        await a.setAuth(h.tokens.valid());
        const c2 = await h.subscribed(a, topic);
        await assertBroadcastFlows(c2, cb, 'rejoined');
        assert.equal(h.connOf(a), conn, 'still the same WebSocket');
        await h.assertServerServing(t, server);
      });

      for (const [name, make, msg] of [
        ['no role', () => h.tokens.noRole(), MISSING_CLAIMS],
        ['no exp', () => h.tokens.noExp(), MISSING_CLAIMS],
        ['not a JWT', () => h.tokens.garbage(), 'The token provided is not a valid JWT'],
        ['wrong secret', () => h.tokens.wrongSecret(), null],
      ]) {
        it(`setAuth(${name} token) while joined → system error + CLOSED, socket stays open`, async (t) => {
          const a = h.newClient(t, server, { vsn });
          const ca = await h.subscribed(a, h.uniqueTopic('auth'));
          const conn = h.connOf(a);
          await a.setAuth(make());
          await assertServerClosedChannel(ca, msg);
          await h.sleep(200);
          assert.equal(h.connOf(a), conn);
          assert.equal(a.isConnected(), true);
          await h.assertServerServing(t, server);
        });
      }

      it('access_token (setAuth before subscribe) that expires ~2 s after join → channel closed after expiry', async (t) => {
        const topic = h.uniqueTopic('exp');
        const a = h.newClient(t, server, { vsn });
        await a.setAuth(h.tokens.expiringIn(2));
        const ca = await h.subscribed(a, topic);
        const joinedAt = Date.now();
        const conn = h.connOf(a);
        const closed = await assertServerClosedChannel(ca, EXPIRED_SYS, 8000);
        assert.ok(closed.at - joinedAt <= 6000, `closed ${closed.at - joinedAt} ms after join`);
        assert.equal(h.connOf(a), conn, 'socket not closed by token expiry');
        assert.equal(a.isConnected(), true);
        await h.assertServerServing(t, server);
      });

      it('join with an expired access_token → CHANNEL_ERROR "InvalidJWTToken: Token has expired …"; setAuth(valid) lets the rejoin succeed', async (t) => {
        const a = h.newClient(t, server, { vsn });
        await a.setAuth(h.tokens.expired(10));
        const ch = h.openChannel(a, h.uniqueTopic('joinexp'));
        const err = await h.waitStatus(ch, 'CHANNEL_ERROR', 5000);
        assert.ok(!ch.statuses.some((s) => s.status === 'SUBSCRIBED'));
        assert.ok(err.err instanceof Error);
        assert.match(err.err.message, /InvalidJWTToken: Token has expired/);
        assert.match(err.err.message, /^InvalidJWTToken: Token has expired \d+ seconds ago$/);
        assert.equal(a.isConnected(), true, 'join errors do not close the socket');
        // realtime-js retries the join (1 s backoff) with the refreshed join payload
        await a.setAuth(h.tokens.valid());
        await h.waitStatus(ch, 'SUBSCRIBED', 8000);
        await h.assertServerServing(t, server);
      });

      for (const [name, make, reason] of [
        ['no role', () => h.tokens.noRole(), `InvalidJWTToken: ${MISSING_CLAIMS}`],
        ['not a JWT', () => h.tokens.garbage(), 'MalformedJWT: The token provided is not a valid JWT'],
        ['wrong secret', () => h.tokens.wrongSecret(), 'JwtSignatureError: Failed to validate JWT signature'],
      ]) {
        it(`join with ${name} access_token → CHANNEL_ERROR "${reason}"`, async (t) => {
          const a = h.newClient(t, server, { vsn });
          await a.setAuth(make());
          const ch = h.openChannel(a, h.uniqueTopic('joinbad'));
          const err = await h.waitStatus(ch, 'CHANNEL_ERROR', 5000);
          assert.equal(err.err.message, reason);
          assert.ok(!ch.statuses.some((s) => s.status === 'SUBSCRIBED'));
          await h.assertServerServing(t, server);
        });
      }

      for (const [name, make] of [
        ['expired', () => h.tokens.expired()],
        ['wrong-secret', () => h.tokens.wrongSecret()],
      ]) {
        it(`client with an invalid apikey (${name}) never reaches SUBSCRIBED`, async (t) => {
          const a = h.newClient(t, server, { vsn, apikey: make() });
          const ch = h.openChannel(a, h.uniqueTopic('badkey'));
          await h.waitStatus(ch, 'CHANNEL_ERROR', 5000); // transport error while joining
          await h.sleep(2500); // covers the 1 s reconnect attempt too
          assert.ok(!ch.statuses.some((s) => s.status === 'SUBSCRIBED'), JSON.stringify(ch.statuses));
          assert.equal(a.isConnected(), false);
          assert.notEqual(ch.state, 'joined');
          await h.assertServerServing(t, server);
        });
      }
    });
  }

  it('apikey (socket token) expiring ~2 s after join → channel closed, socket stays open', async (t) => {
    const a = h.newClient(t, server, { vsn: '2.0.0', apikey: h.tokens.expiringIn(2) });
    const ca = await h.subscribed(a, h.uniqueTopic('exp-apikey'));
    const conn = h.connOf(a);
    await assertServerClosedChannel(ca, EXPIRED_SYS, 8000);
    assert.equal(h.connOf(a), conn);
    await h.assertServerServing(t, server);
  });

  it('mixed: v1 member’s token expires, v2 member in the same channel keeps receiving', async (t) => {
    const topic = h.uniqueTopic('mixed-exp');
    const v1 = h.newClient(t, server, { vsn: '1.0.0' });
    const v2 = h.newClient(t, server, { vsn: '2.0.0' });
    const v2b = h.newClient(t, server, { vsn: '2.0.0' });
    const c1 = await h.subscribed(v1, topic);
    const c2 = await h.subscribed(v2, topic);
    const c2b = await h.subscribed(v2b, topic);
    await v1.setAuth(h.tokens.expired(5));
    await assertServerClosedChannel(c1, EXPIRED_SYS);
    await assertBroadcastFlows(c2, c2b, 'mixed');
    await h.sleep(300);
    assert.equal(c1.rx.length, 0, 'closed channel receives nothing');
  });

  describe('WebSocket handshake refusal (raw upgrade)', () => {
    const cases = [
      ['expired', () => h.tokens.expired(), 'Token has expired'],
      ['no role', () => h.tokens.noRole(), MISSING_CLAIMS],
      ['no exp', () => h.tokens.noExp(), MISSING_CLAIMS],
      ['not a JWT', () => h.tokens.garbage(), 'The token provided is not a valid JWT'],
      ['wrong secret', () => h.tokens.wrongSecret(), 'Failed to validate JWT signature'],
      ['alg none', () => h.tokens.algNone(), 'Failed to generate JWT signer, check your JWT secret or JWKS configuration'],
      ['RS256 header, no kid', () => h.tokens.rs256Header(), 'Failed to generate JWT signer, check your JWT secret or JWKS configuration'],
      [
        'RS256 header, kid "k1"',
        () => h.tokens.rs256Header('k1'),
        'Failed to generate JWT signer for key ID (kid) "k1", check your JWT secret or JWKS configuration',
      ],
    ];
    for (const vsn of h.VERSIONS) {
      for (const [name, make, message] of cases) {
        it(`vsn ${vsn}: ${name} apikey → 401 {"error": "${message}"}`, async () => {
          const url = `${server.wsBase}/socket/websocket?apikey=${encodeURIComponent(make())}&vsn=${vsn}`;
          const r = await h.rawUpgrade(url);
          if (r.opened) r.ws.terminate();
          assert.equal(r.opened, false, 'upgrade must be refused');
          assert.equal(r.status, 401);
          assert.match(String(r.headers['content-type']), /^application\/json/);
          assert.deepEqual(r.json, { error: message });
        });
      }
    }

    it('missing apikey → 401 "API key is missing"', async () => {
      const r = await h.rawUpgrade(`${server.wsBase}/socket/websocket?vsn=2.0.0`);
      if (r.opened) r.ws.terminate();
      assert.equal(r.opened, false);
      assert.equal(r.status, 401);
      assert.deepEqual(r.json, { error: 'API key is missing' });
    });

    it('unsupported vsn → 403', async () => {
      const r = await h.rawUpgrade(`${server.wsBase}/socket/websocket?apikey=${h.tokens.valid()}&vsn=3.0.0`);
      if (r.opened) r.ws.terminate();
      assert.equal(r.opened, false);
      assert.equal(r.status, 403);
      assert.deepEqual(r.json, { error: 'Unsupported serializer version: 3.0.0' });
    });

    it('x-api-key header wins over the apikey query parameter', async () => {
      const ok = await h.rawUpgrade(`${server.wsBase}/socket/websocket?apikey=garbage&vsn=1.0.0`, {
        headers: { 'x-api-key': h.tokens.valid() },
      });
      assert.equal(ok.opened, true, `valid x-api-key must be accepted (got ${ok.status} ${ok.body})`);
      ok.ws.terminate();
      const bad = await h.rawUpgrade(`${server.wsBase}/socket/websocket?apikey=${h.tokens.valid()}&vsn=1.0.0`, {
        headers: { 'x-api-key': h.tokens.expired() },
      });
      if (bad.opened) bad.ws.terminate();
      assert.equal(bad.opened, false);
      assert.equal(bad.status, 401);
    });
  });

  it('server still serving', async (t) => {
    await h.assertServerServing(t, server);
  });
});
