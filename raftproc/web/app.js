'use strict';
/*
 * raftproc's live page: a RaftScope-like picture of a real cluster (docs/watch.md).
 *
 * How it is organised:
 *   1. helpers      DOM/SVG builders, colours, the /api fetch (with the token)
 *   2. model        what the page knows: nodes (latest state, process, stream), the
 *                   link faults, messages in flight. Only apply(event) changes it.
 *   3. apply        one function per event kind; live and replay modes both feed it
 *   4. derived      what the model means: role, membership, cuts, timers
 *   5. messages     dots in flight: a "sent" launches one, its "recv" tells when it
 *                   lands, none within LOST_AFTER s of stream time means it was lost
 *   6. rendering    render() on requestAnimationFrame: the ring, the logs, the event
 *                   list, the header; data-* attributes are a test contract
 *   7. controls     node menu, toolbar, client form (POSTs to /api)
 *   8. live mode    EventSource on /api/stream
 *   9. replay mode  keyframe + windows of events played on a local clock
 *  10. boot
 * Nothing grows with the number of events: dots, the list, queues and replay
 * windows are all capped or dropped once used. Event strings only ever reach the
 * DOM through textContent or setAttribute.
 */

// ---------------------------------------------------------------- 1. helpers

const SVG_NS = 'http://www.w3.org/2000/svg';
const TOKEN = new URLSearchParams(location.search).get('token') || '';
const $ = (selector) => document.querySelector(selector);
const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function h(tag, attrs = {}, text = null) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = String(text);
  return node;
}

function s(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = String(text);
  return node;
}

/** Set an attribute only when it changes (render runs every frame). */
function setAttr(node, name, value) {
  const text = String(value);
  const cache = node._attrs || (node._attrs = {});
  if (cache[name] !== text) {
    cache[name] = text;
    node.setAttribute(name, text);
  }
}

function setText(node, text) {
  const value = String(text);
  if (node._text !== value) {
    node._text = value;
    node.textContent = value;
  }
}

function asId(value) {
  if (typeof value !== 'number' && typeof value !== 'string') return null;
  if (typeof value === 'string' && !/^\s*\d+\s*$/.test(value)) return null;
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 ? n : null;
}

const asList = (v) => (Array.isArray(v) ? v : []);
const shortText = (text, max) => (text.length > max ? text.slice(0, max - 1) + '…' : text);

function termHue(term) {
  return (((term * 67) % 360) + 360) % 360;
}

function termFill(term) {
  return Number.isFinite(term) && term > 0 ? `hsl(${termHue(term)}, 72%, 84%)` : '#ececec';
}

function termInk(term) {
  return Number.isFinite(term) && term > 0 ? `hsl(${termHue(term)}, 55%, 38%)` : '#777';
}

/** GET (no body) or POST (body) an /api path; resolves to the JSON answer. */
async function api(path, body) {
  const headers = {};
  if (TOKEN) headers['X-Raftproc-Token'] = TOKEN;
  const init = { headers, cache: 'no-store' };
  if (body !== undefined) {
    init.method = 'POST';
    headers['Content-Type'] = 'application/json';
    headers['X-Raftproc-Page'] = '1';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const said = data && typeof data.error === 'string' ? data.error : `HTTP ${response.status}`;
    throw new Error(said);
  }
  return data;
}

/** GET `path` until the server answers (it may be starting, or restarting), saying why meanwhile. */
async function apiUntilAnswered(path, why) {
  for (;;) {
    try {
      return await api(path);
    } catch (err) {
      setConn('closed', `${why}: ${err.message}`);
      await sleep(2000);
    }
  }
}

// ---------------------------------------------------------------- 2. model

const LOG_COLS = 13;          // index columns in the logs (the last one is "next")
const MAX_DOTS = 300;
const MAX_LIST = 200;
const MAX_QUEUE = 50;         // per pairing key
const LOST_AFTER = 3;         // seconds of stream time without a "recv"
const MIN_TRAVEL = 0.4;       // seconds on screen, at least, for a message
const PROCS = new Set(['running', 'paused', 'dead', 'stopped']);

const model = {
  mode: 'loading',
  meta: null,
  metaNodes: new Set(),
  controllable: new Set(),
  nodes: new Map(),           // id -> {id, state, proc, procT, stream, streamT}
  links: { cuts: [], delays: [], base: 0 },
  tickMs: null,
  clockOffset: 0,             // live: server clock minus page clock, in seconds
  baselineDelay: 0,           // ms most links are held back (drawn quietly)
};

const dirty = { layout: true, logs: true };
const stats = { events: 0, batches: 0, maxLagMs: 0 };
const lagBuckets = [];        // [second, max lag ms] for the last 10 s
const rate = { second: 0, count: 0, shown: 0 };

function ensureNode(id) {
  let node = model.nodes.get(id);
  if (!node) {
    node = { id, state: null, proc: 'unknown', procT: null, stream: null, streamT: null };
    model.nodes.set(id, node);
    dirty.layout = true;
    dirty.logs = true;
    if (model.mode === 'live' && !model.metaNodes.has(id)) refreshMetaSoon();
  }
  return node;
}

// ---------------------------------------------------------------- 3. apply

/** The one renderer entry point for both modes: fold an event into the model. */
function apply(event) {
  if (!event || typeof event !== 'object') return;
  stats.events += 1;
  switch (event.kind) {
    case 'keyframe': applyKeyframe(event); break;
    case 'state': applyState(event); break;
    case 'proc': applyProc(event, true); break;
    case 'stream': applyStream(event); break;
    case 'links': applyLinks(event); break;
    case 'msg': applyMsg(event); break;
    case 'log': applyLog(event); break;
    case 'action':
    case 'client': tell(event); break;
    default: break; // unknown kinds are ignored
  }
}

/** apply(), but one malformed event cannot stop the rest of its batch. */
function applySafely(event) {
  try {
    apply(event);
  } catch (err) {
    console.error('event not drawn:', err);
  }
}

function applyKeyframe(k) {
  model.nodes.clear();
  for (const id of model.metaNodes) ensureNode(id);
  const nodes = k.nodes && typeof k.nodes === 'object' ? k.nodes : {};
  for (const [key, entry] of Object.entries(nodes)) {
    const id = asId(key);
    if (id === null) continue;
    const node = ensureNode(id);
    if (entry && entry.state && typeof entry.state === 'object') applyState({ ...entry.state, node: id });
    if (entry && entry.proc && typeof entry.proc === 'object') applyProc({ ...entry.proc, node: id }, false);
  }
  if (k.links && typeof k.links === 'object') applyLinks(k.links);
  clearDots();
  clearList();
  for (const e of asList(k.recent)) tell(e);
  dirty.layout = true;
  dirty.logs = true;
}

function applyState(e) {
  const id = asId(e.node);
  if (id === null) return;
  const node = ensureNode(id);
  node.state = e;
  if (Number.isFinite(e.tick_ms)) model.tickMs = e.tick_ms;
  dirty.logs = true;
}

function applyProc(e, tellIt) {
  const id = asId(e.node);
  if (id === null || !PROCS.has(e.state)) return;
  const node = ensureNode(id);
  const changed = node.proc !== e.state;
  node.proc = e.state;
  node.procT = Number.isFinite(e.t) ? e.t : null;
  if (changed && tellIt) tell(e);
  dirty.logs = true;
}

function applyStream(e) {
  const id = asId(e.node);
  if (id === null) return;
  const node = ensureNode(id);
  node.stream = e.state === 'lost' ? 'lost' : 'connected';
  node.streamT = Number.isFinite(e.t) ? e.t : null;
}

function applyLinks(e) {
  model.links = {
    cuts: asList(e.cuts).filter((c) => Array.isArray(c) && c.length >= 2),
    delays: asList(e.delays).filter((d) => Array.isArray(d) && d.length >= 3),
    base: Number(e.base_ms) || 0,
  };
}

function applyMsg(e) {
  const me = asId(e.node);
  const peer = asId(e.peer);
  if (me === null || peer === null || typeof e.type !== 'string') return;
  if (e.dir === 'sent') {
    launchDot({
      from: me, to: peer, type: e.type, ok: e.ok, n: Number(e.n) || 1, t: e.t,
      lost: e.lost === true, key: `${me}>${peer}:${e.type}:${e.term}`,
    });
  } else if (e.dir === 'recv') {
    arrive(`${peer}>${me}:${e.type}:${e.term}`, e.t);
  }
}

