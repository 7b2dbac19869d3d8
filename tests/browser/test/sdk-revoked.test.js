'use strict';
// The SDK against a fake socket server: a close with 4003 (the API key that signed the token
// was revoked) is terminal — no reconnect with the same token — until updateToken().
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const WebSocket = require('ws');
const { FakeReachd } = require('../lib/fake-server');

const SDK = pathToFileURL(path.resolve(__dirname, '../../../sdk/reachd.js')).href;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(pred, timeout = 3000, what = 'condition') {
  const start = Date.now();
  while (!pred()) {
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('close 4003 means denied without reconnecting; updateToken reconnects', async (t) => {
  const { Client } = await import(SDK);
  const fake = new FakeReachd();
  await fake.listen();
  const c = await Client.create('good:alice', { url: fake.url, WebSocket, minBackoff: 20, maxBackoff: 100 });
  t.after(async () => {
    await c.shutdown();
    await fake.close();
  });
  const events = [];
  c.on('connectionError', (e) => events.push(['error', e.terminal, e.errorCode]));
  c.on('tokenExpired', () => events.push(['tokenExpired']));
  c.on('connectionStateChanged', (s) => events.push(['state', s]));
  const first = fake.last;
  first.ws.close(4003, 'credentials revoked');
  await until(() => c.connectionState === 'denied', 3000, 'denied');
  await sleep(300);
  assert.equal(fake.conns.length, 1, 'no reconnect with a token whose key was revoked');
  assert.deepEqual(events, [['error', true, 20103], ['state', 'denied']]);
  await c.updateToken('good:alice:fresh');
  assert.equal(c.connectionState, 'connected');
  assert.equal(fake.last.token, 'good:alice:fresh');
  assert.equal(fake.last.resume, first.sessionId);
});
