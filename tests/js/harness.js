'use strict';
// Shared helpers for the realtime-js compatibility suite.
//
// - startServer(extraArgs)   spawns the Rust server (on 127.0.0.1:0 unless --bind is given) and waits for its
//                            "realtime listening on http://127.0.0.x:<PORT>" stdout line.
// - tokens                   HS256 JWTs signed with node:crypto, plus broken variants.
// - newClient(t, server, …)  a real @supabase/realtime-js RealtimeClient over `ws`,
//                            disconnected automatically when the test ends.
// - waitFor / withTimeout    every wait in the suite is bounded.
//
// Env: REALTIME_BIN (default ../../target/debug/realtime relative to this directory),
//      RT_DEBUG=1 prints server stderr and client logs as they happen.

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { after } = require('node:test');
const WebSocket = require('ws');
const { RealtimeClient } = require('@supabase/realtime-js');

const DEBUG = !!process.env.RT_DEBUG;
const JWT_SECRET = 'compat-suite-secret-0123456789abcdefghijklmnopqrstuvwxyz';
const VERSIONS = ['1.0.0', '2.0.0'];
const BIN = path.resolve(__dirname, process.env.REALTIME_BIN || '../../target/debug/realtime');

// ---------------------------------------------------------------------------
// time utilities (wait.js)

const { sleep, withTimeout, waitFor } = require('./wait');

// ---------------------------------------------------------------------------
// JWTs

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const nowSec = () => Math.floor(Date.now() / 1000);

function signJwt(claims, { secret = JWT_SECRET, header = {}, alg = 'HS256' } = {}) {
  const h = { alg, typ: 'JWT', ...header };
  const input = `${b64url(h)}.${b64url(claims)}`;
  const hashes = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' };
  const hash = hashes[h.alg] || 'sha256'; // non-HS headers get a (meaningless) HMAC signature
  const sig = crypto.createHmac(hash, secret).update(input).digest('base64url');
  return `${input}.${sig}`;
}

let tokenSeq = 0;
const baseClaims = (extra = {}) => ({
  role: 'anon',
  iss: 'compat-suite',
  sub: `user-${++tokenSeq}`,
  iat: nowSec(),
  exp: nowSec() + 3600,
  ...extra,
});

const tokens = {
  /** valid HS256 token; every call returns a distinct string (distinct `sub`). */
  valid: (extra = {}) => signJwt(baseClaims(extra)),
  /** valid now, expires `sec` seconds from now. */
  expiringIn: (sec) => signJwt(baseClaims({ exp: nowSec() + sec })),
  expired: (agoSec = 60) => signJwt(baseClaims({ iat: nowSec() - 3600, exp: nowSec() - agoSec })),
  noRole: () => {
    const c = baseClaims();
    delete c.role;
    return signJwt(c);
  },
  noExp: () => {
    const c = baseClaims();
    delete c.exp;
    return signJwt(c);
  },
  wrongSecret: () => signJwt(baseClaims(), { secret: 'some-other-secret-that-the-server-does-not-know' }),
  /** header {"alg":"none"} and an empty signature */
  algNone: () => `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(baseClaims())}.`,
  /** header claims RS256 (no kid) while the server only has an HS secret and no JWKS */
  rs256Header: (kid) => signJwt(baseClaims(), { header: kid ? { kid } : {}, alg: 'RS256' }),
  garbage: () => 'this-is-not-a-jwt',
};

// ---------------------------------------------------------------------------
// server process

const servers = new Set();
let serverSeq = 0;

/**
 * Spawn the server with the standard test flags plus `extraArgs`.
 * Resolves to {url, port, httpUrl, wsBase, stop(), stderr()} once it listens.
 */
