// reachd live dashboard. Plain JS, no dependencies; all text goes through textContent.
(function () {
  'use strict';

  var EVENT_TYPES = ['user.reachability_updated', 'user.added', 'user.updated', 'user.deleted'];
  var STATS_EVERY_MS = 5000;        // delivery health / counters refresh
  var STATS_MIN_GAP_MS = 1000;      // at most one stats fetch per second after events
  var SERVICES_EVERY_MS = 30000;    // service list + per-service online counts
  var MAX_EVENT_ROWS = 200;
  var MAX_USERS = 5000;
  var USERS_PAGE = 200;

  // ---------- small helpers ----------

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function fmtInt(n) {
    if (n === null || n === undefined || n === '') return '—';
    var v = Number(n);
    return isFinite(v) ? v.toLocaleString() : String(n);
  }

  function parseTime(iso) {
    if (!iso) return null;
    var t = Date.parse(iso);
    return isNaN(t) ? null : t;
  }

  function fmtDuration(ms, precise) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + ' s';
    var m = Math.floor(s / 60);
    if (m < 60) return m + ' min' + (precise && s % 60 ? ' ' + (s % 60) + ' s' : '');
    var h = Math.floor(m / 60);
    if (h < 48) return h + ' h ' + (m % 60) + ' min';
    return Math.floor(h / 24) + ' d';
  }

  function fmtAgo(iso) {
    var t = parseTime(iso);
    if (t === null) return '—';
    var ms = Date.now() - t;
    if (ms < 1000) return 'just now';
    return fmtDuration(ms) + ' ago';
  }

  function pad2(n) { return (n < 10 ? '0' : '') + n; }

  function fmtClock(iso) {
    var t = parseTime(iso);
    if (t === null) return iso ? String(iso) : '—';
    var d = new Date(t);
    var s = pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
    var now = new Date();
    if (d.toDateString() !== now.toDateString()) {
      s = d.getFullYear() + '-' + pad2(d.getMonth() + 1) + '-' + pad2(d.getDate()) + ' ' + s;
    }
    return s;
  }

  function humanize(word) { return String(word).replace(/_/g, ' '); }

  // ---------- error banner ----------

  var errors = new Map();

  function setError(key, message) {
    errors.set(key, message);
    renderErrors();
  }

  function clearError(key) {
    if (errors.delete(key)) renderErrors();
  }

  function renderErrors() {
    var list = $('banner-list');
    clear(list);
    errors.forEach(function (msg) { list.appendChild(el('li', null, msg)); });
    $('banner').hidden = errors.size === 0;
  }

  function describe(err) {
    if (!err) return 'unknown error';
    if (err.status === 401 || err.status === 403) {
      return 'Not authorized (' + err.status + '). Reload the page to sign in with the account SID and auth token.';
    }
    return err.message || String(err);
  }

  // ---------- HTTP ----------

  // An absolute URL on this origin. `location.origin` never holds credentials, whereas a
  // relative path resolves against the page's URL, which does when the dashboard was opened
  // as http://user:pass@host/dashboard — and fetch() refuses such URLs. The browser still
  // sends the credentials it cached for this origin.
  function abs(path) { return location.origin + path; }

  function api(path) {
    var request;
    try {
      request = fetch(abs(path), { credentials: 'same-origin', headers: { 'Accept': 'application/json' } });
    } catch (err) {
      request = Promise.reject(err);
    }
    return request
      .catch(function (err) {
        var e = new Error('Network error: cannot reach the server (' + path.split('?')[0] + ')' +
          (err && err.message ? ': ' + err.message : ''));
        e.status = 0;
        throw e;
      })
      .then(function (res) {
        return res.text().then(function (body) {
          var json = null;
          if (body) {
            try { json = JSON.parse(body); } catch (_) { json = null; }
          }
          if (!res.ok) {
            var detail = json && (json.message || json.error || (json.detail && String(json.detail)));
            var e = new Error('HTTP ' + res.status + ' on ' + path.split('?')[0] + (detail ? ': ' + detail : ''));
            e.status = res.status;
            throw e;
          }
          if (json === null) {
            var pe = new Error('Invalid JSON from ' + path.split('?')[0]);
            pe.status = res.status;
            throw pe;
          }
          return json;
        });
      });
  }

  function svcPath(sid, rest) {
    return '/api/v1/services/' + encodeURIComponent(sid) + rest;
  }

  // ---------- services list ----------

  var services = [];                 // [{sid, friendly_name, reachability_enabled}]
  var serviceStats = new Map();      // sid -> stats JSON
  var serviceItems = new Map();      // sid -> {li, btn, reach, online}

  function loadServices() {
    return api('/chat/v2/Services?PageSize=100').then(function (json) {
      clearError('services');
      services = Array.isArray(json.services) ? json.services : [];
      renderServiceList();
      return services;
    }, function (err) {
      setError('services', 'Could not load services — ' + describe(err));
      throw err;
    });
  }

  function renderServiceList() {
    var list = $('service-list');
    clear(list);
    serviceItems.clear();
    $('services-empty').hidden = services.length !== 0;
    services.forEach(function (s) {
      var li = el('li');
      var btn = el('button', 'svc');
      btn.type = 'button';
      btn.title = s.sid;
      var name = el('span', 'svc-name', s.friendly_name || s.sid);
      var sidEl = el('code', 'svc-sid', s.sid);
      var meta = el('span', 'svc-meta');
      var reach = el('span', 'pill');
      var online = el('span', 'svc-online', '… online');
      meta.appendChild(reach);
      meta.appendChild(online);
      btn.appendChild(name);
      btn.appendChild(sidEl);
      btn.appendChild(meta);
      btn.addEventListener('click', function () { navigate(s.sid); });
      li.appendChild(btn);
      list.appendChild(li);
      serviceItems.set(s.sid, { li: li, btn: btn, reach: reach, online: online });
      updateServiceItem(s.sid);
    });
    markActiveService();
  }

  function serviceInfo(sid) {
    for (var i = 0; i < services.length; i++) if (services[i].sid === sid) return services[i];
    return null;
  }

  function reachabilityOf(sid) {
    var st = serviceStats.get(sid);
    if (st && typeof st.reachability_enabled === 'boolean') return st.reachability_enabled;
    var s = serviceInfo(sid);
    return s ? !!s.reachability_enabled : null;
  }

  function setReachPill(node, enabled) {
    node.className = 'pill ' + (enabled === true ? 'pill-on' : enabled === false ? 'pill-off' : 'pill-unk');
    node.textContent = enabled === true ? 'reachability on' : enabled === false ? 'reachability off' : 'reachability ?';
  }

  function updateServiceItem(sid) {
    var item = serviceItems.get(sid);
    if (!item) return;
    setReachPill(item.reach, reachabilityOf(sid));
    var st = serviceStats.get(sid);
    item.online.textContent = st ? fmtInt(st.online_users) + ' online' : '… online';
  }

  function markActiveService() {
    serviceItems.forEach(function (item, sid) {
      item.btn.classList.toggle('active', !!current && current.sid === sid);
      if (current && current.sid === sid) item.btn.setAttribute('aria-current', 'true');
      else item.btn.removeAttribute('aria-current');
    });
  }

  function refreshAllServiceStats() {
    services.forEach(function (s) {
      if (current && current.sid === s.sid) return; // the selected one is refreshed more often
      api(svcPath(s.sid, '/stats')).then(function (st) {
        serviceStats.set(s.sid, st);
        updateServiceItem(s.sid);
        clearError('svcstats:' + s.sid);
      }, function (err) {
        setError('svcstats:' + s.sid, 'Stats of ' + (s.friendly_name || s.sid) + ' unavailable — ' + describe(err));
      });
    });
  }

  // ---------- selection ----------

  var current = null;   // the selected service's live state
  var generation = 0;

  function hashSid() {
    var h = location.hash.replace(/^#/, '');
    try { h = decodeURIComponent(h); } catch (_) { /* keep raw */ }
    return h.trim();
  }

  function navigate(sid) {
    if (hashSid() === sid) select(sid);
    else location.hash = encodeURIComponent(sid);   // hashchange -> select
  }

  function teardown() {
    if (!current) return;
    current.closed = true;
    if (current.es) current.es.close();
    if (current.retryTimer) clearTimeout(current.retryTimer);
    if (current.statsTimer) clearTimeout(current.statsTimer);
    current = null;
  }

  function select(sid, retry) {
    if (!sid) return;
    if (current && current.sid === sid) return;
    teardown();
    errors.forEach(function (_, k) {
      if (k === 'stats' || k === 'users' || k === 'events' || k === 'stream' || k === 'event-parse') errors.delete(k);
    });
    renderErrors();

    generation += 1;
    current = {
      sid: sid,
      gen: generation,
      users: new Map(),        // identity -> {data, row, cells}
      seenEvents: new Set(),
      cursor: null,
      es: null,
      retry: retry || 0,
      retryTimer: null,
      statsTimer: null,
      statsInFlight: false,
      lastStatsAt: 0,
      closed: false,
      fatal: false
    };
    var ctx = current;
    markActiveService();
    renderServiceHead();
    resetPanels();
    $('main').hidden = false;
    setConn('idle', 'loading');

    refreshStats(ctx);

    // Tail first (gives the cursor), then the users (state at or after the cursor), then stream
    // everything after the cursor: replayed events are applied idempotently via `sequence`.
    api(svcPath(sid, '/events?tail=50')).then(function (json) {
      if (!alive(ctx)) return;
      clearError('events');
      var evs = Array.isArray(json.events) ? json.events : [];
      evs.forEach(function (ev) { addTransition(ctx, ev, false); });
      updateEventsEmpty();
      ctx.cursor = json.next_cursor != null ? String(json.next_cursor)
        : (evs.length ? String(evs[evs.length - 1].id) : '0');
    }, function (err) {
      if (!alive(ctx)) return;
      var known = services.length === 0 || !!serviceInfo(ctx.sid);
      setError('events', 'Could not load recent events — ' + describe(err) +
        (known ? '' : ' (' + ctx.sid + ' is not in this account\'s service list)'));
      ctx.cursor = null;
      ctx.fatal = err.status === 404 || err.status === 401 || err.status === 403;
    }).then(function () {
      if (!alive(ctx)) return;
      return loadUsers(ctx);
    }).then(function () {
      if (!alive(ctx)) return;
      if (ctx.cursor === null) {
        if (ctx.fatal) { setConn('down', 'no stream'); return; }
        // Without a cursor we cannot resume exactly; retry the whole load later.
        scheduleReload(ctx);
        return;
      }
      openStream(ctx);
    });
  }

  function alive(ctx) { return !ctx.closed && current === ctx; }

  function scheduleReload(ctx) {
    setConn('reconnecting');
    var delay = backoff(ctx);
    ctx.retryTimer = setTimeout(function () {
      if (!alive(ctx)) return;
      var sid = ctx.sid, retry = ctx.retry;
      teardown();
      select(sid, retry);
    }, delay);
  }

  function backoff(ctx) {
    ctx.retry += 1;
    return Math.min(30000, 1000 * Math.pow(2, Math.min(ctx.retry - 1, 5)));
  }

  function renderServiceHead() {
    if (!current) return;
    var s = serviceInfo(current.sid);
    var st = serviceStats.get(current.sid);
    var name = (st && st.friendly_name) || (s && s.friendly_name) || current.sid;
    $('svc-name').textContent = name;
    $('svc-sid').textContent = current.sid;
    setReachPill($('svc-reach'), reachabilityOf(current.sid));
    document.title = name + ' · reachd';
  }

  function resetPanels() {
    clear($('users-body'));
    clear($('events-body'));
    $('users-empty').hidden = true;
    $('users-loading').hidden = false;
    $('events-empty').hidden = true;
    $('users-count').textContent = '';
    ['stat-users', 'stat-online', 'stat-sessions', 'deliv-delivered', 'deliv-failed', 'deliv-pending', 'deliv-oldest']
      .forEach(function (id) { $(id).textContent = '—'; });
    $('deliv-oldest').classList.remove('stale');
    $('deliv-updated').textContent = '';
  }

  // ---------- stats ----------

  function refreshStats(ctx) {
    if (!alive(ctx) || ctx.statsInFlight) return;
    ctx.statsInFlight = true;
    ctx.lastStatsAt = Date.now();
    api(svcPath(ctx.sid, '/stats')).then(function (st) {
      ctx.statsInFlight = false;
      serviceStats.set(ctx.sid, st);
      updateServiceItem(ctx.sid);
      if (!alive(ctx)) return;
      clearError('stats');
      renderStats(st);
    }, function (err) {
      ctx.statsInFlight = false;
      if (!alive(ctx)) return;
      setError('stats', 'Could not load service stats — ' + describe(err));
    });
  }

  // After events: at most one stats fetch per second.
  function statsSoon(ctx) {
    if (ctx.statsTimer) return;
    var wait = Math.max(0, STATS_MIN_GAP_MS - (Date.now() - ctx.lastStatsAt));
    ctx.statsTimer = setTimeout(function () {
      ctx.statsTimer = null;
      if (ctx.statsInFlight) { statsSoon(ctx); return; }
      refreshStats(ctx);
    }, wait);
  }

  function renderStats(st) {
    renderServiceHead();
    $('stat-users').textContent = fmtInt(st.users);
    $('stat-online').textContent = fmtInt(st.online_users);
    $('stat-sessions').textContent = fmtInt(st.live_sessions);
    var d = st.deliveries || {};
    $('deliv-delivered').textContent = fmtInt(d.delivered);
    $('deliv-failed').textContent = fmtInt(d.failed);
    $('deliv-pending').textContent = fmtInt(d.pending);
    var age = d.oldest_pending_age_ms;
    var oldest = $('deliv-oldest');
    if (age === null || age === undefined) {
      oldest.textContent = 'none';
      oldest.classList.remove('stale');
    } else {
      oldest.textContent = fmtDuration(Number(age), true);
      oldest.classList.toggle('stale', Number(age) >= 60000);
    }
    $('deliv-failed').classList.toggle('nonzero', Number(d.failed) > 0);
    $('deliv-updated').textContent = '· updated ' + fmtClock(new Date().toISOString());
  }

  // ---------- users ----------

  function loadUsers(ctx) {
    var loaded = 0;
    function page(token) {
      var q = '/users?limit=' + USERS_PAGE + (token ? '&page_token=' + encodeURIComponent(token) : '');
      return api(svcPath(ctx.sid, q)).then(function (json) {
        if (!alive(ctx)) return;
        var list = Array.isArray(json.users) ? json.users : [];
        list.forEach(function (u) { upsertUser(ctx, u, false); });
        loaded += list.length;
        updateUsersMeta(ctx);
        if (json.next_page_token && loaded < MAX_USERS) return page(json.next_page_token);
        if (json.next_page_token) {
          setError('users-cap', 'Showing the first ' + loaded + ' users only; live updates still add rows.');
        }
      });
    }
    clearError('users-cap');
    return page(null).then(function () {
      if (!alive(ctx)) return;
      clearError('users');
      $('users-loading').hidden = true;
      updateUsersMeta(ctx);
    }, function (err) {
      if (!alive(ctx)) return;
      $('users-loading').hidden = true;
      setError('users', 'Could not load users — ' + describe(err));
    });
  }

  function makeRow(identity) {
    var tr = el('tr', 'user-row');
    tr.setAttribute('data-identity', identity);
    var cells = {
      identity: el('td', 'identity'),
      name: el('td', 'name'),
      online: el('td'),
      notifiable: el('td'),
      lastSeen: el('td', 'when'),
      sessions: el('td', 'num')
    };
    cells.identity.appendChild(el('span', 'mono', identity));
    cells.onlineBadge = el('span', 'badge online-badge');
    cells.notifBadge = el('span', 'badge notifiable-badge');
    cells.online.appendChild(cells.onlineBadge);
    cells.notifiable.appendChild(cells.notifBadge);
    tr.appendChild(cells.identity);
    tr.appendChild(cells.name);
    tr.appendChild(cells.online);
    tr.appendChild(cells.notifiable);
    tr.appendChild(cells.lastSeen);
    tr.appendChild(cells.sessions);
    return { row: tr, cells: cells };
  }

  function insertSorted(ctx, tr, identity) {
    var body = $('users-body');
    var rows = body.children;
    // Rows are kept sorted by identity; find the first one that sorts after this identity.
    var lo = 0, hi = rows.length;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (compareIds(rows[mid].getAttribute('data-identity'), identity) <= 0) lo = mid + 1;
      else hi = mid;
    }
    body.insertBefore(tr, rows[lo] || null);
  }

  function compareIds(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

  function upsertUser(ctx, u, live) {
    if (!u || u.identity === undefined || u.identity === null) return null;
    var identity = String(u.identity);
    var entry = ctx.users.get(identity);
    if (!entry) {
      var made = makeRow(identity);
      entry = { data: {}, row: made.row, cells: made.cells };
      ctx.users.set(identity, entry);
      insertSorted(ctx, made.row, identity);
      applyFilterTo(entry);
    }
    var d = entry.data;
    Object.keys(u).forEach(function (k) { d[k] = u[k]; });
    renderUser(entry);
    if (live) flash(entry.row);
    return entry;
  }

  function badgeState(v) { return v === true ? 'yes' : v === false ? 'no' : 'unk'; }

  function renderUser(entry) {
    var d = entry.data, c = entry.cells;
    c.name.textContent = d.friendly_name || '';
    c.name.title = d.friendly_name || '';
    var on = badgeState(d.is_online);
    c.onlineBadge.textContent = on === 'yes' ? 'online' : on === 'no' ? 'offline' : 'unknown';
    c.onlineBadge.className = 'badge online-badge b-' + (on === 'yes' ? 'on' : on === 'no' ? 'off' : 'unk');
    if (on === 'yes' && d.online_since) c.onlineBadge.title = 'online since ' + d.online_since;
    else c.onlineBadge.removeAttribute('title');
    var nt = badgeState(d.is_notifiable);
    c.notifBadge.textContent = nt === 'yes' ? 'notifiable' : nt === 'no' ? 'not notifiable' : 'unknown';
    c.notifBadge.className = 'badge notifiable-badge b-' + (nt === 'yes' ? 'notif' : nt === 'no' ? 'off' : 'unk');
    renderLastSeen(entry);
    c.sessions.textContent = d.session_count === null || d.session_count === undefined ? '—' : fmtInt(d.session_count);
    entry.row.classList.toggle('is-online', on === 'yes');
  }

  function renderLastSeen(entry) {
    var d = entry.data, cell = entry.cells.lastSeen;
    var text = fmtAgo(d.last_seen);
    if (cell.textContent !== text) cell.textContent = text;
    cell.title = d.last_seen ? String(d.last_seen) : '';
  }

  function removeUser(ctx, identity) {
    var entry = ctx.users.get(identity);
    if (!entry) return;
    ctx.users.delete(identity);
    if (entry.row.parentNode) entry.row.parentNode.removeChild(entry.row);
  }

  function updateUsersMeta(ctx) {
    var total = ctx.users.size, online = 0;
    ctx.users.forEach(function (e) { if (e.data.is_online === true) online += 1; });
    $('users-count').textContent = '(' + total.toLocaleString() + ' shown · ' + online.toLocaleString() + ' online)';
    $('users-empty').hidden = total !== 0 || !$('users-loading').hidden;
  }

  function flash(tr) {
    tr.classList.remove('flash');
    void tr.offsetWidth; // restart the animation
    tr.classList.add('flash');
  }

  // ---------- filter ----------

  var filterText = '';

  function applyFilterTo(entry) {
    if (!filterText) { entry.row.hidden = false; return; }
    var hay = (String(entry.data.identity || entry.row.getAttribute('data-identity')) + ' ' +
      String(entry.data.friendly_name || '')).toLowerCase();
    entry.row.hidden = hay.indexOf(filterText) === -1;
  }

  function applyFilter() {
    filterText = $('user-filter').value.trim().toLowerCase();
    if (current) current.users.forEach(applyFilterTo);
  }

  // ---------- live events ----------

  function applyEvent(ctx, ev) {
    var d = ev.data || {};
    if (d.identity === undefined || d.identity === null) return;
    var identity = String(d.identity);
    if (ev.type === 'user.deleted') {
      removeUser(ctx, identity);
      updateUsersMeta(ctx);
      return;
    }
    var existing = ctx.users.get(identity);
    var prev = existing ? existing.data : null;
    // Replays (the window between the tail and the users page) must not move a row backwards.
    if (prev && typeof prev.sequence === 'number' && typeof d.sequence === 'number' && d.sequence < prev.sequence) {
      return;
    }
    var patch = { identity: identity };
    if (d.user_sid) patch.user_sid = d.user_sid;
    if ('is_online' in d) patch.is_online = d.is_online;
    if ('is_notifiable' in d) patch.is_notifiable = d.is_notifiable;
    if (d.last_seen) patch.last_seen = d.last_seen;
    if ('session_count' in d) patch.session_count = d.session_count;
    if (typeof d.sequence === 'number') patch.sequence = d.sequence;
    if (d.is_online === true && !(prev && prev.is_online === true)) patch.online_since = ev.timestamp || null;
    if (d.is_online !== true && 'is_online' in d) patch.online_since = null;
    upsertUser(ctx, patch, true);
    updateUsersMeta(ctx);
  }

  function describeChange(ev) {
    var d = ev.data || {};
    var parts = [];
    var reasons = Array.isArray(d.update_reasons) ? d.update_reasons : [];
    if (ev.type === 'user.reachability_updated') {
      var onl = reasons.indexOf('reachabilityOnline') !== -1;
      var ntf = reasons.indexOf('reachabilityNotifiable') !== -1;
      if (!onl && !ntf) { onl = true; ntf = true; }
      if (onl) parts.push(badgeFor(d.is_online, 'online', 'offline', 'on'));
      if (ntf) parts.push(badgeFor(d.is_notifiable, 'notifiable', 'not notifiable', 'notif'));
      return parts;
    }
    var label = ev.type === 'user.added' ? 'user added' : ev.type === 'user.deleted' ? 'user deleted'
      : ev.type === 'user.updated' ? 'user updated' : String(ev.type || 'event');
    parts.push(el('span', 'chg chg-' + String(ev.type || '').replace(/[^a-z]/g, ''), label));
    var other = reasons.filter(function (r) { return r !== 'reachabilityOnline' && r !== 'reachabilityNotifiable'; });
    if (ev.type === 'user.updated' && other.length) parts.push(el('span', 'muted small', other.join(', ')));
    return parts;
  }

  function badgeFor(v, yes, no, cls) {
    var s = badgeState(v);
    var text = s === 'yes' ? yes : s === 'no' ? no : (yes + ' ?');
    return el('span', 'badge b-' + (s === 'yes' ? cls : s === 'no' ? 'off' : 'unk'), text);
  }

  function addTransition(ctx, ev, live) {
    if (!ev) return;
    var id = ev.id !== undefined && ev.id !== null ? String(ev.id) : null;
    if (id !== null) {
      if (ctx.seenEvents.has(id)) return;
      ctx.seenEvents.add(id);
    }
    var d = ev.data || {};
    var tr = el('tr', 'event-row');
    if (id !== null) tr.setAttribute('data-event-id', id);
    var tdTime = el('td', 'when', fmtClock(ev.timestamp));
    tdTime.title = ev.timestamp ? String(ev.timestamp) : '';
    var tdId = el('td', 'identity');
    tdId.appendChild(el('span', 'mono', d.identity !== undefined && d.identity !== null ? String(d.identity) : '—'));
    var tdChg = el('td', 'change');
    describeChange(ev).forEach(function (p, i) {
      if (i) tdChg.appendChild(document.createTextNode(' '));
      tdChg.appendChild(p);
    });
    var tdCause = el('td', 'cause');
    tdCause.appendChild(document.createTextNode(d.reason ? humanize(d.reason) : (ev.type === 'user.reachability_updated' ? '—' : '')));
    if (d.source) {
      tdCause.appendChild(document.createTextNode(' '));
      tdCause.appendChild(el('span', 'src', String(d.source)));
    }
    tr.appendChild(tdTime);
    tr.appendChild(tdId);
    tr.appendChild(tdChg);
    tr.appendChild(tdCause);
    var body = $('events-body');
    body.insertBefore(tr, body.firstChild);   // newest first
    while (body.children.length > MAX_EVENT_ROWS) body.removeChild(body.lastChild);
    if (live) flash(tr);
  }

  function updateEventsEmpty() {
    $('events-empty').hidden = $('events-body').children.length !== 0;
  }

  function onStreamEvent(ctx, e) {
    if (!alive(ctx)) return;
    var ev;
    try {
      ev = JSON.parse(e.data);
    } catch (err) {
      setError('event-parse', 'Received an unreadable event from the stream (id ' + (e.lastEventId || '?') + ').');
      return;
    }
    if (!ev || typeof ev !== 'object') return;
    if (!ev.type) ev.type = e.type;
    if (ev.id === undefined && e.lastEventId) ev.id = e.lastEventId;
    if (e.lastEventId) ctx.cursor = String(e.lastEventId);
    else if (ev.id !== undefined) ctx.cursor = String(ev.id);
    var dup = ev.id !== undefined && ctx.seenEvents.has(String(ev.id));
    addTransition(ctx, ev, true);
    updateEventsEmpty();
    if (!dup) applyEvent(ctx, ev);
    statsSoon(ctx);
  }

  function openStream(ctx) {
    if (!alive(ctx)) return;
    if (typeof EventSource === 'undefined') {
      setError('stream', 'This browser does not support EventSource; live updates are off.');
      setConn('down');
      return;
    }
    var url = svcPath(ctx.sid, '/events?after=' + encodeURIComponent(ctx.cursor || '0'));
    var es;
    try {
      es = new EventSource(abs(url));
    } catch (err) {
      setError('stream', 'Could not open the event stream — ' + describe(err));
      reconnectLater(ctx);
      return;
    }
    ctx.es = es;
    setConn(ctx.retry ? 'reconnecting' : 'connecting');
    es.onopen = function () {
      if (!alive(ctx) || ctx.es !== es) return;
      ctx.retry = 0;
      clearError('stream');
      setConn('live');
    };
    es.onerror = function () {
      if (!alive(ctx) || ctx.es !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (HTTP error or bad content type): retry ourselves with backoff.
        es.close();
        ctx.es = null;
        reconnectLater(ctx);
      } else {
        setConn('reconnecting'); // the browser retries by itself with Last-Event-ID
      }
    };
    EVENT_TYPES.forEach(function (type) {
      es.addEventListener(type, function (e) { onStreamEvent(ctx, e); });
    });
    // Unnamed events, should the server ever send some.
    es.onmessage = function (e) { onStreamEvent(ctx, e); };
  }

  function reconnectLater(ctx) {
    var delay = backoff(ctx);
    setConn('reconnecting');
    setError('stream', 'Event stream disconnected; retrying in ' + Math.round(delay / 1000) + ' s.');
    ctx.retryTimer = setTimeout(function () {
      ctx.retryTimer = null;
      if (!alive(ctx)) return;
      // Probe with a plain request so an auth/404 problem shows up as a readable error.
      api(svcPath(ctx.sid, '/events?tail=1')).then(function () {
        openStream(ctx);
      }, function (err) {
        if (!alive(ctx)) return;
        setError('stream', 'Event stream unavailable — ' + describe(err));
        reconnectLater(ctx);
      });
    }, delay);
  }

  // ---------- connection indicator ----------

  var CONN_TEXT = { idle: 'idle', connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…', down: 'offline' };

  function setConn(state, text) {
    var node = $('conn');
    node.className = 'conn conn-' + state;
    $('conn-text').textContent = text || CONN_TEXT[state] || state;
  }

  // ---------- timers ----------

  function tick() {
    if (!current) return;
    current.users.forEach(renderLastSeen);
  }

  function periodicStats() {
    if (current && !document.hidden) refreshStats(current);
  }

  function periodicServices() {
    if (document.hidden) return;
    loadServices().then(function () {
      if (!current) selectInitial();
      refreshAllServiceStats();
      if (current) renderServiceHead();
    }, function () { /* banner already shown */ });
  }

  // ---------- boot ----------

  function selectInitial() {
    var sid = hashSid();
    if (!sid && services.length) {
      sid = services[0].sid;
      if (history.replaceState) history.replaceState(null, '', '#' + encodeURIComponent(sid));
      else location.hash = encodeURIComponent(sid);
    }
    if (sid) select(sid);
  }

  function init() {
    $('banner-close').addEventListener('click', function () { errors.clear(); renderErrors(); });
    $('user-filter').addEventListener('input', applyFilter);
    window.addEventListener('hashchange', function () {
      var sid = hashSid();
      if (sid) select(sid);
    });
    setInterval(tick, 1000);
    setInterval(periodicStats, STATS_EVERY_MS);
    setInterval(periodicServices, SERVICES_EVERY_MS);

    loadServices().then(function () {
      selectInitial();
      refreshAllServiceStats();
    }, function () {
      // Services failed: still try the service named in the hash, if any.
      var sid = hashSid();
      if (sid) select(sid);
      setTimeout(periodicServices, 5000);
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
