/**
 * reachd JavaScript client SDK.
 *
 * One ES module, no dependencies and no build step. It runs in browsers (served by reachd at
 * `GET /client/v1/sdk.js`) and in Node 20+ (pass `{ WebSocket: require('ws') }`, or let the SDK
 * import the `ws` package itself when there is no global `WebSocket`).
 *
 * It mirrors the reachability surface of Twilio's Conversations/Chat JS SDK:
 *
 * ```js
 * import { Client } from 'http://127.0.0.1:8080/client/v1/sdk.js';
 * const client = await Client.create(token, { url: 'http://127.0.0.1:8080' });
 * const bob = await client.getUser('bob');
 * bob.on('updated', ({ user, updateReasons }) => console.log(user.isOnline, updateReasons));
 * ```
 *
 * Transport: one WebSocket to `/client/v1/socket?token=<JWT>[&resume=<session_id>]` carrying
 * `type`-tagged JSON text frames (see docs/ARCHITECTURE.md §3.4). The socket *is* the presence
 * session: while it is open the user is online. The client pings every `ping_interval`,
 * reconnects with exponential backoff after an unexpected close (resuming the previous session
 * id so a quick reconnect is not seen as going offline), and re-subscribes every subscribed
 * identity.
 *
 * @module reachd
 */

/** SDK version, sent nowhere; for diagnostics. */
export const VERSION = '0.1.0';

/**
 * @typedef {'connecting'|'connected'|'disconnected'|'denied'} ConnectionState
 *   - `connecting`: opening (or re-opening) the socket;
 *   - `connected`: the server said `ready`;
 *   - `disconnected`: closed, either waiting for a reconnect attempt or shut down;
 *   - `denied`: the token was rejected, expired or its key revoked (close 4003); nothing
 *     happens until `updateToken()`.
 */

/**
 * @typedef {'reachabilityOnline'|'reachabilityNotifiable'|'friendlyName'|'attributes'} UpdateReason
 */

/**
 * @typedef {Object} UserDescriptor A snapshot of a user, not kept up to date.
 * @property {string} identity
 * @property {string|null} userSid
 * @property {string|null} friendlyName
 * @property {any} attributes        parsed JSON when the server sends a JSON string
 * @property {boolean|null} isOnline  null when reachability is disabled or unknown
 * @property {boolean|null} isNotifiable
 */

/**
 * @typedef {Object} ClientOptions
 * @property {string} [url]  the server's base URL (`http(s)://host:port`); default: the origin
 *   this module was loaded from, else `location.origin`.
 * @property {typeof WebSocket} [WebSocket]  a WebSocket constructor (e.g. `require('ws')`).
 * @property {typeof fetch} [fetch]  a fetch implementation (default: the global one).
 * @property {number} [minBackoff=500]   first reconnect delay, ms.
 * @property {number} [maxBackoff=30000] largest reconnect delay, ms.
 * @property {number} [connectTimeout=30000]  how long `Client.create` keeps trying, ms.
 * @property {number} [requestTimeout=20000]  how long a request waits for its reply, ms.
 * @property {number} [tokenAboutToExpireMs=180000]  how long before `exp` to emit
 *   `tokenAboutToExpire` (Twilio's SDKs use 3 minutes).
 */

// ---------------------------------------------------------------------------------------------
// A tiny EventEmitter
// ---------------------------------------------------------------------------------------------

/** Minimal event emitter (`on`, `once`, `off`, `emit`); listener errors never break the SDK. */
export class EventEmitter {
  constructor() {
    /** @type {Map<string, Function[]>} */
    this._listeners = new Map();
  }

  /**
   * @param {string} event
   * @param {Function} listener
   * @returns {this}
   */
  on(event, listener) {
    const list = this._listeners.get(event) || [];
    list.push(listener);
    this._listeners.set(event, list);
    return this;
  }

  /** Alias of `on`. */
  addListener(event, listener) {
    return this.on(event, listener);
  }

  /**
   * Listens for one emission only.
   * @param {string} event
   * @param {Function} listener
   * @returns {this}
   */
  once(event, listener) {
    const wrapped = (...args) => {
      this.off(event, wrapped);
      listener.apply(this, args);
    };
    wrapped.listener = listener;
    return this.on(event, wrapped);
  }

  /**
   * @param {string} event
   * @param {Function} listener
   * @returns {this}
   */
  off(event, listener) {
    const list = this._listeners.get(event);
    if (!list) return this;
    const kept = list.filter((l) => l !== listener && l.listener !== listener);
    if (kept.length) this._listeners.set(event, kept);
    else this._listeners.delete(event);
    return this;
  }