async function startServer(extraArgs = [], { readyTimeoutMs = 15000 } = {}) {
  if (!fs.existsSync(BIN)) {
    throw new Error(`server binary not found at ${BIN} (set REALTIME_BIN or run cargo build -p realtime-node)`);
  }
  const id = ++serverSeq;
  const args = [
    // A test may bind elsewhere on loopback (cluster tests use 127.0.0.x).
    ...(extraArgs.includes('--bind') ? [] : ['--bind', '127.0.0.1:0']),
    '--jwt-secret', JWT_SECRET,
    '--join-error-delay-ms', '0',
    '--connect-error-delay-ms', '0',
    ...extraArgs,
  ];
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' };
  const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stderrBuf = '';
  let stdoutBuf = '';
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderrBuf += d;
    if (stderrBuf.length > 200000) stderrBuf = stderrBuf.slice(-100000);
    if (DEBUG) process.stderr.write(`[server ${id}] ${d}`);
  });
  child.stdout.setEncoding('utf8');

  const server = {
    id,
    args,
    child,
    port: null,
    url: null,
    stderr: () => stderrBuf,
    stdout: () => stdoutBuf,
    exited: () => exited,
    async stop() {
      if (!servers.has(server)) return;
      servers.delete(server);
      if (exited) return;
      child.kill('SIGTERM');
      const res = await Promise.race([exitPromise, sleep(3000).then(() => null)]);
      if (!res && !exited) {
        child.kill('SIGKILL');
        await Promise.race([exitPromise, sleep(2000)]);
      }
    },
  };
  servers.add(server);

  const ready = new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => {
      stdoutBuf += d;
      if (DEBUG) process.stderr.write(`[server ${id} stdout] ${d}`);
      const m = stdoutBuf.match(/realtime listening on http:\/\/(127\.0\.0\.\d+):(\d+)/);
      if (m && !server.port) {
        server.host = m[1];
        resolve(Number(m[2]));
      }
    });
    exitPromise.then((e) =>
      reject(new Error(`server exited before listening (${JSON.stringify(e)}); args=${args.join(' ')}\nstderr:\n${stderrBuf.slice(-4000)}`)),
    );
    child.on('error', reject);
  });
  try {
    server.port = await withTimeout(ready, readyTimeoutMs, 'server "realtime listening" line');
  } catch (e) {
    await server.stop();
    throw e;
  }
  server.url = `http://${server.host}:${server.port}`;
  server.httpUrl = server.url;
  server.wsBase = `ws://${server.host}:${server.port}`;
  return server;
}

// ---------------------------------------------------------------------------
// realtime-js clients

const clients = new Set();
let clientSeq = 0;

/**
 * A RealtimeClient for `server`. `t` (a node:test context, may be null) gets an after()
 * hook that tears it down. Options: vsn, apikey, timeout, endpointPath.
 */
function newClient(t, server, { vsn = '2.0.0', apikey = tokens.valid(), timeout, endpointPath = '/socket', ...rest } = {}) {
  const id = ++clientSeq;
  const logs = [];
  const logger = (kind, msg, data) => {
    const line = `[client ${id} vsn=${vsn}] ${kind}: ${msg}`;
    logs.push(line);
    if (logs.length > 5000) logs.shift();
    if (DEBUG) console.error(line, data === undefined ? '' : safeJson(data));
  };
  const client = new RealtimeClient(`${server.wsBase}${endpointPath}`, {
    transport: WebSocket,
    params: { apikey },
    vsn,
    logger,
    ...(timeout ? { timeout } : {}),
    ...rest,
  });
  const origChannel = client.channel.bind(client);
  client.__allChannels = new Set();
  client.channel = (...a) => {
    const ch = origChannel(...a);
    trackPushes(ch);
    client.__allChannels.add(ch);
    return ch;
  };
  client.__id = id;
  client.__logs = logs;
  client.__vsn = vsn;
  clients.add(client);
  if (t && typeof t.after === 'function') t.after(() => closeClient(client));
  return client;
}

function safeJson(v) {
  try {
    return JSON.stringify(v, (k, x) => (x instanceof ArrayBuffer ? `<ArrayBuffer ${x.byteLength}>` : x)).slice(0, 500);
  } catch (_) {
    return String(v);
  }
}

/**
 * Remember every Push a channel creates so closeClient() can cancel their 10 s reply timers
 * (realtime-js starts one even for un-acked broadcasts, which never get a reply); otherwise
 * they keep the test process alive after the last test. Purely bookkeeping.
 */
function trackPushes(ch) {
  if (ch.__pushes) return;
  ch.__pushes = [];
  const adapter = ch.channelAdapter;
  const orig = adapter.push.bind(adapter);
  adapter.push = (...a) => {
    const p = orig(...a);
    ch.__pushes.push(p);
    if (ch.__pushes.length > 200) ch.__pushes.shift();
    return p;
  };
}

