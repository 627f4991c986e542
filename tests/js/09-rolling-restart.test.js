'use strict';
// 9. A rolling restart of a three-node cluster (127.0.0.91-93, client port 4000, cluster port 4100) under
//    broadcast, presence and Postgres Changes load, as `kubectl rollout restart` does it: each node in
//    turn (a follower, then the CDC leader, then the last) is SIGTERMed, drains, exits and is started
//    again on the same data directory.
//
//    - Nine realtime-js clients reach the nodes through a round-robin load balancer (lb.js, ready
//      backends only) with realtime-js's default reconnect backoff, and track presence the way apps do
//      (`track` in the subscribe callback). A drained node's clients must reconnect through the balancer
//      to another node and end subscribed.
//    - One more client per node connects to that node directly and subscribes to the table's INSERTs
//      and to the broadcasts; a backend broadcasts over REST to a node that stays up, and a procedure
//      commits one row every 20 ms throughout.
//    - For each restart, the direct clients of the two nodes that stay up receive every row committed
//      and every broadcast sent meanwhile exactly once, in order, while the CDC leadership moves.
//    - After each restart, every client sees the same presence: one entry per connected client, no
//      ghost of a drained connection.
//    Needs REALTIME_TEST_DATABASE_URL (scripts/test.sh sets it).
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const h = require('./harness');
const pg = require('./pg');
const { LoadBalancer } = require('./lb');

const IPS = ['127.0.0.91', '127.0.0.92', '127.0.0.93'];
const LB_IP = '127.0.0.90';
const CLIENT_PORT = 4000;
const SEEDS = IPS.map((ip) => `${ip}:4100`).join(',');
const LB_CLIENTS = 9;
const MAX_ROWS = 20000; // the feeder's bound: 20 ms apart, far more than the test needs

const SCHEMA = `
create table items (id int8 primary key, at timestamptz not null default now());
alter publication supabase_realtime add table items;
create table feed_stop (x int);
create procedure feed(max_rows int) language plpgsql as $$
declare i int := 0;
begin
  loop
    exit when i >= max_rows or exists (select 1 from feed_stop);
    i := i + 1;
    insert into items (id) values (i);
    commit;
    perform pg_sleep(0.02);
  end loop;
end $$;
`;

/** Node `i`'s flags: fixed client port (clients reconnect to it), own data directory, the shared slot. */
function nodeArgs(db, i) {
  return [
    '--bind', `${IPS[i]}:${CLIENT_PORT}`,
    '--node-id', `roll-${i}`,
    '--cluster-bind', `${IPS[i]}:4100`,
    '--seeds', SEEDS,
    '--data-dir', path.join(db.dataDir, `node-${i}`),
    '--database-url', db.url,
    '--slot', db.slot,
    '--shutdown-grace-ms', '5000',
  ];
}

async function clusterView(ip) {
  try {
    const res = await fetch(`http://${ip}:${CLIENT_PORT}/cluster`, { signal: AbortSignal.timeout(2000) });
    return await res.json();
  } catch {
    return null;
  }
}

/** Every node ready, seeing the two others alive, and all naming the same leader; returns its index. */
async function settledLeader(label) {
  let leader = null;
  await h.waitFor(async () => {
    const views = await Promise.all(IPS.map(clusterView));
    if (views.some((v) => !v || !v.ready || v.members.filter((m) => m.state === 'alive').length !== 2)) return false;
    const named = new Set(views.map((v) => v.leader));
    if (named.size !== 1 || !views[0].leader) return false;
    leader = Number(views[0].leader.replace('roll-', ''));
    return true;
  }, 30000, label);
  return leader;
}

/**
 * A client channel on `topic` as an app writes it: presence under `key`, tracked again on every
 * SUBSCRIBED (realtime-js rejoins after a reconnect but does not re-track), optionally the table's
 * INSERTs. Collects statuses, broadcast seqs and row ids.
 */
function appChannel(client, topic, key, { inserts = false } = {}) {
  const ch = h.openChannel(client, topic, {
    config: { presence: { key }, broadcast: { self: false } },
    presence: true,
    postgres: inserts ? [{ event: 'INSERT', schema: 'public', table: 'items' }] : [],
    subscribe: false,
  });
  ch.key = key;
  ch.seqs = () => ch.rx.filter((m) => m.event === 'seq').map((m) => m.payload.seq);
  ch.ids = () => ch.pg.map((m) => Number(m.new.id));
  ch.subscribe((status, err) => {
    ch.statuses.push({ status, err, at: Date.now() });
    if (status === 'SUBSCRIBED') ch.track({ key }).catch(() => {});
  });
  return ch;
}

const lastStatus = (ch) => ch.statuses.at(-1)?.status;
/** How many times a channel was told "Subscribed to PostgreSQL". */
const pgSubscribedCount = (ch) => ch.sys.filter((m) => m.extension === 'postgres_changes' && m.status === 'ok').length;