  /** Alias of `off`. */
  removeListener(event, listener) {
    return this.off(event, listener);
  }

  /**
   * @param {string} [event] remove the listeners of this event, or of all events.
   * @returns {this}
   */
  removeAllListeners(event) {
    if (event === undefined) this._listeners.clear();
    else this._listeners.delete(event);
    return this;
  }

  /**
   * Calls every listener of `event`; a listener that throws is reported on the console.
   * @param {string} event
   * @param {...any} args
   * @returns {boolean} whether there was a listener
   */
  emit(event, ...args) {
    const list = this._listeners.get(event);
    if (!list || !list.length) return false;
    for (const listener of list.slice()) {
      try {
        listener.apply(this, args);
      } catch (err) {
        if (typeof console !== 'undefined') console.error(`reachd: '${event}' listener threw`, err);
      }
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** An error carrying the server's Twilio error code (and HTTP status when there is one). */
export class ReachdError extends Error {
  /**
   * @param {string} message
   * @param {{code?: number|null, status?: number|null, terminal?: boolean}} [info]
   */
  constructor(message, info = {}) {
    super(message);
    this.name = 'ReachdError';
    /** Twilio error code, e.g. 20104 (token expired), 20404 (not found). */
    this.code = info.code ?? null;
    /** HTTP status, when the error came from an HTTP answer. */
    this.status = info.status ?? null;
    /** True when retrying with the same token cannot help. */
    this.terminal = Boolean(info.terminal);
  }
}

/** Close code the server uses when the token expires. */
const CLOSE_TOKEN_EXPIRED = 4001;
/** Close code the server uses when the API key that signed the token is revoked. */
const CLOSE_CREDENTIALS_REVOKED = 4003;
/** Close code the SDK uses for its own closes (shutdown, stale connection). */
const CLOSE_NORMAL = 1000;

/**
 * Decodes a JWT's payload without verifying it (the server verifies; the client only reads
 * `exp` and the identity grant).
 * @param {string} token
 * @returns {any|null}
 */
function decodeJwtPayload(token) {
  try {
    const part = String(token).split('.')[1];
    if (!part) return null;
    let b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    let text;
    if (typeof atob === 'function') {
      const bin = atob(b64);
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      text = new TextDecoder().decode(bytes);
    } else {
      text = globalThis.Buffer.from(b64, 'base64').toString('utf8');
    }
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * Twilio sends `attributes` as a JSON string; the SDK exposes it parsed (as Twilio's SDKs do).
 * @param {any} value
 */
function parseAttributes(value) {
  if (typeof value !== 'string') return value ?? {};
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

/** @param {any} v */
function nullableBool(v) {
  return typeof v === 'boolean' ? v : null;
}

/**
 * The default base URL: the origin this module was served from (reachd serves the SDK), else
 * the page's origin.
 * @returns {string|null}
 */
function defaultBaseUrl() {
  try {
    const here = new URL(import.meta.url);
    if (here.protocol === 'http:' || here.protocol === 'https:') return here.origin;
  } catch {
    /* not available */
  }
  if (typeof location !== 'undefined' && /^https?:$/.test(location.protocol)) return location.origin;
  return null;
}

/**
 * Finds a WebSocket constructor: the option, the global one, or the `ws` package.
 * @param {any} option
 * @returns {Promise<any>}
 */
async function resolveWebSocket(option) {
  if (option) return option;
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  const name = 'ws'; // a variable, so bundlers leave this Node-only import alone
  try {
    const mod = await import(name);
    return mod.WebSocket || mod.default;
  } catch {
    /* ESM resolution ignores NODE_PATH: try require() next */
  }
  try {
    const { createRequire } = await import('node:module');
    const req = createRequire(`${globalThis.process?.cwd?.() ?? '.'}/`);
    return req(name);
  } catch {
    throw new ReachdError(
      "reachd: no WebSocket implementation: pass { WebSocket: require('ws') } in the options",
      { terminal: true },
    );
  }
}

/** Text of a message event's data (`ws` may hand over a Buffer). */
function frameText(data) {
  if (typeof data === 'string') return data;
  if (data && typeof data.toString === 'function' && !(typeof Blob !== 'undefined' && data instanceof Blob)) {
    return data.toString();
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// User
// ---------------------------------------------------------------------------------------------

/**
 * A user the client is subscribed to (or the client's own user). Kept up to date by the
 * server's `userUpdated` messages.
 *
 * Events: `updated` `({ user, updateReasons })`.
 */
export class User extends EventEmitter {
  /**
   * @param {Client} client
   * @param {string} identity
   */
  constructor(client, identity) {
    super();
    /** @private */
    this._client = client;
    /** @type {string} */
    this.identity = identity;
    /** @type {string|null} the user's SID (US…) */
    this.sid = null;
    /** @type {string|null} */
    this.friendlyName = null;
    /** @type {any} */
    this.attributes = {};
    /** @type {boolean|null} null when reachability is disabled or not yet known */
    this.isOnline = null;
    /** @type {boolean|null} */
    this.isNotifiable = null;
    /** @type {boolean} whether the client still receives this user's updates */
    this.isSubscribed = true;
  }

  /** Same as `sid`, under the name Twilio's REST uses. */
  get userSid() {
    return this.sid;
  }

  /**
   * Applies a server user object and returns what changed.
   * @param {any} raw `{identity, user_sid, friendly_name, attributes, is_online, is_notifiable}`
   * @returns {UpdateReason[]}
   * @private
   */
  _apply(raw) {
    const reasons = [];
    const next = {
      sid: raw.user_sid ?? this.sid,
      friendlyName: raw.friendly_name ?? null,
      attributes: parseAttributes(raw.attributes),
      isOnline: nullableBool(raw.is_online),
      isNotifiable: nullableBool(raw.is_notifiable),
    };
    if (next.isOnline !== this.isOnline) reasons.push('reachabilityOnline');
    if (next.isNotifiable !== this.isNotifiable) reasons.push('reachabilityNotifiable');
    if (next.friendlyName !== this.friendlyName) reasons.push('friendlyName');
    if (JSON.stringify(next.attributes) !== JSON.stringify(this.attributes)) reasons.push('attributes');
    Object.assign(this, next);
    return reasons;
  }

  /**
   * Stops receiving this user's updates. (The client's own user cannot be unsubscribed.)
   * @returns {Promise<void>}
   */
  async unsubscribe() {
    await this._client._unsubscribe(this);
  }

  /** A plain snapshot of this user. @returns {UserDescriptor} */
  toJSON() {
    return {
      identity: this.identity,
      userSid: this.sid,
      friendlyName: this.friendlyName,
      attributes: this.attributes,
      isOnline: this.isOnline,
      isNotifiable: this.isNotifiable,
    };
  }
}

/**
 * @param {any} raw a server user object
 * @returns {UserDescriptor}
 */
function descriptorFrom(raw) {
  return {
    identity: raw.identity,
    userSid: raw.user_sid ?? null,
    friendlyName: raw.friendly_name ?? null,
    attributes: parseAttributes(raw.attributes),
    isOnline: nullableBool(raw.is_online),
    isNotifiable: nullableBool(raw.is_notifiable),
  };
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/**
 * A connection to reachd for one identity (the token's).
 *
 * Events:
 * - `connectionStateChanged` `(state: ConnectionState)`
 * - `connectionError` `({ terminal, message, httpStatusCode, errorCode })`
 * - `reachabilityEnabledChanged` `(enabled: boolean)`
 * - `userUpdated` `({ user, updateReasons })` for every subscribed user (and self)
 * - `tokenAboutToExpire` `(secondsLeft: number)`, `tokenExpired` `()`
 * - `stateChanged` `('initialized')` once, after `ready` (Twilio compatibility)
 */
export class Client extends EventEmitter {
  /**
   * Connects and resolves once the server said `ready` (and the client's own user was read).
   * Rejects when the token is refused, or when no connection could be made within
   * `options.connectTimeout`.
   * @param {string} token an access token (Twilio format, chat grant)
   * @param {ClientOptions} [options]
   * @returns {Promise<Client>}
   */
  static async create(token, options = {}) {
    const client = new Client(token, options);
    await client._start();
    return client;
  }

  /**
   * Use `Client.create` instead: the constructor does not connect.
   * @param {string} token
   * @param {ClientOptions} [options]
   */
  constructor(token, options = {}) {
    super();
    if (!token || typeof token !== 'string') throw new TypeError('reachd: a token is required');
    const base = options.url || defaultBaseUrl();
    if (!base) throw new TypeError('reachd: options.url is required here');
    /** @private */
    this._options = {
      minBackoff: 500,
      maxBackoff: 30000,
      connectTimeout: 30000,
      requestTimeout: 20000,
      tokenAboutToExpireMs: 180000,
      ...options,
    };
    /** @private */
    this._httpBase = String(base).replace(/\/+$/, '');
    /** @private */
    this._wsBase = this._httpBase.replace(/^http/i, 'ws');
    /** @private */
    this._token = token;
    /** @private */
    this._WebSocket = null;
    /** @private */
    this._fetch = options.fetch || (typeof fetch === 'function' ? fetch.bind(globalThis) : null);

    /** @type {ConnectionState} */
    this.connectionState = 'disconnected';
    /** @type {boolean} whether the service has the Reachability Indicator enabled */
    this.reachabilityEnabled = false;
    /** @type {string|null} the presence session this connection is (SE…) */
    this.sessionId = null;
    /** @type {string|null} */
    this.serviceSid = null;
    /** @type {number} ms between pings, from the server */
    this.pingInterval = 20000;
    /** @type {number} ms a session lives without a ping, from the server */
    this.sessionTtl = 60000;
    /** @type {User|null} the client's own user */
    this.user = null;

    /** @private @type {any} */
    this._ws = null;
    /** @private whether shutdown() was called */
    this._closed = false;
    /** @private consecutive failed connection attempts */
    this._attempt = 0;
    /** @private */
    this._reconnectTimer = null;
    /** @private */
    this._pingTimer = null;
    /** @private */
    this._expiryTimers = [];
    /** @private time of the last frame received */
    this._lastFrameAt = 0;
    /** @private */
    this._nextId = 1;
    /**
     * Requests awaiting a reply, by id.
     * @private @type {Map<string, {msg: any, reply: string, resolve: Function, reject: Function, timer: any, sent: boolean}>}
     */
    this._pending = new Map();
    /** @private subscribed users, by identity */
    this._users = new Map();
    /** @private getUser() calls awaiting a first snapshot, by identity */
    this._subscribing = new Map();
    /** @private callbacks waiting for the next `ready` (or a terminal failure) */
    this._readyWaiters = [];
    /** @private whether a `ready` was ever received */
    this._everConnected = false;
  }

  /** The token's identity. @returns {string|null} */
  get identity() {
    return this.user?.identity ?? decodeJwtPayload(this._token)?.grants?.identity ?? null;
  }

  // ------------------------------------------------------------------ public API

  /**
   * Subscribes to a user and resolves with a `User` that stays up to date. Calling it again
   * for the same identity returns the same object.
   * @param {string} identity
   * @returns {Promise<User>}
   */
  async getUser(identity) {
    this._assertOpen();
    if (typeof identity !== 'string' || !identity) throw new TypeError('reachd: identity must be a non-empty string');
    const known = this._users.get(identity);
    if (known) return known;
    const inflight = this._subscribing.get(identity);
    if (inflight) return inflight.promise;

    let entry;
    const promise = new Promise((resolve, reject) => {
      entry = { resolve, reject, timer: null };
    });
    entry.promise = promise;
    this._subscribing.set(identity, entry);
    entry.timer = setTimeout(() => {
      if (this._subscribing.get(identity) === entry) {
        this._subscribing.delete(identity);
        this._sendIfOpen({ type: 'unsubscribe', identities: [identity] });
        entry.reject(new ReachdError(`reachd: no answer for user '${identity}'`));
      }
    }, this._options.requestTimeout);
    // Sent now if connected, else by the re-subscription that follows the next `ready`.
    this._sendIfOpen({ type: 'subscribe', identities: [identity], id: this._newId() });
    return promise;
  }

  /**
   * Reads a user once, without subscribing: `GET /client/v1/users/{identity}` (falls back to a
   * subscribe/unsubscribe over the socket when HTTP is not reachable, e.g. cross-origin).
   * @param {string} identity
   * @returns {Promise<UserDescriptor>}
   */
  async getUserDescriptor(identity) {
    this._assertOpen();
    if (this._fetch) {
      let res;
      try {
        res = await this._fetch(`${this._httpBase}/client/v1/users/${encodeURIComponent(identity)}`, {
          headers: { Authorization: `Bearer ${this._token}`, Accept: 'application/json' },
        });
      } catch {
        res = null; // network or CORS failure: use the socket
      }
      if (res) {
        const body = await res.json().catch(() => null);
        if (!res.ok) {
          throw new ReachdError(body?.message || `reachd: HTTP ${res.status}`, {
            code: body?.code,
            status: res.status,
          });
        }
        return descriptorFrom(body);
      }
    }
    const known = this._users.get(identity);
    if (known) return known.toJSON();
    const reply = await this._request({ type: 'subscribe', identities: [identity] }, 'user');
    if (!this._users.has(identity) && !this._subscribing.has(identity)) {
      this._sendIfOpen({ type: 'unsubscribe', identities: [identity] });
    }
    return descriptorFrom(reply.user);
  }

  /**
   * Registers this device for push notifications, which makes the user notifiable.
   * @param {'apn'|'gcm'|'fcm'} channelType
   * @param {string} registrationId the device token
   * @returns {Promise<any>} the binding the server created
   */
  async setPushRegistrationId(channelType, registrationId) {
    this._assertOpen();
    const reply = await this._request(
      { type: 'register_push', binding_type: channelType, address: registrationId },
      'push_registered',
    );
    return reply.binding;
  }

  /**
   * Replaces the access token. When connected the server checks it and moves the session's
   * expiry; otherwise the next connection uses it (a `denied` client reconnects at once).
   * @param {string} token
   * @returns {Promise<Client>}
   */
  async updateToken(token) {
    this._assertOpen();
    if (!token || typeof token !== 'string') throw new TypeError('reachd: a token is required');
    if (this.connectionState === 'connected') {
      await this._request({ type: 'updateToken', token }, 'tokenUpdated');
      this._token = token;
      this._scheduleExpiry();
      return this;
    }
    this._token = token;
    this._scheduleExpiry();
    if (this.connectionState === 'denied') {
      this._attempt = 0;
      const ready = this._waitReady();
      this._connect();
      await ready;
    }
    return this;
  }

  /**
   * Closes the connection for good: the session ends (the user goes offline after the
   * service's grace), pending requests are rejected and nothing reconnects.
   * @returns {Promise<void>}
   */
  async shutdown() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._reconnectTimer);
    this._stopPinging();
    this._clearExpiry();
    const ws = this._ws;
    this._ws = null;
    const failure = new ReachdError('reachd: client shut down', { terminal: true });
    this._failAll(failure);
    for (const user of this._users.values()) user.isSubscribed = false;
    if (ws) {
      await new Promise((resolve) => {
        if (ws.readyState === 3 /* CLOSED */) return resolve();
        const t = setTimeout(resolve, 2000);
        ws.addEventListener('close', () => {
          clearTimeout(t);
          resolve();
        });
        try {
          ws.close(CLOSE_NORMAL, 'shutdown');
        } catch {
          clearTimeout(t);
          resolve();
        }
      });
    }
    this._setState('disconnected');
  }

  // ------------------------------------------------------------------ connection

  /** @private first connection, for `create` */
  async _start() {
    this._WebSocket = await resolveWebSocket(this._options.WebSocket);
    const ready = this._waitReady();
    const timer = setTimeout(() => {
      this._settleReady(new ReachdError('reachd: could not connect in time'));
    }, this._options.connectTimeout);
    this._scheduleExpiry();
    this._connect();
    try {
      await ready;
    } catch (err) {
      await this.shutdown();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** @private a promise settled by the next `ready` or terminal failure */
  _waitReady() {
    return new Promise((resolve, reject) => this._readyWaiters.push({ resolve, reject }));
  }

  /** @private */
  _settleReady(err) {
    const waiters = this._readyWaiters;
    this._readyWaiters = [];
    for (const w of waiters) (err ? w.reject(err) : w.resolve());
  }

  /** @private opens one socket */
  _connect() {
    if (this._closed) return;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._setState('connecting');
    let url = `${this._wsBase}/client/v1/socket?token=${encodeURIComponent(this._token)}`;
    if (this.sessionId) url += `&resume=${encodeURIComponent(this.sessionId)}`;

    let ws;
    try {
      ws = new this._WebSocket(url);
    } catch (err) {
      this._onConnectFailure(null, String(err && err.message));
      return;
    }
    this._ws = ws;
    let opened = false;
    let ready = false;
    let errorText = '';
    ws.addEventListener('open', () => {
      opened = true;
      this._lastFrameAt = Date.now();
    });
    ws.addEventListener('error', (ev) => {
      errorText = (ev && (ev.message || ev.error?.message)) || errorText;
    });
    ws.addEventListener('message', (ev) => {
      if (this._ws !== ws) return;
      this._lastFrameAt = Date.now();
      const text = frameText(ev.data);
      if (text == null) return;
      let msg;
      try {
        msg = JSON.parse(text);
      } catch {
        return;
      }
      if (msg && msg.type === 'ready') ready = true;
      this._onMessage(msg);
    });
    ws.addEventListener('close', (ev) => {
      if (this._ws !== ws) return; // an old socket we already gave up on
      this._ws = null;
      this._stopPinging();
      if (this._closed) return;
      if (ev.code === CLOSE_TOKEN_EXPIRED) {
        this._onTokenExpired(ev.reason || 'token expired');
      } else if (ev.code === CLOSE_CREDENTIALS_REVOKED) {
        this._onRevoked(ev.reason || 'credentials revoked');
      } else if (!opened || !ready) {
        this._onConnectFailure(ev.code, errorText || ev.reason || `closed with code ${ev.code}`);
      } else {
        this._scheduleReconnect();
      }
    });
  }

  /**
   * The socket failed before `ready`. A refused token is terminal (`denied`); anything else
   * is retried with backoff.
   * @private
   */
  async _onConnectFailure(code, text) {
    const m = /Unexpected server response: (\d+)/.exec(text || '');
    let status = m ? Number(m[1]) : null;
    let body = null;
    // Browsers hide the handshake's HTTP status: ask for it with a plain GET, which the server
    // answers with 401 and a Twilio error body when the token is the problem.
    if (status === null || status === 401) {
      const probe = await this._probeToken();
      if (probe) ({ status, body } = probe);
    }
    if (this._closed || this._ws) return;
    if (status === 401 || status === 403) {
      const errorCode = body?.code ?? null;
      const message = body?.message || 'access token refused';
      this.emit('connectionError', { terminal: true, message, httpStatusCode: status, errorCode });
      if (errorCode === 20104) this.emit('tokenExpired');
      this._deny(new ReachdError(`reachd: ${message}`, { code: errorCode, status, terminal: true }));
      return;
    }
    this.emit('connectionError', { terminal: false, message: text || 'connection failed', httpStatusCode: status, errorCode: null });
    this._scheduleReconnect();
  }

  /**
   * `GET /client/v1/socket?token=…` without upgrade headers: 401 means the token is refused.
   * @private
   * @returns {Promise<{status: number, body: any}|null>} null when the server cannot be asked
   */
  async _probeToken() {
    if (!this._fetch) return null;
    try {
      const res = await this._fetch(`${this._httpBase}/client/v1/socket?token=${encodeURIComponent(this._token)}`);
      const body = await res.json().catch(() => null);
      return { status: res.status, body };
    } catch {
      return null;
    }
  }

  /** @private token expired (close 4001, or found expired on connect) */
  _onTokenExpired(reason) {
    this.emit('tokenExpired');
    this.emit('connectionError', { terminal: true, message: reason, httpStatusCode: null, errorCode: 20104 });
    this._deny(new ReachdError(`reachd: ${reason}`, { code: 20104, terminal: true }));
  }

  /**
   * The key that signed the token was revoked (close 4003): the token will never work again,
   * so do not reconnect with it; `updateToken()` with a token from a live key reconnects.
   * @private
   */
  _onRevoked(reason) {
    this.emit('connectionError', { terminal: true, message: reason, httpStatusCode: null, errorCode: 20103 });
    this._deny(new ReachdError(`reachd: ${reason}`, { code: 20103, terminal: true }));
  }

  /** @private stop trying until updateToken() */
  _deny(err) {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopPinging();
    this._setState('denied');
    this._failAll(err);
  }

  /** @private after an unexpected close: wait, then reconnect (resuming the session) */
  _scheduleReconnect() {
    if (this._closed) return;
    this._setState('disconnected');
    // Requests already sent on the dead socket are sent again after the next `ready`.
    for (const p of this._pending.values()) p.sent = false;
    const { minBackoff, maxBackoff } = this._options;
    const base = Math.min(maxBackoff, minBackoff * 2 ** Math.min(this._attempt, 16));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4)); // ±20% jitter
    this._attempt += 1;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  /** @private */
  _setState(state) {
    if (this.connectionState === state) return;
    this.connectionState = state;
    this.emit('connectionStateChanged', state);
  }

  // ------------------------------------------------------------------ messages

  /** @private dispatches one server frame */
  _onMessage(msg) {
    switch (msg.type) {
      case 'ready':
        this._onReady(msg);
        break;
      case 'user':
        this._onUser(msg);
        break;
      case 'userUpdated':
        this._onUserUpdated(msg);
        break;
      case 'serviceUpdated':
        this._setReachability(Boolean(msg.reachability_enabled));
        break;
      case 'error':
        this._onError(msg);
        break;
      case 'pong':
      case 'push_registered':
      case 'tokenUpdated':
      case 'unsubscribed':
        this._resolveReply(msg);
        break;
      default:
        break; // newer servers may send more; ignore
    }
  }

  /** @private */
  _onReady(msg) {
    const first = !this._everConnected;
    this._everConnected = true;
    this._attempt = 0;
    this.sessionId = msg.session_id ?? null;
    this.serviceSid = msg.service_sid ?? null;
    if (Number(msg.ping_interval) > 0) this.pingInterval = Number(msg.ping_interval);
    if (Number(msg.session_ttl) > 0) this.sessionTtl = Number(msg.session_ttl);
    if (!this.user || this.user.identity !== msg.identity) {
      this.user = new User(this, msg.identity);
      this._users.set(msg.identity, this.user);
    }
    this._setReachability(Boolean(msg.reachability_enabled), first);
    this._startPinging();
    this._setState('connected');

    // Re-subscribe everything: the self user, subscribed users and getUser() calls in flight.
    const identities = new Set([this.user.identity, ...this._users.keys(), ...this._subscribing.keys()]);
    const list = [...identities];
    for (let i = 0; i < list.length; i += 100) {
      this._send({ type: 'subscribe', identities: list.slice(i, i + 100) });
    }
    // Requests interrupted by the reconnect, or made while disconnected.
    for (const [id, p] of this._pending) {
      if (!p.sent) {
        p.sent = true;
        this._send({ ...p.msg, id });
      }
    }
    if (first) {
      // Resolve `create` once the own user's snapshot arrived (or soon anyway).
      const self = this.user;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        self.off('_snapshot', finish);
        clearTimeout(t);
        this.emit('stateChanged', 'initialized');
        this._settleReady();
      };
      const t = setTimeout(finish, 2000);
      self.on('_snapshot', finish);
    } else {
      this._settleReady();
    }
  }

  /** @private */
  _setReachability(enabled, silent = false) {
    if (this.reachabilityEnabled === enabled) return;
    this.reachabilityEnabled = enabled;
    if (!silent) this.emit('reachabilityEnabledChanged', enabled);
  }

  /** @private a `user` snapshot: answers a subscribe (getUser, re-subscription, descriptor) */
  _onUser(msg) {
    const raw = msg.user;
    if (!raw || typeof raw.identity !== 'string') return;
    if (msg.id != null && this._pending.has(String(msg.id))) this._resolveReply(msg);
    const identity = raw.identity;
    const user = this._users.get(identity);
    if (user) {
      const reasons = user._apply(raw);
      user.emit('_snapshot');
      if (reasons.length) this._emitUpdated(user, reasons);
      return;
    }
    const entry = this._subscribing.get(identity);
    if (entry) {
      this._subscribing.delete(identity);
      clearTimeout(entry.timer);
      const created = new User(this, identity);
      created._apply(raw);
      this._users.set(identity, created);
      entry.resolve(created);
    }
  }

  /** @private a reachability (or profile) change of a subscribed user */
  _onUserUpdated(msg) {
    const raw = msg.user;
    if (!raw) return;
    const user = this._users.get(raw.identity);
    if (!user) return;
    const diff = user._apply(raw);
    const reasons = Array.isArray(msg.updateReasons) ? [...msg.updateReasons] : [];
    for (const r of diff) if (!reasons.includes(r)) reasons.push(r);
    if (reasons.length) this._emitUpdated(user, reasons);
  }

  /** @private */
  _emitUpdated(user, updateReasons) {
    const event = { user, updateReasons };
    user.emit('updated', event);
    this.emit('userUpdated', event);
  }

  /** @private an `error` frame: rejects the request it answers, else is reported */
  _onError(msg) {
    const err = new ReachdError(`reachd: ${msg.message || 'error'}`, { code: msg.code });
    if (msg.id != null) {
      const p = this._pending.get(String(msg.id));
      if (p) {
        this._pending.delete(String(msg.id));
        clearTimeout(p.timer);
        p.reject(err);
        return;
      }
      // A subscribe sent by getUser() carries an id that is not in _pending.
      const sub = [...this._subscribing.entries()].find(([, e]) => e.id === String(msg.id));
      if (sub) {
        this._subscribing.delete(sub[0]);
        clearTimeout(sub[1].timer);
        sub[1].reject(err);
        return;
      }
    }
    this.emit('connectionError', { terminal: false, message: msg.message, httpStatusCode: null, errorCode: msg.code ?? null });
  }

  // ------------------------------------------------------------------ requests

  /** @private */
  _newId() {
    return String(this._nextId++);
  }

  /**
   * Sends a message with an id and resolves with the reply of type `reply` (or rejects with
   * the `error` frame that echoes the id). Waits for the connection when there is none.
   * @private
   */
  _request(msg, reply) {
    const id = this._newId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this._pending.delete(id)) reject(new ReachdError(`reachd: no answer to '${msg.type}'`));
      }, this._options.requestTimeout);
      const entry = { msg, reply, resolve, reject, timer, sent: false };
      this._pending.set(id, entry);
      if (this.connectionState === 'connected') {
        entry.sent = this._send({ ...msg, id });
      }
    });
  }

  /** @private resolves the pending request a reply answers (by id, else the oldest of its kind) */
  _resolveReply(msg) {
    let key = msg.id != null ? String(msg.id) : null;
    if (key === null || !this._pending.has(key)) {
      key = null;
      for (const [id, p] of this._pending) {
        if (p.reply === msg.type && p.sent) {
          key = id;
          break;
        }
      }
    }
    if (key === null) return;
    const p = this._pending.get(key);
    if (p.reply !== msg.type) return;
    this._pending.delete(key);
    clearTimeout(p.timer);
    p.resolve(msg);
  }

  /** @private rejects every pending request and getUser() */
  _failAll(err) {
    for (const p of this._pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._pending.clear();
    for (const e of this._subscribing.values()) {
      clearTimeout(e.timer);
      e.reject(err);
    }
    this._subscribing.clear();
    this._settleReady(err);
  }

  /** @private */
  _send(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 /* OPEN */) return false;
    if (msg.type === 'subscribe' && msg.id != null && msg.identities.length === 1) {
      const e = this._subscribing.get(msg.identities[0]);
      if (e) e.id = msg.id;
    }
    ws.send(JSON.stringify(msg));
    return true;
  }

  /** @private sends when connected; otherwise drops (the next `ready` re-sends what matters) */
  _sendIfOpen(msg) {
    if (this.connectionState === 'connected') this._send(msg);
  }

  /** @private */
  async _unsubscribe(user) {
    if (user === this.user) throw new ReachdError("reachd: the client's own user cannot be unsubscribed");
    if (this._users.get(user.identity) !== user) return;
    this._users.delete(user.identity);
    user.isSubscribed = false;
    this._sendIfOpen({ type: 'unsubscribe', identities: [user.identity] });
  }

  /** @private */
  _assertOpen() {
    if (this._closed) throw new ReachdError('reachd: client shut down', { terminal: true });
  }

  // ------------------------------------------------------------------ keep-alive and expiry

  /**
   * Pings every `pingInterval`; a connection that has been silent for two intervals (plus a
   * second) is considered dead and replaced.
   * @private
   */
  _startPinging() {
    this._stopPinging();
    const every = Math.max(100, this.pingInterval);
    this._pingTimer = setInterval(() => {
      const ws = this._ws;
      if (!ws || ws.readyState !== 1) return;
      if (Date.now() - this._lastFrameAt > 2 * every + 1000) {
        // Stale: drop it ourselves and reconnect (resuming the session).
        this._ws = null;
        this._stopPinging();
        try {
          ws.close(CLOSE_NORMAL, 'stale');
        } catch {
          /* ignore */
        }
        this._scheduleReconnect();
        return;
      }
      this._send({ type: 'ping' });
    }, every);
  }

  /** @private */
  _stopPinging() {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  /** @private emits tokenAboutToExpire / tokenExpired from the token's `exp` */
  _scheduleExpiry() {
    this._clearExpiry();
    const exp = Number(decodeJwtPayload(this._token)?.exp);
    if (!Number.isFinite(exp)) return;
    const left = exp * 1000 - Date.now();
    const max = 2 ** 31 - 1;
    const warnIn = left - this._options.tokenAboutToExpireMs;
    const timers = [];
    if (left > 0 && warnIn < max) {
      timers.push(setTimeout(() => this.emit('tokenAboutToExpire', Math.max(0, Math.round((exp * 1000 - Date.now()) / 1000))), Math.max(0, warnIn)));
    }
    if (left > 0 && left < max) {
      // The server closes with 4001 at expiry; this covers a client that is disconnected then.
      timers.push(setTimeout(() => {
        if (this.connectionState !== 'connected' && this.connectionState !== 'denied') this._onTokenExpired('token expired');
      }, left + 1000));
    }
    for (const t of timers) t?.unref?.();
    this._expiryTimers = timers;
  }

  /** @private */
  _clearExpiry() {
    for (const t of this._expiryTimers) clearTimeout(t);
    this._expiryTimers = [];
  }
}

export default Client;
