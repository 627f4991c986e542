'use strict';
// 3. REST broadcast: send() fallback on an unsubscribed channel (POST /api/broadcast) and
//    httpSend() (POST /api/broadcast/:topic/events/:event); invalid tokens rejected.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

describe('REST broadcast', () => {
  let server;
  before(async () => {
    server = await h.startServer();
  });
  after(() => server && server.stop());

  for (const vsn of h.VERSIONS) {
    describe(`subscribers on vsn ${vsn}`, () => {
      it('send() on a channel that is not subscribed falls back to POST /api/broadcast and subscribers receive it', async (t) => {
        const topic = h.uniqueTopic('rest');
        const receiver = h.newClient(t, server, { vsn });
        const cr = await h.subscribed(receiver, topic);
        // sender: a client that never connects; its channel cannot push → REST fallback
        const sender = h.newClient(t, server, { vsn });
        const cs = sender.channel(topic);
        const fetched = [];
        const realFetch = sender.fetch;
        sender.fetch = (url, opts) => {
          fetched.push({ url, opts });
          return realFetch(url, opts);
        };
        const res = await h.withTimeout(
          cs.send({ type: 'broadcast', event: 'from-rest', payload: { x: 1, s: 'é' } }),
          11000,
          'REST fallback send',
        );
        assert.equal(fetched.length, 1, 'send() must have used fetch (REST fallback)');
        assert.match(fetched[0].url, /^http:\/\/127\.0\.0\.1:\d+\/api\/broadcast\?apikey=/);
        assert.equal(res, 'ok');
        const msg = await h.waitBroadcast(cr, 'from-rest');
        assert.deepEqual(msg, { type: 'broadcast', event: 'from-rest', payload: { x: 1, s: 'é' } });
        assert.equal(sender.isConnected(), false, 'fallback must not have opened a socket');
      });

      it('httpSend() resolves {success:true} and subscribers receive the payload', async (t) => {
        const topic = h.uniqueTopic('rest');
        const receiver = h.newClient(t, server, { vsn });
        const cr = await h.subscribed(receiver, topic);
        const sender = h.newClient(t, server, { vsn });
        const cs = sender.channel(topic);
        const payload = { hello: 'world', n: 42, arr: [1, 'ü'], nested: { emoji: '😀' } };
        const res = await h.withTimeout(cs.httpSend('http-evt', payload), 11000, 'httpSend');
        assert.deepEqual(res, { success: true });
        const msg = await h.waitBroadcast(cr, 'http-evt');
        assert.deepEqual(msg, { type: 'broadcast', event: 'http-evt', payload });
      });

      it('httpSend() from a subscribed channel (self:false) still reaches other subscribers', async (t) => {
        const topic = h.uniqueTopic('rest');
        const receiver = h.newClient(t, server, { vsn });
        const cr = await h.subscribed(receiver, topic);
        const sender = h.newClient(t, server, { vsn });
        const cs = await h.subscribed(sender, topic);
        assert.deepEqual(await h.withTimeout(cs.httpSend('both', { k: 1 }), 11000), { success: true });
        await h.waitBroadcast(cr, 'both');
        await h.waitBroadcast(cs, 'both'); // REST messages have no sending channel to exclude
      });

      it('setAuth(token) is sent as Authorization: Bearer and accepted', async (t) => {
        const topic = h.uniqueTopic('rest');
        const receiver = h.newClient(t, server, { vsn });
        const cr = await h.subscribed(receiver, topic);
        const sender = h.newClient(t, server, { vsn });
        await sender.setAuth(h.tokens.valid({ role: 'authenticated' }));
        const cs = sender.channel(topic);
        assert.deepEqual(await h.withTimeout(cs.httpSend('bearer', { b: 1 }), 11000), { success: true });
        await h.waitBroadcast(cr, 'bearer');
      });
    });
  }

  describe('invalid tokens', () => {
    const bad = {
      'wrong secret': () => h.tokens.wrongSecret(),
      expired: () => h.tokens.expired(),
      'no role': () => h.tokens.noRole(),
      garbage: () => h.tokens.garbage(),
    };
    for (const [name, make] of Object.entries(bad)) {
      it(`httpSend() with apikey = ${name} token rejects (401 Unauthorized) and nothing is delivered`, async (t) => {
        const topic = h.uniqueTopic('rest-bad');
        const receiver = h.newClient(t, server, { vsn: '2.0.0' });
        const cr = await h.subscribed(receiver, topic);
        const sender = h.newClient(t, server, { vsn: '2.0.0', apikey: make() });
        const cs = sender.channel(topic);
        await assert.rejects(h.withTimeout(cs.httpSend('nope', { x: 1 }), 11000, 'httpSend'), (e) => {
          assert.equal(e.message, 'Unauthorized');
          return true;
        });
        // REST fallback of send() with the same token → 'error'
        assert.equal(await h.withTimeout(cs.send({ type: 'broadcast', event: 'nope', payload: { y: 1 } }), 11000), 'error');
        await h.sleep(300);
        assert.deepEqual(cr.rx, []);
        await h.assertServerServing(t, server);
      });
    }

    it('httpSend() with a valid apikey but an invalid setAuth() token rejects (Bearer wins)', async (t) => {
      const topic = h.uniqueTopic('rest-bad');
      const sender = h.newClient(t, server, { vsn: '2.0.0' });
      await sender.setAuth(h.tokens.wrongSecret());
      const cs = sender.channel(topic);
      await assert.rejects(h.withTimeout(cs.httpSend('nope', { x: 1 }), 11000, 'httpSend'), /Unauthorized/);
      await h.assertServerServing(t, server);
    });

    it('raw POST: 401 {"message":"Unauthorized"} for a bad token, 202 empty body for a good one', async (t) => {
      const topic = h.uniqueTopic('raw');
      const url = `${server.url}/api/broadcast/${encodeURIComponent(topic)}/events/raw`;
      const bad = await fetch(url, {
        method: 'POST',
        headers: { apikey: h.tokens.wrongSecret(), 'Content-Type': 'application/json' },
        body: JSON.stringify({ a: 1 }),
      });
      assert.equal(bad.status, 401);
      assert.deepEqual(await bad.json(), { message: 'Unauthorized' });
      const good = await fetch(url, {
        method: 'POST',
        headers: { apikey: h.tokens.valid(), 'Content-Type': 'application/json' },
        body: JSON.stringify({ a: 1 }),
      });
      assert.equal(good.status, 202);
      assert.equal(await good.text(), '');
      const batch = await fetch(`${server.url}/api/broadcast`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${h.tokens.valid()}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ messages: [{ topic, event: 'e', payload: { a: 1 }, private: false }] }),
      });
      assert.equal(batch.status, 202);
      await batch.text();
    });
  });

  it('server still serving', async (t) => {
    await h.assertServerServing(t, server);
  });
});
