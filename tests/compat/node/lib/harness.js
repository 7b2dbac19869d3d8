'use strict';
// Starts a real reachd, and builds a twilio-node client whose every response is
// recorded and validated against the OpenAPI schema for (method, path template, status).
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const twilio = require('twilio');
const RequestClient = require('twilio/lib/base/RequestClient');
const { SchemaRegistry, REPO_ROOT } = require('./schema');

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

const RequestClientClass = RequestClient.default || RequestClient;

function reachdBin() {
  const bin = process.env.REACHD_BIN || 'target/debug/reachd';
  return path.isAbsolute(bin) ? bin : path.resolve(REPO_ROOT, bin);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startServer() {
  const bin = reachdBin();
  // The binary may be being rebuilt by someone else: wait for it briefly.
  for (let i = 0; i < 60 && !fs.existsSync(bin); i++) await sleep(1000);
  if (!fs.existsSync(bin)) throw new Error(`reachd binary not found at ${bin} (set REACHD_BIN)`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'reachd-node-compat-'));
  const accountSid = 'AC' + crypto.randomBytes(16).toString('hex');
  const authToken = crypto.randomBytes(16).toString('hex');
  // reachd rejects unknown REACHD_* variables (e.g. our own REACHD_BIN): pass none through.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REACHD_')));
  const child = spawn(bin, [], {
    env: {
      ...inherited,
      REACHD_LISTEN: '127.0.0.1:0',
      REACHD_DATABASE: testDatabase(dir),
      REACHD_ACCOUNT_SID: accountSid,
      REACHD_AUTH_TOKEN: authToken,
      REACHD_LOG: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const portPromise = new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`reachd did not report its port within 30s; stdout=${out} stderr=${stderr}`)), 30000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/reachd listening on 127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`reachd exited early (code ${code}, signal ${sig}); stderr=${stderr}`));
    });
  });
  let port;
  try {
    port = await portPromise;
  } catch (e) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  child.stdout.resume();
  const base = `http://127.0.0.1:${port}`;
  return {
    base, port, accountSid, authToken, dir, child,
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

class SchemaViolation extends Error {
  constructor(problems, record) {
    super('response does not conform to the Twilio OpenAPI schema:\n  ' + problems.join('\n  '));
    this.name = 'SchemaViolation';
    this.problems = problems;
    this.record = record;
  }
}

// A twilio-node httpClient: wraps the default RequestClient, records every exchange
// and rejects the call when the response body does not validate.
class RecordingHttpClient {
  constructor(registry) {
    this.registry = registry;
    this.inner = new RequestClientClass({ keepAlive: false });
    // Keep the raw body text so we can check it is JSON and of the right type.
    this.inner.axios.defaults.responseType = 'text';
    this.inner.axios.defaults.transformResponse = [(d) => d];
    this.records = [];
    this.violations = [];
  }

  async request(opts) {
    const res = await this.inner.request(opts);
    const raw = typeof res.body === 'string' ? res.body : (res.body == null ? '' : JSON.stringify(res.body));
    let url = opts.uri;
    if (opts.params && Object.keys(opts.params).length) {
      const u = new URL(url);
      for (const [k, v] of Object.entries(opts.params)) {
        for (const x of [].concat(v)) u.searchParams.append(k, String(x));
      }
      url = u.toString();
    }
    const record = {
      method: String(opts.method).toUpperCase(),
      url,
      requestHeaders: opts.headers,
      requestData: opts.data,
      status: res.statusCode,
      headers: res.headers,
      rawBody: raw,
    };
    let parsed;
    try { parsed = raw === '' ? undefined : JSON.parse(raw); } catch { parsed = undefined; }
    record.body = parsed;
    const problems = this.registry.check(record);
    record.problems = problems;
    this.records.push(record);
    if (problems.length) {
      this.violations.push(...problems);
      throw new SchemaViolation(problems, record);
    }
    return { statusCode: res.statusCode, body: parsed === undefined ? raw : parsed, headers: res.headers };
  }

  // the last recorded exchange matching a predicate
  last(pred = () => true) {
    for (let i = this.records.length - 1; i >= 0; i--) if (pred(this.records[i])) return this.records[i];
    return undefined;
  }
}

function makeClient(server, registry) {
  const httpClient = new RecordingHttpClient(registry);
  const client = twilio(server.accountSid, server.authToken, { httpClient });
  client.chat.baseUrl = server.base + '/chat';
  client.conversations.baseUrl = server.base + '/conversations';
  return { client, httpClient };
}

module.exports = { startServer, makeClient, RecordingHttpClient, SchemaRegistry, SchemaViolation };
