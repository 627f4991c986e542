'use strict';
// A round-robin TCP load balancer standing in for a Kubernetes Service in front of the nodes (used by
// 09-rolling-restart.test.js).
//
// Like a Service's endpoints, a backend takes new connections only while its readiness probe passes:
// every backend's `GET /readyz` is polled every 100 ms, and a draining node (503) or a stopped one
// (connection refused) leaves the rotation. A new client connection goes to the next ready backend in
// turn; if that connect fails it tries the next, at most once per backend. Bytes are piped unchanged both
// ways (WebSocket upgrade included), and when either side closes the other is closed too, so a node's
// close frame and FIN reach the client as they would through a real L4 balancer.

const net = require('node:net');

const PROBE_EVERY_MS = 100;
const PROBE_TIMEOUT_MS = 500;

class LoadBalancer {
  /** `backends`: [{host, port}] of the nodes' client ports. */
  constructor(backends) {
    this.backends = backends.map((b) => ({ ...b, ready: false, connections: 0 }));
    this.next = 0;
    this.sockets = new Set();
    this.server = null;
    this.timer = null;
  }

  /** Listens on `host`:0, starts probing; resolves to `ws://host:port`. */
  async start(host) {
    await this.probeAll();
    this.timer = setInterval(() => this.probeAll(), PROBE_EVERY_MS);
    this.server = net.createServer((client) => this.accept(client));
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, host, resolve);
    });
    const { address, port } = this.server.address();
    this.wsBase = `ws://${address}:${port}`;
    return this.wsBase;
  }

  async probeAll() {
    await Promise.all(
      this.backends.map(async (b) => {
        try {
          const res = await fetch(`http://${b.host}:${b.port}/readyz`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
          await res.arrayBuffer();
          b.ready = res.status === 200;
        } catch {
          b.ready = false;
        }
      }),
    );
  }

  /** Marks a backend out of rotation at once (what an endpoint controller does on pod deletion). */
  remove(host) {
    for (const b of this.backends) if (b.host === host) b.ready = false;
  }

  accept(client) {
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => client.destroy());
    client.pause();
    this.connect(client, this.backends.length);
  }

  connect(client, attemptsLeft) {
    if (client.destroyed) return;
    const backend = this.pick();
    if (!backend || attemptsLeft <= 0) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: backend.host, port: backend.port });
    this.sockets.add(upstream);
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      backend.connections += 1;
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.on('error', () => {
      upstream.destroy();
      if (!connected) this.connect(client, attemptsLeft - 1);
      else client.destroy();
    });
    upstream.on('close', () => {
      this.sockets.delete(upstream);
      if (connected) client.destroy();
    });
    client.on('close', () => upstream.destroy());
  }

  /** The next ready backend after the last one used, or null when none is ready. */
  pick() {
    for (let i = 0; i < this.backends.length; i++) {
      const b = this.backends[(this.next + i) % this.backends.length];
      if (b.ready) {
        this.next = (this.next + i + 1) % this.backends.length;
        return b;
      }
    }
    return null;
  }

  async close() {
    clearInterval(this.timer);
    for (const s of this.sockets) s.destroy();
    if (this.server) await new Promise((resolve) => this.server.close(resolve));
  }
}

module.exports = { LoadBalancer };