/** Tear a client down without waiting on the server: no leave round-trips, bounded close. */
async function closeClient(client) {
  if (!clients.has(client)) return;
  clients.delete(client);
  try {
    client._cancelPendingDisconnect();
  } catch (_) {}
  for (const ch of new Set([...client.getChannels(), ...(client.__allChannels || [])])) {
    try {
      ch.teardown();
      for (const p of ch.__pushes || []) p.cancelTimeout();
    } catch (_) {}
  }
  client.channels = [];
  const sock = client.socketAdapter.getSocket();
  const conn = sock.conn;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 2500);
    try {
      sock.disconnect(() => {
        clearTimeout(timer);
        resolve();
      });
    } catch (_) {
      clearTimeout(timer);
      resolve();
    }
  });
  try {
    sock.clearHeartbeats();
    sock.reconnectTimer.reset();
  } catch (_) {}
  if (conn && conn.readyState !== WebSocket.CLOSED && typeof conn.terminate === 'function') {
    conn.terminate();
  }
}

/** The underlying WebSocket object of a client (identity changes on reconnect). */
const connOf = (client) => client.socketAdapter.getSocket().conn;

/**
 * Create a channel with collectors attached before subscribe:
 *   ch.rx       broadcast messages (all events)
 *   ch.sys      system payloads
 *   ch.pres     presence events ({event:'join'|'leave'|'sync', ...}) if opts.presence
 *   ch.statuses subscribe callback calls [{status, err, at}]
 * opts: config (channel config), presence (bool: attach presence listeners),
 *       postgres (array of postgres_changes filters), subscribe (default true)
 */
function openChannel(client, topic, { config = {}, presence = false, postgres = [], subscribe = true, timeout } = {}) {
  const ch = client.channel(topic, { config });
  trackPushes(ch);
  ch.rx = [];
  ch.sys = [];
  ch.pres = [];
  ch.pg = [];
  ch.statuses = [];
  ch.on('broadcast', { event: '*' }, (m) => ch.rx.push(m));
  ch.on('system', {}, (m) => ch.sys.push(m));
  if (presence) ch.on('presence', { event: '*' }, (e) => ch.pres.push(e));
  for (const f of postgres) ch.on('postgres_changes', f, (m) => ch.pg.push(m));
  if (subscribe) {
    ch.subscribe((status, err) => ch.statuses.push({ status, err, at: Date.now() }), timeout);
  }
  return ch;
}

/** Wait for the channel's subscribe callback to report `status`; returns that entry. */
function waitStatus(ch, status, ms = 5000) {
  return waitFor(
    () => ch.statuses.find((s) => s.status === status),
    ms,
    `${ch.topic} status ${status} (seen: ${JSON.stringify(ch.statuses.map((s) => [s.status, s.err && s.err.message]))})`,
  );
}

/** Open + wait SUBSCRIBED, failing fast (with the error) on CHANNEL_ERROR / TIMED_OUT / CLOSED. */
async function subscribed(client, topic, opts = {}, ms = 5000) {
  const ch = openChannel(client, topic, opts);
  const first = await waitFor(() => ch.statuses[0], ms, `${topic} first subscribe status`);
  if (first.status !== 'SUBSCRIBED') {
    throw new Error(`${topic}: expected SUBSCRIBED, got ${first.status}${first.err ? `: ${first.err.message}` : ''}`);
  }
  return ch;
}

let topicSeq = 0;
const uniqueTopic = (prefix = 'room') => `${prefix}-${process.pid}-${++topicSeq}-${crypto.randomBytes(3).toString('hex')}`;

/** Wait for a broadcast with `event` (and optional payload predicate) to arrive on `ch`. */
function waitBroadcast(ch, event, ms = 5000, pred = () => true) {
  return waitFor(() => ch.rx.find((m) => m.event === event && pred(m)), ms, `broadcast '${event}' on ${ch.topic}`);
}

/**
 * "Is the server still serving?": two fresh clients (vsn 2.0.0 and 1.0.0) join a fresh
 * topic; a broadcast from one reaches the other in both directions.
 */
