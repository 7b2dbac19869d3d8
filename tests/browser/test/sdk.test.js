'use strict';
// The SDK's logic against a fake socket server (no reachd, no browser): request/reply matching,
// subscriptions, reconnect with resume and re-subscription, token expiry and refusal.
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

async function setup(t, opts = {}) {
  const { Client } = await import(SDK);
  const fake = new FakeReachd(opts);
  fake.addUser('bob', { friendly_name: 'Bob', is_online: false, is_notifiable: false });
  await fake.listen();
  const clients = [];
  t.after(async () => {
    for (const c of clients) await c.shutdown();
    await fake.close();
  });
  const create = async (token = 'good:alice', extra = {}) => {
    const c = await Client.create(token, { url: fake.url, WebSocket, minBackoff: 50, maxBackoff: 400, ...extra });
    clients.push(c);
    return c;
  };
  return { Client, fake, create };
}

test('create resolves after ready, with self user and service state', async (t) => {
  const { fake, create, Client } = await setup(t);
  const states = [];
  const c = new Client('good:alice', { url: fake.url, WebSocket });
  c.on('connectionStateChanged', (s) => states.push(s));
  await c._start();
  t.after(() => c.shutdown());
  assert.equal(c.connectionState, 'connected');
  assert.deepEqual(states, ['connecting', 'connected']);
  assert.equal(c.reachabilityEnabled, true);
  assert.match(c.sessionId, /^SE/);
  assert.equal(c.pingInterval, 200);
  assert.equal(c.user.identity, 'alice');
  assert.equal(c.user.isOnline, true, 'self snapshot applied before create resolves');
  const sub = fake.last.received.find((m) => m.type === 'subscribe');
  assert.deepEqual(sub.identities, ['alice']);
  await create(); // the helper works too
});

test('getUser subscribes once, matches the reply and follows userUpdated', async (t) => {
  const { fake, create } = await setup(t);
  const c = await create();
  const [bob, bob2] = await Promise.all([c.getUser('bob'), c.getUser('bob')]);
  assert.equal(bob, bob2);
  assert.equal(await c.getUser('bob'), bob);
  const subs = fake.last.received.filter((m) => m.type === 'subscribe' && m.identities.includes('bob'));
  assert.equal(subs.length, 1);
  assert.ok(subs[0].id, 'subscribe carries an id');
  assert.equal(bob.identity, 'bob');
  assert.equal(bob.friendlyName, 'Bob');
  assert.deepEqual(bob.attributes, {});
  assert.equal(bob.isOnline, false);
  assert.match(bob.sid, /^US/);

  const events = [];
  const clientEvents = [];
  bob.on('updated', (e) => events.push(e));
  c.on('userUpdated', (e) => clientEvents.push(e));
  const u = { ...fake.users.get('bob'), is_online: true };
  fake.broadcast({ type: 'userUpdated', user: u, updateReasons: ['reachabilityOnline'] });
  await until(() => events.length === 1, 2000, 'updated');
  assert.equal(events[0].user, bob);
  assert.deepEqual(events[0].updateReasons, ['reachabilityOnline']);
  assert.equal(bob.isOnline, true);
  assert.equal(clientEvents.length, 1);

  // null reachability (service disabled) is kept as null
  fake.broadcast({ type: 'userUpdated', user: { ...u, is_online: null, is_notifiable: null }, updateReasons: [] });
  await until(() => events.length === 2, 2000, 'second updated');
  assert.equal(bob.isOnline, null);
  assert.deepEqual(events[1].updateReasons.sort(), ['reachabilityNotifiable', 'reachabilityOnline']);
});

test('getUser of an unknown identity rejects with the server code', async (t) => {
  const { create } = await setup(t);
  const c = await create();
  await assert.rejects(c.getUser('nobody'), (e) => e.code === 20404);
  // a later getUser of a known user still works
  assert.equal((await c.getUser('bob')).identity, 'bob');
});

test('serviceUpdated toggles reachabilityEnabled', async (t) => {
  const { fake, create } = await setup(t);
  const c = await create();
  const seen = [];
  c.on('reachabilityEnabledChanged', (v) => seen.push(v));
  fake.broadcast({ type: 'serviceUpdated', reachability_enabled: false });
  await until(() => seen.length === 1);
  assert.equal(c.reachabilityEnabled, false);
  fake.broadcast({ type: 'serviceUpdated', reachability_enabled: false }); // no change, no event
  fake.broadcast({ type: 'serviceUpdated', reachability_enabled: true });
  await until(() => seen.length === 2);
  assert.deepEqual(seen, [false, true]);
});

