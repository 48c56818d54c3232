// Shared Fail2Ban site page: overview (/) and one address's story (/ip/<addr>).
// No framework, no innerHTML: every piece of data goes through textContent or a safe attribute.
(function () {
  'use strict';

  const TOKEN_KEY = 'shared-f2b-token';
  const PAGE = 50;
  const LATEST_MAX = 50;
  const SORTS = ['ip', 'jails', 'hosts', 'first_seen', 'last_seen', 'expires'];
  const SVGNS = 'http://www.w3.org/2000/svg';
  const COLORS = 10;

  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const nf = new Intl.NumberFormat('en-US');
  const num = (n) => (typeof n === 'number' && isFinite(n) ? nf.format(n) : '—');

  // --- DOM helpers
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  // A name from the wire: isolated so U+202E and friends cannot reorder the rest of the line.
  function bdi(text, cls) { return el('bdi', cls, text == null ? '' : String(text)); }
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    if (attrs) for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function append(parent, ...kids) {
    for (const k of kids) {
      if (k === null || k === undefined || k === false) continue;
      parent.append(k);
    }
    return parent;
  }
  function joined(items, sep) {
    const f = document.createDocumentFragment();
    items.forEach((it, i) => { if (i) f.append(sep); f.append(it); });
    return f;
  }
  function titled(e, text) { e.title = text == null ? '' : String(text); return e; }
  function addrLink(addr) {
    const a = el('a', 'ip', addr);
    a.href = '/ip/' + encodeURIComponent(String(addr));
    return a;
  }
  // An order's net: one address links to its story, a wider net to the overview filtered by it.
  function netLink(net) {
    if (net === null || net === undefined || net === '') return el('span', 'muted', '—');
    const s = String(net);
    const i = s.indexOf('/');
    if (i < 0) return addrLink(s);
    const host = s.slice(0, i), len = s.slice(i + 1);
    if ((len === '32' && !host.includes(':')) || len === '128') {
      const a = addrLink(host);
      a.textContent = s;
      return a;
    }
    const a = el('a', 'ip', s);
    a.href = '/?q=' + encodeURIComponent(s);
    a.title = 'active bans in ' + s;
    return a;
  }

  // --- time
  let skew = 0; // server clock minus ours
  const now = () => Date.now() + skew;
  const pad = (n) => String(n).padStart(2, '0');
  const isTime = (ms) => typeof ms === 'number' && isFinite(ms);
  function utc(ms) {
    const d = new Date(ms);
    return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) + ' ' +
      pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds()) + ' UTC';
  }
  function rel(ms) {
    const d = ms - now();
    const s = Math.abs(d) / 1000;
    if (s < 10) return 'just now';
    let t;
    if (s < 60) t = Math.floor(s) + ' s';
    else if (s < 3600) t = Math.floor(s / 60) + ' min';
    else if (s < 172800) t = Math.floor(s / 3600) + ' h';
    else if (s < 31536000 * 2) t = Math.floor(s / 86400) + ' d';
    else t = Math.floor(s / 31536000) + ' y';
    return d < 0 ? t + ' ago' : 'in ' + t;
  }
  // <time> with a relative text and the absolute UTC time as its title; re-rendered by the ticker.
  function timeEl(ms, none) {
    if (!isTime(ms)) return el('span', 'muted', none || '—');
    const t = el('time', 'rel', rel(ms));
    t.dateTime = new Date(ms).toISOString();
    t.title = utc(ms);
    t.dataset.t = String(ms);
    return t;
  }
  function tick() {
    for (const t of document.querySelectorAll('time[data-t]')) {
      const txt = rel(Number(t.dataset.t));
      if (t.textContent !== txt) t.textContent = txt;
    }
  }
  // Bantime in seconds as a person says it: 600 -> 10m, 5400 -> 1h30m, -1 -> permanent.
  function dur(sec) {
    if (typeof sec !== 'number' || !isFinite(sec)) return '—';
    if (sec < 0) return 'permanent';
    if (sec === 0) return '0s';
    let out = '';
    for (const [u, n] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
      if (sec >= n) { out += Math.floor(sec / n) + u; sec %= n; }
    }
    return out;
  }

  // --- token, fetch, errors
  function getToken() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; } }
  function setToken(t) { try { sessionStorage.setItem(TOKEN_KEY, t); } catch (_) { /* private mode */ } }
  function authHeaders(extra) {
    const h = Object.assign({}, extra);
    const t = getToken();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }

  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // No AbortController: an aborted fetch is a failed request in the browser's eyes; a stale
  // answer is dropped by its caller instead.
  async function getJSON(path) {
    let res;
    try {
      res = await fetch(path, { headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' });
    } catch (e) {
      throw new HttpError(0, 'The archiver cannot be reached (' + (e && e.message ? e.message : 'network error') + ').');
    }
    if (res.status === 401) {
      needToken();
      throw new HttpError(401, 'This site needs a feed token.');
    }
    if (!res.ok) {
      let text = '';
      try { text = (await res.text()).trim(); } catch (_) { /* keep the status */ }
      if (text.length > 300) text = text.slice(0, 300) + '…';
      throw new HttpError(res.status, (text || res.statusText || 'error') + ' (HTTP ' + res.status + ')');
    }
    return res.json();
  }

  let errorSource = '';
  function showError(e, source) {
    if (e && e.status === 401) return; // the token form says it
    errorSource = source || '';
    $('error-text').textContent = e && e.message ? e.message : String(e);
    $('error').hidden = false;
  }
  function clearError(source) {
    if (!$('error').hidden && (!source || source === errorSource)) $('error').hidden = true;
  }

  let tokenShown = false;
  function needToken() {
    const form = $('token-form');
    $('token-note').textContent = getToken() ? 'The stored token was refused.' : '';
    if (!tokenShown) {
      tokenShown = true;
      form.hidden = false;
      $('token').focus();
    }
  }
  function onTokenSubmit(ev) {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (!t) return;
    if (!/^[\x21-\x7e]+$/.test(t)) { $('token-note').textContent = 'A token is printable ASCII without spaces.'; return; }
    setToken(t);
    $('token').value = '';
    $('token-form').hidden = true;
    tokenShown = false;
    clearError();
    reloadAll();
    connectLive();
  }

  // --- live indicator + stream
  function setLive(state) {
    const up = state === 'up';
    body.dataset.live = up ? '1' : '0';
    const box = $('live');
    box.className = 'live st-' + state;
    $('live-text').textContent = up ? 'live' : state === 'token' ? 'token needed'
      : state === 'reconnecting' ? 'reconnecting…' : 'connecting…';
  }

  let liveCtl = null, liveTimer = null, liveMissed = false, lastByte = 0;

  function liveRetry(ms) {
    setLive('reconnecting');
    liveMissed = true;
    clearTimeout(liveTimer);
    liveTimer = setTimeout(connectLive, ms || 1500);
  }

  async function connectLive() {
    clearTimeout(liveTimer);
    liveTimer = null;
    if (liveCtl) return; // one stream at a time
    const ctl = liveCtl = new AbortController();
    if (!liveMissed) setLive('connecting');
    let retry = 1500;
    try {
      const res = await fetch('/v1/site/live', {
        headers: authHeaders({ Accept: 'text/event-stream' }), signal: ctl.signal, cache: 'no-store',
      });
      if (!res.ok || !res.body) {
        await res.text().catch(() => '');
        if (res.status === 401) { retry = 0; needToken(); setLive('token'); }
        else if (res.status === 503) retry = 5000;
        return;
      }
      setLive('up');
      lastByte = Date.now();
      if (liveMissed) { liveMissed = false; onReconnected(); }
      // Chromium reports a fetch body read to its end through a reader as aborted, a stream the
      // server closed too; reading one branch of a tee (the other cancelled) ends it as finished.
      res.clone().body.cancel().catch(() => {});
      await readSSE(res.body, ctl.signal, onMessage);
    } catch (_) {
      // network error or a dead stream: reconnect below
    } finally {
      if (liveCtl === ctl) liveCtl = null;
      if (retry) liveRetry(retry);
    }
  }

  // Server-sent events by hand: lines end with CRLF, LF or CR; "field: value"; ':' comments;
  // a blank line dispatches the message.
  async function readSSE(stream, signal, onMsg) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    signal.addEventListener('abort', () => { reader.cancel().catch(() => {}); }, { once: true });
    let buf = '', data = [], event = '', id = '';
    const line = (l) => {
      if (l === '') {
        if (data.length) onMsg({ event: event || 'message', data: data.join('\n'), id });
        data = []; event = '';
        return;
      }
      if (l.charCodeAt(0) === 58) return; // ':' comment (keepalive)
      const i = l.indexOf(':');
      let field = l, value = '';
      if (i >= 0) {
        field = l.slice(0, i);
        value = l.slice(i + 1);
        if (value.charCodeAt(0) === 32) value = value.slice(1);
      }
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
      else if (field === 'id') { if (!value.includes('\0')) id = value; }
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      lastByte = Date.now();
      buf += value;
      let start = 0;
      for (let i = 0; i < buf.length; i++) {
        const c = buf.charCodeAt(i);
        if (c !== 10 && c !== 13) continue;
        if (c === 13 && i + 1 >= buf.length) break; // CR at the end: wait, an LF may follow
        line(buf.slice(start, i));
        if (c === 13 && buf.charCodeAt(i + 1) === 10) i++;
        start = i + 1;
      }
      buf = buf.slice(start);
      if (buf.length > 4 << 20) throw new Error('line too long');
    }
  }

  // A stream that went silent (no keepalive for 35 s) is dead even if TCP does not say so.
  function watchdog() {
    if (body.dataset.live === '1' && liveCtl && Date.now() - lastByte > 35000) liveCtl.abort();
  }

  function onMessage(m) {
    if (m.event === 'event') {
      let ev;
      try { ev = JSON.parse(m.data); } catch (_) { return; }
      if (!ev || typeof ev !== 'object') return;
      if (typeof ev.seq !== 'number') { const s = Number(m.id); if (isFinite(s)) ev.seq = s; }
      onLiveEvent(ev);
    } else if (m.event === 'lagged') {
      onLagged();
    }
  }

  // --- page dispatch
  const path = location.pathname;
  const isStory = path.startsWith('/ip/');
  let onLiveEvent = () => {};
  let onLagged = () => {};
  let onReconnected = () => {};
  let reloadAll = () => {};

  // The first-paint benchmark reads this mark (performance.getEntriesByName).
  function markReady() {
    if (body.dataset.ready !== '1') performance.mark('shared-f2b-ready');
    body.dataset.ready = '1';
  }

  // === overview
  function overview() {
    const st = readState();
    let range = 'hourly';
    let timeline = null;          // the server's timeline, bumped by live events
    const color = new Map();      // jail -> colour index, stable for the page's life
    let ovDone = false, bansDone = false;

    // --- state in the URL (?q=&sort=&order=&page=)
    function readState() {
      const p = new URLSearchParams(location.search);
      const sort = SORTS.includes(p.get('sort')) ? p.get('sort') : 'last_seen';
      const order = p.get('order') === 'asc' ? 'asc' : p.get('order') === 'desc' ? 'desc' : defaultOrder(sort);
      const page = Math.max(1, parseInt(p.get('page') || '1', 10) || 1);
      return { q: (p.get('q') || '').trim(), sort, order, offset: (page - 1) * PAGE };
    }
    function writeState() {
      const p = new URLSearchParams();
      if (st.q) p.set('q', st.q);
      if (st.sort !== 'last_seen' || st.order !== 'desc') { p.set('sort', st.sort); p.set('order', st.order); }
      if (st.offset) p.set('page', String(Math.floor(st.offset / PAGE) + 1));
      const s = p.toString();
      history.replaceState(null, '', s ? '/?' + s : '/');
    }
    function defaultOrder(sort) { return sort === 'ip' || sort === 'jails' ? 'asc' : 'desc'; }

    // --- refresh gate: coalesced, one at a time
    // A hidden tab asks nothing; it catches up in full when shown again.
    const R = { after: 0, full: false, again: false, busy: false, timer: null, hidden: false };
    function scheduleRefresh(after, full) {
      if (document.hidden) { R.hidden = true; return; }
      if (after > R.after) R.after = after;
      if (full) R.full = true;
      if (R.busy) { R.again = true; return; }
      if (!R.timer) R.timer = setTimeout(runRefresh, full ? 0 : 100);
    }
    async function runRefresh() {
      clearTimeout(R.timer);
      R.timer = null; R.busy = true; R.again = false;
      const after = R.after, full = R.full;
      R.after = 0; R.full = false;
      try {
        if (full) await Promise.all([loadOverview(), loadBans(after)]);
        else { await loadBans(after); await loadOverview(); }
      } finally {
        R.busy = false;
        if ((R.again || R.after || R.full) && !R.timer) R.timer = setTimeout(runRefresh, R.full ? 0 : 100);
      }
    }

    // --- overview data
    let ovGen = 0;
    async function loadOverview() {
      const gen = ++ovGen;
      try {
        const d = await getJSON('/v1/site/overview');
        if (gen !== ovGen) return;
        renderOverview(d);
        clearError('overview');
        if (!ovDone) { ovDone = true; if (bansDone) markReady(); }
      } catch (e) {
        if (gen === ovGen) showError(e, 'overview');
      }
    }

    function renderOverview(d) {
      if (isTime(d.now)) skew = d.now - Date.now();
      $('active').textContent = num(d.active);
      renderHealth(d.health || {});
      renderBars($('by-origin'), d.by_origin || [], 'no active bans');
      renderBars($('by-jail'), d.by_jail || [], 'no jail bans');
      renderTop(d.top || []);
      if (d.timeline) { timeline = d.timeline; drawChart(); }
      mergeLatest(Array.isArray(d.latest) ? d.latest : [], false);
    }

    function renderHealth(h) {
      const part = (id, x, detail) => {
        const li = $(id);
        const ok = !!(x && x.ok);
        li.className = ok ? 'ok' : 'down';
        li.dataset.ok = ok ? '1' : '0';
        const det = li.querySelector('.detail');
        det.replaceChildren();
        append(det, el('strong', 'state', ok ? 'ok' : 'down'));
        if (detail) append(det, ' · ', detail);
      };
      const a = h.archiver || {};
      const started = isTime(a.started) ? append(el('span'), 'up since ', timeEl(a.started)) : null;
      const av = a.version ? 'v' + a.version : '';
      part('health-archiver', a, started ? append(el('span'), av ? av + ', ' : '', started) : av);
      part('health-database', h.database, h.database && h.database.backend ? String(h.database.backend) : '');
      part('health-nats', h.nats, '');
      const sources = Array.isArray(h.intake) ? h.intake : [];
      $('intake').replaceChildren(...(sources.length ? sources.map((x) => {
        const ok = isTime(x.ok_ms) && x.ok_ms === x.fetched_ms;
        const li = el('li', ok ? 'ok' : 'down');
        const det = el('span', 'detail muted');
        append(det, el('strong', 'state', ok ? 'ok' : 'failing'), ' · ', num(x.entries) + ' listed · ',
          num(x.failures) + ' of ' + num(x.fetches) + ' fetches failed');
        if (isTime(x.fetched_ms)) append(det, ' · last ', timeEl(x.fetched_ms));
        if (!ok && x.last_error) append(det, ' · ', bdi(String(x.last_error)));
        return append(li, el('span', 'dot'), titled(append(el('span', 'what'), bdi(x.source)), x.source), ' ', det);
      }) : [el('li', 'muted', 'none configured')]));
      const hosts = Array.isArray(h.hosts) ? h.hosts : [];
      $('hosts-count').textContent = '(' + hosts.length + ')';
      const tb = $('hosts').tBodies[0];
      if (!hosts.length) {
        const tr = el('tr'); const td = el('td', 'muted', 'no host reported in the last 24 h');
        td.colSpan = 3; tr.append(td); tb.replaceChildren(tr); return;
      }
      tb.replaceChildren(...hosts.map((x) => append(el('tr'),
        titled(append(el('td', 'name'), bdi(x.name)), x.name),
        append(el('td'), timeEl(x.last_seen)),
        el('td', 'num', num(x.bans_24h)))));
    }

    const expanded = new Set();
    function renderBars(box, list, empty) {
      if (!list.length) { box.replaceChildren(el('p', 'muted', empty)); return; }
      const max = Math.max(1, ...list.map((x) => x.active || 0));
      const all = expanded.has(box.id);
      const shown = all ? list : list.slice(0, 8);
      const ol = el('ol', 'bars');
      for (const x of shown) {
        const m = el('meter');
        m.min = 0; m.max = max; m.value = x.active || 0;
        m.setAttribute('aria-label', String(x.name));
        const name = titled(x.source === true ? append(el('span', 'name op'), 'source: ', bdi(x.name))
          : x.operator === true ? append(el('span', 'name op'), 'operator: ', bdi(x.name)) : bdi(x.name, 'name'), x.name);
        ol.append(append(el('li'), name, m, el('span', 'num', num(x.active))));
      }
      box.replaceChildren(ol);
      if (list.length > 8) {
        const b = el('button', 'more', all ? 'show fewer' : 'show all ' + list.length);
        b.type = 'button';
        b.addEventListener('click', () => {
          if (all) expanded.delete(box.id); else expanded.add(box.id);
          renderBars(box, list, empty);
        });
        box.append(b);
      }
    }

    function renderTop(rows) {
      const box = $('top');
      if (!rows.length) { box.replaceChildren(el('p', 'muted', 'no active bans')); return; }
      const t = el('table', 'compact');
      const head = append(el('tr'), el('th', '', 'address'), el('th', 'num', 'hosts'), el('th', '', 'jails'), el('th', '', 'banned since'));
      for (const th of head.children) th.scope = 'col';
      t.append(append(el('thead'), head));
      const tb = el('tbody');
      for (const r of rows) {
        tb.append(append(el('tr'),
          append(el('td'), addrLink(r.ip)),
          el('td', 'num', num(r.hosts)),
          append(el('td', 'jails'), jailsCell(r)),
          append(el('td'), timeEl(r.first_seen))));
      }
      t.append(tb);
      box.replaceChildren(t);
    }

    function jailsCell(r) {
      const parts = (Array.isArray(r.jails) ? r.jails : []).map((j) => bdi(j, 'jail'));
      if (r.operator !== null && r.operator !== undefined) parts.push(append(el('span', 'op'), 'operator: ', bdi(r.operator)));
      if (r.source !== null && r.source !== undefined) parts.push(append(el('span', 'op'), 'listed by: ', bdi(r.source)));
      if (!parts.length) return el('span', 'muted', '—');
      return joined(parts, ', ');
    }
    function hostsCell(r) {
      const f = document.createDocumentFragment();
      const origins = Array.isArray(r.origins) ? r.origins : [];
      f.append(el('span', 'count', num(r.hosts)));
      if (origins.length) {
        const names = el('span', 'origins');
        names.append(joined(origins.slice(0, 3).map((o) => bdi(o)), ', '));
        const more = Math.max(r.hosts || 0, origins.length) - Math.min(3, origins.length);
        if (more > 0) names.append(' +' + more);
        f.append(' ', names);
      }
      return f;
    }

    // --- bans table
    let bansGen = 0;
    async function loadBans(after) {
      const gen = ++bansGen;
      const p = new URLSearchParams({ q: st.q, sort: st.sort, order: st.order, offset: String(st.offset), limit: String(PAGE) });
      if (after) p.set('after', String(after));
      $('bans').classList.add('busy');
      try {
        const d = await getJSON('/v1/site/bans?' + p.toString());
        if (gen !== bansGen) return;
        const matched = d.matched || 0;
        if ((!d.rows || !d.rows.length) && st.offset > 0 && matched > 0) {
          // the page ran out under us (bans ended): go to the last page
          st.offset = Math.max(0, Math.floor((matched - 1) / PAGE) * PAGE);
          writeState();
          return loadBans(after);
        }
        renderBans(d);
        $('search').classList.remove('invalid');
        clearError('bans');
        if (!bansDone) { bansDone = true; if (ovDone) markReady(); }
      } catch (e) {
        if (gen === bansGen) {
          if (e.status === 400) $('search').classList.add('invalid');
          showError(e, 'bans');
        }
      } finally {
        if (gen === bansGen) $('bans').classList.remove('busy');
      }
    }

    function renderBans(d) {
      const rows = Array.isArray(d.rows) ? d.rows : [];
      const tb = $('bans').tBodies[0];
      if (!rows.length) {
        const tr = el('tr', 'placeholder');
        const td = el('td', 'muted', st.q ? 'no active ban matches ' + st.q : 'no active bans');
        td.colSpan = 6; tr.append(td);
        tb.replaceChildren(tr);
      } else {
        tb.replaceChildren(...rows.map((r) => {
          const tr = el('tr');
          tr.dataset.ip = String(r.ip);
          if (r.operator !== null && r.operator !== undefined) tr.classList.add('operator');
          append(tr,
            append(el('td', 'addr'), addrLink(r.ip)),
            append(el('td', 'jails'), jailsCell(r)),
            append(el('td', 'hosts'), hostsCell(r)),
            append(el('td'), timeEl(r.first_seen)),
            append(el('td'), timeEl(r.last_seen)),
            append(el('td'), timeEl(r.expires, 'permanent')));
          return tr;
        }));
      }
      const matched = typeof d.matched === 'number' ? d.matched : rows.length;
      const off = typeof d.offset === 'number' ? d.offset : st.offset;
      const total = $('bans-total');
      total.textContent = num(matched);
      total.dataset.count = String(matched);
      $('bans-total-label').textContent = st.q ? 'matched of ' + num(d.total) : 'matched';
      $('page-info').textContent = rows.length
        ? 'rows ' + num(off + 1) + '–' + num(off + rows.length) + ' of ' + num(matched)
        : 'rows 0 of ' + num(matched);
      $('prev').disabled = off <= 0;
      $('next').disabled = off + rows.length >= matched;
      if (typeof d.total === 'number' && !st.q && isFinite(d.total)) $('active').textContent = num(d.total);
      drawSortHeads();
    }

    function drawSortHeads() {
      for (const th of $('bans').tHead.rows[0].cells) {
        const on = th.dataset.sort === st.sort;
        th.setAttribute('aria-sort', on ? (st.order === 'asc' ? 'ascending' : 'descending') : 'none');
        th.classList.toggle('sorted', on);
        th.querySelector('.arrow').textContent = on ? (st.order === 'asc' ? ' ▲' : ' ▼') : '';
      }
    }

    // --- latest events
    let latest = [];                       // newest first
    const latestNodes = new Map();         // seq -> <li>
    function mergeLatest(list, fresh) {
      const bySeq = new Map();
      for (const e of latest) bySeq.set(e.seq, e);
      let added = false;
      for (const e of list) {
        if (!e || typeof e.seq !== 'number' || bySeq.has(e.seq)) continue;
        bySeq.set(e.seq, e); added = true;
      }
      if (!added && latestNodes.size) return;
      latest = [...bySeq.values()].sort((a, b) => b.seq - a.seq).slice(0, LATEST_MAX);
      const keep = new Set(latest.map((e) => e.seq));
      for (const s of [...latestNodes.keys()]) if (!keep.has(s)) latestNodes.delete(s);
      const nodes = latest.map((e) => {
        let li = latestNodes.get(e.seq);
        if (!li) {
          li = eventItem(e);
          if (fresh) li.classList.add('fresh');
          latestNodes.set(e.seq, li);
        }
        return li;
      });
      const ol = $('latest');
      if (!nodes.length) { ol.replaceChildren(el('li', 'muted', 'no events yet')); return; }
      // prepend when that is all it is, so nothing else flickers
      const cur = [...ol.children];
      const k = nodes.indexOf(cur[0]);
      if (k > 0 && cur.length && nodes.slice(k).every((n, i) => cur[i] === n)) {
        ol.prepend(...nodes.slice(0, k));
        while (ol.children.length > nodes.length) ol.lastElementChild.remove();
      } else {
        ol.replaceChildren(...nodes);
      }
    }

    function eventItem(e) {
      const li = el('li', 'ev');
      li.dataset.seq = String(e.seq);
      const info = describe(e);
      li.classList.add('k-' + info.kind);
      const l1 = el('div', 'l1');
      append(l1, timeEl(e.time), el('span', 'act act-' + info.kind, info.label), info.target);
      const l2 = el('div', 'l2 muted');
      const bits = [];
      if (info.who !== null) bits.push(append(el('span', 'who'), info.whoLabel, bdi(info.who)));
      if (info.jail !== null) bits.push(append(el('span', 'jail'), 'jail ', bdi(info.jail)));
      if (info.ports) bits.push(append(el('span', 'ports'), 'port ', bdi(info.ports)));
      if (info.extra) bits.push(el('span', '', info.extra));
      if (info.reason !== null) bits.push(append(el('span', 'reason'), '“', bdi(info.reason), '”'));
      l2.append(joined(bits, ' · '));
      li.append(l1, l2);
      li.addEventListener('animationend', () => li.classList.remove('fresh'), { once: true });
      return li;
    }

    // --- chart
    function colorOf(jail) {
      if (!color.has(jail)) color.set(jail, color.size % COLORS);
      return color.get(jail);
    }
    function assignColors() {
      if (!timeline) return;
      const tot = new Map();
      for (const r of ['hourly', 'daily']) {
        const s = timeline[r];
        if (!s || !s.jails) continue;
        for (const [j, arr] of Object.entries(s.jails)) tot.set(j, (tot.get(j) || 0) + sum(arr));
      }
      [...tot.entries()].sort((a, b) => b[1] - a[1]).forEach(([j]) => colorOf(j));
    }
    const sum = (arr) => { let n = 0; for (const v of arr) n += v || 0; return n; };

    function chartAdd(ev) {
      if (!timeline || !isTime(ev.time)) return;
      const jail = ev.jail == null ? '' : String(ev.jail);
      for (const r of ['hourly', 'daily']) {
        const s = timeline[r];
        if (!s || !s.step || !s.count) continue;
        s.jails = s.jails || {};
        let i = Math.floor((ev.time - s.start) / s.step);
        if (i < 0) continue;
        if (i >= s.count) {
          const shift = i - s.count + 1;
          for (const j of Object.keys(s.jails)) {
            const a = s.jails[j];
            s.jails[j] = shift >= s.count ? new Array(s.count).fill(0) : a.slice(shift).concat(new Array(shift).fill(0));
          }
          s.start += shift * s.step;
          i = s.count - 1;
        }
        if (!s.jails[jail]) s.jails[jail] = new Array(s.count).fill(0);
        s.jails[jail][i] = (s.jails[jail][i] || 0) + 1;
      }
      scheduleChart();
    }
    let chartFrame = 0;
    function scheduleChart() {
      if (!chartFrame) chartFrame = requestAnimationFrame(() => { chartFrame = 0; drawChart(); });
    }

    // y axis: a round step (1, 2, 5 x 10^k) giving about five grid lines
    function axis(peak) {
      if (peak <= 4) return { top: 4, step: 1 };
      const raw = peak / 5, p = Math.pow(10, Math.floor(Math.log10(raw)));
      const step = Math.max(1, [1, 2, 5, 10].map((m) => m * p).find((v) => v >= raw));
      return { top: Math.ceil(peak / step) * step, step };
    }
    function bucketLabel(ms, step) {
      const d = new Date(ms);
      const day = d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate());
      if (step >= 86400000) return day;
      const e = new Date(ms + step);
      return day + ' ' + pad(d.getUTCHours()) + ':00–' + pad(e.getUTCHours()) + ':00 UTC';
    }

    function drawChart() {
      const box = $('chart');
      const s = timeline && timeline[range];
      if (!s || !s.count || !s.step) { box.replaceChildren(el('p', 'muted', 'no timeline')); return; }
      assignColors();
      const n = s.count;
      const jails = Object.keys(s.jails || {}).filter((j) => Array.isArray(s.jails[j]));
      const totals = jails.map((j) => sum(s.jails[j]));
      const order = jails.map((j, i) => i).sort((a, b) => (colorOf(jails[a]) - colorOf(jails[b])) || (totals[b] - totals[a]));
      const bucketSum = new Array(n).fill(0);
      for (const j of jails) for (let i = 0; i < n; i++) bucketSum[i] += s.jails[j][i] || 0;
      const peak = Math.max(0, ...bucketSum);
      const { top, step } = axis(peak);

      const W = Math.max(320, Math.floor(box.clientWidth || 700));
      const H = 250;
      const m = { l: 44, r: 10, t: 10, b: 26 };
      const pw = W - m.l - m.r, ph = H - m.t - m.b;
      const bw = pw / n;
      const gap = bw > 6 ? Math.min(2, bw * 0.18) : bw > 3 ? 0.5 : 0;
      const y = (v) => m.t + ph - (v / top) * ph;

      const svg = svgEl('svg', { viewBox: '0 0 ' + W + ' ' + H, width: W, height: H, role: 'img', class: 'chart-svg' });
      svg.setAttribute('aria-label', 'Bans over time, ' + (range === 'hourly' ? 'last 48 hours, per hour' : 'last 90 days, per day'));

      // grid + y labels
      const g = svgEl('g', { class: 'grid' });
      for (let v = 0; v <= top; v += step) {
        const yy = Math.round(y(v)) + 0.5;
        g.append(svgEl('line', { x1: m.l, x2: W - m.r, y1: yy, y2: yy, class: v ? 'gl' : 'gl base' }));
        const t = svgEl('text', { x: m.l - 6, y: yy + 4, class: 'ylab' });
        t.textContent = v >= 10000 ? (v / 1000) + 'k' : String(v);
        g.append(t);
      }
      svg.append(g);

      // bars
      const bars = svgEl('g', { class: 'bars' });
      for (let i = 0; i < n; i++) {
        let acc = 0;
        const x = m.l + i * bw + gap / 2;
        const w = Math.max(0.5, bw - gap);
        const when = bucketLabel(s.start + i * s.step, s.step);
        for (const ji of order) {
          const v = s.jails[jails[ji]][i] || 0;
          if (!v) continue;
          const y1 = y(acc + v), y0 = y(acc);
          const r = svgEl('rect', { x: x.toFixed(2), y: y1.toFixed(2), width: w.toFixed(2), height: Math.max(0.5, y0 - y1).toFixed(2), class: 'seg s' + colorOf(jails[ji]) });
          const title = svgEl('title');
          title.textContent = (jails[ji] === '' ? '(no jail)' : jails[ji]) + ': ' + num(v) + (v === 1 ? ' ban' : ' bans') + ' — ' + when + (bucketSum[i] !== v ? ' (all jails: ' + num(bucketSum[i]) + ')' : '');
          r.append(title);
          bars.append(r);
          acc += v;
        }
      }
      svg.append(bars);

      // x labels: hour marks every 6 h (dates at midnight), or days spaced by the room we have
      const xl = svgEl('g', { class: 'xlabs' });
      const minGap = 64;
      let every;
      if (s.step < 86400000) every = [1, 2, 3, 6, 12, 24].find((h) => h * bw >= minGap) || 24;
      else every = [1, 2, 7, 14, 30].find((dd) => dd * bw >= minGap) || 30;
      for (let i = 0; i < n; i++) {
        const ms = s.start + i * s.step;
        const d = new Date(ms);
        let label = null;
        if (s.step < 86400000) {
          const h = d.getUTCHours();
          if (h % every === 0) label = h === 0 ? pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) : pad(h) + ':00';
        } else if (every >= 7 ? ((Math.floor(ms / 86400000) + 3) % every === 0) : (i % every === 0)) {
          label = pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate());
        }
        if (label === null) continue;
        const xx = m.l + i * bw;
        if (xx > W - m.r - 48) continue; // leave room for "UTC"
        xl.append(svgEl('line', { x1: xx, x2: xx, y1: m.t + ph, y2: m.t + ph + 4, class: 'tick' }));
        const t = svgEl('text', { x: xx, y: H - 8, class: 'xlab' });
        t.textContent = label;
        xl.append(t);
      }
      const unit = svgEl('text', { x: W - m.r, y: H - 8, class: 'xlab unit' });
      unit.textContent = 'UTC';
      xl.append(unit);
      svg.append(xl);

      if (!peak) {
        const t = svgEl('text', { x: m.l + pw / 2, y: m.t + ph / 2, class: 'empty' });
        t.textContent = 'no bans in this period';
        svg.append(t);
      }
      box.replaceChildren(svg);

      // legend: every jail with bans in this range, most first
      const leg = $('chart-legend');
      const items = jails.map((j, i) => [j, totals[i]]).filter((x) => x[1] > 0).sort((a, b) => b[1] - a[1]);
      leg.replaceChildren(...items.map(([j, t]) => append(el('li'),
        el('span', 'sw s' + colorOf(j)), bdi(j === '' ? '(no jail)' : j, 'name'), el('span', 'num muted', num(t)))));
    }

    function setRange(r) {
      range = r;
      $('range-hourly').setAttribute('aria-pressed', String(r === 'hourly'));
      $('range-daily').setAttribute('aria-pressed', String(r === 'daily'));
      drawChart();
    }

    // --- wiring
    $('range-hourly').addEventListener('click', () => setRange('hourly'));
    $('range-daily').addEventListener('click', () => setRange('daily'));
    let resizeTimer = null;
    new ResizeObserver(() => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (timeline) drawChart(); }, 80);
    }).observe($('chart'));

    for (const th of $('bans').tHead.rows[0].cells) {
      th.querySelector('button').addEventListener('click', () => {
        const k = th.dataset.sort;
        if (st.sort === k) st.order = st.order === 'asc' ? 'desc' : 'asc';
        else { st.sort = k; st.order = defaultOrder(k); }
        st.offset = 0;
        writeState();
        drawSortHeads();
        loadBans();
      });
    }
    $('prev').addEventListener('click', () => {
      st.offset = Math.max(0, st.offset - PAGE); writeState(); loadBans();
    });
    $('next').addEventListener('click', () => {
      st.offset += PAGE; writeState(); loadBans();
    });
    const search = $('search');
    search.value = st.q;
    if (checkQuery(st.q)) { st.q = ''; search.value = ''; }
    let searchTimer = null;
    const runSearch = () => {
      clearTimeout(searchTimer);
      const q = search.value.trim();
      const bad = checkQuery(q);
      $('search-note').textContent = bad;
      search.classList.toggle('invalid', !!bad);
      if (bad || q === st.q) return;
      st.q = q; st.offset = 0;
      writeState();
      loadBans();
    };
    search.addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(runSearch, 200); });
    search.addEventListener('keydown', (e) => { if (e.key === 'Enter') runSearch(); });
    drawSortHeads();

    onLiveEvent = (ev) => {
      mergeLatest([ev], true);
      if (ev.type === 'event' && ev.action === 'ban') chartAdd(ev);
      scheduleRefresh(typeof ev.seq === 'number' ? ev.seq : 0, false);
    };
    onLagged = () => scheduleRefresh(0, true);
    onReconnected = () => scheduleRefresh(0, true);
    reloadAll = () => scheduleRefresh(0, true);

    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && R.hidden) { R.hidden = false; scheduleRefresh(0, true); }
    });
    // health and "last seen" go stale without events: a quiet refresh every minute
    setInterval(() => scheduleRefresh(0, false), 60000);

    R.full = true;
    runRefresh();
  }

  // The server's rules for q, checked before asking (a half-typed net is no error worth a 400).
  const V4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
  function isV6(text) {
    if (!text.includes(':') || /[\s\/\[\]%]/.test(text)) return false;
    try { new URL('http://[' + text + ']/'); return true; } catch (_) { return false; }
  }
  function checkQuery(q) {
    if (!q) return '';
    if (q.includes('/')) {
      const m = /^([^/]+)\/(\d{1,3})$/.exec(q);
      if (!m) return 'a net is address/length, e.g. 192.0.2.0/24';
      const v6 = m[1].includes(':');
      if (Number(m[2]) > (v6 ? 128 : 32)) return 'the length is at most ' + (v6 ? 128 : 32);
      if (v6) { if (!isV6(m[1])) return 'not an IPv6 address'; }
      else if (!V4.test(m[1])) return 'not an IPv4 address';
      return '';
    }
    if (q.length > 45 || !/^[0-9a-fA-F.:]+$/.test(q)) return 'type the start of an address: digits, a-f, “.” and “:”';
    return '';
  }

  // One event as words: [kind, label, target, who...] for the list and the story table.
  function describe(e) {
    const out = { kind: 'other', label: '?', target: el('span', 'muted', '—'), who: null, whoLabel: '', jail: null, reason: null, extra: '' };
    if (e.type === 'control') {
      const k = String(e.kind);
      out.kind = k === 'ban' ? 'opban' : ['pardon', 'allow', 'revoke'].includes(k) ? k : 'other';
      const intel = k === 'intel' || k === 'unlist';
      out.label = k === 'ban' ? 'operator ban' : k === 'intel' ? 'listed' : k === 'unlist' ? 'unlisted' : k;
      out.target = netLink(e.net);
      out.who = e.operator == null ? '' : e.operator;
      out.whoLabel = intel ? 'source ' : 'operator ';
      out.reason = e.reason == null ? null : e.reason;
      if (k !== 'revoke') out.extra = isTime(e.until) ? 'until ' + utc(e.until) : k === 'ban' ? 'permanent' : 'until revoked';
    } else {
      const a = String(e.action);
      out.kind = a === 'ban' || a === 'unban' ? a : 'other';
      out.label = a;
      out.target = e.ip == null ? out.target : addrLink(e.ip);
      out.who = e.origin == null ? '' : e.origin;
      out.whoLabel = 'host ';
      out.jail = e.jail == null ? '' : e.jail;
      out.ports = portsOf(e);
      if (a === 'ban' && typeof e.bantime === 'number') out.extra = e.bantime < 0 ? 'permanent' : 'for ' + dur(e.bantime);
    }
    return out;
  }

  // The jail's port(s) and protocol as the host's action gave them: `ssh/tcp`, `22`, or ''.
  function portsOf(e) {
    const port = typeof e.port === 'string' ? e.port : '';
    const protocol = typeof e.protocol === 'string' ? e.protocol : '';
    return protocol ? port + '/' + protocol : port;
  }

  // === story of one address
  function story() {
    document.querySelector('.top .total').hidden = true;
    $('overview').hidden = true;
    $('story').hidden = false;
    let raw = path.slice(4);
    let ip;
    try { ip = decodeURIComponent(raw); } catch (_) { ip = raw; }
    $('story-ip').textContent = ip;
    document.title = ip + ' · Shared Fail2Ban';

    let canon = ip, busy = false, again = false, timer = null;
    function notAddress() {
      $('story-status').replaceChildren(el('p', 'verdict bad', 'Not an address the archive can look up.'));
      $('story-orders').replaceChildren(el('p', 'muted', '—'));
      const tr = el('tr'); const td = el('td', 'muted', '—'); td.colSpan = 7; tr.append(td);
      $('story-events').tBodies[0].replaceChildren(tr);
      markReady();
    }
    async function load() {
      if (!V4.test(ip) && !isV6(ip)) { notAddress(); return; }
      if (busy) { again = true; return; }
      busy = true;
      try {
        const d = await getJSON('/v1/site/address?ip=' + encodeURIComponent(ip));
        render(d);
        clearError();
        markReady();
      } catch (e) {
        showError(e, 'story');
        if (e.status === 400) notAddress();
      } finally {
        busy = false;
        if (again) { again = false; schedule(); }
      }
    }
    function schedule() { if (!timer) timer = setTimeout(() => { timer = null; load(); }, 400); }

    function render(d) {
      if (d.ip) { canon = String(d.ip); $('story-ip').textContent = canon; document.title = canon + ' · Shared Fail2Ban'; }
      const st = $('story-status');
      const a = d.active;
      if (a) {
        const dl = el('dl', 'facts');
        const row = (k, v) => append(dl, el('dt', '', k), append(el('dd'), v));
        const jails = (Array.isArray(a.jails) ? a.jails : []).map((j) => bdi(j, 'jail'));
        row('jails', jails.length ? joined(jails, ', ') : el('span', 'muted', '—'));
        const origins = (Array.isArray(a.origins) ? a.origins : []).map((o) => bdi(o));
        row('hosts', origins.length ? append(el('span'), num(a.hosts) + ': ', joined(origins, ', ')) : el('span', 'muted', num(a.hosts || 0)));
        if (a.operator != null) row('operator', bdi(a.operator));
        row('first seen', append(el('span'), timeEl(a.first_seen), isTime(a.first_seen) ? el('span', 'abs', ' ' + utc(a.first_seen)) : ''));
        row('last seen', append(el('span'), timeEl(a.last_seen), isTime(a.last_seen) ? el('span', 'abs', ' ' + utc(a.last_seen)) : ''));
        row('expires', append(el('span'), timeEl(a.expires, 'permanent'), isTime(a.expires) ? el('span', 'abs', ' ' + utc(a.expires)) : ''));
        st.replaceChildren(el('p', 'verdict banned', 'Banned now'), dl);
      } else {
        st.replaceChildren(el('p', 'verdict clear', 'Not banned now'));
      }

      const orders = Array.isArray(d.orders) ? d.orders : [];
      const ob = $('story-orders');
      if (!orders.length) ob.replaceChildren(el('p', 'muted', 'none'));
      else {
        const ul = el('ul', 'orders');
        for (const o of orders) {
          const x = describe(o);
          ul.append(append(el('li', 'k-' + x.kind),
            el('span', 'act act-' + x.kind, x.label), ' ', x.target, ' ',
            append(el('span', 'muted'), 'by ', bdi(x.who), ', ', timeEl(o.time), x.extra ? ', ' + x.extra : ''),
            x.reason !== null ? append(el('div', 'reason'), '“', bdi(x.reason), '”') : null));
        }
        ob.replaceChildren(ul);
      }

      const events = Array.isArray(d.events) ? d.events : [];
      $('story-count').textContent = events.length ? '(' + num(events.length) + (events.length >= 1000 ? ', the newest' : '') + ')' : '';
      const tb = $('story-events').tBodies[0];
      if (!events.length) {
        const tr = el('tr'); const td = el('td', 'muted', 'no event in the archive'); td.colSpan = 7; tr.append(td); tb.replaceChildren(tr);
        return;
      }
      tb.replaceChildren(...events.map((e) => {
        const x = describe(e);
        const tr = el('tr', 'k-' + x.kind);
        if (typeof e.seq === 'number') tr.dataset.seq = String(e.seq);
        const bantime = e.type === 'control' ? (x.extra || '—') : dur(e.bantime);
        append(tr,
          append(el('td', 'when'), timeEl(e.time), isTime(e.time) ? el('div', 'abs', utc(e.time)) : null),
          append(el('td'), el('span', 'act act-' + x.kind, x.label), e.type === 'control' && e.net != null && e.net !== d.ip ? append(el('span'), ' ', netLink(e.net)) : null),
          append(el('td'), x.who === null ? '' : append(el('span'), el('span', 'muted small', e.type === 'control' ? 'operator ' : ''), bdi(x.who))),
          append(el('td'), x.jail === null ? el('span', 'muted', '—') : bdi(x.jail), x.ports ? append(el('span', 'muted small'), ' ', bdi(x.ports)) : null),
          el('td', '', bantime),
          el('td', 'num', typeof e.failures === 'number' ? num(e.failures) : '—'),
          append(el('td', 'reason'), x.reason === null ? '' : bdi(x.reason)));
        return tr;
      }));
    }

    onLiveEvent = (ev) => {
      if (ev.type === 'control' || String(ev.ip) === ip || String(ev.ip) === canon) schedule();
    };
    onLagged = schedule;
    onReconnected = schedule;
    reloadAll = load;
    load();
  }

  // === start
  $('token-form').addEventListener('submit', onTokenSubmit);
  $('error-close').addEventListener('click', () => { $('error').hidden = true; });
  setLive('connecting');
  if (isStory) story(); else overview();
  connectLive();
  setInterval(tick, 30000);
  setInterval(watchdog, 5000);
})();
