// The page a player opens: an account, characters, and the world on a canvas.
// Others are drawn INTERPOLATION_MS in the past, between the two snapshots around that
// moment; the own player is predicted (moves applied at once) and reconciled with the
// server's seq acks (the server's position, plus the moves it has not applied yet).

import { OutpostClient, api } from "./outpost-client.js";

const INTERPOLATION_MS = 100;
const MOVE_HZ = 20;  // at most one move a tick, under the server's 30 messages a second
const STEP = 4;  // world units a move, under the server's WORLD_MAX_STEP (5)
const SCALE = 3;  // pixels a world unit

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("token"), client: null, me: null, own: null,
                pending: [], history: [], keys: new Set(), snapshots: 0, rate: 0 };
window.outpostState = state;  // what the browser test reads

function problem(text) {
  const box = $("problem");
  box.textContent = text || "";
  box.hidden = !text;
}

async function guarded(work) {
  try {
    problem("");
    await work();
  } catch (error) {
    problem(error.message);
  }
}

function show(section) {
  for (const id of ["account", "characters", "world"]) $(id).hidden = id !== section;
}

async function signedIn(session, username) {
  state.token = session.token;
  sessionStorage.setItem("token", session.token);
  $("who").textContent = username || "";
  await listCharacters();
}

async function listCharacters() {
  const { characters } = await api(location.origin, "/v1/characters", { token: state.token });
  const list = $("character-list");
  list.replaceChildren(...characters.map((c) => {
    const item = document.createElement("li");
    const play = document.createElement("button");
    play.textContent = "Play";
    play.dataset.character = c.id;
    play.addEventListener("click", () => guarded(() => play_(c)));
    item.append(`${c.name} (${c.class}, ${c.zone_id}) `, play);
    return item;
  }));
  show("characters");
}

function form(id) {
  return Object.fromEntries(new FormData($(id)));
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    const body = form("login");
    await signedIn(await api(location.origin, "/v1/auth/login", { method: "POST", body }),
                   body.username);
  });
});

$("register").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    const body = form("register");
    await signedIn(await api(location.origin, "/v1/auth/register", { method: "POST", body }),
                   body.username);
  });
});

$("create").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    await api(location.origin, "/v1/characters", { method: "POST", token: state.token,
                                                   body: form("create") });
    $("create").reset();
    await listCharacters();
  });
});

async function play_(character) {
  const client = new OutpostClient({ baseUrl: location.origin, token: state.token });
  state.client = client;
  state.me = character.id;
  client.addEventListener("welcome", (e) => {
    const { x, y } = e.detail.character;
    state.own = { x, y, seq: client.seq };
    state.pending = [];
    state.history = [];
    $("hud-zone").textContent = e.detail.zone;
    show("world");
    $("map").focus();
  });
  client.addEventListener("snapshot", (e) => snapshot(e.detail));
  client.addEventListener("error", (e) => problem(`${e.detail.message} (${e.detail.code})`));
  client.addEventListener("pong", (e) => { $("hud-rtt").textContent = e.detail.rttMs.toFixed(0); });
  client.addEventListener("close", (e) => { problem(e.detail.words); show("characters"); });
  $("hud-protocol").textContent = await client.connect();
  client.join(character.id);
}

function snapshot({ tick, players }) {
  state.snapshots += 1;
  const now = performance.now();
  const others = new Map();
  for (const [id, p] of players) if (id !== state.me) others.set(id, { name: p.name, x: p.x, y: p.y });
  state.history.push({ at: now, others });
  while (state.history.length > 2 && state.history[1].at < now - 1000) state.history.shift();
  const mine = players.get(state.me);
  if (mine) reconcile(mine);
  $("hud-tick").textContent = tick;
  $("hud-players").textContent = players.size;
}

function reconcile(server) {
  // The server's word on every move up to server.seq; ours on the moves after it.
  state.pending = state.pending.filter((m) => m.seq > server.seq);
  let { x, y } = server;
  for (const m of state.pending) { x += m.dx; y += m.dy; }
  state.own = { x, y, seq: server.seq, name: server.name };
}