test('pings every ping_interval', async (t) => {
  const interval = 100;
  const { fake, create } = await setup(t, { pingInterval: interval });
  // No fixed window: on a loaded machine timers run late, so wait for a few pings (the deadline
  // catches an SDK that does not ping) and then check they did not come faster than the interval.
  // Pinging starts at `ready`, before create resolves, so the clock starts before create. Pings
  // are counted over all connections in case a long stall got the socket replaced as stale.
  const started = Date.now();
  await create();
  const pings = () => fake.conns.flatMap((c) => c.received).filter((m) => m.type === 'ping').length;
  await until(() => pings() >= 3, 5000, 'three pings');
  const count = pings();
  const elapsed = Date.now() - started;
  assert.ok(count <= elapsed / interval + 1, `${count} pings in ${elapsed} ms at ${interval} ms intervals`);
});

test('setPushRegistrationId resolves with the binding; errors reject with their code', async (t) => {
  const { fake, create } = await setup(t);
  const c = await create();
  const binding = await c.setPushRegistrationId('fcm', 'device-token-1');
  assert.equal(binding.binding_type, 'fcm');
  const sent = fake.last.received.find((m) => m.type === 'register_push');
  assert.equal(sent.binding_type, 'fcm');
  assert.equal(sent.address, 'device-token-1');
  await assert.rejects(c.setPushRegistrationId('sms', 'x'), (e) => e.code === 20001);
});

test('getUserDescriptor reads a snapshot over HTTP without subscribing', async (t) => {
  const { fake, create } = await setup(t);
  const c = await create();
  const d = await c.getUserDescriptor('bob');
  assert.deepEqual(d, {
    identity: 'bob', userSid: fake.users.get('bob').user_sid, friendlyName: 'Bob',
    attributes: {}, isOnline: false, isNotifiable: false,
  });
  assert.equal(fake.last.received.filter((m) => m.type === 'subscribe' && m.identities.includes('bob')).length, 0);
  await assert.rejects(c.getUserDescriptor('nobody'), (e) => e.code === 20404 && e.status === 404);
});

test('getUserDescriptor falls back to the socket when HTTP fails', async (t) => {
  const { fake, create } = await setup(t);
  const c = await create('good:alice', { fetch: async () => { throw new TypeError('CORS'); } });
  const d = await c.getUserDescriptor('bob');
  assert.equal(d.friendlyName, 'Bob');
  await until(() => fake.last.received.some((m) => m.type === 'unsubscribe'));
  assert.deepEqual(fake.last.received.find((m) => m.type === 'unsubscribe').identities, ['bob']);
});

test('reconnects with backoff, resumes the session and re-subscribes, emitting changes', async (t) => {
  const { fake, create } = await setup(t);
  const c = await create();
  const bob = await c.getUser('bob');
  const states = [];
  c.on('connectionStateChanged', (s) => states.push(s));
  const updates = [];
  bob.on('updated', (e) => updates.push(e.updateReasons));
  const firstSession = c.sessionId;

  fake.users.get('bob').is_online = true; // changes while we are away
  fake.last.ws.terminate();
  const second = await fake.waitForConnections(2);
  assert.equal(second.resume, firstSession, 'resume= carries the previous session id');
  await until(() => c.connectionState === 'connected');
  assert.deepEqual(states, ['disconnected', 'connecting', 'connected']);
  await until(() => updates.length === 1, 2000, 'updated after resubscribe');
  assert.deepEqual(updates[0], ['reachabilityOnline']);
  assert.equal(bob.isOnline, true);
  const resub = second.received.filter((m) => m.type === 'subscribe').flatMap((m) => m.identities).sort();
  assert.deepEqual(resub, ['alice', 'bob']);

  // an unchanged snapshot after another reconnect emits nothing
  fake.last.ws.terminate();
  await fake.waitForConnections(3);
  await until(() => c.connectionState === 'connected');
  // A round trip instead of a sleep: the fake answers in order, so once this reply is in, the
  // re-subscription's snapshots (sent first, at `ready`) have been applied.
  await c.updateToken('good:alice');
  assert.ok(fake.conns[2].received.some((m) => m.type === 'subscribe' && m.identities.includes('bob')), 're-subscribed');
  assert.equal(updates.length, 1);
});

test('a request made while disconnected is sent after reconnecting', async (t) => {
  const { fake, create } = await setup(t, { });
  const c = await create('good:alice', { minBackoff: 300, maxBackoff: 300 });
  fake.last.ws.terminate();
  await until(() => c.connectionState === 'disconnected');
  const p = c.setPushRegistrationId('apn', 'tok');
  const bobP = c.getUser('bob');
  await fake.waitForConnections(2);
  assert.equal((await p).binding_type, 'apn');
  assert.equal((await bobP).identity, 'bob');
});