function applyLog(e) {
  tell(e);
  const me = asId(e.node);
  if (me === null) return;
  const command = typeof e.command === 'string' ? e.command : 'traced';
  const index = e.index;
  if (e.event === 'trace_sent') {
    const to = asId(e.peer);
    if (to !== null) launchDot({ from: me, to, type: 'trace', label: command, t: e.t, key: `${me}>${to}:trace:${index}` });
  } else if (e.event === 'trace_appended' && e.by === 'follower') {
    const from = asId(e.leader);
    if (from !== null) arrive(`${from}>${me}:trace:${index}`, e.t);
  } else if (e.event === 'trace_acknowledged') {
    const to = asId(e.leader);
    if (to !== null) launchDot({ from: me, to, type: 'trace', label: `✓ ${command}`, t: e.t, key: `${me}>${to}:trace-ack:${index}` });
  } else if (e.event === 'trace_ack_received') {
    const from = asId(e.peer);
    if (from !== null) arrive(`${from}>${me}:trace-ack:${index}`, e.t);
  }
}

// ---------------------------------------------------------------- 4. derived

function isDown(node) {
  return node.proc === 'dead' || node.proc === 'stopped';
}

function isFrozen(node) {
  return isDown(node) || node.proc === 'paused';
}

/** The configuration to judge membership by: the leader's, else the newest term's. */
function configSource() {
  let best = null;
  let fallback = null;
  for (const node of model.nodes.values()) {
    const st = node.state;
    if (!st || !Array.isArray(st.voters)) continue;
    if (st.role === 'leader' && !isDown(node) && (!best || st.term > best.term)) best = st;
    if (!fallback || st.term > fallback.term || (st.term === fallback.term && st.t > fallback.t)) fallback = st;
  }
  return best || fallback;
}

function memberOf(id, conf) {
  if (!conf) return 'unknown';
  if (asList(conf.voters).includes(id)) return 'voter';
  if (asList(conf.learners).includes(id)) return 'learner';
  return 'removed';
}

function faultsOf(node) {
  const links = node && node.state && node.state.links;
  return links && typeof links === 'object' ? links : null;
}

/** Is what `a` sends `b` lost? The supervisor's table, or a running node's own faults. */
function isCut(a, b) {
  for (const [x, y] of model.links.cuts) if (x === a && y === b) return true;
  const na = model.nodes.get(a);
  const nb = model.nodes.get(b);
  if (na && !isDown(na) && asList(faultsOf(na)?.drop_to).includes(b)) return true;
  if (nb && !isDown(nb) && asList(faultsOf(nb)?.drop_from).includes(a)) return true;
  return false;
}

/** How long what a sends b is held back: the link's own delay, else the base one
 * (slow motion), as the supervisor's table and a's own state say. */
function delayOf(a, b) {
  let ms = null;
  for (const [x, y, d] of model.links.delays) if (x === a && y === b) ms = Math.max(ms ?? 0, Number(d) || 0);
  if (ms === null) ms = model.links.base || 0;
  const na = model.nodes.get(a);
  const own = faultsOf(na);
  if (na && !isDown(na) && own && typeof own === 'object') {
    const mine = own.delay_ms && typeof own.delay_ms === 'object' ? own.delay_ms[String(b)] : undefined;
    ms = Math.max(ms, Number(mine !== undefined ? mine : own.base_delay_ms) || 0);
  }
  return ms;
}

function isPartitioned(id, conf) {
  const others = [...model.nodes.keys()].filter((o) => o !== id && memberOf(o, conf) !== 'removed');
  if (others.length === 0) return false;
  if (others.every((o) => isCut(id, o) && isCut(o, id))) return true;
  const node = model.nodes.get(id);
  const dropTo = asList(faultsOf(node)?.drop_to);
  return !isDown(node) && others.every((o) => dropTo.includes(o));
}

/** Everything the ring and the tests show of one node. */
function describeNode(id, conf) {
  const node = model.nodes.get(id);
  const st = node && node.state;
  return {
    role: st && typeof st.role === 'string' ? st.role : 'unknown',
    term: st && Number.isFinite(st.term) ? st.term : 0,
    proc: node ? node.proc : 'unknown',
    member: memberOf(id, conf),
    partitioned: isPartitioned(id, conf),
    commit: st ? st.commit : null,
    last: st ? st.last : null,
  };
}

/** Fraction of the election timeout left, or null (leaders, no state). */
function timerLeft(node, now) {
  const st = node.state;
  if (!st || !Array.isArray(st.timer) || st.role === 'leader') return null;
  const [elapsed, timeout] = st.timer;
  if (!(timeout > 0) || !Number.isFinite(st.t)) return null;
  let at = now;
  if (isFrozen(node) && node.procT !== null) at = Math.max(st.t, Math.min(now, node.procT));
  if (node.stream === 'lost' && node.streamT !== null) at = Math.max(st.t, Math.min(at, node.streamT));
  return clamp(1 - (elapsed + Math.max(0, at - st.t) * 1000) / timeout, 0, 1);
}

// ---------------------------------------------------------------- clocks

let animT = 0;              // seconds of animation: runs while live or playing

/** The page's idea of "now" on the event clock (live: the server's; replay: the replay's). */
function pageNow() {
  if (model.mode === 'replay') return replay.clock;
  return Date.now() / 1000 + model.clockOffset;
}

function playSpeed() {
  return model.mode === 'replay' ? replay.speed : 1;
}

// ---------------------------------------------------------------- 5. messages in flight

const dots = [];             // oldest first
const waiting = new Map();   // pair key -> dots sent, not yet known to have arrived (FIFO)
const early = new Map();     // pair key -> arrival times seen before their send

function launchDot(d) {
  ensureLayout();
  if (d.from === d.to || !layout.pos.has(d.from) || !layout.pos.has(d.to)) return;
  const dot = { ...d, born: animT, seg: null, phase: 'flying', fadeAt: 0, dead: false, el: null, labelEl: null };
  const guess = Math.max(MIN_TRAVEL, (delayOf(d.from, d.to) / 1000 + 0.005) / playSpeed());
  setSegment(dot, 0.5, guess / 2);
  if (d.lost) {
    loseDot(dot);
  } else {
    const arrival = takeEarly(d.key, d.t);
    if (arrival !== null) pairDot(dot, arrival);
    else pushCapped(waiting, d.key, dot);
  }
  makeDotElements(dot);
  dots.push(dot);
  while (dots.length > MAX_DOTS) removeDot(dots[0]);
}

function arrive(key, t) {
  const queue = waiting.get(key);
  while (queue && queue.length) {
    const dot = queue.shift();
    if (!dot.dead && dot.phase === 'flying') {
      if (!queue.length) waiting.delete(key);
      pairDot(dot, t);
      return;
    }
  }
  waiting.delete(key);
  pushCapped(early, key, t);
}

function takeEarly(key, sentT) {
  const queue = early.get(key);
  if (!queue) return null;
  while (queue.length) {
    const t = queue.shift();
    if (t >= sentT - 0.05 && t - sentT < LOST_AFTER) {
      if (!queue.length) early.delete(key);
      return t;
    }
  }
  early.delete(key);
  return null;
}

function pushCapped(map, key, value) {
  let queue = map.get(key);
  if (!queue) map.set(key, (queue = []));
  queue.push(value);
  if (queue.length > MAX_QUEUE) queue.shift();
}

function dotProgress(dot) {
  const seg = dot.seg;
  if (!seg) return 0;
  const f = seg.t1 > seg.t0 ? clamp((animT - seg.t0) / (seg.t1 - seg.t0), 0, 1) : 1;
  return seg.p0 + (seg.p1 - seg.p0) * f;
}

function setSegment(dot, p1, seconds) {
  const p0 = dotProgress(dot);
  dot.seg = { p0, p1, t0: animT, t1: animT + Math.max(0, seconds) };
}

function pairDot(dot, arrivalT) {
  const travel = Math.max(MIN_TRAVEL, (arrivalT - dot.t) / playSpeed());
  dot.phase = 'paired';
  setSegment(dot, 1, Math.max(0.12, dot.born + travel - animT));
}

function loseDot(dot) {
  const p = dotProgress(dot);
  dot.phase = 'lost';
  const seconds = p < 0.5 ? Math.max(0.2, (0.5 - p) * 0.8) : 0;
  setSegment(dot, Math.max(p, 0.5), seconds);
  dot.fadeAt = dot.seg.t1;
}

function makeDotElements(dot) {
  const radius = { heartbeat: 3, append_resp: 3.2, append: 5.5, snapshot: 6.5, timeout_now: 6, trace: 6.5 }[dot.type] || 4.5;
  dot.el = s('circle', { class: 'msg', 'data-type': dot.type, r: radius });
  if (dot.ok === true || dot.ok === false) dot.el.setAttribute('data-ok', String(dot.ok));
  if (dot.lost) dot.el.setAttribute('data-lost', 'true');
  layers.msgs.appendChild(dot.el);
  let text = null;
  if (dot.type === 'trace') text = shortText(dot.label || 'traced', 24);
  else if (dot.type === 'append' && dot.n > 1) text = `×${dot.n}`;
  if (text !== null) {
    dot.labelEl = s('text', { class: `msg-label msg-label-${dot.type === 'trace' ? 'trace' : 'n'}` }, text);
    layers.msgs.appendChild(dot.labelEl);
  }
}

