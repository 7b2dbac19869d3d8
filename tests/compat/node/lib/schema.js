'use strict';
// Validates reachd responses against Twilio's OpenAPI files
// (tests/compat/twilio-oai, a copy of Twilio's twilio-oai; or $TWILIO_OAI_DIR).
//
// * `$ref`s are resolved by inlining (the presence schemas are not recursive).
// * OpenAPI `nullable: true` becomes a JSON-Schema type array (and `null` joins any enum).
// * `date-time` is checked strictly as Twilio emits it: YYYY-MM-DDTHH:MM:SSZ (§1.5).
// * Error responses (no schema in the OAI files) are checked against the legacy
//   4-key Twilio error body (§1.8).
const fs = require('node:fs');
const path = require('node:path');
const Ajv = require('ajv');
const addFormats = require('ajv-formats');

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..', '..');
const OAI_DIR = process.env.TWILIO_OAI_DIR
  || path.resolve(REPO_ROOT, 'tests', 'compat', 'twilio-oai');

// prefix in our server → OAI file
const SPECS = [
  { prefix: '/chat/v1/', file: 'twilio_chat_v1.json' },
  { prefix: '/chat/v2/', file: 'twilio_chat_v2.json' },
  { prefix: '/conversations/v1/', file: 'twilio_conversations_v1.json' },
];

const ERROR_SCHEMA = {
  type: 'object',
  required: ['code', 'message', 'more_info', 'status'],
  properties: {
    code: { type: 'integer' },
    message: { type: 'string', minLength: 1 },
    more_info: { type: 'string' },
    status: { type: 'integer' },
  },
  // twilio-python switches to RFC 9457 mode when all four are present (§1.8)
  not: { required: ['type', 'title', 'status', 'code'] },
};

function makeAjv() {
  const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false });
  addFormats(ajv);
  ajv.addFormat('date-time', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
  ajv.addFormat('http-method', /^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)$/);
  ajv.addFormat('uri-map', true);
  ajv.addFormat('phone-number', true);
  ajv.addFormat('iso-country-code', true);
  return ajv;
}

function lookupPointer(doc, ref) {
  if (!ref.startsWith('#/')) throw new Error(`unsupported $ref ${ref}`);
  return ref.slice(2).split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((o, k) => {
      if (o == null || !(k in o)) throw new Error(`dangling $ref ${ref}`);
      return o[k];
    }, doc);
}

// Inline $refs, convert nullable, drop examples. Returns a fresh object.
function prepare(doc, node, seen = new Set()) {
  if (Array.isArray(node)) return node.map((n) => prepare(doc, n, seen));
  if (node === null || typeof node !== 'object') return node;
  if (typeof node.$ref === 'string') {
    if (seen.has(node.$ref)) throw new Error(`recursive $ref ${node.$ref}`);
    const next = new Set(seen).add(node.$ref);
    const target = prepare(doc, lookupPointer(doc, node.$ref), next);
    const { $ref, ...rest } = node;
    if (Object.keys(rest).length === 0) return target;
    const sibling = prepare(doc, rest, seen);
    if (sibling.nullable) return { anyOf: [target, { type: 'null' }] };
    return { allOf: [target, sibling] };
  }
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'examples' || k === 'example' || k === 'x-twilio' || k === 'description') continue;
    out[k] = prepare(doc, v, seen);
  }
  if (out.nullable === true) {
    if (typeof out.type === 'string') out.type = [out.type, 'null'];
    else if (Array.isArray(out.type) && !out.type.includes('null')) out.type = [...out.type, 'null'];
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
  }
  delete out.nullable;
  return out;
}

