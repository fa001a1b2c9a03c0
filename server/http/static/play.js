// The world on a canvas: the own player predicted and drawn smoothly, the others
// interpolated, shots, hits, deaths and the map. app.js wires it to the page.
//
// Own movement. A move goes out MOVE_HZ times a second (STEP units each), and is applied
// to `predicted` at once; what is drawn glides from where it was drawn towards
// `predicted` over one move period, so the player moves continuously at 80 units/s rather
// than in 4-unit jumps. Each snapshot reconciles: the server's position plus the moves
// it has not applied yet. Whatever that changes of the prediction is not drawn as a jump:
// it becomes a `correction` offset that fades out over about CORRECTION_MS.
//
// Others are drawn INTERPOLATION_MS in the past, between the two snapshots around that
// moment; the tick of that moment (`viewTick`) is what a shot claims, so that the server
// judges it against what the player saw (docs/rules.md, "Lag compensation").

export const INTERPOLATION_MS = 100;
export const MOVE_HZ = 20;  // at most one move a tick, under the server's 30 messages a second
const MOVE_MS = 1000 / MOVE_HZ;
const STEP = 4;  // world units a move, under the server's WORLD_MAX_STEP (5)
const CORRECTION_MS = 120;  // how fast a reconciliation's difference fades
const TELEPORT = 40;  // a correction larger than this (a respawn, a rejoin) is not eased
const MIN_HALF_VIEW = 160;  // world units from the centre to the view's shorter edge, at least
const MAX_HALF_VIEW = 700;
const BODY_PX = 7;

export function newWorld(state) {
  Object.assign(state, {
    own: null,  // the own player as drawn this frame: { x, y, name, hp }
    predicted: null,  // where the moves sent so far put the own player
    glideFrom: null, glideAt: 0,  // the drawn position glides from here since then
    correction: { x: 0, y: 0 },
    pending: [],  // moves sent and not acknowledged yet: { seq, dx, dy }
    history: [],  // snapshots as they arrived: { at, tick, others }
    clock: null,  // local time of server tick 0, as snapshots arrive (see observeTick)
    seen: new Map(),  // the others as drawn this frame: id -> { name, x, y, hp }
    names: new Map(),  // id -> name, of everyone seen (for the kill feed)
    hp: null,
    dead: null,  // { respawnTick } while dead
    paused: false,  // the zone or the socket is away: no moves
    markers: [],  // hit markers: { x, y, at, text, colour }
    shots: [],  // shots sent: { seq, weapon, ax, ay, tick, at }
    viewTick: null,  // the server tick the others are drawn at
    onScreen: 0,
    inRange: 0,
    halfView: 300,
  });
}

// --- the world as the server tells it -------------------------------------------------

export function welcomed(state, welcome) {
  const { x, y, name } = welcome.character;
  state.predicted = { x, y };
  state.glideFrom = { x, y };
  state.glideAt = performance.now();
  state.correction = { x: 0, y: 0 };
  state.pending = [];
  state.history = [];
  state.clock = null;
  state.dead = null;
  state.tickRate = welcome.tick_rate || 20;
  state.own = { x, y, name, hp: state.hp ?? 100 };
  state.names.set(state.me, name);
}

export function snapshot(state, { tick, players }) {
  const now = performance.now();
  const others = new Map();
  for (const [id, p] of players) {
    state.names.set(id, p.name);
    if (id !== state.me) others.set(id, { name: p.name, x: p.x, y: p.y, hp: p.hp });
  }
  observeTick(state, tick, now);
  state.history.push({ at: now, tick, others });
  while (state.history.length > 2 && state.history[1].at < now - 1000) state.history.shift();
  state.inRange = others.size;
  const mine = players.get(state.me);
  if (mine && state.predicted) reconcile(state, mine);
}

function reconcile(state, server) {
  // The server's word on every input up to server.seq; ours on the moves after it.
  state.pending = state.pending.filter((m) => m.seq > server.seq);
  let { x, y } = server;
  for (const m of state.pending) ({ x, y } = walk(state, x, y, m.dx, m.dy));
  const dx = state.predicted.x - x;
  const dy = state.predicted.y - y;
  state.predicted = { x, y };
  state.glideFrom = { x: state.glideFrom.x - dx, y: state.glideFrom.y - dy };
  if (Math.hypot(dx, dy) > TELEPORT) {
    state.correction = { x: 0, y: 0 };  // a respawn or a rejoin elsewhere: go there
    state.glideFrom = { x, y };
  } else {
    state.correction = { x: state.correction.x + dx, y: state.correction.y + dy };
  }
  if (server.hp !== undefined) state.hp = server.hp;
}

