'use strict';
// A broadcast crosses between two nodes of a cluster, seen through the real @supabase/realtime-js
// (tests/js/node_modules, `npm ci` in tests/js): one client joins a fresh topic on each node, a broadcast
// sent on the first arrives on the second and one sent on the second arrives on the first, each exactly
// once with its payload. scripts/image-test.sh runs it against containers of the image:
//
//   REALTIME_JWT_SECRET=… node tests/js/image/broadcast-across.js http://127.0.0.1:40001 http://127.0.0.1:40003
//
// Exits 0 when both directions arrived, 1 (with what was seen) otherwise. Every wait is bounded; the whole
// run is bounded by TOTAL_MS.
const crypto = require('node:crypto');
const WebSocket = require('ws');
const { RealtimeClient } = require('@supabase/realtime-js');
const { sleep, waitFor } = require('../wait');

const TOTAL_MS = 60000;
// A node learns that a peer has members on a topic from the peer's member counts, a moment after the join:
// probes are sent until one arrives, then the broadcast that is checked.
const RELAY_MS = 20000;
const ARRIVE_MS = 5000;

const [urlA, urlB] = process.argv.slice(2);
const secret = process.env.REALTIME_JWT_SECRET;
if (!urlA || !urlB || !secret) {
  console.error('usage: REALTIME_JWT_SECRET=… node broadcast-across.js <http url of node A> <http url of node B>');
  process.exit(2);
}

function token(sub) {
  const b64url = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const input = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ role: 'anon', sub, iat: now, exp: now + 600 })}`;
  return `${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`;
}

async function join(url, topic, name) {
  const client = new RealtimeClient(`${url.replace(/^http/, 'ws')}/socket`, {
    transport: WebSocket,
    params: { apikey: token(`image-test-${name}`) },
    vsn: '2.0.0',
  });
  const channel = client.channel(topic, { config: { broadcast: { self: false } } });
  channel.rx = [];
  channel.on('broadcast', { event: '*' }, (message) => channel.rx.push(message));
  let status = null;
  channel.subscribe((s, err) => {
    status = status || { s, err };
  });
  const first = await waitFor(() => status, 10000, `${name}: the join reply`);
  if (first.s !== 'SUBSCRIBED') {
    throw new Error(`${name} (${url}): expected SUBSCRIBED, got ${first.s}${first.err ? `: ${first.err.message}` : ''}`);
  }
  return { client, channel, name };
}

/** A broadcast from `from` arrives on `to`, exactly once and unchanged. */
async function crosses(from, to) {
  const started = Date.now();
  await waitFor(
    async () => {
      await from.channel.send({ type: 'broadcast', event: 'probe', payload: {} });
      await sleep(100);
      return to.channel.rx.some((m) => m.event === 'probe');
    },
    RELAY_MS,
    `a probe from ${from.name} on ${to.name}`,
  );
  const payload = { from: from.name, text: 'héllo', n: [1, 2, 3], id: crypto.randomUUID() };
  const reply = await from.channel.send({ type: 'broadcast', event: 'msg', payload });
  if (reply !== 'ok') throw new Error(`${from.name}: send answered ${reply}`);
  const got = await waitFor(
    () => to.channel.rx.find((m) => m.event === 'msg' && m.payload && m.payload.id === payload.id),
    ARRIVE_MS,
    `the broadcast from ${from.name} on ${to.name}`,
  );
  if (JSON.stringify(got.payload) !== JSON.stringify(payload)) {
    throw new Error(`payload changed on the way: sent ${JSON.stringify(payload)}, got ${JSON.stringify(got.payload)}`);
  }
  await sleep(300);
  const copies = to.channel.rx.filter((m) => m.event === 'msg' && m.payload.id === payload.id).length;
  if (copies !== 1) throw new Error(`the broadcast from ${from.name} arrived ${copies} times on ${to.name}`);
  console.log(`broadcast-across: ${from.name} -> ${to.name} in ${Date.now() - started} ms (probes included)`);
}

async function main() {
  const topic = `image-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  const a = await join(urlA, topic, `A(${urlA})`);
  const b = await join(urlB, topic, `B(${urlB})`);
  try {
    await crosses(a, b);
    await crosses(b, a);
  } finally {
    for (const side of [a, b]) side.client.disconnect();
  }
}

const overall = setTimeout(() => {
  console.error(`broadcast-across: FAILED: not done within ${TOTAL_MS} ms`);
  process.exit(1);
}, TOTAL_MS);
main().then(
  () => {
    clearTimeout(overall);
    console.log('broadcast-across: OK');
    process.exit(0);
  },
  (error) => {
    clearTimeout(overall);
    console.error(`broadcast-across: FAILED: ${error.message}`);
    process.exit(1);
  },
);
