'use strict';
// A small fake of reachd's client socket (docs/ARCHITECTURE.md §3.4), for testing the SDK's
// logic in Node: token check before the upgrade, `ready`, subscribe/user, ping/pong,
// register_push, updateToken, id echo, and hooks to drop or close connections from the test.
const http = require('node:http');
const { WebSocketServer } = require('ws');

const GOOD = /^good/; // tokens starting with "good" are accepted

class FakeReachd {
  constructor(opts = {}) {
    this.pingInterval = opts.pingInterval ?? 200;
    this.sessionTtl = opts.sessionTtl ?? 1000;
    this.reachabilityEnabled = opts.reachabilityEnabled ?? true;
    /** identity → user object as the server sends it */
    this.users = new Map();
    /** every accepted connection: {ws, url, token, resume, sessionId, received: []} */
    this.conns = [];
    this.rejected = []; // tokens refused at the upgrade
    this.nextSession = 1;
    this.ignoreTypes = new Set(); // message types the fake does not answer
    this.server = http.createServer((req, res) => this._http(req, res));
    this.wss = new WebSocketServer({ noServer: true });
    this.server.on('upgrade', (req, socket, head) => this._upgrade(req, socket, head));
  }

  addUser(identity, fields = {}) {
    const u = {
      identity,
      user_sid: 'US' + String(this.users.size + 1).padStart(32, '0'),
      friendly_name: null,
      attributes: '{}',
      is_online: false,
      is_notifiable: false,
      ...fields,
    };
    this.users.set(identity, u);
    return u;
  }

  async listen() {
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this.url;
  }

  async close() {
    for (const c of this.conns) c.ws.terminate();
    this.wss.close();
    this.server.closeAllConnections?.();
    await new Promise((r) => this.server.close(r));
  }

  /** the newest open connection */
  get last() {
    return this.conns[this.conns.length - 1];
  }

  /** sends a frame to every open connection */
  broadcast(msg) {
    for (const c of this.conns) if (c.ws.readyState === 1) c.ws.send(JSON.stringify(msg));
  }

  /** resolves when a connection received a message matching pred */
  waitFor(pred, timeout = 3000) {
    return new Promise((resolve, reject) => {
      const start = Date.now();
      const tick = () => {
        for (const c of this.conns) {
          const m = c.received.find((x) => pred(x, c));
          if (m) return resolve({ conn: c, msg: m });
        }
        if (Date.now() - start > timeout) return reject(new Error('fake server: timed out waiting for a message'));
        setTimeout(tick, 10);
      };
      tick();
    });
  }

  waitForConnections(n, timeout = 5000) {
    return new Promise((resolve, reject) => {
      const start = Date.now();
      const tick = () => {
        if (this.conns.length >= n) return resolve(this.conns[n - 1]);
        if (Date.now() - start > timeout) return reject(new Error(`fake server: only ${this.conns.length} connections`));
        setTimeout(tick, 10);
      };
      tick();
    });
  }

  _http(req, res) {
    const url = new URL(req.url, 'http://x');
    const deny = () => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code: 20101, message: 'Invalid Access Token', more_info: 'https://www.twilio.com/docs/errors/20101', status: 401 }));
    };
    if (url.pathname === '/client/v1/socket') {
      const token = url.searchParams.get('token') || '';
      if (!GOOD.test(token)) return deny();
      res.writeHead(400, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ code: 20001, message: 'a WebSocket upgrade is required', status: 400 }));
    }
    const m = /^\/client\/v1\/users\/([^/]+)$/.exec(url.pathname);
    if (m) {
      const auth = req.headers.authorization || '';
      if (!GOOD.test(auth.replace(/^Bearer /, ''))) return deny();
      const u = this.users.get(decodeURIComponent(m[1]));
      if (!u) {
        res.writeHead(404, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ code: 20404, message: 'not found', status: 404 }));
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ ...u, reachability_enabled: this.reachabilityEnabled }));
    }
    res.writeHead(404);
    res.end();
  }

  _upgrade(req, socket, head) {
    const url = new URL(req.url, 'http://x');
    const token = url.searchParams.get('token') || '';
    if (url.pathname !== '/client/v1/socket' || !GOOD.test(token)) {
      this.rejected.push(token);
      socket.write('HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"code":20101}');
      socket.destroy();
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this._session(ws, url, token));
  }

  _session(ws, url, token) {
    const resume = url.searchParams.get('resume');
    const identity = token.split(':')[1] || 'alice';
    if (!this.users.has(identity)) this.addUser(identity, { is_online: true });
    const sessionId = resume || 'SE' + String(this.nextSession++).padStart(32, '0');
    const conn = { ws, url: url.toString(), token, resume, sessionId, identity, received: [] };
    this.conns.push(conn);
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      conn.received.push(msg);
      if (this.ignoreTypes.has(msg.type)) return;
      this._answer(conn, msg);
    });
    ws.send(JSON.stringify({
      type: 'ready',
      session_id: sessionId,
      identity,
      service_sid: 'IS' + '0'.repeat(32),
      reachability_enabled: this.reachabilityEnabled,
      ping_interval: this.pingInterval,
      session_ttl: this.sessionTtl,
      resumed: Boolean(resume),
    }));
  }

  _answer(conn, msg) {
    const id = msg.id ?? null;
    const send = (m) => conn.ws.send(JSON.stringify({ ...m, id }));
    switch (msg.type) {
      case 'ping':
        return send({ type: 'pong' });
      case 'subscribe':
        for (const identity of msg.identities) {
          const u = this.users.get(identity);
          if (u) send({ type: 'user', user: u });
          else send({ type: 'error', code: 20404, message: `user ${identity} not found` });
        }
        return;
      case 'unsubscribe':
        return send({ type: 'unsubscribed' });
      case 'register_push':
        if (!['apn', 'gcm', 'fcm'].includes(msg.binding_type)) {
          return send({ type: 'error', code: 20001, message: 'Invalid binding_type' });
        }
        this.users.get(conn.identity).is_notifiable = true;
        return send({ type: 'push_registered', binding: { sid: 'BS' + '1'.repeat(32), binding_type: msg.binding_type, address: msg.address } });
      case 'updateToken':
        if (!GOOD.test(msg.token)) return send({ type: 'error', code: 20101, message: 'Invalid Access Token' });
        conn.token = msg.token;
        return send({ type: 'tokenUpdated', expires_at: 2000000000 });
      default:
        return send({ type: 'error', code: 20001, message: `unknown message type ${msg.type}` });
    }
  }
}

module.exports = { FakeReachd };
