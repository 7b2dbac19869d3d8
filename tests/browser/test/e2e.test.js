'use strict';
// End to end in headless Chromium: two pages use the SDK served by a real reachd
// (GET /client/v1/sdk.js). Page A (alice) watches bob; page B signs in as bob; A must show bob
// online, then offline once B is closed, and so must the dashboard (no reload). Screenshots go
// to artifacts/browser/.
//
// The pages run on reachd's own origin: the test opens a real reachd URL (/healthz) and then
// replaces the document with pages/client.html, so the module import of /client/v1/sdk.js and
// the socket are same-origin (reachd sends no CORS headers). Pages fulfilled by request routing
// are not used: Chromium's Local Network Access checks then block the socket to 127.0.0.1.
// SDK_FROM_DISK=1 serves sdk/reachd.js from the work tree instead of the binary's embedded copy
// (for working on the SDK without rebuilding reachd).
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { REPO_ROOT, startReachd, setupService } = require('../lib/reachd');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const ARTIFACTS = path.join(REPO_ROOT, 'artifacts', 'browser');
const PAGES = path.join(__dirname, '..', 'pages');
const SDK_FILE = path.join(REPO_ROOT, 'sdk', 'reachd.js');
// Presence timings set on the service (ms).
const TIMINGS = { ping_interval_ms: 1000, session_ttl_ms: 3000, offline_grace_ms: 300 };

test('browser: alice sees bob come online and go offline', async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of fs.readdirSync(ARTIFACTS)) if (/^failure-.*\.png$/.test(f)) fs.rmSync(path.join(ARTIFACTS, f));
  const server = await startReachd();
  t.after(() => server.stop());
  const { serviceSid, token } = await setupService(server, TIMINGS);
  // bob must exist for alice to subscribe to him before he ever connects
  await server.call('POST', `/chat/v2/Services/${serviceSid}/Users`, { Identity: 'bob', FriendlyName: 'Bob' });

  // The server must serve the SDK; say so when it is not the work tree's copy (stale binary).
  const served = await fetch(`${server.base}/client/v1/sdk.js`);
  assert.equal(served.status, 200, 'GET /client/v1/sdk.js');
  assert.match(served.headers.get('content-type') || '', /javascript/);
  const servedText = await served.text();
  if (servedText !== fs.readFileSync(SDK_FILE, 'utf8')) {
    t.diagnostic('the SDK served by reachd differs from sdk/reachd.js (binary built from an older copy?)');
  }

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  t.after(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 800, height: 500 } });
  const html = fs.readFileSync(path.join(PAGES, 'client.html'), 'utf8');
  if (process.env.SDK_FROM_DISK === '1') {
    await context.route(`${server.base}/client/v1/sdk.js`, (route) =>
      route.fulfill({ status: 200, contentType: 'text/javascript; charset=utf-8', body: fs.readFileSync(SDK_FILE) }));
  }
  const consoleLines = [];
  const open = async (name, identity, watch) => {
    const page = await context.newPage();
    page.on('console', (m) => consoleLines.push(`[${name}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`[${name}] pageerror: ${e.message}`));
    await page.goto(`${server.base}/healthz?watch=${watch.join(',')}#token=${token(identity)}`);
    await page.setContent(html);
    await page.waitForFunction(() => window.reachdTest && (window.reachdTest.ready || window.reachdTest.error), null, { timeout: 15000 })
      .catch(() => {});
    const status = await page.evaluate(() => ({ ready: window.reachdTest?.ready, error: window.reachdTest?.error }));
    assert.ok(status.ready, `page ${name} did not sign in: ${status.error}\n${consoleLines.join('\n')}\nreachd stderr: ${server.stderr()}`);
    return page;
  };
  const text = (page, sel) => page.locator(sel).textContent();
  const shot = (page, name) => page.screenshot({ path: path.join(ARTIFACTS, name) });

  try {
    const pageA = await open('A', 'alice', ['bob']);
    assert.equal(await text(pageA, '#me'), 'alice');
    assert.equal(await text(pageA, '#state'), 'connected');
    assert.equal(await text(pageA, '#reachability'), 'true');
    // bob has never been online: unknown (null) or offline
    assert.match(await text(pageA, '#bob'), /^(unknown|offline)$/);
    await shot(pageA, '1-alice-before-bob.png');

        // The dashboard (account Basic auth) follows the same users through the event feed.
    const dashboardContext = await browser.newContext({
      viewport: { width: 1280, height: 800 },
      httpCredentials: { username: server.accountSid, password: server.authToken },
    });
    const dashboard = await dashboardContext.newPage();
    dashboard.on('pageerror', (e) => consoleLines.push(`[dashboard] pageerror: ${e.message}`));
    await dashboard.goto(`${server.base}/dashboard#${serviceSid}`);
    const bobBadge = dashboard.locator('tr[data-identity="bob"] .online-badge');
    await bobBadge.waitFor({ timeout: 10000 });
    assert.match(await bobBadge.textContent(), /^(unknown|offline)$/);

    const pageB = await open('B', 'bob', []);
    assert.equal(await text(pageB, '#me'), 'bob');
    await pageA.locator('#bob', { hasText: /^online$/ }).waitFor({ timeout: 5000 });
    await shot(pageA, '2-alice-sees-bob-online.png');
    await shot(pageB, '2-bob-signed-in.png');
    // No reload: the live badge turns online from the SSE stream.
    await dashboard.locator('tr[data-identity="bob"] .online-badge', { hasText: /^online$/ }).waitFor({ timeout: 5000 });
    await shot(dashboard, '2-dashboard-bob-online.png');

    // Closing the page closes bob's socket: offline after the grace (well within TTL + grace).
    const closedAt = Date.now();
    await pageB.close();
    const limit = TIMINGS.session_ttl_ms + TIMINGS.offline_grace_ms + 3000;
    await pageA.locator('#bob', { hasText: /^offline$/ }).waitFor({ timeout: limit });
    const took = Date.now() - closedAt;
    t.diagnostic(`bob shown offline ${took} ms after his page closed`);
        await shot(pageA, '3-alice-sees-bob-offline.png');
    await dashboard.locator('tr[data-identity="bob"] .online-badge', { hasText: /^offline$/ }).waitFor({ timeout: 5000 });
    await shot(dashboard, '3-dashboard-bob-offline.png');
    await dashboardContext.close();

    const events = await pageA.evaluate(() => window.reachdTest.events);
    const online = events.map((e) => e.isOnline);
    assert.deepEqual(online, [true, false], `updated events: ${JSON.stringify(events)}`);
    for (const e of events) assert.deepEqual(e.updateReasons, ['reachabilityOnline']);

    // REST agrees with what the page shows.
    const bob = await server.call('GET', `/chat/v2/Services/${serviceSid}/Users/bob`);
    assert.equal(bob.is_online, false);
    await pageA.close();
  } catch (err) {
    for (const p of context.pages()) {
      await p.screenshot({ path: path.join(ARTIFACTS, `failure-${context.pages().indexOf(p)}.png`) }).catch(() => {});
    }
    err.message += `\n--- browser console ---\n${consoleLines.join('\n')}\n--- reachd stderr ---\n${server.stderr()}`;
    throw err;
  }
});


