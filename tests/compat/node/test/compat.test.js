'use strict';
// twilio-node 6.2.0 against a real reachd. Every response is validated against
// Twilio's OpenAPI schema by the recording httpClient (lib/harness.js); a response
// that does not validate makes the call reject, so the test fails.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServer, makeClient, SchemaRegistry, SchemaViolation, RecordingHttpClient } = require('../lib/harness');

const SID = (prefix) => new RegExp(`^${prefix}[0-9a-f]{32}$`);
const DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

let server;
let registry;
let client;
let http;

async function expectTwilioError(promise, status, code) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected the call to fail with HTTP ${status} / ${code}, but it succeeded`);
  if (err instanceof SchemaViolation) throw err;
  assert.equal(err.status, status, `HTTP status (message: ${err.message})`);
  assert.equal(err.code, code, `Twilio error code (message: ${err.message})`);
  assert.equal(typeof err.message, 'string');
  assert.ok(err.message.length > 0);
  return err;
}

before(async () => {
  registry = new SchemaRegistry();
  server = await startServer();
  ({ client, httpClient: http } = makeClient(server, registry));
});

after(async () => {
  if (server) await server.stop();
});

describe('schema validator (self-test)', () => {
  it('rejects a body that does not match the OpenAPI schema', () => {
    const problems = registry.check({
      method: 'GET',
      url: 'http://127.0.0.1:1/chat/v2/Services/ISaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Users/alice',
      status: 200,
      headers: { 'content-type': 'application/json' },
      rawBody: JSON.stringify({ sid: 'not-a-sid', joined_channels_count: 'three', date_created: '2020-01-01T00:00:00.000Z' }),
    });
    assert.ok(problems.some((p) => p.includes('/sid')), problems.join('\n'));
    assert.ok(problems.some((p) => p.includes('/joined_channels_count')), problems.join('\n'));
    assert.ok(problems.some((p) => p.includes('/date_created')), problems.join('\n'));
  });

  it('accepts nulls where the spec says nullable, and rejects an undefined status', () => {
    const ok = registry.check({
      method: 'GET',
      url: 'http://127.0.0.1:1/conversations/v1/Users/dave',
      status: 200,
      headers: { 'content-type': 'application/json' },
      rawBody: JSON.stringify({ sid: 'US' + 'a'.repeat(32), friendly_name: null, is_online: null, attributes: '{}' }),
    });
    assert.deepEqual(ok, []);
    const bad = registry.check({
      method: 'POST', url: 'http://127.0.0.1:1/chat/v2/Services', status: 200,
      headers: { 'content-type': 'application/json' }, rawBody: '{}',
    });
    assert.equal(bad.length, 1, bad.join('\n'));
  });

  it('the recording httpClient rejects the call when a body does not validate', async () => {
    const rc = new RecordingHttpClient(registry);
    rc.inner = {
      request: async () => ({
        statusCode: 201,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sid: 'IS123', reachability_enabled: 'yes' }),
      }),
    };
    await assert.rejects(
      rc.request({ method: 'POST', uri: 'http://127.0.0.1:1/chat/v2/Services', data: { FriendlyName: 'x' } }),
      (e) => e instanceof SchemaViolation && /reachability_enabled/.test(e.message) && /\/sid/.test(e.message));
    assert.ok(rc.violations.length >= 2, rc.violations.join('\n'));
  });

  it('requires the legacy Twilio error body on errors', () => {
    const bad = registry.check({
      method: 'GET', url: 'http://127.0.0.1:1/chat/v2/Services/IS' + '0'.repeat(32), status: 404,
      headers: { 'content-type': 'application/json' }, rawBody: JSON.stringify({ error: 'nope' }),
    });
    assert.ok(bad.length > 0);
  });
});

describe('Chat v2 services', () => {
  let sid;

  it('create', async () => {
    const svc = await client.chat.v2.services.create({ friendlyName: 'Node Svc' });
    assert.equal(http.last().status, 201);
    assert.match(svc.sid, SID('IS'));
    sid = svc.sid;
    assert.equal(svc.accountSid, server.accountSid);
    assert.equal(svc.friendlyName, 'Node Svc');
    assert.equal(svc.reachabilityEnabled, false);
    assert.equal(svc.readStatusEnabled, true);
    assert.equal(svc.typingIndicatorTimeout, 5);
    assert.match(svc.defaultServiceRoleSid, SID('RL'));
    assert.match(http.last().body.date_created, DATE);
    assert.equal(svc.url, `${server.base}/chat/v2/Services/${sid}`);
    assert.equal(svc.links.users, `${server.base}/chat/v2/Services/${sid}/Users`);
    assert.ok(svc.dateCreated instanceof Date && !Number.isNaN(svc.dateCreated.getTime()));
  });

  it('fetch', async () => {
    const svc = await client.chat.v2.services(sid).fetch();
    assert.equal(http.last().status, 200);
    assert.equal(svc.sid, sid);
    assert.equal(svc.friendlyName, 'Node Svc');
  });

  it('update reachability, webhook filters and post-webhook URL', async () => {
    const svc = await client.chat.v2.services(sid).update({
      reachabilityEnabled: true,
      webhookFilters: ['onUserAdded', 'onUserUpdated'],
      postWebhookUrl: 'https://example.invalid/post',
      webhookMethod: 'POST',
      friendlyName: 'Node Svc 2',
    });
    const rec = http.last();
    assert.equal(rec.status, 200);
    assert.deepEqual(rec.requestData.WebhookFilters, ['onUserAdded', 'onUserUpdated']);
    assert.equal(rec.requestData.ReachabilityEnabled, 'true');
    assert.equal(svc.reachabilityEnabled, true);
    assert.deepEqual(svc.webhookFilters, ['onUserAdded', 'onUserUpdated']);
    assert.equal(svc.postWebhookUrl, 'https://example.invalid/post');
    assert.equal(svc.webhookMethod, 'POST');
    assert.equal(svc.friendlyName, 'Node Svc 2');
    const again = await client.chat.v2.services(sid).fetch();
    assert.equal(again.reachabilityEnabled, true);
    assert.deepEqual(again.webhookFilters, ['onUserAdded', 'onUserUpdated']);
    assert.equal(again.postWebhookUrl, 'https://example.invalid/post');
  });

  it('booleans sent as the strings "True"/"False" are accepted', async () => {
    const svc = await client.chat.v2.services(sid).update({ reachabilityEnabled: 'False', readStatusEnabled: 'False' });
    assert.equal(http.last().requestData.ReachabilityEnabled, 'False');
    assert.equal(svc.reachabilityEnabled, false);
    assert.equal(svc.readStatusEnabled, false);
    const svc2 = await client.chat.v2.services(sid).update({ reachabilityEnabled: 'True', readStatusEnabled: 'TRUE' });
    assert.equal(svc2.reachabilityEnabled, true);
    assert.equal(svc2.readStatusEnabled, true);
  });

  it('list', async () => {
    const other = await client.chat.v2.services.create({ friendlyName: 'Node Svc other' });
    const all = await client.chat.v2.services.list();
    const listReq = http.records.find((r) => r.method === 'GET' && new URL(r.url).pathname === '/chat/v2/Services');
    assert.equal(listReq.status, 200);
    assert.equal(listReq.body.meta.key, 'services');
    const sids = all.map((s) => s.sid);
    assert.ok(sids.includes(sid), 'created service is listed');
    assert.ok(sids.includes(other.sid), 'second service is listed');
    await client.chat.v2.services(other.sid).remove();
  });

  it('remove, then fetch gives 404 / 20404', async () => {
    const removed = await client.chat.v2.services(sid).remove();
    assert.equal(removed, true);
    const rec = http.last();
    assert.equal(rec.status, 204);
    assert.equal(rec.rawBody, '');
    await expectTwilioError(client.chat.v2.services(sid).fetch(), 404, 20404);
  });
});

describe('Chat v2 users', () => {
  let svc;
  let alice;

  before(async () => {
    svc = await client.chat.v2.services.create({ friendlyName: 'Users Svc' });
  });

  it('create (with X-Twilio-Webhook-Enabled: true)', async () => {
    alice = await client.chat.v2.services(svc.sid).users.create({
      identity: 'alice@example.com',
      friendlyName: 'Alice',
      attributes: JSON.stringify({ a: 1 }),
      xTwilioWebhookEnabled: 'true',
    });
    const rec = http.last();
    assert.equal(rec.status, 201);
    assert.equal(rec.requestHeaders['X-Twilio-Webhook-Enabled'], 'true');
    assert.match(alice.sid, SID('US'));
    assert.equal(alice.identity, 'alice@example.com');
    assert.equal(alice.friendlyName, 'Alice');
    assert.deepEqual(JSON.parse(alice.attributes), { a: 1 });
    assert.equal(alice.serviceSid, svc.sid);
    assert.equal(alice.accountSid, server.accountSid);
    assert.equal(alice.roleSid, svc.defaultServiceRoleSid);
    assert.equal(alice.joinedChannelsCount, 0);
    assert.equal(alice.url, `${server.base}/chat/v2/Services/${svc.sid}/Users/${alice.sid}`);
    assert.equal(alice.links.user_bindings, `${alice.url}/Bindings`);
  });

  it('fetch by identity containing "@"', async () => {
    const u = await client.chat.v2.services(svc.sid).users('alice@example.com').fetch();
    assert.equal(u.sid, alice.sid);
    assert.equal(u.identity, 'alice@example.com');
    // url always uses the US SID, even when fetched by identity
    assert.equal(u.url, alice.url);
  });

  it('fetch by identity containing a space and "+" ("bob smith+1")', async () => {
    const bob = await client.chat.v2.services(svc.sid).users.create({ identity: 'bob smith+1' });
    assert.equal(bob.identity, 'bob smith+1');
    const u = await client.chat.v2.services(svc.sid).users('bob smith+1').fetch();
    assert.match(http.last().url, /\/Users\/bob%20smith\+1$/);
    assert.equal(u.sid, bob.sid);
    assert.equal(u.identity, 'bob smith+1');
    // "+" in a path is literal: "bob smith 1" is a different (absent) user
    await expectTwilioError(client.chat.v2.services(svc.sid).users('bob smith 1').fetch(), 404, 20404);
    await client.chat.v2.services(svc.sid).users(bob.sid).remove();
  });

  it('fetch by SID', async () => {
    const u = await client.chat.v2.services(svc.sid).users(alice.sid).fetch();
    assert.equal(u.identity, 'alice@example.com');
  });

  it('update', async () => {
    const u = await client.chat.v2.services(svc.sid).users(alice.sid).update({
      friendlyName: 'Alice B',
      attributes: JSON.stringify({ b: 2 }),
      xTwilioWebhookEnabled: 'false',
    });
    assert.equal(http.last().status, 200);
    assert.equal(u.sid, alice.sid);
    assert.equal(u.friendlyName, 'Alice B');
    assert.deepEqual(JSON.parse(u.attributes), { b: 2 });
    const byIdentity = await client.chat.v2.services(svc.sid).users('alice@example.com').update({ friendlyName: 'Alice C' });
    assert.equal(byIdentity.sid, alice.sid);
    assert.equal(byIdentity.friendlyName, 'Alice C');
    const f = await client.chat.v2.services(svc.sid).users(alice.sid).fetch();
    assert.equal(f.friendlyName, 'Alice C');
    assert.deepEqual(JSON.parse(f.attributes), { b: 2 });
  });

  it('duplicate identity gives 409 / 50201', async () => {
    await expectTwilioError(
      client.chat.v2.services(svc.sid).users.create({ identity: 'alice@example.com' }), 409, 50201);
  });

  it('list with paging: 7 users, pageSize 3', async () => {
    const pagedSvc = await client.chat.v2.services.create({ friendlyName: 'Paging Svc' });
    const users = pagedSvc.sid && client.chat.v2.services(pagedSvc.sid).users;
    const created = [];
    for (let i = 0; i < 7; i++) created.push((await users.create({ identity: `pager-${i}` })).identity);
    const before = http.records.length;
    const listed = await users.list({ pageSize: 3 });
    const pages = http.records.slice(before);
    assert.deepEqual(listed.map((u) => u.identity).sort(), created.slice().sort());
    assert.equal(new Set(listed.map((u) => u.sid)).size, 7, 'no duplicates across pages');
    assert.equal(pages.length, 3, `3 page requests expected, got ${pages.map((p) => p.url).join(' ')}`);
    assert.equal(new URL(pages[0].url).searchParams.get('PageSize'), '3');
    for (const [i, p] of pages.entries()) {
      assert.equal(p.status, 200);
      assert.equal(p.body.meta.key, 'users');
      assert.equal(p.body.meta.page_size, 3);
      assert.equal(p.body.users.length, i < 2 ? 3 : 1);
      if (i < 2) assert.ok(p.body.meta.next_page_url.startsWith(`${server.base}/chat/v2/Services/${pagedSvc.sid}/Users?`), p.body.meta.next_page_url);
      else assert.equal(p.body.meta.next_page_url, null);
      if (i > 0) assert.equal(p.url, pages[i - 1].body.meta.next_page_url, 'client follows next_page_url verbatim');
    }
    assert.equal(pages[0].body.meta.previous_page_url, null);
    // limit stops after one page
    const limited = await users.list({ limit: 2 });
    assert.equal(limited.length, 2);
    await client.chat.v2.services(pagedSvc.sid).remove();
  });

  it('remove', async () => {
    const removed = await client.chat.v2.services(svc.sid).users('alice@example.com').remove();
    assert.equal(removed, true);
    assert.equal(http.last().status, 204);
    await expectTwilioError(client.chat.v2.services(svc.sid).users(alice.sid).fetch(), 404, 20404);
    const left = await client.chat.v2.services(svc.sid).users.list();
    assert.ok(!left.some((u) => u.sid === alice.sid));
  });
});

describe('Conversations', () => {
  it('service create, configuration().update({reachabilityEnabled: true}), visible through Chat v2', async () => {
    const svc = await client.conversations.v1.services.create({ friendlyName: 'Conv Svc' });
    assert.equal(http.last().status, 201);
    assert.match(svc.sid, SID('IS'));
    assert.equal(svc.friendlyName, 'Conv Svc');
    assert.equal(svc.url, `${server.base}/conversations/v1/Services/${svc.sid}`);
    const cfg = await client.conversations.v1.services(svc.sid).configuration().update({ reachabilityEnabled: true });
    assert.equal(http.last().status, 200);
    assert.equal(cfg.chatServiceSid, svc.sid);
    assert.equal(cfg.reachabilityEnabled, true);
    assert.equal(cfg.url, `${server.base}/conversations/v1/Services/${svc.sid}/Configuration`);
    assert.ok(!('account_sid' in http.last().body), 'service configuration has no account_sid');
    const fetched = await client.conversations.v1.services(svc.sid).configuration().fetch();
    assert.equal(fetched.reachabilityEnabled, true);
    const chat = await client.chat.v2.services(svc.sid).fetch();
    assert.equal(chat.reachabilityEnabled, true);
    assert.equal(http.last().body.reachability_enabled, true);
  });

  it('users through the /v1/Users default-service shortcut', async () => {
    const dave = await client.conversations.v1.users.create({ identity: 'dave' });
    const rec = http.last();
    assert.equal(rec.status, 201);
    assert.equal(new URL(rec.url).pathname, '/conversations/v1/Users');
    assert.match(dave.sid, SID('US'));
    assert.match(dave.chatServiceSid, SID('IS'));
    assert.equal(dave.identity, 'dave');
    assert.equal(dave.url, `${server.base}/conversations/v1/Users/${dave.sid}`);
    assert.equal(dave.links.user_conversations, `${server.base}/conversations/v1/Users/${dave.sid}/Conversations`);
    assert.ok(!('joined_channels_count' in rec.body));
    const f = await client.conversations.v1.users('dave').fetch();
    assert.equal(f.sid, dave.sid);
    assert.equal(f.identity, 'dave');
    assert.equal(f.chatServiceSid, dave.chatServiceSid);
    const u = await client.conversations.v1.users('dave').update({ friendlyName: 'D', xTwilioWebhookEnabled: 'true' });
    assert.equal(u.friendlyName, 'D');
    // the same user through the service-scoped path
    const scoped = await client.conversations.v1.services(dave.chatServiceSid).users('dave').fetch();
    assert.equal(scoped.sid, dave.sid);
    assert.equal(scoped.friendlyName, 'D');
    assert.equal(await client.conversations.v1.users('dave').remove(), true);
    assert.equal(http.last().status, 204);
    await expectTwilioError(client.conversations.v1.users(dave.sid).fetch(), 404, 20404);
  });

  it('service remove (cascades; gone through Chat v2 too)', async () => {
    const svc = await client.conversations.v1.services.create({ friendlyName: 'Conv Gone' });
    const carol = await client.conversations.v1.services(svc.sid).users.create({ identity: 'carol', xTwilioWebhookEnabled: 'true' });
    assert.equal(carol.chatServiceSid, svc.sid);
    assert.equal(carol.url, `${server.base}/conversations/v1/Services/${svc.sid}/Users/${carol.sid}`);
    assert.equal(await client.conversations.v1.services(svc.sid).remove(), true);
    assert.equal(http.last().status, 204);
    await expectTwilioError(client.conversations.v1.services(svc.sid).fetch(), 404, 20404);
    await expectTwilioError(client.chat.v2.services(svc.sid).fetch(), 404, 20404);
    await expectTwilioError(client.conversations.v1.services(svc.sid).users('carol').fetch(), 404, 20404);
  });
});

describe('Chat v2 credentials', () => {
  it('create, fetch, remove', async () => {
    const cr = await client.chat.v2.credentials.create({
      type: 'apn',
      friendlyName: 'ios',
      certificate: '-----BEGIN CERT-----\nX\n-----END CERT-----',
      privateKey: 'K',
      sandbox: true,
    });
    const rec = http.last();
    assert.equal(rec.status, 201);
    assert.match(cr.sid, SID('CR'));
    assert.equal(cr.type, 'apn');
    assert.equal(cr.friendlyName, 'ios');
    assert.equal(cr.accountSid, server.accountSid);
    assert.equal(typeof rec.body.sandbox, 'string');
    assert.equal(rec.body.sandbox.toLowerCase(), 'true');
    for (const secret of ['certificate', 'private_key', 'api_key', 'secret']) {
      assert.ok(!(secret in rec.body) || rec.body[secret] === null, `secret ${secret} must not be echoed`);
    }
    assert.ok(!rec.rawBody.includes('BEGIN CERT'));
    assert.equal(cr.url, `${server.base}/chat/v2/Credentials/${cr.sid}`);
    const f = await client.chat.v2.credentials(cr.sid).fetch();
    assert.equal(f.sid, cr.sid);
    assert.equal(f.type, 'apn');
    assert.equal(f.friendlyName, 'ios');
    assert.equal(await client.chat.v2.credentials(cr.sid).remove(), true);
    assert.equal(http.last().status, 204);
    await expectTwilioError(client.chat.v2.credentials(cr.sid).fetch(), 404, 20404);
  });
});

describe('errors', () => {
  it('unknown service gives 404 / 20404', async () => {
    const missing = 'IS' + '0123456789abcdef'.repeat(2);
    const err = await expectTwilioError(client.chat.v2.services(missing).fetch(), 404, 20404);
    assert.equal(err.moreInfo, 'https://www.twilio.com/docs/errors/20404');
    await expectTwilioError(client.chat.v2.services(missing).users.create({ identity: 'x' }), 404, 20404);
    await expectTwilioError(client.conversations.v1.services(missing).fetch(), 404, 20404);
  });

  it('a wrong auth token gives 401 / 20003', async () => {
    const { client: bad } = makeClient({ ...server, authToken: 'wrong' + server.authToken }, registry);
    await expectTwilioError(bad.chat.v2.services.list(), 401, 20003);
  });
});

describe('all responses', () => {
  it('every recorded response validated against the OpenAPI schema', () => {
    assert.ok(http.records.length > 30, `only ${http.records.length} responses recorded`);
    assert.deepEqual(http.violations, []);
  });
});