async function assertServerServing(t, server) {
  const topic = uniqueTopic('alive');
  const a = newClient(t, server, { vsn: '2.0.0' });
  const b = newClient(t, server, { vsn: '1.0.0' });
  const ca = await subscribed(a, topic);
  const cb = await subscribed(b, topic);
  await ca.send({ type: 'broadcast', event: 'ping', payload: { from: 'a' } });
  await cb.send({ type: 'broadcast', event: 'ping', payload: { from: 'b' } });
  const gotB = await waitBroadcast(cb, 'ping', 5000, (m) => m.payload && m.payload.from === 'a');
  const gotA = await waitBroadcast(ca, 'ping', 5000, (m) => m.payload && m.payload.from === 'b');
  if (!gotA || !gotB) throw new Error('server stopped delivering broadcasts');
  await closeClient(a);
  await closeClient(b);
}

/**
 * Raw WebSocket upgrade attempt. Resolves {opened:true, ws} or
 * {opened:false, status, headers, body, json}.
 */
function rawUpgrade(url, { headers = {}, ms = 5000 } = {}) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers });
      ws.on('open', () => resolve({ opened: true, ws }));
      ws.on('unexpected-response', (req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => {
          let json = null;
          try {
            json = JSON.parse(body);
          } catch (_) {}
          resolve({ opened: false, status: res.statusCode, headers: res.headers, body, json });
          req.destroy();
        });
      });
      ws.on('error', (e) => {
        if (!/Unexpected server response/.test(e.message)) reject(e);
      });
    }),
    ms,
    `raw upgrade ${url}`,
  );
}

// global safety net: nothing may keep the process alive
after(async () => {
  for (const c of [...clients]) await closeClient(c);
  for (const s of [...servers]) await s.stop();
});
process.on('exit', () => {
  for (const s of servers) {
    try {
      s.child.kill('SIGKILL');
    } catch (_) {}
  }
});

/** A node's `/cluster` view (bounded). */
async function clusterView(node) {
  const response = await fetch(`${node.url}/cluster`, { signal: AbortSignal.timeout(2000) });
  return response.json();
}

/**
 * Nodes clustered on `ips` (cluster port 4100 each, every node a seed), each started with `extraArgs`,
 * node ids `<idPrefix>-<i>` and data in a fresh temporary directory. Resolves once every node is ready
 * and sees all the others alive (and, with `leader`, names a raft leader), within `timeoutMs`.
 * `stop()` stops the nodes and removes the data.
 */
async function startCluster(ips, { extraArgs = [], idPrefix = 'node', leader = false, timeoutMs = 20000 } = {}) {
  const seeds = ips.map((ip) => `${ip}:4100`).join(',');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `realtime-js-${idPrefix}-`));
  const nodes = [];
  const stop = async () => {
    for (const node of nodes) await node.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < ips.length; i++) {
      nodes.push(
        await startServer([
          ...extraArgs,
          '--bind', `${ips[i]}:0`,
          '--node-id', `${idPrefix}-${i}`,
          '--cluster-bind', `${ips[i]}:4100`,
          '--seeds', seeds,
          '--data-dir', path.join(dataDir, `node-${i}`),
        ]),
      );
    }
    await waitFor(async () => {
      for (const node of nodes) {
        const view = await clusterView(node).catch(() => null);
        if (!view || !view.ready || (leader && !view.leader)) return false;
        if (view.members.filter((m) => m.state === 'alive').length !== ips.length - 1) return false;
      }
      return true;
    }, timeoutMs, leader ? 'the cluster formed with a leader' : 'the cluster formed');
  } catch (error) {
    await stop();
    throw error;
  }
  return { nodes, stop };
}

module.exports = {
  BIN,
  DEBUG,
  JWT_SECRET,
  VERSIONS,
  sleep,
  withTimeout,
  waitFor,
  signJwt,
  tokens,
  nowSec,
  startServer,
  newClient,
  closeClient,
  connOf,
  openChannel,
  waitStatus,
  subscribed,
  uniqueTopic,
  waitBroadcast,
  assertServerServing,
  rawUpgrade,
  clusterView,
  startCluster,
};