// What happened (docs/protocol.md, "events"): hit markers, the kill feed, death.
export function happened(state, { tick, events }, feed) {
  const now = performance.now();
  for (const e of events) {
    if (e.kind === "hit") {
      if (e.victim === state.me) {
        state.hp = e.hp;
        state.markers.push({ ...drawnAt(state, state.me), at: now, text: `-${e.damage}`, colour: "#f7768e" });
      } else if (e.shooter === state.me) {
        state.markers.push({ ...drawnAt(state, e.victim), at: now, text: `-${e.damage}`, colour: "#ffd27a", hit: true });
      }
    } else if (e.kind === "death") {
      feed({ killer: e.killer, victim: e.victim, weapon: e.weapon, tick,
             killerName: state.names.get(e.killer) || "someone",
             victimName: state.names.get(e.victim) || "someone" });
      if (e.victim === state.me) state.dead = { respawnTick: e.respawn_tick };
    } else if (e.kind === "respawn" && e.player === state.me) {
      state.dead = null;
      state.hp = 100;
    }
  }
}

export function respawnInS(state, tick) {
  if (!state.dead || tick === null) return null;
  return Math.max(0, Math.ceil((state.dead.respawnTick - tick) / state.tickRate));
}

function drawnAt(state, id) {
  if (id === state.me) return state.own ? { x: state.own.x, y: state.own.y } : { x: 0, y: 0 };
  const p = state.seen.get(id);
  return p ? { x: p.x, y: p.y } : { x: NaN, y: NaN };
}

// --- what the player does ---------------------------------------------------------------

// A move a tick while a direction key is held; none while dead (the server refuses them)
// or while the zone or the socket is away (`paused`: they would be lost).
export function input(state, keys) {
  let dx = (keys.has("d") || keys.has("arrowright") ? 1 : 0) - (keys.has("a") || keys.has("arrowleft") ? 1 : 0);
  let dy = (keys.has("s") || keys.has("arrowdown") ? 1 : 0) - (keys.has("w") || keys.has("arrowup") ? 1 : 0);
  if ((!dx && !dy) || !state.client || !state.predicted || state.dead || state.paused) return;
  const length = Math.hypot(dx, dy);
  dx = Math.round((dx / length) * STEP * 1000) / 1000;
  dy = Math.round((dy / length) * STEP * 1000) / 1000;
  const seq = state.client.move(dx, dy);
  state.pending.push({ seq, dx, dy });
  const now = performance.now();
  state.glideFrom = glided(state, now);  // from where it is drawn now, without a jump
  state.glideAt = now;
  state.predicted = walk(state, state.predicted.x, state.predicted.y, dx, dy);
}

// The server refused one of our inputs: forget its prediction (reconciling does the rest).
export function refused(state, seq) {
  state.pending = state.pending.filter((m) => m.seq !== seq);
}

// A shot at world point (wx, wy), claiming the tick the others are drawn at.
export function fire(state, wx, wy, weapon) {
  const own = state.own;
  if (!own || !state.client || state.dead) return null;
  const ax = wx - own.x;
  const ay = wy - own.y;
  if (!ax && !ay) return null;  // the server refuses an aim of (0, 0)
  const tick = Math.max(0, Math.round(state.viewTick ?? state.client.tick ?? 0));
  const seq = state.client.fire(weapon, ax, ay, tick);
  state.shots.push({ seq, weapon, ax, ay, tick, at: performance.now(), from: { x: own.x, y: own.y }, to: { x: wx, y: wy } });
  if (state.shots.length > 20) state.shots.shift();
  return seq;
}

// A move as the server's motion makes it, near enough: within the bounds, and not into
// a wall (a blocked axis does not move). A difference is eased away by reconciling.
function walk(state, x, y, dx, dy) {
  const [minX, minY, maxX, maxY] = state.map.bounds;
  const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
  let nx = clamp(x + dx, minX, maxX);
  if (blocked(state, nx, y)) nx = x;
  let ny = clamp(y + dy, minY, maxY);
  if (blocked(state, nx, ny)) ny = y;
  return { x: Math.round(nx * 1000) / 1000, y: Math.round(ny * 1000) / 1000 };
}