class SchemaRegistry {
  constructor() {
    this.ajv = makeAjv();
    this.specs = SPECS.map((s) => {
      const doc = JSON.parse(fs.readFileSync(path.join(OAI_DIR, s.file), 'utf8'));
      const templates = Object.keys(doc.paths).map((t) => {
        const params = (t.match(/\{[^}]+\}/g) || []).length;
        const re = new RegExp('^' + t.replace(/[.*+?^$()|[\]\\]/g, '\\$&')
          .replace(/\\?\{[^}]+\\?\}/g, '[^/]+') + '$');
        return { template: t, re, params };
      }).sort((a, b) => a.params - b.params);
      return { ...s, doc, templates };
    });
    this.errorValidator = this.ajv.compile(ERROR_SCHEMA);
    this.cache = new Map();
  }

  // pathname as received by the server, e.g. /chat/v2/Services/IS…/Users/bob%20smith+1
  resolve(pathname) {
    const spec = this.specs.find((s) => pathname.startsWith(s.prefix));
    if (!spec) return null;
    const apiPath = pathname.slice(spec.prefix.length - 4); // keep "/vN/…"
    const hit = spec.templates.find((t) => t.re.test(apiPath));
    return hit ? { spec, template: hit.template } : null;
  }

  validatorFor(spec, template, method, status) {
    const key = `${spec.file} ${method} ${template} ${status}`;
    if (this.cache.has(key)) return this.cache.get(key);
    const op = spec.doc.paths[template][method.toLowerCase()];
    let v = null;
    if (op && op.responses && op.responses[String(status)]) {
      const content = op.responses[String(status)].content;
      const schema = content && content['application/json'] && content['application/json'].schema;
      v = { schema: schema ? this.ajv.compile(prepare(spec.doc, schema)) : null };
    }
    this.cache.set(key, v);
    return v;
  }

  // Returns a list of human-readable problems; empty means the response conforms.
  check({ method, url, status, headers, rawBody }) {
    const problems = [];
    const pathname = new URL(url).pathname;
    const where = this.resolve(pathname);
    const label = `${method} ${pathname} → ${status}`;
    if (!where) return [`${label}: no OpenAPI path template matches`];
    const ctype = String((headers && (headers['content-type'] || headers['Content-Type'])) || '');
    let body;
    if (rawBody !== undefined && rawBody !== null && rawBody !== '') {
      try {
        body = JSON.parse(rawBody);
      } catch (e) {
        return [`${label}: body is not JSON: ${String(rawBody).slice(0, 200)}`];
      }
      if (!/^application\/json\b/i.test(ctype)) problems.push(`${label}: Content-Type is "${ctype}", expected application/json`);
    }
    if (status >= 400) {
      if (body === undefined) return [`${label}: error response without a JSON body`];
      if (!this.errorValidator(body)) {
        problems.push(`${label}: error body does not match the Twilio error shape: ${this.ajv.errorsText(this.errorValidator.errors)}`);
      } else if (body.status !== status) {
        problems.push(`${label}: error body status ${body.status} differs from HTTP status`);
      }
      return problems;
    }
    const v = this.validatorFor(where.spec, where.template, method, status);
    if (!v) {
      const op = where.spec.doc.paths[where.template][method.toLowerCase()];
      const allowed = op ? Object.keys(op.responses || {}).join(',') : 'none (method not in spec)';
      return [`${label}: status not defined by ${where.spec.file} for ${method} ${where.template} (allowed: ${allowed})`];
    }
    if (!v.schema) {
      if (body !== undefined) problems.push(`${label}: expected an empty body, got ${String(rawBody).slice(0, 200)}`);
      return problems;
    }
    if (body === undefined) return [`${label}: empty body, expected JSON per ${where.template}`];
    if (!v.schema(body)) {
      for (const e of v.schema.errors) {
        problems.push(`${label}: ${where.spec.file} ${where.template}: ${e.instancePath || '(root)'} ${e.message}` +
          (e.params && Object.keys(e.params).length ? ` ${JSON.stringify(e.params)}` : ''));
      }
    }
    return problems;
  }
}

module.exports = { SchemaRegistry, prepare, OAI_DIR, REPO_ROOT };