function removeDot(dot) {
  dot.dead = true;
  if (dot.el) dot.el.remove();
  if (dot.labelEl) dot.labelEl.remove();
  const i = dots.indexOf(dot);
  if (i >= 0) dots.splice(i, 1);
}

function clearDots() {
  while (dots.length) removeDot(dots[dots.length - 1]);
  waiting.clear();
  early.clear();
}

/** Drop pairing entries nobody will use again (called about once a second). */
function sweepQueues(now) {
  for (const [key, queue] of waiting) {
    const live = queue.filter((d) => !d.dead && d.phase === 'flying');
    if (live.length) waiting.set(key, live);
    else waiting.delete(key);
  }
  for (const [key, queue] of early) {
    const fresh = queue.filter((t) => now - t < LOST_AFTER);
    if (fresh.length) early.set(key, fresh);
    else early.delete(key);
  }
}

function renderDots(now) {
  for (let i = dots.length - 1; i >= 0; i -= 1) {
    const dot = dots[i];
    if (dot.phase === 'flying' && Number.isFinite(dot.t) && now - dot.t > LOST_AFTER) loseDot(dot);
    const p = dotProgress(dot);
    if (dot.phase === 'paired' && p >= 1) { removeDot(dot); continue; }
    let opacity = 1;
    if (dot.phase === 'lost') {
      opacity = 1 - (animT - dot.fadeAt) / 0.6;
      if (opacity <= 0) { removeDot(dot); continue; }
    }
    const a = layout.pos.get(dot.from);
    const b = layout.pos.get(dot.to);
    if (!a || !b) { removeDot(dot); continue; }
    const dx = b.x - a.x;
    const dy = b.y - a.y;
    const len = Math.hypot(dx, dy) || 1;
    const ux = dx / len;
    const uy = dy / len;
    const r = layout.radius + 2;
    const side = dot.type === 'trace' ? 14 : 5;  // traced writes ride beside their append
    const x = a.x + ux * r + (dx - 2 * ux * r) * p - uy * side;
    const y = a.y + uy * r + (dy - 2 * uy * r) * p + ux * side;
    setAttr(dot.el, 'cx', x.toFixed(1));
    setAttr(dot.el, 'cy', y.toFixed(1));
    setAttr(dot.el, 'opacity', clamp(opacity, 0, 1).toFixed(2));
    if (dot.labelEl) {
      setAttr(dot.labelEl, 'x', x.toFixed(1));
      setAttr(dot.labelEl, 'y', (y - 9).toFixed(1));
      setAttr(dot.labelEl, 'opacity', clamp(opacity, 0, 1).toFixed(2));
    }
  }
}

// ---------------------------------------------------------------- 6. rendering: the ring

const layers = {};
const layout = { key: '', ids: [], pos: new Map(), radius: 44, views: new Map(), links: new Map() };
const RING = { cx: 300, cy: 300, r: 205 };

function ensureLayout() {
  if (!dirty.layout) return;
  dirty.layout = false;
  const ids = [...model.nodes.keys()].sort((a, b) => a - b);
  const key = ids.join(',');
  if (key === layout.key) return;
  layout.key = key;
  layout.ids = ids;
  const n = Math.max(ids.length, 1);
  layout.radius = n === 1 ? 46 : clamp(RING.r * Math.sin(Math.PI / n) * 0.52, 20, 46);
  layout.pos.clear();
  ids.forEach((id, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / n;
    layout.pos.set(id, { x: RING.cx + RING.r * Math.cos(angle), y: RING.cy + RING.r * Math.sin(angle) });
  });
  buildNodeViews();
  buildLinkViews();
}

function buildNodeViews() {
  layers.nodes.replaceChildren();
  layout.views.clear();
  const R = layout.radius;
  for (const id of layout.ids) {
    const p = layout.pos.get(id);
    const g = s('g', { class: 'node', 'data-node': id, transform: `translate(${p.x.toFixed(1)} ${p.y.toFixed(1)})`, tabindex: 0 });
    const v = {
      g,
      halo: s('circle', { class: 'halo', r: R + 13 }),
      timerBg: s('circle', { class: 'timer-bg', r: R + 6 }),
      timer: s('circle', { class: 'timer', r: R + 6, transform: 'rotate(-90)' }),
      body: s('circle', { class: 'body', r: R }),
      crown: s('text', { class: 'crown', y: -R - 17 }, '♛'),
      name: s('text', { class: 'name', y: -R * 0.22 }),
      role: s('text', { class: 'role', y: R * 0.2 }),
      term: s('text', { class: 'term', y: R * 0.52 }),
      badge: s('text', { class: 'badge', y: R + 30 }),
      votes: s('g', { class: 'votes' }),
      votesKey: '',
    };
    g.append(v.halo, v.timerBg, v.timer, v.body, v.crown, v.name, v.role, v.term, v.votes, v.badge);
    setAttr(v.name, 'font-size', Math.round(clamp(R * 0.42, 11, 19)));
    setAttr(v.role, 'font-size', Math.round(clamp(R * 0.27, 8, 12)));
    setAttr(v.term, 'font-size', Math.round(clamp(R * 0.27, 8, 12)));
    layers.nodes.appendChild(g);
    layout.views.set(id, v);
  }
}

function buildLinkViews() {
  layers.links.replaceChildren();
  layout.links.clear();
  const ids = layout.ids;
  for (let i = 0; i < ids.length; i += 1) {
    for (let j = i + 1; j < ids.length; j += 1) {
      const a = ids[i];
      const b = ids[j];
      const pa = layout.pos.get(a);
      const pb = layout.pos.get(b);
      const line = s('line', { class: 'link', 'data-from': a, 'data-to': b, 'data-cut': 'false', 'data-delay': 0,
        x1: pa.x.toFixed(1), y1: pa.y.toFixed(1), x2: pb.x.toFixed(1), y2: pb.y.toFixed(1) });
      const mark = s('text', { class: 'cut-mark', x: ((pa.x + pb.x) / 2).toFixed(1), y: ((pa.y + pb.y) / 2 + 5).toFixed(1) }, '✕');
      const labelAB = s('text', { class: 'delay-label' });
      const labelBA = s('text', { class: 'delay-label' });
      layers.links.append(line, mark, labelAB, labelBA);
      layout.links.set(`${a}-${b}`, { a, b, line, mark, labelAB, labelBA });
    }
  }
}

function placeDelayLabel(label, from, to, ms, at) {
  if (!ms) { setAttr(label, 'visibility', 'hidden'); return; }
  const pa = layout.pos.get(from);
  const pb = layout.pos.get(to);
  setAttr(label, 'visibility', 'visible');
  setAttr(label, 'x', (pa.x + (pb.x - pa.x) * at).toFixed(1));
  setAttr(label, 'y', (pa.y + (pb.y - pa.y) * at - 4).toFixed(1));
  setText(label, `${ms} ms`);
}

/** The delay most directed links share when nearly all are slowed (the demo holds
 * every message back): drawn quietly, told once, so the exceptions stand out. */
function baselineDelay() {
  if (model.links.base > 0) return model.links.base;
  const counts = new Map();
  let total = 0;
  for (const view of layout.links.values()) {
    for (const ms of [delayOf(view.a, view.b), delayOf(view.b, view.a)]) {
      counts.set(ms, (counts.get(ms) || 0) + 1);
      total += 1;
    }
  }
  let best = 0;
  let bestCount = 0;
  for (const [ms, count] of counts) if (count > bestCount) [best, bestCount] = [ms, count];
  return total >= 4 && bestCount >= total * 0.6 ? best : 0;
}

function renderLinks() {
  const base = baselineDelay();
  model.baselineDelay = base;
  for (const view of layout.links.values()) {
    const { a, b } = view;
    const cut = isCut(a, b) || isCut(b, a);
    const ab = delayOf(a, b);
    const ba = delayOf(b, a);
    const odd = (ab !== base && ab > 0) || (ba !== base && ba > 0);
    setAttr(view.line, 'data-cut', cut);
    setAttr(view.line, 'data-delay', Math.max(ab, ba));
    setAttr(view.line, 'data-slow', odd ? 'true' : (ab > 0 || ba > 0 ? 'base' : 'false'));
    setAttr(view.mark, 'visibility', cut ? 'visible' : 'hidden');
    const showAB = ab !== base ? ab : 0;
    const showBA = ba !== base ? ba : 0;
    if (showAB && showAB === showBA) {
      placeDelayLabel(view.labelAB, a, b, showAB, 0.5);
      placeDelayLabel(view.labelBA, b, a, 0, 0);
    } else {
      placeDelayLabel(view.labelAB, a, b, showAB, 0.3);  // near the end whose messages are held back
      placeDelayLabel(view.labelBA, b, a, showBA, 0.3);
    }
  }
}