function input() {
  const k = state.keys;
  let dx = (k.has("d") || k.has("arrowright") ? 1 : 0) - (k.has("a") || k.has("arrowleft") ? 1 : 0);
  let dy = (k.has("s") || k.has("arrowdown") ? 1 : 0) - (k.has("w") || k.has("arrowup") ? 1 : 0);
  if ((!dx && !dy) || !state.client || !state.own) return;
  const length = Math.hypot(dx, dy);
  dx = Math.round((dx / length) * STEP * 1000) / 1000;
  dy = Math.round((dy / length) * STEP * 1000) / 1000;
  const seq = state.client.move(dx, dy);
  state.pending.push({ seq, dx, dy });
  state.own = { ...state.own, x: state.own.x + dx, y: state.own.y + dy };  // predicted
}

function others(now) {
  // Between the two snapshots around `now - INTERPOLATION_MS`; the newest if none.
  const at = now - INTERPOLATION_MS;
  const h = state.history;
  if (!h.length) return new Map();
  let i = h.length - 1;
  while (i > 0 && h[i - 1].at > at) i -= 1;
  const [a, b] = i > 0 ? [h[i - 1], h[i]] : [h[0], h[0]];
  const f = b.at > a.at ? Math.min(Math.max((at - a.at) / (b.at - a.at), 0), 1) : 1;
  const out = new Map();
  for (const [id, q] of b.others) {
    const p = a.others.get(id) || q;
    out.set(id, { name: q.name, x: p.x + (q.x - p.x) * f, y: p.y + (q.y - p.y) * f });
  }
  return out;
}

function draw() {
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const own = state.own || { x: 0, y: 0 };
  const toScreen = (x, y) => [width / 2 + (x - own.x) * SCALE, height / 2 + (y - own.y) * SCALE];
  ctx.strokeStyle = "#2f3845";
  ctx.lineWidth = 1;
  const grid = 25;
  for (let gx = Math.floor((own.x - width / 2 / SCALE) / grid) * grid; gx < own.x + width / 2 / SCALE; gx += grid) {
    const [sx] = toScreen(gx, 0);
    ctx.beginPath(); ctx.moveTo(sx, 0); ctx.lineTo(sx, height); ctx.stroke();
  }
  for (let gy = Math.floor((own.y - height / 2 / SCALE) / grid) * grid; gy < own.y + height / 2 / SCALE; gy += grid) {
    const [, sy] = toScreen(0, gy);
    ctx.beginPath(); ctx.moveTo(0, sy); ctx.lineTo(width, sy); ctx.stroke();
  }
  const dot = (x, y, colour, name) => {
    const [sx, sy] = toScreen(x, y);
    ctx.fillStyle = colour;
    ctx.beginPath(); ctx.arc(sx, sy, 7, 0, Math.PI * 2); ctx.fill();
    ctx.fillStyle = "#e8e6df";
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText(name, sx, sy - 12);
  };
  state.seen = others(performance.now());
  for (const p of state.seen.values()) dot(p.x, p.y, "#7aa2f7", p.name);
  if (state.own) dot(state.own.x, state.own.y, "#f5a742", state.own.name || "you");
  requestAnimationFrame(draw);
}

async function zones() {
  if ($("world").hidden || !state.client) return;
  const { zones: listed } = await api(location.origin, "/v1/world/zones");
  $("zones").replaceChildren(...listed.filter((z) => z.up && z.zone !== state.client.zone).map((z) => {
    const go = document.createElement("button");
    go.textContent = `${z.zone} (${z.players})`;
    go.addEventListener("click", () => state.client.travel(z.zone));
    return go;
  }));
}

const map = $("map");
map.addEventListener("keydown", (e) => { state.keys.add(e.key.toLowerCase()); e.preventDefault(); });
map.addEventListener("keyup", (e) => state.keys.delete(e.key.toLowerCase()));
map.addEventListener("blur", () => state.keys.clear());
setInterval(input, 1000 / MOVE_HZ);
setInterval(() => { if (state.client) state.client.ping(); }, 2000);
setInterval(() => {
  $("hud-rate").textContent = state.snapshots;
  state.rate = state.snapshots;
  state.snapshots = 0;
}, 1000);
setInterval(() => guarded(zones), 3000);
requestAnimationFrame(draw);

show("account");
if (state.token) {
  listCharacters().catch(() => {  // a token from an earlier visit, expired: log in again
    sessionStorage.removeItem("token");
    state.token = null;
  });
}
