'use strict';
// 17. The inspector (`--inspector true`) in a real browser: Debian's Chromium driven by playwright-core
//     (no browser download), on the first of three clustered nodes (127.0.0.251-253, cluster port 4100
//     each). A key of the wrong role is refused on the page; a service role key shows the node, its
//     two peers alive, the raft/CDC leader and the links in Cluster; a user token joins a channel
//     through the page (Token, Topic, Join); Channels counts the page's member here and a realtime-js
//     member on another node; a REST broadcast arrives in Messages; the page's Send comes back to it
//     (self) and reaches the member on the other node; its presence arrives too. Ends with a
//     screenshot: to INSPECTOR_SCREENSHOT when set (`INSPECTOR_SCREENSHOT=$PWD/../../docs/inspector.png
//     npm test` regenerates the README's), else to a temporary file, so a test run leaves the work
//     tree as it was.
//
// Env: CHROMIUM (default /usr/bin/chromium; `apt-get install chromium`, as .ci/run does).
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const h = require('./harness');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const IPS = ['127.0.0.251', '127.0.0.252', '127.0.0.253'];
/** Bound of every wait on the page (the panels poll every 2 s). */
const WAIT_MS = 10000;

describe('inspector page', () => {
  let cluster;
  let nodes = [];
  let browser;
  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium, or set CHROMIUM`);
    // Every node ready, seeing the two others alive, and a raft (CDC) leader elected.
    cluster = await h.startCluster(IPS, { extraArgs: ['--inspector', 'true'], leader: true });
    nodes = cluster.nodes;
    // As root (CI) Chromium's sandbox cannot start; the page is our own, served on loopback.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'], timeout: 30000 });
  });
  after(async () => {
    if (browser) await browser.close();
    if (cluster) await cluster.stop();
  });

  it('joins a channel through the page, shows the cluster, channels, a REST broadcast and a self broadcast', async (t) => {
    const [here, other] = nodes;
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(WAIT_MS);
    const problems = [];
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      // The 403s are the refused key below; anything else (a CSP violation, a failed asset) is a fault.
      if (message.type() === 'error' && !/status of 403/.test(message.text())) problems.push(`console: ${message.text()}`);
    });

    const response = await page.goto(`${here.url}/inspector`);
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-security-policy'], /script-src 'self'/);

    const serviceKey = h.signJwt({ role: 'service_role', iss: 'compat-suite', iat: h.nowSec(), exp: h.nowSec() + 3600 });
    const userToken = h.tokens.valid({ role: 'authenticated' });
    const cluster = page.getByRole('region', { name: 'Cluster' });
    const channels = page.getByRole('region', { name: 'Channels' });
    const messages = page.getByRole('region', { name: 'Messages' });

    // A key of another role is refused, and the page says so.
    await page.getByLabel('Service role key').fill(userToken);
    await page.getByRole('status').filter({ hasText: 'Refused: 403' }).waitFor();

    // The service role key shows this node, its peers alive, the leader and the links.
    await page.getByLabel('Service role key').fill(serviceKey);
    await cluster.getByText('node-0 (this node)').waitFor();
    for (const peer of ['node-1', 'node-2']) {
      await cluster.getByRole('row').filter({ hasText: peer }).filter({ hasText: 'alive' }).waitFor();
    }
    const leader = (await h.clusterView(here)).leader;
    assert.match(leader, /^node-[012]$/);
    await cluster.getByRole('definition').filter({ hasText: leader }).first().waitFor();
    await cluster.getByRole('table', { name: /Links/ }).waitFor();

    // A user on another node is in the channel too (realtime-js).
    const topic = h.uniqueTopic('room');
    const elsewhere = await h.subscribed(h.newClient(t, other, { vsn: '1.0.0' }), topic);

    await page.getByLabel('Token').fill(userToken);
    await page.getByLabel('Topic').fill(topic);
    await page.getByRole('button', { name: 'Join' }).click();
    await page.getByRole('status').filter({ hasText: `Joined realtime:${topic}` }).waitFor();

    // Channels: one member here, one on another node (member counts travel between nodes).
    const row = channels.getByRole('row').filter({ hasText: topic });
    const want = [topic, 'public', '1', '1'];
    const counted = async () => JSON.stringify(await row.getByRole('cell').allTextContents()) === JSON.stringify(want);
    await h.waitFor(counted, WAIT_MS, 'Channels counting the member here and the one on another node');

    // A backend's REST broadcast reaches the page's member.
    const fromRest = `from-rest-${Date.now()}`;
    const posted = await fetch(`${here.url}/api/broadcast`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${serviceKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ messages: [{ topic, event: 'news', payload: { note: fromRest } }] }),
    });
    assert.equal(posted.status, 202);
    await messages.getByText(fromRest).waitFor();

    // Send: the page's own broadcast comes back (self: true) and reaches the member on the other node.
    const fromPage = `from-page-${Date.now()}`;
    await page.getByLabel('Event').fill('note');
    await page.getByLabel('Payload').fill(JSON.stringify({ note: fromPage }));
    await page.getByRole('button', { name: 'Send' }).click();
    await messages.getByText(fromPage).waitFor();
    const relayed = await h.waitBroadcast(elsewhere, 'note', WAIT_MS);
    assert.deepEqual(relayed.payload, { note: fromPage });

    await page.getByRole('button', { name: 'Track presence' }).click();
    await messages.getByText('diff: 1 joined, 0 left').waitFor();

    const out = process.env.INSPECTOR_SCREENSHOT || path.join(os.tmpdir(), `inspector-${process.pid}.png`);
    await page.screenshot({ path: out, fullPage: true });
    const png = fs.readFileSync(out);
    assert.ok(png.length > 10000, `screenshot of ${png.length} bytes`);
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
    if (!process.env.INSPECTOR_SCREENSHOT) fs.rmSync(out);

    assert.deepEqual(problems, [], 'the page logged errors (a CSP violation shows here)');
    await page.close();
  });
});