const ROLE_WORDS = { leader: 'leader', follower: 'follower', candidate: 'candidate', pre_candidate: 'pre-candidate' };

function roleText(d, node) {
  if (d.proc === 'dead') return '✕ down';
  if (d.proc === 'stopped') return '■ stopped';
  if (d.proc === 'paused') return '⏸ paused';
  if (!node || !node.state) return 'unknown';
  if (d.member === 'removed') return 'removed';
  if (d.member === 'learner' && d.role === 'follower') return 'learner';
  return ROLE_WORDS[d.role] || d.role;
}

function badgeText(d, node) {
  const st = node && node.state;
  if (d.partitioned) return 'cut off';
  if (st && st.disk_full) return 'disk full';
  if (node && node.stream === 'lost' && !isDown(node)) return 'no stream';
  if (d.member === 'removed' && st) return 'not a member';
  if (st && st.role === 'leader' && asId(st.transfer) !== null) return `handing over to S${st.transfer}`;
  return '';
}

function renderNode(id, now, conf) {
  const v = layout.views.get(id);
  const node = model.nodes.get(id);
  if (!v || !node) return;
  const d = describeNode(id, conf);
  const g = v.g;
  setAttr(g, 'data-role', d.role);
  setAttr(g, 'data-term', d.term);
  setAttr(g, 'data-proc', d.proc);
  setAttr(g, 'data-partitioned', d.partitioned);
  setAttr(g, 'data-member', d.member);
  setAttr(g, 'data-known', node.state ? 'true' : 'false');
  const down = isDown(node);
  const leading = d.role === 'leader' && !down;
  setAttr(g, 'data-leading', leading);
  setAttr(v.body, 'fill', down ? '#c9c9c9' : termFill(node.state ? d.term : NaN));
  setText(v.name, `S${id}`);
  setText(v.role, roleText(d, node));
  setText(v.term, node.state ? `term ${d.term}` : '');
  setText(v.badge, badgeText(d, node));
  setAttr(v.crown, 'visibility', leading ? 'visible' : 'hidden');
  setAttr(v.crown, 'fill', termInk(d.term));
  renderTimer(v, node, now, leading);
  renderVotes(v, node, d);
}

function renderTimer(v, node, now, leading) {
  const R = layout.radius + 6;
  const circumference = 2 * Math.PI * R;
  const left = leading ? null : timerLeft(node, now);
  if (left === null) {
    setAttr(v.timer, 'visibility', 'hidden');
    setAttr(v.timerBg, 'visibility', leading ? 'visible' : 'hidden');
    return;
  }
  setAttr(v.timerBg, 'visibility', 'visible');
  setAttr(v.timer, 'visibility', 'visible');
  setAttr(v.timer, 'stroke-dasharray', `${(left * circumference).toFixed(1)} ${circumference.toFixed(1)}`);
  setAttr(v.timer, 'data-low', left < 0.2);
}

function renderVotes(v, node, d) {
  const st = node.state;
  const campaigning = st && (st.role === 'candidate' || st.role === 'pre_candidate') && !isDown(node);
  const voters = campaigning ? asList(st.voters).filter((x) => asId(x) !== null) : [];
  const granted = new Set(campaigning ? asList(st.votes) : []);
  const key = campaigning ? `${st.role}|${voters.join(',')}|${[...granted].join(',')}` : '';
  if (key === v.votesKey) return;
  v.votesKey = key;
  v.votes.replaceChildren();
  const R = layout.radius + 21;
  const step = Math.min(0.2, 1.6 / Math.max(voters.length - 1, 1)) * Math.PI;
  voters.forEach((voter, i) => {
    const angle = -Math.PI / 2 + step * (i - (voters.length - 1) / 2);
    const dot = s('circle', { class: 'vote', r: 4.5, cx: (R * Math.cos(angle)).toFixed(1), cy: (R * Math.sin(angle)).toFixed(1),
      'data-voter': voter, 'data-granted': granted.has(voter) });
    dot.appendChild(s('title', {}, `S${voter}: ${granted.has(voter) ? 'granted' : 'not (yet)'}`));
    v.votes.appendChild(dot);
  });
  setAttr(v.votes, 'data-kind', st && st.role === 'pre_candidate' ? 'pre' : 'real');
}

function renderCenter(conf) {
  let leader = null;
  for (const node of model.nodes.values()) {
    const st = node.state;
    if (st && st.role === 'leader' && !isDown(node) && node.proc !== 'paused' && (!leader || st.term > leader.term)) leader = st;
  }
  const text = leader ? `S${leader.node} leads term ${leader.term}` : (model.nodes.size ? 'no leader' : 'waiting for the cluster…');
  setText(layers.centerText, text);
  setAttr(layers.centerText, 'fill', leader ? termInk(leader.term) : '#888');
  const voters = conf ? asList(conf.voters) : [];
  const learners = conf ? asList(conf.learners) : [];
  let sub = voters.length ? `voters ${voters.join(', ')}` : '';
  if (learners.length) sub += ` · learners ${learners.join(', ')}`;
  setText(layers.centerSub, sub);
  setText(layers.centerNote, model.baselineDelay ? `every message held back ${model.baselineDelay} ms` : '');
  setText($('#summary'), text);
}

function renderRing(now) {
  ensureLayout();
  const conf = configSource();
  for (const id of layout.ids) renderNode(id, now, conf);
  renderLinks();
  renderDots(now);
  renderCenter(conf);
}

// ---------------------------------------------------------------- 6b. rendering: the logs

const logRows = new Map();   // id -> {row, head, cells, progress}
let logsRenderedAt = 0;

function logWindow() {
  let maxLast = 0;
  for (const node of model.nodes.values()) {
    if (node.state && Number.isFinite(node.state.last)) maxLast = Math.max(maxLast, node.state.last);
  }
  const hi = maxLast + 1;
  return { lo: Math.max(1, hi - LOG_COLS + 1), hi };
}

function leaderProgress() {
  let best = null;
  for (const node of model.nodes.values()) {
    const st = node.state;
    if (st && st.role === 'leader' && !isDown(node) && st.progress && (!best || st.term > best.term)) best = st;
  }
  return best;
}

function logRowFor(id) {
  let r = logRows.get(id);
  if (!r) {
    const row = h('div', { class: 'log-row', 'data-node': id });
    const head = h('div', { class: 'log-head' });
    const name = h('span', { class: 'log-name' });
    const info = h('span', { class: 'log-info' });
    head.append(name, info);
    const cells = h('div', { class: 'log-cells' });
    const progress = h('div', { class: 'log-progress' });
    row.append(cells, progress);
    r = { row, head, name, info, cells, progress };
    logRows.set(id, r);
  }
  return r;
}

function renderLogs() {
  const container = $('#logs');
  const win = logWindow();
  const lead = leaderProgress();
  const wanted = [];
  wanted.push(renderIndexRow(win));
  for (const id of layout.ids) {
    const r = logRowFor(id);
    fillLogRow(r, id, win, lead);
    wanted.push(r.row);
  }
  for (const [id, r] of logRows) if (!model.nodes.has(id)) logRows.delete(id);
  const same = wanted.length === container.children.length && wanted.every((el, i) => container.children[i] === el);
  if (!same) container.replaceChildren(...wanted);
}

let indexRow = null;
function renderIndexRow(win) {
  if (!indexRow) indexRow = h('div', { class: 'log-index-row' });
  const parts = [h('div', { class: 'log-head' }, 'index'), h('div', { class: 'slot snap-slot' })];
  for (let i = win.lo; i < win.lo + LOG_COLS; i += 1) parts.push(h('div', { class: 'slot index-label' }, i <= win.hi ? i : ''));
  indexRow.replaceChildren(...parts);
  return indexRow;
}

function fillLogRow(r, id, win, lead) {
  const node = model.nodes.get(id);
  const st = node && node.state;
  setText(r.name, `S${id}`);
  setAttr(r.row, 'data-proc', node ? node.proc : 'unknown');
  setAttr(r.row, 'data-role', st ? st.role : 'unknown');
  setAttr(r.row, 'data-leading', !!(st && st.role === 'leader' && node && !isDown(node)));
  if (!st) {
    setText(r.info, 'no state yet');
    r.cells.replaceChildren(r.head, h('div', { class: 'slot snap-slot' }));
    r.progress.replaceChildren();
    return;
  }
  const behind = st.last < win.lo - 1 ? ` · behind (last ${st.last})` : '';
  setText(r.info, `commit ${st.commit} · applied ${st.applied}${behind}`);
  const entries = new Map();
  for (const e of asList(st.log)) if (Array.isArray(e) && Number.isFinite(e[0])) entries.set(e[0], e);
  const first = Number.isFinite(st.first) ? st.first : 1;
  const cells = [r.head, snapshotCell(st, first)];
  for (let i = win.lo; i < win.lo + LOG_COLS; i += 1) cells.push(logCell(i, entries.get(i), st, first));
  r.cells.replaceChildren(...cells);
  renderProgressMarkers(r, id, win, lead);
}