test('a silent connection is replaced', async (t) => {
  const { fake, create } = await setup(t, { pingInterval: 100 });
  const c = await create();
  fake.ignoreTypes.add('ping'); // no pongs, no frames at all
  // Replaced after 2 × 100 ms + 1 s of silence (≈ 1.3 s with the interval's granularity); the
  // wait leaves room for a loaded machine.
  await fake.waitForConnections(2, 8000);
  fake.ignoreTypes.clear();
  await until(() => c.connectionState === 'connected');
  assert.equal(fake.conns[1].resume, fake.conns[0].sessionId);
});

test('updateToken while connected is checked by the server', async (t) => {
  const { fake, create } = await setup(t);
  const c = await create();
  await c.updateToken('good:alice:2');
  assert.equal(fake.last.token, 'good:alice:2');
  await assert.rejects(c.updateToken('bad'), (e) => e.code === 20101);
  // reconnects use the accepted token
  fake.last.ws.terminate();
  const next = await fake.waitForConnections(2);
  assert.equal(next.token, 'good:alice:2');
});

test('close 4001 means tokenExpired and denied; updateToken reconnects', async (t) => {
  const { fake, create } = await setup(t);
  const c = await create();
  const events = [];
  c.on('tokenExpired', () => events.push('tokenExpired'));
  c.on('connectionStateChanged', (s) => events.push(s));
  const first = fake.last;
  first.ws.close(4001, 'token expired');
  await until(() => c.connectionState === 'denied');
  await sleep(200);
  assert.equal(fake.conns.length, 1, 'no reconnect with an expired token');
  assert.deepEqual(events, ['tokenExpired', 'denied']);
  await c.updateToken('good:alice:fresh');
  assert.equal(c.connectionState, 'connected');
  assert.equal(fake.last.token, 'good:alice:fresh');
  assert.equal(fake.last.resume, first.sessionId);
});

test('a refused token rejects create with the server code, without retrying', async (t) => {
  const { fake, Client } = await setup(t);
  const states = [];
  const errors = [];
  const c = new Client('bad-token', { url: fake.url, WebSocket, minBackoff: 20 });
  c.on('connectionStateChanged', (s) => states.push(s));
  c.on('connectionError', (e) => errors.push(e));
  await assert.rejects(c._start(), (e) => e.code === 20101 && e.status === 401 && e.terminal);
  await sleep(150);
  assert.equal(fake.rejected.length, 1);
  assert.ok(states.includes('denied'));
  assert.equal(errors[0].terminal, true);
  assert.equal(errors[0].errorCode, 20101);
});

test('create rejects when the server cannot be reached within connectTimeout', async (t) => {
  const { Client } = await import(SDK);
  const started = Date.now();
  await assert.rejects(
    Client.create('good:alice', { url: 'http://127.0.0.1:9', WebSocket, minBackoff: 20, connectTimeout: 400 }),
    /could not connect/,
  );
  assert.ok(Date.now() - started < 2000);
});

test('shutdown closes the socket for good and rejects pending work', async (t) => {
  const { fake, create } = await setup(t);
  const c = await create();
  fake.ignoreTypes.add('register_push');
  const p = c.setPushRegistrationId('fcm', 'x');
  p.catch(() => {}); // rejected during shutdown; checked below
  await fake.waitFor((m) => m.type === 'register_push');
  const states = [];
  c.on('connectionStateChanged', (s) => states.push(s));
  await c.shutdown();
  await assert.rejects(p, /shut down/);
  assert.equal(c.connectionState, 'disconnected');
  // The fake's end closes a hop after the client's: wait for it rather than assume a sleep did.
  await until(() => fake.last.ws.readyState === 3, 3000, 'the fake side of the socket closed');
  await sleep(200);
  assert.equal(fake.conns.length, 1, 'no reconnect after shutdown');
  await assert.rejects(c.getUser('bob'), /shut down/);
  assert.deepEqual(states, ['disconnected']);
});

test('tokenAboutToExpire fires before exp', async (t) => {
  const { fake, Client } = await setup(t);
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const exp = Math.floor(Date.now() / 1000) + 4;
  const token = `good.${b64({ exp, grants: { identity: 'alice' } })}.sig`;
  const c = new Client(token, { url: fake.url, WebSocket, tokenAboutToExpireMs: 2000 });
  t.after(() => c.shutdown());
  const about = new Promise((resolve, reject) => {
    c.once('tokenAboutToExpire', resolve);
    setTimeout(() => reject(new Error('no tokenAboutToExpire')), 5000);
  });
  await c._start();
  const left = await about;
  assert.ok(left >= 0 && left <= 3, `seconds left: ${left}`);
});
