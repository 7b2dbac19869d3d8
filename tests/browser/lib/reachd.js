'use strict';
// Starts a real reachd for the end-to-end tests, sets up a service with reachability enabled and
// short presence timings, creates an API key with the CLI and mints access tokens.
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

/**
 * The database a suite's server uses, picked by REACHD_TEST_DATABASE (shared with the Rust and
 * Python suites): unset or `sqlite` is a fresh SQLite file in `dir`; a postgres:// URL names a
 * PostgreSQL server in which a fresh database is created. Any other value stops the suite.
 */
function testDatabase(dir) {
  const chosen = process.env.REACHD_TEST_DATABASE || '';
  if (chosen === '' || chosen === 'sqlite') return path.join(dir, 'reachd.db');
  if (/^postgres(ql)?:\/\//i.test(chosen)) return freshPostgresDatabase(chosen);
  throw new Error(`REACHD_TEST_DATABASE=${chosen.split('://')[0]}: give \`sqlite\` or a postgres:// URL`);
}

/** Creates an empty database on the server `url` names (with `psql`); its URL. */
function freshPostgresDatabase(url) {
  const name = `reachd_t_${require('crypto').randomBytes(16).toString('hex')}`;
  require('child_process').execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qc', `CREATE DATABASE ${name}`]);
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

const REPO_ROOT = path.resolve(__dirname, '../../..');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function reachdBin() {
  const bin = process.env.REACHD_BIN || 'target/debug/reachd';
  return path.isAbsolute(bin) ? bin : path.resolve(REPO_ROOT, bin);
}

/** The environment for reachd and its CLI: no inherited REACHD_* (reachd rejects unknown ones). */
function reachdEnv(extra) {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REACHD_')));
  return { ...inherited, ...extra };
}

async function startReachd() {
  const bin = reachdBin();
  for (let i = 0; i < 60 && !fs.existsSync(bin); i++) await sleep(1000);
  if (!fs.existsSync(bin)) throw new Error(`reachd binary not found at ${bin} (set REACHD_BIN)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reachd-browser-'));
  const accountSid = 'AC' + crypto.randomBytes(16).toString('hex');
  const authToken = crypto.randomBytes(16).toString('hex');
  const env = reachdEnv({
    REACHD_LISTEN: '127.0.0.1:0',
    REACHD_DATABASE: testDatabase(dir),
    REACHD_ACCOUNT_SID: accountSid,
    REACHD_AUTH_TOKEN: authToken,
    REACHD_LOG: 'warn',
  });
  const child = spawn(bin, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`reachd did not report its port within 30s; stderr=${stderr}`)), 30000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/reachd listening on 127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`reachd exited early (code ${code}, signal ${sig}); stderr=${stderr}`));
    });
  }).catch((e) => {
    if (child.exitCode === null) child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  child.stdout.resume();
  const base = `http://127.0.0.1:${port}`;
  const basic = 'Basic ' + Buffer.from(`${accountSid}:${authToken}`).toString('base64');

  /** An HTTP call with Basic auth; form bodies for Twilio routes, JSON for /api/v1. */
  async function call(method, p, body, { json = false } = {}) {
    const headers = { Authorization: basic, Accept: 'application/json' };
    let payload;
    if (body !== undefined) {
      if (json) {
        headers['Content-Type'] = 'application/json';
        payload = JSON.stringify(body);
      } else {
        headers['Content-Type'] = 'application/x-www-form-urlencoded';
        payload = new URLSearchParams(body).toString();
      }
    }
    const res = await fetch(base + p, { method, headers, body: payload });
    const text = await res.text();
    let data;
    try { data = JSON.parse(text); } catch { data = text; }
    if (!res.ok) throw new Error(`${method} ${p} → ${res.status}: ${text}`);
    return data;
  }

  /** `reachd keys create` against the same database: {sid, secret}. */
  function createKey() {
    const out = execFileSync(bin, ['keys', 'create', '--friendly-name', 'browser-e2e'], { env, encoding: 'utf8' });
    const key = JSON.parse(out.slice(out.indexOf('{'), out.lastIndexOf('}') + 1));
    if (!/^SK/.test(key.sid) || !key.secret) throw new Error(`unexpected keys create output: ${out}`);
    return key;
  }

  return {
    base, port, accountSid, authToken, dir, child, call, createKey,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A Twilio-format access token (docs/twilio-compatibility.md §9), HS256 with the API key secret.
 * @param {{accountSid: string, key: {sid: string, secret: string}, serviceSid: string, identity: string, ttl?: number}} o
 */
function mintToken({ accountSid, key, serviceSid, identity, ttl = 3600 }) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const header = b64({ alg: 'HS256', typ: 'JWT', cty: 'twilio-fpa;v=1' });
  const payload = b64({
    jti: `${key.sid}-${now}`,
    iss: key.sid,
    sub: accountSid,
    nbf: now,
    exp: now + ttl,
    grants: { identity, chat: { service_sid: serviceSid } },
  });
  const sig = crypto.createHmac('sha256', Buffer.from(key.secret, 'utf8')).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${sig}`;
}

/** A service with reachability enabled and fast presence timings, plus an API key. */
async function setupService(server, timings = { ping_interval_ms: 1000, session_ttl_ms: 3000, offline_grace_ms: 300 }) {
  const svc = await server.call('POST', '/chat/v2/Services', { FriendlyName: 'browser-e2e' });
  await server.call('POST', `/chat/v2/Services/${svc.sid}`, { ReachabilityEnabled: 'true' });
  await server.call('POST', `/api/v1/services/${svc.sid}/settings`, timings, { json: true });
  const key = server.createKey();
  const token = (identity, ttl) => mintToken({ accountSid: server.accountSid, key, serviceSid: svc.sid, identity, ttl });
  return { serviceSid: svc.sid, key, token };
}

module.exports = { REPO_ROOT, startReachd, setupService, mintToken, sleep };