function blocked(state, x, y) {
  return state.map.walls.some(([x0, y0, x1, y1]) => x >= x0 && x <= x1 && y >= y0 && y <= y1);
}

function glided(state, now) {
  const f = Math.min(Math.max((now - state.glideAt) / MOVE_MS, 0), 1);
  const a = state.glideFrom;
  const b = state.predicted;
  return { x: a.x + (b.x - a.x) * f, y: a.y + (b.y - a.y) * f };
}

// --- drawing -------------------------------------------------------------------------

// The others are drawn at a server tick INTERPOLATION_MS behind the newest, on a timeline
// of ticks rather than of arrival times: snapshots arrive unevenly (the network, the
// browser's timers), and drawing them by arrival would speed the others up and slow them
// down. `clock` maps local time to server ticks, eased from each snapshot's arrival.
function observeTick(state, tick, now) {
  const tickMs = 1000 / (state.tickRate || 20);
  const sample = now - tick * tickMs;  // when tick 0 would have arrived, by this snapshot
  if (state.clock === null || Math.abs(sample - state.clock) > 500) state.clock = sample;
  else state.clock += (sample - state.clock) * 0.05;
}

function others(state, now) {
  const h = state.history;
  if (!h.length || state.clock === null) return { seen: new Map(), tick: null };
  const tickMs = 1000 / (state.tickRate || 20);
  const at = Math.min((now - state.clock - INTERPOLATION_MS) / tickMs, h[h.length - 1].tick);
  let i = h.length - 1;
  while (i > 0 && h[i - 1].tick > at) i -= 1;
  const [a, b] = i > 0 ? [h[i - 1], h[i]] : [h[0], h[0]];
  const f = b.tick > a.tick ? Math.min(Math.max((at - a.tick) / (b.tick - a.tick), 0), 1) : 1;
  const seen = new Map();
  for (const [id, q] of b.others) {
    const p = a.others.get(id) || q;
    seen.set(id, { name: q.name, hp: q.hp, x: p.x + (q.x - p.x) * f, y: p.y + (q.y - p.y) * f });
  }
  return { seen, tick: a.tick + (b.tick - a.tick) * f };
}

// One animation frame: where everything is drawn, then the drawing.
export function frame(state, canvas, minimap, now, dtMs) {
  if (state.predicted) {
    const decay = Math.exp(-dtMs / CORRECTION_MS);
    state.correction = { x: state.correction.x * decay, y: state.correction.y * decay };
    const g = glided(state, now);
    state.own = { x: g.x + state.correction.x, y: g.y + state.correction.y,
                  name: state.own?.name, hp: state.hp };
    if (state.recording) state.frames.push({ t: now, x: state.own.x, y: state.own.y });
  }
  const { seen, tick } = others(state, now);
  state.seen = seen;
  state.viewTick = tick;
  zoom(state, canvas, dtMs);
  draw(state, canvas, now);
  drawMinimap(state, minimap);
  state.markers = state.markers.filter((m) => now - m.at < 700);
}

// The view shows what the server sends: the view radius if there is one, else the
// players drawn (at least MIN_HALF_VIEW), eased so that the zoom never jumps.
function zoom(state, canvas, dtMs) {
  const radius = state.map.view_radius;
  let half = radius > 0 ? radius * 1.05 : MIN_HALF_VIEW;
  if (!(radius > 0) && state.own) {
    for (const p of state.seen.values()) {
      half = Math.max(half, Math.abs(p.x - state.own.x) * (canvas.height / canvas.width) + 40,
                      Math.abs(p.y - state.own.y) + 40);
    }
  }
  half = Math.min(Math.max(half, MIN_HALF_VIEW), MAX_HALF_VIEW);
  state.halfView += (half - state.halfView) * (1 - Math.exp(-dtMs / 400));
  const centre = state.own || { x: 0, y: 0 };
  state.view = { cx: centre.x, cy: centre.y, scale: canvas.height / 2 / state.halfView,
                 width: canvas.width, height: canvas.height };
}

export function toScreen(view, x, y) {
  return [view.width / 2 + (x - view.cx) * view.scale, view.height / 2 + (y - view.cy) * view.scale];
}

