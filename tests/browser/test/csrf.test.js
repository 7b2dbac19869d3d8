'use strict';
// Cross-site request forgery in headless Chromium. The browser opens the dashboard with the
// account's credentials in the URL (http://sid:token@127.0.0.1:port/dashboard), so it caches
// them and attaches them to later requests to reachd. Then:
//   - a form on reachd's own origin sets the account webhook: allowed (this proves the browser
//     really attaches the cached credentials to form posts);
//   - a page served by another origin (http://localhost:<other port>) auto-submits a form that
//     sets the account webhook to its own URL: reachd must refuse it (403/20403), and the
//     webhook read back through the API must be unchanged.
// The dashboard itself must load its data (its fetches must not use the URL's credentials).
const test = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { chromium } = require('playwright-core');
const { startReachd } = require('../lib/reachd');

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const WEBHOOKS = '/conversations/v1/Configuration/Webhooks';
const GOOD = 'https://hooks.good.example/reachd';
const SAME_ORIGIN = 'https://hooks.good.example/from-the-dashboard';
const EVIL = 'https://evil.example/steal';

/** A form page posting PostWebhookUrl=`url` to `action` as soon as it loads. */
function formPage(action, url) {
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  return `<!doctype html><html><body>
<form id="f" method="POST" action="${esc(action)}">
<input type="hidden" name="PostWebhookUrl" value="${esc(url)}">
<input type="hidden" name="Method" value="POST">
</form>
<script>document.getElementById('f').submit();</script>
</body></html>`;
}

/** The attacker's site: one page, on its own port. */
async function startAttacker(action) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(formPage(action, EVIL));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: server.address().port, close: () => new Promise((r) => server.close(r)) };
}

async function webhookUrl(server) {
  return (await server.call('GET', WEBHOOKS)).post_webhook_url;
}

/** Submits a form page in `page` and returns the status of reachd's answer to the POST. */
async function postStatus(page, navigate) {
  const answered = page.waitForResponse(
    (r) => r.url().endsWith(WEBHOOKS) && r.request().method() === 'POST',
    { timeout: 15000 },
  );
  await navigate();
  const res = await answered;
  return { status: res.status(), body: await res.text().catch(() => '') };
}

test('browser: a cross-site form cannot use the dashboard\'s cached credentials', async (t) => {
  const server = await startReachd();
  t.after(() => server.stop());
  await server.call('POST', WEBHOOKS, { PostWebhookUrl: GOOD, Method: 'POST' });
  assert.equal(await webhookUrl(server), GOOD);

  const attacker = await startAttacker(`${server.base}${WEBHOOKS}`);
  t.after(() => attacker.close());
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  t.after(() => browser.close());
  const context = await browser.newContext();
  const logs = [];
  context.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));

  // 1. The dashboard, signed in through the URL; it must load the account's data.
  const dashboard = await context.newPage();
  const signedIn = `http://${server.accountSid}:${server.authToken}@127.0.0.1:${server.port}/dashboard`;
  const res = await dashboard.goto(signedIn);
  assert.equal(res.status(), 200, 'the dashboard with URL credentials');
  await dashboard.waitForFunction(() => {
    const banner = document.getElementById('banner');
    const empty = document.getElementById('services-empty');
    return (banner && !banner.hidden) || (empty && !empty.hidden);
  }, null, { timeout: 15000 });
  const banner = await dashboard.evaluate(() => {
    const b = document.getElementById('banner');
    return b && !b.hidden ? b.textContent.trim() : '';
  });
  assert.equal(banner, '', `the dashboard reported an error:\n${banner}\n${logs.join('\n')}`);

  // 2. Control: a form on reachd's own origin, with the cached credentials, may change it.
  const own = await context.newPage();
  await own.goto(`${server.base}/healthz`);
  const allowed = await postStatus(own, () => own.setContent(formPage(WEBHOOKS, SAME_ORIGIN)));
  assert.equal(allowed.status, 200, `same-origin form: ${allowed.body}`);
  assert.equal(await webhookUrl(server), SAME_ORIGIN);

  // 3. The attack: another origin's page auto-submits a form to reachd.
  const evil = await context.newPage();
  const refused = await postStatus(evil, () => evil.goto(`http://localhost:${attacker.port}/`));
  assert.equal(refused.status, 403, `cross-site form: ${refused.body}`);
  assert.equal(JSON.parse(refused.body).code, 20403);
  assert.equal(await webhookUrl(server), SAME_ORIGIN, 'the cross-site form changed the webhook');
});
