/* ivr supervisor dashboard: vanilla JS, no dependencies.
 *
 * Data: an EventSource on /api/v1/stream?ticket=... (the JSON of /api/v1/live once a second). The token
 * never goes into a URL: each connection first asks POST /api/v1/stream/ticket (with the bearer token)
 * for a ticket that is good for one connection within 30 s.
 * Actions: POST /api/v1/agents/{id}/pause|unpause|login|logout with "Authorization: Bearer", and
 * POST /api/v1/agents/{id}/coach {"coach": id, "mode": ...} from the Coach control of a novice on a call.
 * Every piece of server data goes into the page through textContent or setAttribute, never innerHTML.
 */
(() => {
  'use strict';

  const TOKEN_KEY = 'ivr.dashboard.token';
  const STALE_MS = 4000;          // no message for this long: show "reconnecting"
  const CHART_HOURS = 12;
  const PENDING_MS = 6000;        // how long a button stays busy waiting for the stream to confirm
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  let token = null;
  let source = null;
  let lastMessageAt = 0;
  let retryTimer = null;
  let retryDelay = 2000;
  let lastChartKey = '';
  let lastChartInput = null;      // [history, serverTime], to redraw on resize
  const queueTiles = new Map();   // queue name -> {root, fields}
  const agentRows = new Map();    // agent id -> {root, cells, pauseBtn, loginBtn, coach*}
  const pending = new Map();      // agent id -> {kind: 'pause'|'login', until}

  // ------------------------------------------------------------------ helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = String(v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) el.append(c);   // strings become text nodes
    return el;
  }

  function svg(tag, attrs, text) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = String(text);
    return el;
  }

  function setText(el, value) {
    const s = String(value);
    if (el.textContent !== s) el.textContent = s;
  }

  function setAttr(el, name, value) {
    const s = String(value);
    if (el.getAttribute(name) !== s) el.setAttribute(name, s);
  }

  function fmtDuration(sec) {
    if (sec === null || sec === undefined || !isFinite(sec)) return '–';
    sec = Math.max(0, Math.round(Number(sec)));
    if (sec < 60) return `${sec} s`;
    const hours = Math.floor(sec / 3600);
    const m = Math.floor((sec % 3600) / 60);
    const s = String(sec % 60).padStart(2, '0');
    return hours ? `${hours}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
  }

  function fmtPercent(x) {
    return x === null || x === undefined ? '–' : `${Math.round(Number(x) * 100)} %`;
  }

  function fmtClock(date) {
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' });
  }

  function fmtHour(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  }

  // ----------------------------------------------------------------- messages
  function showMessage(kind, text, opts) {
    const box = $('messages');
    const msg = h('div', { class: `msg ${kind}`, 'data-kind': kind,
                           'data-status': opts && opts.status ? opts.status : null },
                  h('span', { class: 'msg-text', text }),
                  h('button', { type: 'button', class: 'msg-close', 'aria-label': 'dismiss', text: '×' }));
    msg.querySelector('.msg-close').addEventListener('click', () => msg.remove());
    box.prepend(msg);
    while (box.children.length > 3) box.lastElementChild.remove();
    if (kind === 'info') setTimeout(() => msg.remove(), 4000);
    return msg;
  }

  // -------------------------------------------------------- sign-in / session
  function showSignin(errorText) {
    document.body.dataset.view = 'signin';
    $('signin').hidden = false;
    $('dashboard').hidden = true;
    $('session').hidden = true;
    const err = $('signin-error');
    err.hidden = !errorText;
    err.textContent = errorText || '';
    setConn('signed-out', 'signed out');
    setText($('updated'), '');
    $('token-input').value = '';
    $('token-input').focus();
  }

  function showDashboard() {
    document.body.dataset.view = 'dashboard';
    $('signin').hidden = true;
    $('dashboard').hidden = false;
    $('session').hidden = false;
  }

  function signIn(newToken) {
    token = newToken;
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (e) { /* private mode: keep it in memory */ }
    showDashboard();
    connect();
  }

  function signOut(errorText) {
    disconnect();
    token = null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ }
    clearDashboard();
    showSignin(errorText);
  }

  function clearDashboard() {
    lastMessageAt = 0;
    retryDelay = 2000;
    queueTiles.clear();
    agentRows.clear();
    pending.clear();
    lastChartKey = '';
    lastChartInput = null;
    $('queues').replaceChildren();
    $('agents-body').replaceChildren();
    $('chart').replaceChildren();
    for (const id of ['kpi-waiting', 'kpi-longest', 'kpi-agents', 'kpi-available', 'callbacks-pending', 'node']) {
      setText($(id), id === 'node' ? '' : '–');
    }
  }

  // --------------------------------------------------------------- connection
  function setConn(state, text) {
    const conn = $('conn');
    setAttr(conn, 'data-state', state);
    setText($('conn-text'), text);
  }

  function disconnect() {
    if (source) { source.close(); source = null; }
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
  }

  // A ticket opens one stream: the browser's own reconnection would present a spent one, so on any error the
  // stream is closed and a new ticket asked for (which also tells a refused token from a server that is away).
  async function connect() {
    disconnect();
    if (!token) return;
    setConn(lastMessageAt ? 'reconnecting' : 'connecting', lastMessageAt ? 'reconnecting…' : 'connecting…');
    const asked = token;
    let resp;
    try {
      resp = await fetch('/api/v1/stream/ticket', { method: 'POST', headers: { Authorization: `Bearer ${asked}` },
                                                    cache: 'no-store' });
    } catch (e) {
      if (token === asked) scheduleRetry('the server is not reachable');
      return;
    }
    if (token !== asked || source || retryTimer) return;   // signed out, in again, or connected meanwhile
    if (resp.status === 401) {
      signOut(`Token not accepted: ${await readError(resp)}`);
      return;
    }
    if (!resp.ok) {
      scheduleRetry(`the server answered ${resp.status}: ${await readError(resp)}`);
      return;
    }
    let ticket;
    try { ticket = (await resp.json()).ticket; } catch (e) { ticket = null; }
    if (token !== asked || source || retryTimer) return;
    if (typeof ticket !== 'string') { scheduleRetry('no stream ticket in the answer'); return; }
    const es = new EventSource(`/api/v1/stream?ticket=${encodeURIComponent(ticket)}`);
    source = es;
    es.onopen = () => { retryDelay = 2000; };
    es.onmessage = (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch (e) { showMessage('error', `bad data from the stream: ${e.message}`); return; }
      lastMessageAt = Date.now();
      setConn('live', 'live');
      try { render(data); } catch (e) { showMessage('error', `dashboard error: ${e.message}`); console.error(e); }
      tick();
    };
    es.onerror = () => {
      if (source !== es) return;
      es.close();
      source = null;
      scheduleRetry('');
    };
  }

  function scheduleRetry(reason) {
    setConn('reconnecting', reason ? `reconnecting… (${reason})` : 'reconnecting…');
    if (retryTimer) clearTimeout(retryTimer);
    retryTimer = setTimeout(() => { retryTimer = null; connect(); }, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  }

  function tick() {
    if (!token) return;
    if (!lastMessageAt) return;
    const age = Date.now() - lastMessageAt;
    setText($('updated'), `updated ${fmtClock(new Date(lastMessageAt))}${age > STALE_MS ? ` (${Math.round(age / 1000)} s ago)` : ''}`);
    if (age > STALE_MS && $('conn').dataset.state === 'live') setConn('reconnecting', 'reconnecting… (no data)');
  }

  // ------------------------------------------------------------------ actions
  async function readError(resp) {
    try {
      const body = await resp.json();
      if (body && typeof body.error === 'string') return body.error;
      return JSON.stringify(body);
    } catch (e) {
      return resp.statusText || 'no details';
    }
  }

  const ACTION_LABEL = { pause: 'Pause', unpause: 'Unpause', login: 'Log in', logout: 'Log out' };
  // how a coach joins (ChanSpy modes, ivr/agents/service.py COACH_MODES); whisper first, the default:
  // only the agent hears the coach
  const COACH_MODES = ['whisper', 'listen', 'barge'];

  // POST a supervisor action (with ``body`` as JSON when given); the button is disabled meanwhile. Returns true
  // when the server accepted it (the caller decides when to enable the button again); on failure it is enabled
  // and the error shown.
  async function postAction(url, what, button, onFail, body) {
    if (!token) return false;
    button.disabled = true;
    const fail = (text, status) => {
      if (onFail) onFail();
      button.disabled = false;
      showMessage('error', `${what} failed: ${text}`, status ? { status } : undefined);
    };
    let resp;
    try {
      const headers = { Authorization: `Bearer ${token}` };
      const init = { method: 'POST', headers, cache: 'no-store' };
      if (body !== undefined) {
        headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      resp = await fetch(url, init);
    } catch (e) {
      fail(`the server is not reachable (${e.message})`);
      return false;
    }
    if (!resp.ok) {
      const detail = await readError(resp);
      fail(`${resp.status} ${detail}`, resp.status);
      if (resp.status === 401) signOut(`Token not accepted: ${detail}`);
      return false;
    }
    showMessage('info', `${what}: done`);
    return true;
  }

  async function agentAction(agentId, action, button) {
    if (!token) return;
    const kind = action === 'pause' || action === 'unpause' ? 'pause' : 'login';
    pending.set(agentId, { kind, until: Date.now() + PENDING_MS });
    // on success the button stays disabled until the stream shows the new state (or PENDING_MS passes)
    await postAction(`/api/v1/agents/${encodeURIComponent(agentId)}/${action}`,
                     `${ACTION_LABEL[action]} agent ${agentId}`, button, () => pending.delete(agentId));
  }

  // Ring the chosen coach's phone into the novice's call (ivr/agents/service.py ``coach``). The button stays
  // disabled for PENDING_MS after the server accepted it (the coach's phone is ringing), not to ring it twice.
  async function coachAction(agentId, row) {
    const coach = row.coachSel.value;
    const mode = row.modeSel.value;
    if (!coach || !token) return;
    row.coachUntil = Date.now() + PENDING_MS;
    const option = row.coachSel.selectedOptions[0];
    await postAction(`/api/v1/agents/${encodeURIComponent(agentId)}/coach`,
                     `Coach agent ${agentId} (${mode}) with ${option ? option.textContent : coach}`, row.coachBtn,
                     () => { row.coachUntil = 0; }, { coach, mode });
  }

  // ------------------------------------------------------------------ rendering
  function render(data) {
    setText($('node'), data.node ? `node ${data.node}` : '');
    $('ami-warning').hidden = data.ami !== false;
    const queues = Object.values(data.queues || {}).sort((a, b) => String(a.name).localeCompare(String(b.name)));
    const agents = Array.isArray(data.agents) ? data.agents : [];
    renderKpis(queues, agents, data.callbacks_pending);
    renderQueues(queues);
    renderAgents(agents);
    renderCampaigns(Array.isArray(data.campaigns) ? data.campaigns : []);
    renderChart(Array.isArray(data.history) ? data.history : [], data.time);
  }

  function renderKpis(queues, agents, callbacks) {
    setText($('kpi-waiting'), queues.reduce((n, q) => n + (q.waiting || 0), 0));
    const waitingQueues = queues.filter((q) => q.waiting);
    setText($('kpi-longest'), waitingQueues.length
      ? fmtDuration(waitingQueues.reduce((m, q) => Math.max(m, q.longest_wait || 0), 0)) : '–');
    const loggedIn = agents.filter((a) => a.logged_in);
    setText($('kpi-agents'), `${loggedIn.length} / ${agents.length}`);
    setText($('kpi-available'), agents.filter((a) => a.logged_in && !a.paused && !a.in_call && a.status === 'idle').length);
    setText($('callbacks-pending'), callbacks === undefined || callbacks === null ? '–' : callbacks);
    setAttr($('kpi-callbacks-box'), 'data-nonzero', callbacks > 0);
  }

  function stat(label, field) {
    const dd = h('dd', { 'data-field': field, text: '–' });
    return [h('div', { class: 'stat' }, h('dt', { text: label }), dd), dd];
  }

  function makeTile(name) {
    const f = {};
    f.name = h('h3', { text: name });
    f.overflow = h('span', { class: 'badge overflow', 'data-field': 'overflow', text: 'overflow open', hidden: true });
    f.alert = h('span', { class: 'badge alert', 'data-field': 'alert', hidden: true });
    f.waiting = h('span', { class: 'big-num', 'data-field': 'waiting', text: '0' });
    const stats = h('dl', { class: 'stats' });
    for (const [label, key] of [['Longest wait', 'longest_wait'], ['Estimated wait', 'estimated_wait'],
                                ['Service level', 'service_level'], ['Avg answer', 'asa']]) {
      const [box, dd] = stat(label, key);
      stats.append(box);
      f[key] = dd;
    }
    f.available = h('span', { 'data-field': 'available', text: '0' });
    f.busy = h('span', { 'data-field': 'busy', text: '0' });
    f.paused = h('span', { 'data-field': 'paused', text: '0' });
    const staff = h('p', { class: 'staff' },
      h('span', { class: 'chip available' }, f.available, ' available'),
      h('span', { class: 'chip busy' }, f.busy, ' busy'),
      h('span', { class: 'chip paused' }, f.paused, ' paused'));
    f.callers = h('ol', { class: 'callers', 'data-field': 'callers' });
    f.empty = h('p', { class: 'empty', text: 'No one waiting' });
    const root = h('article', { class: 'tile', 'data-queue': name },
      h('header', { class: 'tile-head' }, f.name, h('span', { class: 'badges' }, f.alert, f.overflow)),
      h('div', { class: 'tile-main' },
        h('div', { class: 'waiting' }, f.waiting, h('span', { class: 'big-label', text: 'waiting' })),
        stats),
      staff,
      h('div', { class: 'callers-box' }, h('h4', { text: 'Callers waiting' }), f.callers, f.empty));
    return { root, f };
  }

  function renderQueues(queues) {
    const box = $('queues');
    const seen = new Set();
    queues.forEach((q, i) => {
      const name = String(q.name);
      seen.add(name);
      let tile = queueTiles.get(name);
      if (!tile) { tile = makeTile(name); queueTiles.set(name, tile); }
      if (box.children[i] !== tile.root) box.insertBefore(tile.root, box.children[i] || null);
      const f = tile.f;
      const waiting = Number(q.waiting || 0);
      setText(f.waiting, waiting);
      setText(f.longest_wait, waiting ? fmtDuration(q.longest_wait) : '–');
      setText(f.estimated_wait, fmtDuration(q.estimated_wait));
      setText(f.service_level, fmtPercent(q.service_level));
      setText(f.asa, fmtDuration(q.asa));
      setText(f.available, q.available || 0);
      setText(f.busy, q.busy || 0);
      setText(f.paused, q.paused || 0);
      f.overflow.hidden = !q.overflow_open;
      const members = Array.isArray(q.members) ? q.members.length : 0;
      let alert = '';
      if (waiting && !members) alert = 'no agents';
      else if (waiting && !q.available && q.busy === 0) alert = 'nobody free';
      f.alert.hidden = !alert;
      setText(f.alert, alert);
      setAttr(tile.root, 'data-waiting', waiting);
      setAttr(tile.root, 'data-overflow', !!q.overflow_open);
      setAttr(tile.root, 'data-level', alert ? 'alert' : waiting && (q.longest_wait || 0) >= 60 ? 'warn' : waiting ? 'busy' : 'calm');
      const callers = Array.isArray(q.callers) ? q.callers : [];
      f.callers.replaceChildren(...callers.map((c) => h('li', { 'data-caller': c.callerid || '', 'data-uniqueid': c.uniqueid || '' },
        h('span', { class: 'pos', text: c.position ?? '' }),
        h('span', { class: 'cid' }, c.callerid || 'unknown number',
          ...contextTags(c.context).map((t) => h('span', { class: 'tag', 'data-tag': t.kind, text: t.text }))),
        h('span', { class: 'wait', text: fmtDuration(c.wait) }))));
      f.empty.hidden = callers.length > 0;
    });
    for (const [name, tile] of queueTiles) {
      if (!seen.has(name)) { tile.root.remove(); queueTiles.delete(name); }
    }
  }

  const COLUMNS = ['name', 'skill', 'team', 'tier', 'status', 'in_call', 'paused', 'queues_now', 'actions'];
  const COLUMN_LABELS = { name: 'Name', skill: 'Skill', team: 'Team', tier: 'Tier', status: 'Status', in_call: 'In call',
                          paused: 'Paused', queues_now: 'Queues now', actions: '' };

  function makeRow(id) {
    const cells = {};
    const root = h('tr', { 'data-agent': id });
    for (const col of COLUMNS) {
      cells[col] = h('td', { 'data-col': col, 'data-label': COLUMN_LABELS[col] });
      root.append(cells[col]);
    }
    const nameText = h('span', { class: 'agent-name' });
    const idText = h('span', { class: 'agent-id', text: id });
    cells.name.append(nameText, ' ', idText);
    cells.nameText = nameText;
    const statusPill = h('span', { class: 'pill' });
    cells.status.append(statusPill);
    cells.statusPill = statusPill;
    const pauseBtn = h('button', { type: 'button', class: 'btn', 'data-action': 'pause', text: 'Pause' });
    const loginBtn = h('button', { type: 'button', class: 'btn subtle', 'data-action': 'login', text: 'Log in' });
    for (const btn of [pauseBtn, loginBtn]) {
      btn.addEventListener('click', () => agentAction(id, btn.dataset.action, btn));
    }
    // Coach: shown while a novice is on a call; the experienced teammates free now, and how the coach joins
    const coachSel = h('select', { class: 'coach-pick', 'data-field': 'coach', 'aria-label': `Coach for agent ${id}` });
    const modeSel = h('select', { class: 'coach-mode', 'data-field': 'coach-mode',
                                  'aria-label': `How the coach joins agent ${id}'s call` },
                      ...COACH_MODES.map((m) => h('option', { value: m, text: m })));
    modeSel.value = 'whisper';
    const coachBtn = h('button', { type: 'button', class: 'btn', 'data-action': 'coach', text: 'Coach' });
    const coachBox = h('span', { class: 'coach', hidden: true }, coachSel, modeSel, coachBtn);
    cells.actions.append(h('span', { class: 'actions' }, coachBox, pauseBtn, loginBtn));
    const row = { root, cells, pauseBtn, loginBtn, coachBox, coachSel, modeSel, coachBtn, coachKey: null, coachUntil: 0 };
    coachBtn.addEventListener('click', () => coachAction(id, row));
    return row;
  }

  // who can coach a novice now: experienced agents of the same team, logged in and not on a call
  function coachCandidates(a, agents) {
    const team = String(a.team || '');
    return agents.filter((b) => String(b.id) !== String(a.id) && b.skill === 'experienced'
                                && String(b.team || '') === team && b.logged_in && !b.in_call);
  }

  function renderCoach(row, a, agents, now) {
    const show = a.skill === 'novice' && !!a.in_call;
    row.coachBox.hidden = !show;
    setAttr(row.root, 'data-coachable', show);
    if (!show) return;
    const free = coachCandidates(a, agents);
    const key = JSON.stringify(free.map((b) => [String(b.id), b.name || '']));
    if (key !== row.coachKey) {       // options change only when the candidates do: a choice made stays
      row.coachKey = key;
      const kept = row.coachSel.value;
      row.coachSel.replaceChildren(...(free.length
        ? free.map((b) => h('option', { value: String(b.id), text: b.name ? `${b.name} (${b.id})` : String(b.id) }))
        : [h('option', { value: '', text: 'no coach free' })]));
      if (free.some((b) => String(b.id) === kept)) row.coachSel.value = kept;
      else row.coachSel.selectedIndex = 0;
    }
    row.coachSel.disabled = !free.length;
    row.coachBtn.disabled = !free.length || now < row.coachUntil;
    setAttr(row.coachBtn, 'title', free.length
      ? `Ring the chosen coach's phone into ${a.name || a.id}'s call`
      : `No experienced agent of team ${a.team || '(none)'} is logged in and off a call to coach`);
  }

  // what the IVR knew about a caller (ivr/continuity/service.py): flagged into a priority group, returning after a
  // drop, notified, repeat call, left self-service with 0 (and from where), the booking they gave
  function contextTags(ctx) {
    if (!ctx || typeof ctx !== 'object') return [];
    const tags = [];
    if (ctx.group) tags.push({ kind: 'group', text: `priority: ${ctx.group}` });
    if (ctx.returning) tags.push({ kind: 'returning', text: 'returning' });
    if (ctx.notice) tags.push({ kind: 'notice', text: `notice: ${ctx.notice}` });
    if (ctx.refund) tags.push({ kind: 'refund', text: `refund ${ctx.refund}` });
    if (ctx.repeat) tags.push({ kind: 'repeat', text: 'called before' });
    if (ctx.escalated_from) tags.push({ kind: 'escalated', text: `pressed 0 in ${ctx.escalated_from}` });
    if (ctx.booking) tags.push({ kind: 'booking', text: `booking ${ctx.booking}` });
    return tags;
  }

  function statusClass(a) {
    if (!a.logged_in) return 'off';
    if (a.paused) return 'paused';
    if (a.in_call || ['in-use', 'busy', 'ringing', 'ring-in-use', 'on-hold'].includes(a.status)) return 'busy';
    if (a.status === 'idle') return 'available';
    return 'off';
  }

  function renderAgents(agents) {
    const body = $('agents-body');
    const seen = new Set();
    const now = Date.now();
    agents.forEach((a, i) => {
      const id = String(a.id);
      seen.add(id);
      let row = agentRows.get(id);
      if (!row) { row = makeRow(id); agentRows.set(id, row); }
      if (body.children[i] !== row.root) body.insertBefore(row.root, body.children[i] || null);
      const c = row.cells;
      setText(c.nameText, a.name || id);
      setText(c.skill, a.skill || '–');
      setText(c.team, a.team || '–');
      setText(c.tier, a.tier || '–');
      let status = a.logged_in ? String(a.status || 'unknown') : 'logged out';
      if (a.logged_in && a.on_mobile) status = `on mobile · ${status}`;
      setText(c.statusPill, a.paused && a.logged_in ? `paused · ${status}` : status);
      setAttr(row.root, 'data-on-mobile', !!a.on_mobile);
      setAttr(c.statusPill, 'data-kind', statusClass(a));
      const talking = a.caller && typeof a.caller === 'object' ? a.caller : null;
      const about = talking ? [talking.number, ...contextTags(talking).map((t) => t.text)].filter(Boolean) : [];
      setText(c.in_call, a.in_call ? ['yes', ...about].join(' · ') : 'no');
      setAttr(c.in_call, 'data-caller-uniqueid', talking ? talking.uniqueid || '' : '');
      setText(c.paused, a.paused ? 'yes' : 'no');
      const qs = Array.isArray(a.queues_now) ? a.queues_now : [];
      setText(c.queues_now, qs.length ? qs.join(', ') : '–');
      setAttr(row.root, 'data-paused', !!a.paused);
      setAttr(row.root, 'data-in-call', !!a.in_call);
      setAttr(row.root, 'data-logged-in', !!a.logged_in);
      setAttr(row.root, 'data-status', a.status || '');

      // buttons: one toggle for pause, one for login; busy until the stream confirms the change
      const pauseAction = a.paused ? 'unpause' : 'pause';
      const loginAction = a.logged_in ? 'logout' : 'login';
      const p = pending.get(id);
      let pauseBusy = false;
      let loginBusy = false;
      if (p) {
        const confirmed = p.kind === 'pause' ? row.pauseBtn.dataset.action !== pauseAction
                                             : row.loginBtn.dataset.action !== loginAction;
        if (confirmed || now > p.until) pending.delete(id);
        else if (p.kind === 'pause') pauseBusy = true;
        else loginBusy = true;
      }
      if (!pauseBusy) {
        setAttr(row.pauseBtn, 'data-action', pauseAction);
        setText(row.pauseBtn, ACTION_LABEL[pauseAction]);
        // pausing needs a queue membership (QueuePause); unpausing is always allowed
        row.pauseBtn.disabled = !qs.length && pauseAction === 'pause';
        setAttr(row.pauseBtn, 'title', qs.length || pauseAction === 'unpause'
          ? `${ACTION_LABEL[pauseAction]} ${a.name || id} in all queues` : 'not in any queue now');
      }
      if (!loginBusy) {
        setAttr(row.loginBtn, 'data-action', loginAction);
        setText(row.loginBtn, ACTION_LABEL[loginAction]);
        row.loginBtn.disabled = false;
        setAttr(row.loginBtn, 'title', `${ACTION_LABEL[loginAction]} ${a.name || id}`);
      }
      renderCoach(row, a, agents, now);
    });
    for (const [id, row] of agentRows) {
      if (!seen.has(id)) { row.root.remove(); agentRows.delete(id); }
    }
  }

  // ---------------------------------------------------------------- campaigns
  const campaignRows = new Map();
  const CAMPAIGN_ACTION = { running: 'pause', paused: 'resume', draft: 'start' };
  const CAMPAIGN_LABEL = { pause: 'Pause', resume: 'Resume', start: 'Start' };

  async function campaignAction(cid, action, button) {
    await postAction(`/api/v1/campaigns/${encodeURIComponent(cid)}/${action}`,
                     `${CAMPAIGN_LABEL[action]} campaign ${cid}`, button);
  }

  function renderCampaigns(campaigns) {
    const body = $('campaigns-body');
    $('campaigns-empty').hidden = campaigns.length > 0;
    $('campaigns').hidden = campaigns.length === 0;
    const seen = new Set();
    campaigns.forEach((c, i) => {
      const id = String(c.id);
      seen.add(id);
      let row = campaignRows.get(id);
      if (!row) {
        const cells = {};
        const root = h('tr', { 'data-campaign': id });
        const labels = { name: 'Campaign', state: 'State', progress: 'Progress', active: 'Dialling now', pace: 'Pace',
                         actions: '' };
        for (const col of ['name', 'state', 'progress', 'active', 'pace', 'actions']) {
          cells[col] = h('td', { 'data-col': col, 'data-label': labels[col] });
          root.append(cells[col]);
        }
        const bar = h('span', { class: 'progress-bar' });
        const fill = h('span', { class: 'progress-fill' });
        bar.append(fill);
        const label = h('span', { class: 'progress-label' });
        cells.progress.append(bar, ' ', label);
        const btn = h('button', { type: 'button', class: 'btn' });
        btn.addEventListener('click', () => campaignAction(id, btn.dataset.action, btn));
        cells.actions.append(btn);
        row = { root, cells, fill, label, btn };
        campaignRows.set(id, row);
      }
      if (body.children[i] !== row.root) body.insertBefore(row.root, body.children[i] || null);
      const counts = c.counts || {};
      const total = Object.values(counts).reduce((n, v) => n + Number(v || 0), 0);
      const closed = ['done', 'failed', 'optout', 'dnc'].reduce((n, k) => n + Number(counts[k] || 0), 0);
      const pct = total ? Math.round((closed / total) * 100) : 0;
      setText(row.cells.name, c.name || id);
      setText(row.cells.state, c.state || '–');
      row.fill.style.width = `${pct}%`;
      setText(row.label, `${closed} / ${total} (${pct}%) · ${Number(counts.done || 0)} reached`);
      setText(row.cells.active, String(c.active || 0));
      setText(row.cells.pace, c.pace === null || c.pace === undefined ? '–' : `${Math.round(c.pace * 100)}%`);
      setAttr(row.root, 'data-state', c.state || '');
      const action = CAMPAIGN_ACTION[c.state];
      row.btn.hidden = !action;
      if (action && row.btn.dataset.action !== action) {
        setAttr(row.btn, 'data-action', action);
        setText(row.btn, CAMPAIGN_LABEL[action]);
        row.btn.disabled = false;
      }
    });
    for (const [id, row] of campaignRows) {
      if (!seen.has(id)) { row.root.remove(); campaignRows.delete(id); }
    }
  }

  // -------------------------------------------------------------------- chart
  // an integer step of 1, 2, 5 (or 25) times a power of ten, at least ``raw``
  function niceCount(raw) {
    if (raw <= 1) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw && Number.isInteger(m * p)) return m * p;
    return 10 * p;
  }

  const WAIT_STEPS = [5, 10, 15, 20, 30, 60, 90, 120, 180, 300, 600, 900, 1200, 1800, 3600];
  function niceWait(raw) {
    for (const s of WAIT_STEPS) if (s >= raw) return s;
    return 3600 * Math.ceil(raw / 3600);
  }

  function renderChart(history, serverTime) {
    lastChartInput = [history, serverTime];
    const box = $('chart');
    const W = Math.max(240, Math.floor(box.clientWidth || 640));
    const H = W < 480 ? 200 : 230;
    const nowHour = Math.floor((serverTime || Date.now() / 1000) / 3600) * 3600;
    const byHour = new Map(history.map((r) => [Number(r.hour), r]));
    const rows = [];
    for (let i = CHART_HOURS - 1; i >= 0; i--) {
      const hour = nowHour - i * 3600;
      const r = byHour.get(hour) || {};
      const calls = Number(r.calls || 0);
      const answered = Number(r.answered || 0);
      const abandoned = Number(r.abandoned || 0);
      const self = Number(r.self_service || 0);
      rows.push({ hour, calls, answered, abandoned, self, other: Math.max(0, calls - answered - abandoned - self),
                  avgWait: r.avg_wait === null || r.avg_wait === undefined ? null : Number(r.avg_wait) });
    }
    const key = JSON.stringify([W, rows]);
    if (key === lastChartKey) return;       // redraw only when the numbers change
    lastChartKey = key;

    const L = 40, R = 50, T = 30, B = 26;
    const pw = W - L - R, ph = H - T - B;
    // gridlines: whole numbers of calls; the wait axis shares them with round durations
    const rawCalls = Math.max(...rows.map((r) => r.calls), 4);
    const callStep = niceCount(rawCalls / 4);
    const divisions = Math.max(2, Math.ceil(rawCalls / callStep));
    const maxCalls = callStep * divisions;
    const waitStep = niceWait(Math.max(...rows.map((r) => r.avgWait || 0), 20) / divisions);
    const maxWait = waitStep * divisions;
    const slot = pw / rows.length;
    const barW = Math.max(4, slot * 0.62);
    const y = (v) => T + ph - (v / maxCalls) * ph;
    const yw = (v) => T + ph - (v / maxWait) * ph;

    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', class: 'chart-svg',
                              'aria-label': `calls per hour and average wait, last ${CHART_HOURS} hours`,
                              preserveAspectRatio: 'xMidYMid meet' });
    const total = rows.reduce((n, r) => n + r.calls, 0);
    root.append(svg('title', {}, `calls per hour (last ${CHART_HOURS} h: ${total} calls) and average wait`));

    // grid and axes
    for (let i = 0; i <= divisions; i++) {
      const yy = y(callStep * i);
      root.append(svg('line', { x1: L, x2: W - R, y1: yy, y2: yy, class: i ? 'grid' : 'axis' }));
      root.append(svg('text', { x: L - 6, y: yy + 4, class: 'tick calls-tick', 'text-anchor': 'end' }, callStep * i));
      root.append(svg('text', { x: W - R + 6, y: yy + 4, class: 'tick wait-tick', 'text-anchor': 'start' },
                      fmtDuration(waitStep * i)));
    }
    root.append(svg('text', { x: L - 6, y: 12, class: 'axis-title', 'text-anchor': 'end' }, 'calls'));
    root.append(svg('text', { x: W - R + 6, y: 12, class: 'axis-title wait-title', 'text-anchor': 'start' }, 'wait'));

    // stacked bars
    rows.forEach((r, i) => {
      const x = L + i * slot + (slot - barW) / 2;
      const g = svg('g', { class: 'bar', 'data-hour': r.hour, 'data-calls': r.calls });
      g.append(svg('title', {}, `${fmtHour(r.hour)}: ${r.calls} calls, ${r.answered} answered, ${r.abandoned} abandoned, ` +
                                 `${r.self} self-service; avg wait ${fmtDuration(r.avgWait)}`));
      let acc = 0;
      for (const [k, cls] of [['answered', 'answered'], ['abandoned', 'abandoned'], ['self', 'self'], ['other', 'other']]) {
        if (!r[k]) continue;
        const y0 = y(acc), y1 = y(acc + r[k]);
        g.append(svg('rect', { x, y: y1, width: barW, height: Math.max(0.5, y0 - y1), class: `seg ${cls}` }));
        acc += r[k];
      }
      if (!r.calls) g.append(svg('rect', { x, y: T + ph - 1, width: barW, height: 1, class: 'seg empty' }));
      root.append(g);
      const every = slot < 24 ? 3 : slot < 40 ? 2 : 1;
      if ((rows.length - 1 - i) % every === 0) {
        root.append(svg('text', { x: L + i * slot + slot / 2, y: H - 10, class: 'tick hour-tick', 'text-anchor': 'middle' },
                        fmtHour(r.hour)));
      }
    });

    // average wait line (gaps where an hour had no answered call)
    let d = '';
    let penUp = true;
    rows.forEach((r, i) => {
      if (r.avgWait === null) { penUp = true; return; }
      const cx = L + i * slot + slot / 2;
      d += `${penUp ? 'M' : 'L'}${cx.toFixed(1)},${yw(r.avgWait).toFixed(1)} `;
      penUp = false;
    });
    if (d) root.append(svg('path', { d: d.trim(), class: 'wait-line' }));
    rows.forEach((r, i) => {
      if (r.avgWait === null) return;
      const dot = svg('circle', { cx: L + i * slot + slot / 2, cy: yw(r.avgWait), r: 3.5, class: 'wait-dot' });
      dot.append(svg('title', {}, `${fmtHour(r.hour)}: average wait ${fmtDuration(r.avgWait)}`));
      root.append(dot);
    });
    if (!total) {
      root.append(svg('text', { x: L + pw / 2, y: T + ph / 2, class: 'chart-empty', 'text-anchor': 'middle' },
                      'no finished calls yet'));
    }
    box.replaceChildren(root);
  }

  // --------------------------------------------------------------------- init
  function init() {
    $('noscript-hint').hidden = true;
    $('signin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const value = $('token-input').value.trim();
      if (!value) { showSignin('Enter a token.'); return; }
      $('signin-error').hidden = true;
      signIn(value);
    });
    $('signout').addEventListener('click', (ev) => {
      ev.preventDefault();
      signOut('');
      showMessage('info', 'Signed out: the token was removed from this tab.');
    });
    setInterval(tick, 1000);
    let resizeTimer = null;
    window.addEventListener('resize', () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (lastChartInput && token) renderChart(...lastChartInput); }, 150);
    });
    let saved = null;
    try { saved = sessionStorage.getItem(TOKEN_KEY); } catch (e) { /* ignore */ }
    if (saved) signIn(saved); else showSignin('');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