function snapshotCell(st, first) {
  if (first <= 1) return h('div', { class: 'slot snap-slot' });
  const upTo = Array.isArray(st.snapshot) && Number.isFinite(st.snapshot[0]) ? st.snapshot[0] : first - 1;
  const cell = h('div', { class: 'snapshot', 'data-index': upTo, title: `entries up to ${upTo} are in the snapshot` }, `snap ≤ ${upTo}`);
  return cell;
}

function logCell(i, entry, st, first) {
  if (entry) {
    const [index, term, label, traced] = entry;
    const text = typeof label === 'string' ? label : String(label);
    const committed = index <= st.commit;
    const cell = h('div', { class: 'entry', 'data-index': index, 'data-term': term, 'data-committed': committed,
      'data-label': text, 'data-traced': traced === true, title: `#${index} · term ${term} · ${text}${committed ? ' · committed' : ' · not committed'}` });
    cell.style.background = termFill(term);
    cell.style.borderColor = termInk(term);
    cell.append(h('span', { class: 'entry-term' }, term), h('span', { class: 'entry-label' }, shortText(text, 9)));
    return cell;
  }
  if (i < first) return h('div', { class: 'compacted', title: `index ${i} is in the snapshot` });
  if (i <= st.last) return h('div', { class: 'slot unseen', title: `index ${i}: held, not in the streamed tail` }, '·');
  return h('div', { class: 'slot' });
}

function renderProgressMarkers(r, id, win, lead) {
  const pr = lead && lead.node !== id && lead.progress ? lead.progress[String(id)] : null;
  if (!Array.isArray(pr)) {
    if (r.progress.childElementCount) r.progress.replaceChildren();
    setAttr(r.row, 'data-progress', 'false');
    return;
  }
  setAttr(r.row, 'data-progress', 'true');
  const [match, next, mode] = pr;
  const parts = [h('div', { class: 'log-head progress-head' }, String(mode || '')), h('div', { class: 'slot snap-slot' })];
  for (let i = win.lo; i < win.lo + LOG_COLS; i += 1) {
    const slot = h('div', { class: 'slot marker-slot' });
    const first = i === win.lo;
    const last = i === win.lo + LOG_COLS - 1;
    if (match === i || (first && match < i && match > 0) || (last && match > i)) {
      slot.appendChild(h('span', { class: 'match', 'data-index': match, title: `match index ${match} (leader S${lead.node})` }, match === i ? '▲' : '◂▲'));
    }
    if (next === i || (first && next < i) || (last && next > i)) {
      slot.appendChild(h('span', { class: 'next', 'data-index': next, title: `next index ${next} (leader S${lead.node})` }, next === i ? '△' : '◂△'));
    }
    parts.push(slot);
  }
  r.progress.replaceChildren(...parts);
}

// ---------------------------------------------------------------- 6c. rendering: the event list

let listQueue = [];          // told events waiting for the next frame

function clearList() {
  listQueue = [];
  $('#events').replaceChildren();
}

function tell(e) {
  if (!e || typeof e !== 'object') return;
  listQueue.push(e);
  if (listQueue.length > MAX_LIST) listQueue.splice(0, listQueue.length - MAX_LIST);
}

function flushList() {
  if (!listQueue.length) return;
  const list = $('#events');
  const items = listQueue.map(listItem).filter(Boolean);
  listQueue = [];
  const fragment = document.createDocumentFragment();
  for (let i = items.length - 1; i >= 0; i -= 1) fragment.appendChild(items[i]);
  list.insertBefore(fragment, list.firstChild);
  while (list.childElementCount > MAX_LIST) list.lastElementChild.remove();
}