/** Strictly increasing: nothing repeated, nothing out of order. */
function assertIncreasing(list, what) {
  for (let i = 1; i < list.length; i++) {
    assert.ok(list[i] > list[i - 1], `${what}: ${list[i]} after ${list[i - 1]} (at ${i} of ${list.length})`);
  }
}

/** The values of `list` in (from, to], which must be exactly from+1 ..= to. */
function assertExactRange(list, from, to, what) {
  const got = list.filter((v) => v > from && v <= to);
  const missing = [];
  for (let v = from + 1; v <= to; v++) if (!got.includes(v)) missing.push(v);
  assert.deepEqual(missing, [], `${what}: missing in (${from}, ${to}]`);
  assert.equal(got.length, to - from, `${what}: ${got.length} values in (${from}, ${to}], duplicates`);
  assertIncreasing(got, what);
}

describe('rolling restart of a three-node cluster under load', () => {
  let db;
  const nodes = [];
  let lb;
  let feeding;
  const load = { stopped: false };
  before(async () => {
    pg.requireDatabaseUrl();
    db = await pg.createDb(SCHEMA);
    for (let i = 0; i < IPS.length; i++) nodes.push(await h.startServer(nodeArgs(db, i)));
    await settledLeader('the cluster formed with a leader');
    lb = new LoadBalancer(IPS.map((host) => ({ host, port: CLIENT_PORT })));
    await lb.start(LB_IP);
  });
  after(async () => {
    load.stopped = true;
    if (db) await db.sql('insert into feed_stop values (1)').catch(() => {});
    if (feeding) await feeding.catch(() => {});
    if (lb) await lb.close();
    for (const node of nodes) await node.stop();
    if (db) await db.drop();
  });

  it('each node SIGTERMed and restarted in turn: clients move, presence converges, no row or broadcast lost or repeated', async (t) => {
    const topic = h.uniqueTopic('roll');
    const maxId = async () => Number((await db.rows('select coalesce(max(id), 0) from items'))[0]);

    // Clients: nine through the balancer (default backoff), one straight to each node.
    const lbServer = { wsBase: lb.wsBase };
    const lbChans = [];
    for (let k = 0; k < LB_CLIENTS; k++) {
      const client = h.newClient(t, lbServer, { vsn: k % 2 ? '1.0.0' : '2.0.0' });
      lbChans.push(appChannel(client, topic, `lb-${k}`));
    }
    const direct = IPS.map((ip, i) => {
      const client = h.newClient(t, { wsBase: `ws://${ip}:${CLIENT_PORT}` }, { reconnectAfterMs: () => 300 });
      return appChannel(client, topic, `direct-${i}`, { inserts: true });
    });
    const all = [...lbChans, ...direct];
    const keys = all.map((ch) => ch.key).sort().join();
    for (const ch of direct) await pg.waitPgSubscribed(ch, 20000);

    // Every client subscribed, and every one seeing each client's presence exactly once.
    const converged = () =>
      all.every((ch) => {
        if (lastStatus(ch) !== 'SUBSCRIBED') return false;
        const state = ch.presenceState();
        return Object.keys(state).sort().join() === keys && Object.values(state).every((metas) => metas.length === 1);
      });
    await h.waitFor(converged, 20000, 'every client subscribed with the same presence');
    const lbCounts = () => lb.backends.map((b) => b.connections);
    t.diagnostic(`balancer connections per node at the start: ${lbCounts()}`);

    // Load: the feeder commits a row every 20 ms; the publisher broadcasts every 20 ms over REST to
    // `publishTo`, a node that stays up, and can be paused between restarts.
    feeding = pg.psql(db.url, `call feed(${MAX_ROWS})`, { timeoutMs: 300000 }).catch((e) => e);
    let seq = 0;
    let publishTo = 0;
    let publishing = true;
    const publisher = (async () => {
      while (!load.stopped) {
        if (publishing) {
          const target = IPS[publishTo];
          const next = seq + 1;
          const res = await fetch(`http://${target}:${CLIENT_PORT}/api/broadcast/${encodeURIComponent(topic)}/events/seq`, {
            method: 'POST',
            headers: { apikey: h.tokens.valid(), 'Content-Type': 'application/json' },
            body: JSON.stringify({ seq: next }),
            signal: AbortSignal.timeout(5000),
          });
          await res.arrayBuffer();
          assert.equal(res.status, 202, `REST broadcast to ${target}`);
          seq = next;
        }
        await h.sleep(20);
      }
    })();
    const publisherFailed = publisher.then(
      () => null,
      (e) => e,
    );

    /** Pauses the publisher, waits for `chans` to hold every row and broadcast so far; returns the marks. */
    const barrier = async (chans, label) => {
      publishing = false;
      await h.sleep(40); // a request in flight completes
      const rows = await maxId();
      const sent = seq;
      await h
        .waitFor(
        () => chans.every((ch) => ch.ids().includes(rows) && (sent === 0 || ch.seqs().includes(sent))),
        20000,
        `${label}: row ${rows} and broadcast ${sent} at ${chans.map((c) => c.key)} (last seen: ${chans.map(
          (c) => `${c.key} row ${c.ids().at(-1)} broadcast ${c.seqs().at(-1)} ${lastStatus(c)}`,
        )})`,
      )
        .catch(async (e) => {
          const views = await Promise.all(IPS.map(clusterView));
          const logs = chans.map((ch) => `${ch.key}: ${JSON.stringify(ch.statuses.map((x) => x.status))}\n${(ch.socket.__logs || []).filter((l) => !/receive: \S+ (postgres_changes|broadcast|presence_diff)/.test(l)).slice(-40).join('\n')}`);
          throw new Error(`${e.message}\nthe nodes' /cluster: ${JSON.stringify(views)}\n${logs.join('\n')}`);
        });
      return { rows, sent };
    };

    const leader = await settledLeader('a leader before the roll');
    const order = [(leader + 1) % 3, leader, (leader + 2) % 3];
    t.diagnostic(`restart order ${order.map((i) => `roll-${i}`)} (roll-${leader} leads CDC)`);
    await h.sleep(500); // some load before the first restart

    for (const i of order) {
      const stay = [0, 1, 2].filter((j) => j !== i);
      publishTo = stay[0];
      const start = await barrier(direct, `before restarting roll-${i}`);
      publishing = true;
      await h.sleep(300);

      const lbBefore = lbCounts();
      const pgJoinsBefore = pgSubscribedCount(direct[i]);
      const termAt = Date.now();
      lb.remove(IPS[i]);
      nodes[i].child.kill('SIGTERM');
      const exit = await h
        .withTimeout(
          new Promise((resolve) => nodes[i].child.once('exit', (code, signal) => resolve({ code, signal }))),
          15000,
          `roll-${i} exits after SIGTERM`,
        )
        .catch((e) => {
          throw new Error(`${e.message}; its log:\n${nodes[i].stderr().slice(-6000)}`);
        });
      const drainedMs = Date.now() - termAt;
      assert.deepEqual(exit, { code: 0, signal: null }, `roll-${i} exits cleanly after its drain`);
      assert.doesNotMatch(nodes[i].stderr(), /panicked/, `roll-${i} did not panic`);

      await h.sleep(300); // load while the node is down
      nodes[i] = await h.startServer(nodeArgs(db, i));
      const newLeader = await settledLeader(`the cluster healed after restarting roll-${i}`);
      await h.waitFor(converged, 30000, `clients resubscribed and presence converged after restarting roll-${i}`);
      await h.waitFor(() => pgSubscribedCount(direct[i]) > pgJoinsBefore, 20000, `direct-${i} subscribed to PostgreSQL again`);
      const healedMs = Date.now() - termAt;
      // Load after every client is back: what is published or committed from now on must reach all of
      // them, the restarted node's own client too.
      await h.sleep(300);
      const movedClients = lbCounts().reduce((n, c, j) => n + (c - lbBefore[j]), 0);

      const end = await barrier(direct, `after restarting roll-${i}`);
      for (const j of stay) {
        assertExactRange(direct[j].ids(), start.rows, end.rows, `rows at roll-${j} while roll-${i} restarted`);
        assertExactRange(direct[j].seqs(), start.sent, end.sent, `broadcasts at roll-${j} while roll-${i} restarted`);
      }
      t.diagnostic(
        `roll-${i}: drained and exited in ${drainedMs} ms; cluster healed, clients resubscribed and presence ` +
          `converged ${healedMs} ms after SIGTERM; ${movedClients} balancer reconnects; leader roll-${newLeader}; ` +
          `rows ${start.rows + 1}..${end.rows} and broadcasts ${start.sent + 1}..${end.sent} exactly once at ` +
          `${stay.map((j) => `roll-${j}`)}`,
      );
      publishing = true;
      if (i === leader) assert.notEqual(newLeader, i, 'the CDC leadership moved off the drained leader');
    }

    load.stopped = true;
    const failed = await publisherFailed;
    assert.equal(failed, null, `the publisher failed: ${failed}`);
    await db.sql('insert into feed_stop values (1)');
    const fed = await feeding;
    assert.ok(!(fed instanceof Error), `the feeder failed: ${fed}`);

    // Over the whole roll: nothing repeated or reordered anywhere; every balancer client was moved off
    // the node it was on at least once and ends subscribed.
    for (const ch of all) {
      assertIncreasing(ch.seqs(), `broadcasts at ${ch.key}`);
      assertIncreasing(ch.ids(), `rows at ${ch.key}`);
    }
    for (const ch of lbChans) {
      assert.ok(ch.statuses.filter((s) => s.status === 'SUBSCRIBED').length >= 2, `${ch.key} was moved and rejoined`);
      assert.equal(lastStatus(ch), 'SUBSCRIBED', `${ch.key} ends subscribed`);
    }
    const views = await Promise.all(IPS.map(clusterView));
    for (const v of views) assert.equal(v.members.filter((m) => m.state === 'alive').length, 2, 'three nodes at the end');
  });
});
