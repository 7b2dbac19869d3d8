'use strict';
// The SDK in Node (with the `ws` package) against a real reachd: the wire protocol as the server
// speaks it — subscriptions, push registration, descriptors, reconnect with session resume,
// token refusal and expiry.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const WebSocket = require('ws');
const { REPO_ROOT, startReachd, setupService, sleep } = require('../lib/reachd');

const SDK = pathToFileURL(path.join(REPO_ROOT, 'sdk', 'reachd.js')).href;
const TIMINGS = { ping_interval_ms: 1000, session_ttl_ms: 3000, offline_grace_ms: 300 };

async function until(pred, timeout, what) {
  const start = Date.now();
  while (!(await pred())) {
    if (Date.now() - start > timeout) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(25);
  }
}

test('node SDK against reachd', async (t) => {
  const { Client } = await import(SDK);
  const server = await startReachd();
  t.after(() => server.stop());
  const svc = await setupService(server, TIMINGS);
  await server.call('POST', `/chat/v2/Services/${svc.serviceSid}/Users`, { Identity: 'bob', FriendlyName: 'Bob', Attributes: '{"team":"b"}' });
  const clients = [];
  const create = async (identity, { service = svc, ttl, ...opts } = {}) => {
    const c = await Client.create(service.token(identity, ttl), { url: server.base, WebSocket, minBackoff: 100, ...opts });
    clients.push(c);
    return c;
  };
  t.after(async () => { for (const c of clients) await c.shutdown(); });

  await t.test('ready, self user and a subscribed user', async () => {
    const alice = await create('alice');
    assert.equal(alice.connectionState, 'connected');
    assert.equal(alice.reachabilityEnabled, true);
    assert.equal(alice.serviceSid, svc.serviceSid);
    assert.equal(alice.pingInterval, TIMINGS.ping_interval_ms);
    assert.equal(alice.sessionTtl, TIMINGS.session_ttl_ms);
    assert.equal(alice.user.identity, 'alice');
    assert.equal(alice.user.isOnline, true);
    const bob = await alice.getUser('bob');
    assert.equal(bob.friendlyName, 'Bob');
    assert.deepEqual(bob.attributes, { team: 'b' });
    assert.match(bob.sid, /^US/);
    assert.notEqual(bob.isOnline, true);
    await assert.rejects(alice.getUser('nobody'), (e) => e.code === 20404);

    const updates = [];
    bob.on('updated', (e) => updates.push({ online: e.user.isOnline, reasons: e.updateReasons }));
    const bobClient = await create('bob');
    await until(() => bob.isOnline === true, 5000, 'bob online');
    await bobClient.shutdown();
    await until(() => bob.isOnline === false, TIMINGS.session_ttl_ms + TIMINGS.offline_grace_ms + 3000, 'bob offline');
    assert.deepEqual(updates, [
      { online: true, reasons: ['reachabilityOnline'] },
      { online: false, reasons: ['reachabilityOnline'] },
    ]);
  });

  await t.test('setPushRegistrationId makes the user notifiable', async () => {
    const alice = clients[0];
    const carol = await create('carol');
    const watched = await alice.getUser('carol');
    const reasons = [];
    watched.on('updated', (e) => reasons.push(...e.updateReasons));
    const binding = await carol.setPushRegistrationId('fcm', 'device-token-carol');
    assert.equal(binding.binding_type, 'fcm');
    await until(() => watched.isNotifiable === true, 5000, 'carol notifiable');
    assert.ok(reasons.includes('reachabilityNotifiable'));
    await until(() => carol.user.isNotifiable === true, 5000, 'self user notifiable too');
    await assert.rejects(carol.setPushRegistrationId('sms', 'x'), (e) => Number.isInteger(e.code));
  });

  await t.test('getUserDescriptor is a snapshot', async () => {
    const alice = clients[0];
    const d = await alice.getUserDescriptor('carol');
    assert.equal(d.identity, 'carol');
    assert.equal(d.isOnline, true);
    assert.equal(d.isNotifiable, true);
    await assert.rejects(alice.getUserDescriptor('nobody'), (e) => e.status === 404);
  });

  await t.test('an unexpected drop reconnects (with resume=) and stays online', async () => {
    // A service of its own with a long grace: the reconnect (backoff 80–120 ms plus the
    // handshake) must land inside it even on a loaded machine, and the other subtests keep
    // their short grace.
    const timings = { ...TIMINGS, offline_grace_ms: 3000 };
    const own = await setupService(server, timings);
    await server.call('POST', `/chat/v2/Services/${own.serviceSid}/Users`, { Identity: 'dave' });
    const alice = await create('alice', { service: own });
    // Subscribed before dave connects, and listening only after his online update arrived: a
    // subscription made just after he went online could still get that update late (the hub
    // delivers committed events to whoever subscribes by the time it reads them).
    const watched = await alice.getUser('dave');
    const dave = await create('dave', { service: own });
    await until(() => watched.isOnline === true, 5000, 'dave online');
    const changes = [];
    watched.on('updated', (e) => changes.push({ online: e.user.isOnline, reasons: e.updateReasons }));
    const before = dave.sessionId;
    const states = [];
    dave.on('connectionStateChanged', (s) => states.push(s));
    dave._ws.terminate(); // TCP drop, as a network blip would
    await until(() => dave.connectionState === 'connected' && states.length >= 3, 5000, 'reconnect');
    assert.deepEqual(states, ['disconnected', 'connecting', 'connected']);
    // reachd resumes only a session that is still live; a closed socket ends its session, so
    // after a drop the id is usually new. What matters is that nobody sees a flap (below).
    t.diagnostic(`after a drop: session ${dave.sessionId === before ? 'resumed' : 'replaced'}`);
    const other = await dave.getUser('alice'); // subscriptions work on the new socket
    assert.equal(other.identity, 'alice');
    // A flap would show as an offline update once the grace (counted from the drop) ran out.
    await sleep(timings.offline_grace_ms + 1200);
    assert.deepEqual(changes, [], 'no offline/online flap for a reconnect inside the grace');
    assert.equal(watched.isOnline, true);
  });

  await t.test('updateToken is accepted by the server', async () => {
    const alice = clients[0];
    await alice.updateToken(svc.token('alice', 7200));
    await assert.rejects(alice.updateToken(svc.token('mallory')), (e) => Number.isInteger(e.code));
    assert.equal(alice.connectionState, 'connected');
  });

  await t.test('a bad token is denied', async () => {
    const bad = svc.token('alice').replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    const states = [];
    const c = new Client(bad, { url: server.base, WebSocket });
    c.on('connectionStateChanged', (s) => states.push(s));
    await assert.rejects(c._start(), (e) => e.status === 401 && e.code >= 20101 && e.code <= 20157);
    assert.ok(states.includes('denied'));
  });

  await t.test('token expiry closes with 4001: tokenExpired, denied, updateToken reconnects', async () => {
    // Listeners go on before the connection starts: on a loaded machine connecting can take
    // longer than the time until `tokenAboutToExpire` (exp is whole seconds, so ≤ 1 s is lost).
    const erin = new Client(svc.token('erin', 4), { url: server.base, WebSocket, minBackoff: 100, tokenAboutToExpireMs: 2000 });
    clients.push(erin);
    const events = [];
    erin.on('tokenAboutToExpire', () => events.push('tokenAboutToExpire'));
    erin.on('tokenExpired', () => events.push('tokenExpired'));
    await erin._start();
    // exp is at most 4 s away; the server closes the socket then.
    await until(() => erin.connectionState === 'denied', 15000, 'denied after expiry');
    assert.deepEqual(events, ['tokenAboutToExpire', 'tokenExpired']);
    const before = erin.sessionId;
    await erin.updateToken(svc.token('erin'));
    assert.equal(erin.connectionState, 'connected');
    t.diagnostic(`after expiry: session ${erin.sessionId === before ? 'resumed' : 'replaced'}`);
  });
});