function eventTime(t) {
  if (!Number.isFinite(t)) return '';
  if (model.mode === 'replay' && replay.index) return `+${(t - replay.start).toFixed(1)}s`;
  const d = new Date(t * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${Math.floor(d.getMilliseconds() / 100)}`;
}

function listItem(e) {
  let name = e.kind;
  let text = null;
  let category = 'info';
  if (e.kind === 'log') {
    name = String(e.event || 'log');
    [text, category] = describeLog(e);
  } else if (e.kind === 'action') {
    [text, category] = [describeActionEvent(e), 'fault'];
  } else if (e.kind === 'client') {
    [text, category] = [describeClient(e), 'client'];
  } else if (e.kind === 'proc') {
    [text, category] = [`node ${e.node} process: ${e.state}${e.pid ? ` (pid ${e.pid})` : ''}`, 'fault'];
  } else {
    return null;
  }
  const item = h('li', { 'data-event': name, 'data-node': e.node ?? '', 'data-category': category });
  item.append(h('time', {}, eventTime(e.t)), h('span', { class: 'what' }, text));
  return item;
}

const str = (v) => (v === null || v === undefined ? '?' : String(v));

function describeLog(e) {
  const n = `node ${str(e.node)}`;
  const term = e.term !== undefined ? ` (term ${e.term})` : '';
  const cmd = str(e.command);
  const why = e.reason ? `: ${e.reason}` : '';
  switch (e.event) {
    case 'pre_vote_started': return [`${n} asks for pre-votes${Number.isFinite(e.term) ? ` (for term ${e.term + 1})` : ''}`, 'election'];
    case 'pre_vote_granted': return [`${n} would vote for node ${str(e.candidate)} (pre-vote for term ${str(e.for_term)})`, 'vote'];
    case 'pre_vote_rejected': return [`${n} refused node ${str(e.candidate)} a pre-vote (term ${str(e.for_term)})`, 'vote'];
    case 'election_started': return [`${n} stands for election in term ${str(e.term)}`, 'election'];
    case 'vote_granted': return [`${n} granted its vote to node ${str(e.candidate)}${term}`, 'vote'];
    case 'vote_rejected': return [`${n} refused its vote to node ${str(e.candidate)}${term}${why}`, 'vote'];
    case 'became_leader': return [`${n} became leader of term ${str(e.term)}`, 'leader'];
    case 'became_follower': return [e.leader !== null && e.leader !== undefined
      ? `${n} follows node ${e.leader}${term}` : `${n} became a follower${term}${e.previous_role ? `, was ${ROLE_WORDS[e.previous_role] || e.previous_role}` : ''}`, 'election'];
    case 'leader_stepped_down': return [`${n} stepped down as leader${term}${why}`, 'leader'];
    case 'leadership_transfer_started': return [`${n} hands leadership to node ${str(e.target)}`, 'leader'];
    case 'timeout_now_sent': return [`${n} tells node ${str(e.target)} to stand now (TimeoutNow)`, 'leader'];
    case 'leadership_transfer_received': return [`${n} takes over leadership from node ${str(e.leader)}`, 'leader'];
    case 'leadership_transfer_aborted': return [`${n} gave up handing leadership to node ${str(e.target)}${why}`, 'leader'];
    case 'config_change_appended': return [`${n} proposes a new configuration: ${str(e.membership)}`, 'config'];
    case 'joint_config_committed': return [`${n}: joint configuration committed (${str(e.membership)})`, 'config'];
    case 'config_applied': return [`${n} applied configuration ${str(e.membership)}`, 'config'];
    case 'leader_removed': return [`${n}, the leader, was removed; hands over to node ${str(e.handed_to)}`, 'config'];
    case 'log_compacted': return [`${n} compacted its log up to index ${str(e.snapshot_index)}`, 'snapshot'];
    case 'snapshot_send_started': return [`${n} sends node ${str(e.peer)} a snapshot up to index ${str(e.index)}`, 'snapshot'];
    case 'snapshot_received': return [`${n} received a snapshot up to index ${str(e.index)} from node ${str(e.leader)}`, 'snapshot'];
    case 'snapshot_restored': return [`${n} restored a snapshot up to index ${str(e.index)}`, 'snapshot'];
    case 'disk_full': return [`${n}: disk full, writes wait`, 'fault'];
    case 'disk_write_resumed': return [`${n}: disk writes resumed`, 'fault'];
    case 'trace_appended': return [`trace: ${n} appended ${cmd} at index ${str(e.index)}`, 'trace'];
    case 'trace_sent': return [`trace: ${n} sent ${cmd} to node ${str(e.peer)}`, 'trace'];
    case 'trace_acknowledged': return [`trace: ${n} acknowledged ${cmd} to node ${str(e.leader)}`, 'trace'];
    case 'trace_ack_received': return [`trace: ${n} heard node ${str(e.peer)} holds ${cmd}`, 'trace'];
    case 'trace_committed': return [`trace: ${n} committed ${cmd} (index ${str(e.index)})`, 'trace'];
    case 'trace_applied': return [`trace: ${n} applied ${cmd}`, 'trace'];
    case 'node_started': return [`${n} started${term}`, 'fault'];
    case 'peer_connected': return [`${n} connected to node ${str(e.peer)}`, 'info'];
    case 'peer_disconnected': return [`${n} lost its connection to node ${str(e.peer)}${why}`, 'info'];
    default: return [`${n}: ${str(e.event)}`, 'info'];
  }
}

function describeAction(action, node, args) {
  const a = args && typeof args === 'object' ? args : {};
  switch (action) {
    case 'split': return a.groups ? `split ${asList(a.groups).map((g) => asList(g).join(',')).join(' | ')}` : 'split';
    case 'slow': return a.from !== undefined ? `slow ${str(a.from)} → ${str(a.to)} ${str(a.ms)} ms` : 'slow';
    case 'heal': return 'heal all links';
    case 'join': return 'join a new node';
    case 'transfer': return `transfer leadership to node ${str(node)}`;
    default: return node !== null && node !== undefined ? `${action} node ${node}` : String(action);
  }
}

const actionArgs = new Map();   // "action node" -> args of its start event (done events carry none)

function describeActionEvent(e) {
  const key = `${e.action} ${e.node ?? ''}`;
  if (e.phase === 'start' && e.args && typeof e.args === 'object') {
    actionArgs.set(key, e.args);
    if (actionArgs.size > 50) actionArgs.delete(actionArgs.keys().next().value);
  }
  const what = describeAction(str(e.action), e.node, e.args || actionArgs.get(key));
  if (e.phase === 'start') return `▶ ${what}`;
  if (e.phase === 'failed') return `✗ ${what} failed: ${str(e.message)}`;
  return `✓ ${what}: ${str(e.message)}`;
}

function describeRoute(route) {
  const steps = [];
  for (const step of asList(route)) {
    if (!step || typeof step !== 'object') continue;
    if (step.status === 'ok') continue;
    if (step.status === 'redirect') steps.push(`node ${str(step.node)} redirected to ${str(step.leader)}`);
    else steps.push(`node ${str(step.node)}: ${str(step.status)}`);
  }
  return steps.length ? ` (${steps.slice(-4).join('; ')})` : '';
}

function describeClient(e) {
  const op = String(e.op || '?').toUpperCase();
  const key = str(e.key);
  const head = e.op === 'set' ? `${op} ${key}=${str(e.value)}` : `${op} ${key}`;
  if (!e.ok) return `${head} → failed: ${str(e.error)}${describeRoute(e.route)}`;
  let answer = 'OK';
  if (e.op === 'get') {
    const value = e.value !== undefined ? e.value : e.result;
    answer = value === null || value === undefined ? '(no such key)' : JSON.stringify(String(value));
  }
  return `${head} → ${answer}, answered by node ${str(e.answered_by)}${describeRoute(e.route)}`;
}

// ---------------------------------------------------------------- 6d. rendering: header and frame

function setConn(state, text) {
  const conn = $('#conn');
  setAttr(conn, 'data-state', state);
  setText(conn, text);
}

function countArrivals(n, now) {
  const second = Math.floor(now);
  if (second !== rate.second) {
    rate.shown = second === rate.second + 1 ? rate.count : 0;
    rate.second = second;
    rate.count = 0;
  }
  rate.count += n;
}

function noteLag(lagMs, now) {
  const second = Math.floor(now);
  const last = lagBuckets[lagBuckets.length - 1];
  if (last && last[0] === second) last[1] = Math.max(last[1], lagMs);
  else lagBuckets.push([second, lagMs]);
  updateMaxLag(now);
}

function updateMaxLag(now) {
  while (lagBuckets.length && lagBuckets[0][0] < Math.floor(now) - 9) lagBuckets.shift();
  stats.maxLagMs = lagBuckets.reduce((m, b) => Math.max(m, b[1]), 0);
}

function renderHeader(now) {
  countArrivals(0, Date.now() / 1000);
  setText($('#rate'), `${rate.shown} events/s`);
  const slow = $('#slowness');
  if (model.tickMs && model.tickMs > 10) {
    slow.hidden = false;
    const factor = model.tickMs / 10;
    setText(slow, `nodes run ${Number.isInteger(factor) ? factor : factor.toFixed(1)}× slower than real time`);
  } else {
    slow.hidden = true;
  }
  if (model.mode === 'live') updateMaxLag(now);
}

let lastFrame = 0;
let lastWall = 0;
let lastSweep = 0;

function render() {
  const wall = performance.now() / 1000;
  const dt = lastWall ? clamp(wall - lastWall, 0, 0.25) : 0;
  lastWall = wall;
  lastFrame = performance.now();
  if (model.mode === 'replay') tickReplay(dt);
  if (model.mode === 'live' || (model.mode === 'replay' && replay.playing)) animT += dt;
  const now = pageNow();
  renderRing(now);
  if (dirty.logs && performance.now() - logsRenderedAt > 100) {
    dirty.logs = false;
    logsRenderedAt = performance.now();
    renderLogs();
  }
  flushList();
  renderHeader(now);
  if (model.mode === 'replay') renderReplayBar();
  if (wall - lastSweep > 1) {
    lastSweep = wall;
    sweepQueues(now);
  }
}

// 30 frames a second: dots still glide, and a browser drawing without a GPU (headless
// Chromium on a 2-core CI machine, beside the nodes it watches) spends half the CPU.
const FRAME_MS = 1000 / 30;

function frame(ts) {
  try {
    if (ts - lastFrame >= FRAME_MS - 2) render();
  } finally {
    requestAnimationFrame(frame);
  }
}

/** rAF stops in a hidden tab; keep the picture (and its data attributes) current anyway. */
function renderIfStale() {
  if (performance.now() - lastFrame > 400) render();
}

// ---------------------------------------------------------------- 7. controls

const runningActions = new Map();   // key -> label

async function runAction(body) {
  const key = `${body.action} ${body.node ?? ''}`;
  const label = describeAction(body.action, body.node, body);
  const status = $('#action-status');
  if (runningActions.has(key)) {
    showStatus(body.action, false, `${label}: already under way`);
    return;
  }
  runningActions.set(key, label);
  renderRunning();
  status.removeAttribute('data-ok');
  try {
    const answer = await api('/api/action', body);
    const ok = !!(answer && answer.ok);
    showStatus(body.action, ok, `${label}: ${answer && answer.message !== undefined ? answer.message : (ok ? 'done' : 'failed')}`);
  } catch (err) {
    showStatus(body.action, false, `${label}: ${err.message}`);
  } finally {
    runningActions.delete(key);
    renderRunning();
  }
}

function showStatus(action, ok, text) {
  const status = $('#action-status');
  status.setAttribute('data-ok', String(ok));
  status.setAttribute('data-action', action);
  status.textContent = `${ok ? '✓' : '✗'} ${text}`;
}

function renderRunning() {
  const box = $('#action-running');
  const labels = [...runningActions.values()];
  box.textContent = labels.length ? `running: ${labels.join(', ')} …` : '';
  box.toggleAttribute('data-busy', labels.length > 0);
}

/** The node menu's buttons for node `id`: [action, label]. */
function menuActions(id) {
  const node = model.nodes.get(id);
  const conf = configSource();
  const d = describeNode(id, conf);
  const actions = [];
  const controls = model.controllable.size > 0;
  if (model.controllable.has(id)) {
    const proc = node ? node.proc : 'unknown';
    if (proc === 'running' || proc === 'unknown') actions.push(['kill', 'kill -9'], ['stop', 'stop'], ['restart', 'restart'], ['pause', 'pause']);
    if (proc === 'paused') actions.push(['resume', 'resume'], ['kill', 'kill -9'], ['stop', 'stop'], ['restart', 'restart']);
    if (proc === 'dead' || proc === 'stopped' || proc === 'unknown') actions.push(['start', 'start']);
    if (proc === 'unknown') actions.push(['resume', 'resume']);
    if (!d.partitioned) actions.push(['partition', 'partition away']);
  }
  if (d.member === 'voter' && d.role !== 'leader' && node && node.proc !== 'dead' && node.proc !== 'stopped') {
    actions.push(['transfer', 'transfer leadership here']);
  }
  if (controls && (d.member === 'voter' || d.member === 'learner')) actions.push(['remove', 'remove member']);
  if (controls && d.member === 'removed') actions.push(['add', 'add member back']);
  return actions;
}

function openMenu(id) {
  const menu = $('#node-menu');
  if (model.mode !== 'live') return;
  const node = model.nodes.get(id);
  const d = describeNode(id, configSource());
  menu.replaceChildren();
  menu.setAttribute('data-node', id);
  const title = h('div', { class: 'menu-title' }, `S${id}`);
  title.appendChild(h('small', {}, ` ${roleText(d, node)} · term ${d.term} · ${d.proc} · ${d.member}`));
  menu.appendChild(title);
  const actions = menuActions(id);
  for (const [action, label] of actions) {
    const button = h('button', { type: 'button', 'data-action': action }, label);
    button.addEventListener('click', (ev) => {
      ev.stopPropagation();
      closeMenu();
      runAction({ action, node: id });
    });
    menu.appendChild(button);
  }
  if (!actions.length) menu.appendChild(h('div', { class: 'menu-empty' }, 'nothing to do here from this page'));
  menu.hidden = false;
  placeMenu(menu, id);
}

function placeMenu(menu, id) {
  const p = layout.pos.get(id);
  const box = layers.svg.getBoundingClientRect();
  const scale = box.width / 600;
  const width = menu.offsetWidth;
  const gap = (layout.radius + 22) * scale;
  const centre = box.left + window.scrollX + p.x * scale;
  const viewLeft = window.scrollX + 4;
  const viewRight = window.scrollX + document.documentElement.clientWidth - 4;
  const onRight = centre + gap;
  const onLeft = centre - gap - width;
  // Outward from the ring when there is room, else the other side, never over the node.
  let x = p.x >= RING.cx ? onRight : onLeft;
  if (x < viewLeft) x = onRight;
  if (x + width > viewRight) x = onLeft >= viewLeft ? onLeft : viewRight - width;
  const y = box.top + window.scrollY + (p.y - layout.radius) * scale;
  menu.style.left = `${Math.round(x)}px`;
  menu.style.top = `${Math.round(Math.max(y, window.scrollY + 4))}px`;
}

function closeMenu() {
  const menu = $('#node-menu');
  menu.hidden = true;
  menu.removeAttribute('data-node');
}

function parseGroups(text) {
  const groups = text.split('|').map((part) => part.split(/[\s,]+/).filter(Boolean).map(Number));
  if (groups.length < 2 || groups.some((g) => !g.length || g.some((n) => !Number.isInteger(n)))) return null;
  return groups;
}

function bindControls() {
  layers.svg.addEventListener('click', (ev) => {
    const g = ev.target.closest && ev.target.closest('g.node');
    if (!g) return;
    ev.stopPropagation();
    const id = asId(g.getAttribute('data-node'));
    const menu = $('#node-menu');
    if (!menu.hidden && menu.getAttribute('data-node') === String(id)) closeMenu();
    else if (id !== null) openMenu(id);
  });
  layers.svg.addEventListener('keydown', (ev) => {
    const g = ev.target.closest && ev.target.closest('g.node');
    if (g && (ev.key === 'Enter' || ev.key === ' ')) {
      ev.preventDefault();
      openMenu(asId(g.getAttribute('data-node')));
    }
  });
  document.addEventListener('click', (ev) => {
    const menu = $('#node-menu');
    if (!menu.hidden && !menu.contains(ev.target)) closeMenu();
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') closeMenu();
  });
  for (const button of document.querySelectorAll('#toolbar button[data-action]')) {
    button.addEventListener('click', () => toolbarAction(button.getAttribute('data-action')));
  }
  $('#client-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendClient();
  });
  $('#client-op').addEventListener('change', syncClientForm);
  syncClientForm();
  bindReplayControls();
}

function toolbarAction(action) {
  if (action === 'split') {
    const groups = parseGroups($('#split-groups').value);
    if (!groups) {
      showStatus('split', false, 'split: write the groups like 1,2 | 3,4,5');
      return;
    }
    runAction({ action: 'split', groups });
  } else if (action === 'slow') {
    const from = asId($('#slow-from').value.trim());
    const to = asId($('#slow-to').value.trim());
    const ms = Number($('#slow-ms').value.trim());
    if (from === null || to === null || !Number.isInteger(ms) || ms < 0) {
      showStatus('slow', false, 'slow: give the two nodes and a whole number of ms (0 removes the delay)');
      return;
    }
    runAction({ action: 'slow', from, to, ms });
  } else {
    runAction({ action });
  }
}

function syncClientForm() {
  const get = $('#client-op').value === 'get';
  $('#client-value').hidden = get;
}

async function sendClient() {
  const op = $('#client-op').value;
  const key = $('#client-key').value;
  const value = $('#client-value').value;
  const result = $('#client-result');
  const head = op === 'set' ? `SET ${key}=${value}` : `GET ${key}`;
  result.removeAttribute('data-ok');
  result.removeAttribute('data-answered-by');
  result.textContent = `${head} …`;
  try {
    const answer = await api('/api/client', op === 'set' ? { op, key, value } : { op, key });
    result.setAttribute('data-ok', String(!!answer.ok));
    if (answer.ok && answer.answered_by !== null && answer.answered_by !== undefined) {
      result.setAttribute('data-answered-by', String(answer.answered_by));
    }
    result.textContent = describeClient(answer);
  } catch (err) {
    result.setAttribute('data-ok', 'false');
    result.textContent = `${head} → ${err.message}`;
  }
}

// ---------------------------------------------------------------- 8. live mode

let stream = null;
let streamOpened = false;

function startLive() {
  openStream();
}

function openStream() {
  if (stream) stream.close();
  const url = '/api/stream' + (TOKEN ? `?token=${encodeURIComponent(TOKEN)}` : '');
  stream = new EventSource(url);
  setConn('closed', 'connecting…');
  stream.onopen = () => {
    setConn('open', 'connected');
    if (streamOpened) refreshMetaSoon();  // a reconnect: the server may have restarted
    streamOpened = true;
  };
  stream.onmessage = (msg) => onBatch(msg.data);
  stream.onerror = () => {
    setConn('closed', 'reconnecting…');
    if (stream.readyState === EventSource.CLOSED) {
      // The server refused (e.g. too many pages): EventSource gives up; we do not.
      setTimeout(openStream, 2000);
    }
  };
}

function onBatch(data) {
  let events;
  try {
    events = JSON.parse(data);
  } catch (err) {
    return;
  }
  if (!Array.isArray(events)) return;
  stats.batches += 1;
  const now = pageNow();
  countArrivals(events.length, Date.now() / 1000);
  let lag = 0;
  for (const e of events) {
    if (e && Number.isFinite(e.t)) lag = Math.max(lag, (now - e.t) * 1000);
    applySafely(e);
  }
  noteLag(lag, now);
}

let metaRefresh = null;
function refreshMetaSoon() {
  if (metaRefresh) return;
  metaRefresh = setTimeout(async () => {
    try {
      applyMeta(await api('/api/meta'));
    } catch (err) {
      // the next new node asks again
    }
    metaRefresh = null;
  }, 500);
}

function applyMeta(meta) {
  model.meta = meta;
  model.controllable = new Set(asList(meta.controllable).map(asId).filter((x) => x !== null));
  model.metaNodes = new Set(asList(meta.nodes).map(asId).filter((x) => x !== null));
  for (const id of model.metaNodes) ensureNode(id);
  for (const [id, node] of model.nodes) {
    if (!model.metaNodes.has(id) && !node.state && node.proc === 'unknown') {
      model.nodes.delete(id);  // known only from an older meta: not part of this cluster
      dirty.layout = true;
      dirty.logs = true;
    }
  }
  if (Number.isFinite(meta.now)) model.clockOffset = meta.now - Date.now() / 1000;
}

// ---------------------------------------------------------------- 9. replay mode

const WINDOW_S = 10;          // seconds of recording per events request
const AHEAD_S = 12;           // keep this much fetched ahead of the clock
// A marker shows the picture this long after its event: what other sources said at
// the same moment (the supervisor's process poll, other nodes' streams) is then in.
const MARKER_SETTLE = 0.1;

const replay = {
  index: null, start: 0, end: 0, clock: 0, speed: 1, playing: false,
  gen: 0, loading: false, windows: [], cursor: 0, fetchedTo: 0, fetching: false, done: false,
  skipUpTo: -Infinity, scrubbing: false, seekTimer: null,
};

async function startReplay() {
  $('#replay-bar').hidden = false;
  setConn('closed', 'loading the recording…');
  const index = await apiUntilAnswered('/api/replay/index', 'cannot load the recording');
  replay.index = index;
  replay.start = Number(index.start) || 0;
  replay.end = Math.max(Number(index.end) || 0, replay.start);
  for (const id of asList(index.nodes).map(asId)) if (id !== null) model.metaNodes.add(id);
  const scrub = $('#scrub');
  scrub.max = String(Math.max(0.01, replay.end - replay.start).toFixed(2));
  drawTimeline(index);
  setConn('open', 'recording loaded');
  await seek(replay.start);
}

function drawTimeline(index) {
  const timeline = $('#timeline');
  for (const old of timeline.querySelectorAll('.marker')) old.remove();
  const span = Math.max(replay.end - replay.start, 0.001);
  const markers = asList(index.markers).filter((m) => m && Number.isFinite(m.t)).slice(0, 5000);
  const order = { election: 1, proc: 2, action: 3, leader: 4 };
  markers.sort((a, b) => (order[a.kind] || 0) - (order[b.kind] || 0));
  for (const m of markers) {
    const kind = typeof m.kind === 'string' ? m.kind : 'other';
    const marker = h('div', { class: 'marker', 'data-kind': kind, 'data-t': m.t, title: `+${(m.t - replay.start).toFixed(1)}s · ${str(m.label)}` });
    marker.style.left = `${(100 * clamp((m.t - replay.start) / span, 0, 1)).toFixed(3)}%`;
    if (kind === 'leader' && Number.isFinite(m.term)) {
      marker.style.background = termFill(m.term);
      marker.style.borderColor = termInk(m.term);
    }
    marker.addEventListener('click', (ev) => {
      ev.stopPropagation();
      seek(m.t + MARKER_SETTLE);
    });
    timeline.appendChild(marker);
  }
  const commits = asList(index.commits).filter((c) => Array.isArray(c) && c.length >= 2);
  const top = commits.reduce((m, c) => Math.max(m, Number(c[1]) || 0), 0) || 1;
  const points = commits.map((c) => `${(1000 * clamp((c[0] - replay.start) / span, 0, 1)).toFixed(1)},${(28 - 26 * (Number(c[1]) || 0) / top).toFixed(1)}`);
  $('#sparkline polyline').setAttribute('points', points.join(' '));
  $('#sparkline').setAttribute('aria-label', `commit index, up to ${top}`);
}

/** Show the recording at time t: its keyframe, then its events from t on. */
async function seek(t) {
  const gen = ++replay.gen;
  const at = clamp(t, replay.start, replay.end);
  replay.loading = true;
  replay.windows = [];
  replay.cursor = 0;
  replay.fetchedTo = at;
  replay.done = false;
  replay.fetching = false;
  replay.clock = at;
  let keyframe;
  try {
    keyframe = await api(`/api/replay/keyframe?at=${encodeURIComponent(String(at))}`);
  } catch (err) {
    if (gen === replay.gen) {
      setText($('#replay-note'), `cannot seek: ${err.message}`);
      replay.loading = false;
    }
    return;
  }
  if (gen !== replay.gen) return;
  applySafely({ ...keyframe, kind: 'keyframe' });
  replay.skipUpTo = at;
  replay.clock = at;
  replay.loading = false;
  setText($('#replay-note'), '');
  fetchAhead();
}

async function fetchAhead() {
  if (replay.fetching || replay.done || replay.loading) return;
  if (replay.fetchedTo - replay.clock > AHEAD_S * Math.max(1, replay.speed)) return;
  const gen = replay.gen;
  const from = replay.fetchedTo;
  const to = from + WINDOW_S;
  replay.fetching = true;
  try {
    const answer = await api(`/api/replay/events?from=${encodeURIComponent(String(from))}&to=${encodeURIComponent(String(to))}`);
    if (gen !== replay.gen) return;
    const events = asList(answer && answer.events);
    if (events.length) replay.windows.push(events);
    const next = answer && Number.isFinite(answer.next) ? answer.next : null;
    replay.fetchedTo = next !== null && next > from ? next : to;
    if (replay.fetchedTo > replay.end) replay.done = true;
  } catch (err) {
    if (gen === replay.gen) setText($('#replay-note'), `cannot read the recording: ${err.message}`);
    await sleep(1000);
  } finally {
    if (gen === replay.gen) replay.fetching = false;
  }
  if (gen === replay.gen) fetchAhead();
}

/** Advance the replay clock by dt wall seconds and apply what happened meanwhile. */
function tickReplay(dt) {
  if (!replay.index || replay.loading) return;
  if (replay.playing) {
    let target = replay.clock + dt * replay.speed;
    if (!replay.done) target = Math.min(target, replay.fetchedTo);  // wait for the data
    replay.clock = Math.min(target, replay.end);
    if (replay.clock >= replay.end) setPlaying(false);
  }
  applyReplayUpTo(replay.clock);
  fetchAhead();
}

function applyReplayUpTo(t) {
  let applied = 0;
  while (replay.windows.length && applied < 20000) {
    const events = replay.windows[0];
    while (replay.cursor < events.length) {
      const e = events[replay.cursor];
      const et = e && Number.isFinite(e.t) ? e.t : -Infinity;
      if (et > t) return;
      replay.cursor += 1;
      applied += 1;
      if (et > replay.skipUpTo) {
        applySafely(e);
        countArrivals(1, Date.now() / 1000);
      }
    }
    replay.windows.shift();   // played: dropped
    replay.cursor = 0;
  }
}

function setPlaying(playing) {
  replay.playing = playing;
  const button = $('#play');
  button.setAttribute('data-playing', String(playing));
  button.textContent = playing ? 'Pause' : 'Play';
}

function bindReplayControls() {
  $('#play').addEventListener('click', () => {
    if (!replay.index) return;
    if (!replay.playing && replay.clock >= replay.end - 0.01) {
      seek(replay.start).then(() => setPlaying(true));
      return;
    }
    setPlaying(!replay.playing);
  });
  $('#speed').addEventListener('change', (ev) => {
    const speed = Number(ev.target.value);
    if (speed > 0) replay.speed = speed;
  });
  const scrub = $('#scrub');
  scrub.addEventListener('pointerdown', () => { replay.scrubbing = true; });
  scrub.addEventListener('pointerup', () => { replay.scrubbing = false; });
  scrub.addEventListener('input', () => {
    const t = replay.start + Number(scrub.value);
    setClockText(t);
    clearTimeout(replay.seekTimer);
    replay.seekTimer = setTimeout(() => {
      replay.seekTimer = null;
      seek(t);
    }, 120);
  });
  scrub.addEventListener('change', () => {
    replay.scrubbing = false;
    clearTimeout(replay.seekTimer);
    replay.seekTimer = null;
    seek(replay.start + Number(scrub.value));
  });
  $('#timeline').addEventListener('click', (ev) => {
    if (ev.target.classList && ev.target.classList.contains('marker')) return;
    const box = ev.currentTarget.getBoundingClientRect();
    const f = clamp((ev.clientX - box.left) / box.width, 0, 1);
    seek(replay.start + f * (replay.end - replay.start));
  });
}

function setClockText(t) {
  const clock = $('#clock');
  setAttr(clock, 'data-t', t.toFixed(3));
  setText(clock, `${(t - replay.start).toFixed(1)} s / ${(replay.end - replay.start).toFixed(1)} s`);
}

function renderReplayBar() {
  if (!replay.index) return;
  if (!replay.scrubbing && !replay.seekTimer) setClockText(replay.clock);
  if (!replay.scrubbing) {
    const scrub = $('#scrub');
    const value = (replay.clock - replay.start).toFixed(2);
    if (document.activeElement !== scrub || replay.playing) scrub.value = value;
  }
  const span = Math.max(replay.end - replay.start, 0.001);
  $('#playhead').style.left = `${(100 * clamp((replay.clock - replay.start) / span, 0, 1)).toFixed(3)}%`;
}

// ---------------------------------------------------------------- 10. boot

function publishTestHooks() {
  window.raftproc = {
    stats,
    nodes() {
      const conf = configSource();
      const out = {};
      for (const id of model.nodes.keys()) {
        const d = describeNode(id, conf);
        out[id] = { role: d.role, term: d.term, proc: d.proc, commit: d.commit, last: d.last };
      }
      return out;
    },
    /** Sizes of what the page holds, for checking it stays bounded. */
    held() {
      const phases = {};
      for (const d of dots) phases[d.phase] = (phases[d.phase] || 0) + 1;
      return { dots: dots.length, phases, waitingKeys: waiting.size, earlyKeys: early.size,
        list: document.querySelectorAll('#events li').length, replayWindows: replay.windows.length };
    },
  };
}

async function boot() {
  layers.svg = $('#ring');
  layers.links = $('#links');
  layers.nodes = $('#nodes');
  layers.msgs = $('#msgs');
  layers.centerText = $('#center-text');
  layers.centerSub = $('#center-sub');
  layers.centerNote = $('#center-note');
  publishTestHooks();
  bindControls();
  requestAnimationFrame(frame);
  setInterval(renderIfStale, 250);
  const meta = await apiUntilAnswered('/api/meta', 'no answer');
  model.mode = meta.mode === 'replay' ? 'replay' : 'live';
  document.body.setAttribute('data-mode', model.mode);
  setText($('#mode'), model.mode);
  setAttr($('#mode'), 'data-mode', model.mode);
  for (const el of document.querySelectorAll('.controls')) el.hidden = model.mode === 'replay';
  applyMeta(meta);
  if (meta.mode === 'replay') {
    model.controllable = new Set();
    await startReplay();
  } else {
    startLive();
  }
}

boot();
