'use strict';
// 15. lifecycle webhooks: a node:http receiver verifies each request's X-Realtime-Signature (HMAC-SHA256
//     of the raw body, node:crypto, constant-time compare) and records the events; a real realtime-js
//     client connects (socket.connect with the JWT sub, user.online), disconnects (socket.disconnect,
//     client_closed) and its user goes offline after the grace.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const http = require('node:http');
const h = require('./harness');

const SECRET = `hook-secret-${crypto.randomUUID()}`;
const GRACE_MS = 1500;

/** A webhook receiver on 127.0.0.1:0 that answers 401 to a bad signature and 200 otherwise. */
function startReceiver() {
  const events = [];
  let badSignatures = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const expected = 'sha256=' + crypto.createHmac('sha256', SECRET).update(body).digest('hex');
      const got = req.headers['x-realtime-signature'] || '';
      const ok = got.length === expected.length && crypto.timingSafeEqual(Buffer.from(got), Buffer.from(expected));
      if (!ok) {
        badSignatures += 1;
        res.writeHead(401).end();
        return;
      }
      events.push(...JSON.parse(body.toString('utf8')).events);
      res.writeHead(204).end();
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({ url: `http://127.0.0.1:${port}/hooks`, events, bad: () => badSignatures, close: () => server.close() });
    });
  });
}

describe('webhooks', () => {
  let receiver;
  let server;
  before(async () => {
    receiver = await startReceiver();
    server = await h.startServer([
      '--webhook-url', receiver.url,
      '--webhook-secret', SECRET,
      '--webhook-batch-ms', '20',
      '--offline-grace-ms', String(GRACE_MS),
    ]);
  });
  after(async () => {
    if (server) await server.stop();
    if (receiver) receiver.close();
  });

  it('realtime-js connect, disconnect, then user.offline after the grace', async (t) => {
    const sub = `webhook-user-${crypto.randomUUID()}`;
    const client = h.newClient(t, server, { apikey: h.tokens.valid({ sub }) });
    client.connect();
    await h.waitFor(() => client.isConnected(), 5000, 'realtime-js connected');
    const of = (name) => receiver.events.filter((e) => e.name === name && e.user_id === sub);

    const [connect] = await h.waitFor(() => of('socket.connect').length && of('socket.connect'), 5000, 'socket.connect');
    assert.equal(typeof connect.socket_id, 'number');
    assert.equal(typeof connect.at, 'number');
    await h.waitFor(() => of('user.online').length, 5000, 'user.online');

    await client.disconnect();
    const [gone] = await h.waitFor(() => of('socket.disconnect').length && of('socket.disconnect'), 5000, 'socket.disconnect');
    assert.equal(gone.socket_id, connect.socket_id);
    assert.equal(gone.reason, 'client_closed');
    assert.equal(gone.code, 1000);

    const [offline] = await h.waitFor(() => of('user.offline').length && of('user.offline'), 5000 + GRACE_MS, 'user.offline');
    assert.ok(offline.at - gone.at >= GRACE_MS, `offline ${offline.at - gone.at} ms after the disconnect`);
    assert.equal(of('user.online').length, 1);
    assert.equal(receiver.bad(), 0, 'every request was signed with the secret');
  });
});