export function toWorld(view, sx, sy) {
  return [view.cx + (sx - view.width / 2) / view.scale, view.cy + (sy - view.height / 2) / view.scale];
}

function draw(state, canvas, now) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const v = state.view;
  const s = v.scale;
  const [minX, minY, maxX, maxY] = state.map.bounds;
  ctx.fillStyle = "#0b0d10";  // beyond the world's edge
  ctx.fillRect(0, 0, width, height);
  const [ex, ey] = toScreen(v, minX, minY);
  ctx.fillStyle = "#1b2129";
  ctx.fillRect(ex, ey, (maxX - minX) * s, (maxY - minY) * s);
  // A grid inside the world (50 units), so that moving is seen.
  ctx.strokeStyle = "#27303b";
  ctx.lineWidth = 1;
  const grid = 50;
  const [wx0, wy0] = toWorld(v, 0, 0);
  const [wx1, wy1] = toWorld(v, width, height);
  ctx.beginPath();
  for (let gx = Math.ceil(Math.max(wx0, minX) / grid) * grid; gx <= Math.min(wx1, maxX); gx += grid) {
    const [sx] = toScreen(v, gx, 0);
    ctx.moveTo(sx, Math.max(ey, 0)); ctx.lineTo(sx, Math.min(ey + (maxY - minY) * s, height));
  }
  for (let gy = Math.ceil(Math.max(wy0, minY) / grid) * grid; gy <= Math.min(wy1, maxY); gy += grid) {
    const [, sy] = toScreen(v, 0, gy);
    ctx.moveTo(Math.max(ex, 0), sy); ctx.lineTo(Math.min(ex + (maxX - minX) * s, width), sy);
  }
  ctx.stroke();
  // The world's edge.
  ctx.strokeStyle = "#d9534f";
  ctx.lineWidth = 3;
  ctx.strokeRect(ex, ey, (maxX - minX) * s, (maxY - minY) * s);
  // Walls and spawn points.
  ctx.fillStyle = "#5b6675";
  ctx.strokeStyle = "#8a96a8";
  ctx.lineWidth = 1;
  for (const [x0, y0, x1, y1] of state.map.walls) {
    const [sx, sy] = toScreen(v, x0, y0);
    ctx.fillRect(sx, sy, (x1 - x0) * s, (y1 - y0) * s);
    ctx.strokeRect(sx, sy, (x1 - x0) * s, (y1 - y0) * s);
  }
  ctx.strokeStyle = "#3d7a4f";
  for (const [x, y] of state.map.spawns) {
    const [sx, sy] = toScreen(v, x, y);
    ctx.beginPath(); ctx.arc(sx, sy, 10, 0, Math.PI * 2); ctx.stroke();
  }
  // Shots: a short-lived tracer from the shooter along its aim.
  for (const shot of state.shots) {
    const age = now - shot.at;
    if (age > 120) continue;
    const [sx, sy] = toScreen(v, shot.from.x, shot.from.y);
    const [tx, ty] = toScreen(v, shot.to.x, shot.to.y);
    ctx.strokeStyle = `rgba(255, 230, 150, ${1 - age / 120})`;
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(sx, sy); ctx.lineTo(tx, ty); ctx.stroke();
  }
  // Players: the others, then the own one on top.
  let onScreen = 0;
  for (const p of state.seen.values()) {
    const [sx, sy] = toScreen(v, p.x, p.y);
    if (sx >= 0 && sx <= width && sy >= 0 && sy <= height) onScreen += 1;
    body(ctx, sx, sy, p.hp === 0 ? "#555c66" : "#7aa2f7", p.name, p.hp, s);
  }
  state.onScreen = onScreen;
  if (state.own) {
    const [sx, sy] = toScreen(v, state.own.x, state.own.y);
    if (state.mouse) {  // the aim
      ctx.strokeStyle = "rgba(245, 167, 66, .35)";
      ctx.setLineDash([4, 6]);
      ctx.beginPath(); ctx.moveTo(sx, sy); ctx.lineTo(state.mouse.x, state.mouse.y); ctx.stroke();
      ctx.setLineDash([]);
    }
    body(ctx, sx, sy, state.dead ? "#555c66" : "#f5a742", state.own.name || "you", null, s);
  }
  // Hit markers: an X where the hit landed, and the damage.
  for (const m of state.markers) {
    if (!Number.isFinite(m.x)) continue;
    const [sx, sy] = toScreen(v, m.x, m.y);
    const fade = 1 - (now - m.at) / 700;
    ctx.globalAlpha = Math.max(fade, 0);
    ctx.strokeStyle = m.colour;
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.moveTo(sx - 9, sy - 9); ctx.lineTo(sx + 9, sy + 9);
    ctx.moveTo(sx + 9, sy - 9); ctx.lineTo(sx - 9, sy + 9);
    ctx.stroke();
    ctx.fillStyle = m.colour;
    ctx.font = "bold 14px system-ui, sans-serif";
    ctx.fillText(m.text, sx + 13, sy + 4 - (1 - fade) * 16);
    ctx.globalAlpha = 1;
  }
  if (state.mouse) {  // the crosshair
    const { x, y } = state.mouse;
    ctx.strokeStyle = "#e8e6df";
    ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.arc(x, y, 8, 0, Math.PI * 2);
    ctx.moveTo(x - 13, y); ctx.lineTo(x - 4, y); ctx.moveTo(x + 4, y); ctx.lineTo(x + 13, y);
    ctx.moveTo(x, y - 13); ctx.lineTo(x, y - 4); ctx.moveTo(x, y + 4); ctx.lineTo(x, y + 13);
    ctx.stroke();
  }
}

