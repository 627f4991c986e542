'use strict';
// 15. lifecycle webhooks: a node:http receiver verifies each request's X-Realtime-Signature (HMAC-SHA256
//     of the raw body, node:crypto, constant-time compare) and records the events; a real realtime-js
//     client connects (socket.connect with the JWT sub, user.online), disconnects (socket.disconnect,
//     client_closed) and its user goes offline after the grace. Over https (a node:https receiver with
//     a certificate from a throwaway CA made with openssl): delivered with REALTIME_WEBHOOK_CA_FILE,
//     refused without it.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const h = require('./harness');

const SECRET = `hook-secret-${crypto.randomUUID()}`;
const GRACE_MS = 1500;

/**
 * A webhook receiver on 127.0.0.1:0 that answers 401 to a bad signature and 200 otherwise; over TLS
 * with `tls` ({key, cert}).
 */
function startReceiver(tls) {
  const events = [];
  let badSignatures = 0;
  const handler = (req, res) => {
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
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  const scheme = tls ? 'https' : 'http';
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({ url: `${scheme}://127.0.0.1:${port}/hooks`, events, bad: () => badSignatures, close: () => server.close() });
    });
  });
}

/** A throwaway CA and a certificate it signed for 127.0.0.1 (openssl); returns the PEM file paths. */
function makeCertificates() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webhook-tls-'));
  const file = (name) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  execFileSync('openssl', ['req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', '/CN=webhook test CA']);
  execFileSync('openssl', ['req', ...ec, '-keyout', file('leaf.key'), '-out', file('leaf.csr'), '-subj', '/CN=127.0.0.1']);
  fs.writeFileSync(file('leaf.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
  execFileSync('openssl', ['x509', '-req', '-in', file('leaf.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'),
    '-CAcreateserial', '-out', file('leaf.pem'), '-days', '1', '-extfile', file('leaf.ext')]);
  return { dir, ca: file('ca.pem'), key: fs.readFileSync(file('leaf.key')), cert: fs.readFileSync(file('leaf.pem')) };
}

/** A realtime-js client of user `sub`, connected. */
async function connectAs(t, server, sub) {
  const client = h.newClient(t, server, { apikey: h.tokens.valid({ sub }) });
  client.connect();
  await h.waitFor(() => client.isConnected(), 5000, 'realtime-js connected');
  return client;
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
    const client = await connectAs(t, server, sub);
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

describe('webhooks over https', () => {
  let certs;
  let receiver;
  before(async () => {
    certs = makeCertificates();
    receiver = await startReceiver({ key: certs.key, cert: certs.cert });
  });
  after(() => {
    if (receiver) receiver.close();
    if (certs) fs.rmSync(certs.dir, { recursive: true, force: true });
  });

  const args = (extra) => ['--webhook-url', receiver.url, '--webhook-secret', SECRET, '--webhook-batch-ms', '20', ...extra];

  it('a receiver whose certificate chains to REALTIME_WEBHOOK_CA_FILE gets signed events', async (t) => {
    const server = await h.startServer(args(['--webhook-ca-file', certs.ca]));
    t.after(() => server.stop());
    const sub = `tls-user-${crypto.randomUUID()}`;
    await connectAs(t, server, sub);
    await h.waitFor(() => receiver.events.some((e) => e.name === 'socket.connect' && e.user_id === sub), 5000, 'socket.connect over TLS');
    assert.equal(receiver.bad(), 0);
  });

  it('without that CA the certificate is refused and nothing is delivered', async (t) => {
    const server = await h.startServer(args(['--webhook-max-attempts', '1']));
    t.after(() => server.stop());
    const sub = `untrusted-${crypto.randomUUID()}`;
    await connectAs(t, server, sub);
    const failed = async () => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith('realtime_webhook_events_failed_total'));
      return line ? Number(line.split(' ').pop()) : 0;
    };
    await h.waitFor(async () => (await failed()) > 0, 10000, 'the batch given up on the unknown issuer');
    assert.ok(!receiver.events.some((e) => e.user_id === sub), 'nothing reached the receiver');
  });
});