// A player: its body (never smaller than its hit circle, radius 1 unit), its name and,
// for the others, its hit points.
function body(ctx, sx, sy, colour, name, hp, scale) {
  ctx.fillStyle = colour;
  ctx.beginPath(); ctx.arc(sx, sy, Math.max(BODY_PX, scale), 0, Math.PI * 2); ctx.fill();
  ctx.fillStyle = "#e8e6df";
  ctx.font = "12px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.fillText(name, sx, sy - 20);
  ctx.textAlign = "start";
  if (hp !== null && hp !== undefined) {
    ctx.fillStyle = "rgba(0, 0, 0, .6)";
    ctx.fillRect(sx - 16, sy - 16, 32, 4);
    ctx.fillStyle = hp > 50 ? "#4caf50" : hp > 25 ? "#e0a030" : "#e04040";
    ctx.fillRect(sx - 16, sy - 16, 32 * Math.max(hp, 0) / 100, 4);
  }
}

// The whole world, the players in view and the part the main view shows.
function drawMinimap(state, minimap) {
  const ctx = minimap.getContext("2d");
  const { width, height } = minimap;
  const [minX, minY, maxX, maxY] = state.map.bounds;
  const s = Math.min((width - 8) / (maxX - minX), (height - 8) / (maxY - minY));
  const at = (x, y) => [4 + (x - minX) * s, 4 + (y - minY) * s];
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = "#d9534f";
  ctx.lineWidth = 1.5;
  ctx.strokeRect(4, 4, (maxX - minX) * s, (maxY - minY) * s);
  ctx.fillStyle = "#8a96a8";
  for (const [x0, y0, x1, y1] of state.map.walls) {
    const [sx, sy] = at(x0, y0);
    ctx.fillRect(sx, sy, Math.max((x1 - x0) * s, 1), Math.max((y1 - y0) * s, 1));
  }
  if (state.view) {  // the main view's part, within the world
    const [x0, y0] = toWorld(state.view, 0, 0);
    const [x1, y1] = toWorld(state.view, state.view.width, state.view.height);
    const [sx, sy] = at(Math.max(x0, minX), Math.max(y0, minY));
    const [ex, ey] = at(Math.min(x1, maxX), Math.min(y1, maxY));
    ctx.strokeStyle = "rgba(232, 230, 223, .6)";
    ctx.lineWidth = 1;
    ctx.strokeRect(sx, sy, ex - sx, ey - sy);
  }
  ctx.fillStyle = "#7aa2f7";
  for (const p of state.seen.values()) {
    const [sx, sy] = at(p.x, p.y);
    ctx.fillRect(sx - 1.5, sy - 1.5, 3, 3);
  }
  if (state.own) {
    const [sx, sy] = at(state.own.x, state.own.y);
    ctx.fillStyle = "#f5a742";
    ctx.beginPath(); ctx.arc(sx, sy, 3, 0, Math.PI * 2); ctx.fill();
  }
}
