// The page a player opens: an account, characters, and the game (play.js) on a canvas.
//
// window.outpostState is what the browser tests read of what is drawn (docs/client.md):
// `own` (the own player as drawn this frame), `frames` (while `recording` is true, each
// frame's drawn own position), `seen` (the others as drawn), `hp`, `killFeed`, `errors`
// (the texts on screen), `banner`, `connection`, `view` (world <-> screen), `viewTick`.

import { OutpostClient, PageSession, api } from "./outpost-client.js";
import * as play from "./play.js";

const $ = (id) => document.getElementById(id);

// An element holding `text` (never markup: what the server says is shown as text).
function el(tag, text, className = "") {
  const made = document.createElement(tag);
  made.textContent = text;
  if (className) made.className = className;
  return made;
}
const state = {
  session: new PageSession(location.origin, "session"), client: null, me: null,
  map: { bounds: [-1000, -1000, 1000, 1000], view_radius: 0, walls: [], spawns: [] },
  keys: new Set(), snapshots: 0, rate: 0, killFeed: [], frames: [], recording: false,
  connection: "offline", banner: null, zoneRefreshes: 0, weapons: ["pistol"], weapon: "pistol",
  problems: [],  // { id, key, text }: on screen until dismissed or resolved
  get errors() { return this.problems.map((p) => p.text); },
};
play.newWorld(state);
window.outpostState = state;

// --- errors: shown until dismissed, or until what they are about is resolved -----------

let problemIds = 0;

// `key` names what the error is about ("zone", "connection", a form): a newer error of
// the same key replaces it, and resolve(key) takes it away once that is put right.
function problem(text, key = null) {
  if (key) state.problems = state.problems.filter((p) => p.key !== key);
  state.problems.push({ id: ++problemIds, key, text });
  renderProblems();
}

function resolve(key) {
  const before = state.problems.length;
  state.problems = state.problems.filter((p) => p.key !== key);
  if (state.problems.length !== before) renderProblems();
}

function renderProblems() {
  $("problems").replaceChildren(...state.problems.map((p) => {
    const dismiss = el("button", "×", "dismiss");
    dismiss.type = "button";
    dismiss.title = "Dismiss";
    dismiss.setAttribute("aria-label", "Dismiss");
    dismiss.addEventListener("click", () => {
      state.problems = state.problems.filter((q) => q.id !== p.id);
      renderProblems();
    });
    const item = el("li", "");
    item.append(el("span", p.text, "text"), dismiss);
    return item;
  }));
}

function banner(text) {
  state.banner = text;
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

// Runs `work`; an error it throws is shown under `key`, which its success resolves.
async function guarded(work, key = null) {
  try {
    await work();
    if (key) resolve(key);
  } catch (error) {
    problem(error.message, key);
  }
}

// --- account and characters -------------------------------------------------------------

function show(section) {
  for (const id of ["account", "characters", "world"]) $(id).hidden = id !== section;
  $("logout").hidden = section === "account";
}

async function signedIn(issued, username) {
  state.session.start(issued);
  $("who").textContent = username || "";
  resolve("session");
}

// The characters; `waitForOne`: a new account's first character is made by provisioning
// a moment after the registration's answer, so ask again (bounded) until it is there.
async function listCharacters({ waitForOne = false } = {}) {
  show("characters");
  let characters = [];
  $("characters-waiting").hidden = !waitForOne;
  for (let tries = 0; ; tries += 1) {
    ({ characters } = await api(location.origin, "/v1/characters", { token: await state.session.token() }));
    if (characters.length || !waitForOne || tries >= 20) break;
    await new Promise((done) => setTimeout(done, 250));
  }
  $("characters-waiting").hidden = true;
  $("character-list").replaceChildren(...characters.map((c) => {
    const item = el("li", "");
    const playButton = el("button", "Play");
    playButton.dataset.character = c.id;
    playButton.addEventListener("click", () => guarded(() => enter(c), "join"));
    item.append(`${c.name} (${c.class}, ${c.zone_id}) `, playButton);
    return item;
  }));
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
    await listCharacters();
  }, "login");
});

$("register").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    const body = form("register");
    await signedIn(await api(location.origin, "/v1/auth/register", { method: "POST", body }),
                   body.username);
    await listCharacters({ waitForOne: true });
  }, "register");
});

$("create").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    await api(location.origin, "/v1/characters", { method: "POST", token: await state.session.token(),
                                                   body: form("create") });
    $("create").reset();
    await listCharacters();
  }, "create");
});

function leave() {
  if (state.client) state.client.close();
  state.client = null;
  state.connection = "offline";
  banner(null);
  resolve("zone");
}

$("leave").addEventListener("click", () => {
  leave();
  guarded(() => listCharacters(), "characters");
});

function logOut() {
  leave();
  state.session.logout();
  $("who").textContent = "";
  show("account");
}

$("logout").addEventListener("click", logOut);

// --- the world ---------------------------------------------------------------------------

async function enter(character) {
  leave();
  const [map, me] = await Promise.all([
    api(location.origin, "/v1/world/map"),
    state.session.token().then((token) => api(location.origin, "/v1/me", { token })).catch(() => null),
  ]);
  state.map = map;
  state.weapons = me?.progression?.weapons?.length ? me.progression.weapons : ["pistol"];
  state.weapon = state.weapons.includes(state.weapon) ? state.weapon : state.weapons[0];
  $("weapon").replaceChildren(...state.weapons.map((w, i) => {
    const option = document.createElement("option");
    option.value = w;
    option.textContent = `${i + 1}: ${w}`;
    return option;
  }));
  $("weapon").value = state.weapon;
  play.newWorld(state);
  state.me = character.id;
  state.killFeed = [];
  renderFeed();
  // A token with a minute or more to live; the socket closes (4001) when it expires, and
  // the page comes back with the next one (below).
  const client = new OutpostClient({ baseUrl: location.origin, token: await state.session.token() });
  state.client = client;
  client.addEventListener("welcome", (e) => {
    play.welcomed(state, e.detail);
    state.connection = "open";
    state.paused = false;
    $("hud-zone").textContent = e.detail.zone;
    resolve("zone");
    resolve("connection");
    banner(null);
    if ($("world").hidden) {
      show("world");
      $("map").focus();
    }
  });
  client.addEventListener("snapshot", (e) => {
    state.snapshots += 1;
    play.snapshot(state, e.detail);
    $("hud-tick").textContent = e.detail.tick;
    $("hud-range").textContent = state.inRange;
  });
  client.addEventListener("events", (e) => play.happened(state, e.detail, feed));
  client.addEventListener("error", (e) => {
    const { code, message, seq } = e.detail;
    if (code === "zone_unavailable") {
      state.paused = true;  // moves would be dropped: do not predict them
      problem(`${message} (${code})`, "zone");
      banner("Your zone is unavailable: waiting for it to come back…");
    } else if (seq !== null) {
      // The game refused one of our inputs (a shot too soon, a move while dead): a passing
      // note, not an error to dismiss; its prediction is dropped.
      play.refused(state, seq);
      refusal(`${message}`);
    } else {
      problem(`${message} (${code})`);
    }
  });
  client.addEventListener("reconnecting", (e) => {
    const { attempt, delayMs, reason } = e.detail;
    state.connection = "reconnecting";
    state.paused = true;
    banner(`${reason} Reconnecting (attempt ${attempt}, in ${(delayMs / 1000).toFixed(1)} s)…`);
  });
  client.addEventListener("reconnected", () => {
    state.connection = "open";
    banner(null);
  });
  client.addEventListener("pong", (e) => { $("hud-rtt").textContent = e.detail.rttMs.toFixed(0); });
  client.addEventListener("close", (e) => {
    if (client !== state.client) return;  // one we left
    state.connection = "closed";
    banner(null);
    resolve("zone");
    problem(e.detail.words, "connection");
    if (e.detail.code === 4001 && state.session.signedIn) {
      // The access token expired: a new one, and the same character again.
      guarded(() => state.session.token({ renew: true }).then(() => enter(character))
        .catch((error) => { logOut(); throw error; }), "connection");
    } else if ([4001, 4011, 4012].includes(e.detail.code)) logOut();
    else guarded(() => listCharacters(), "characters");
  });
  state.connection = "connecting";
  // A first socket that never opens ends in a final `close`, shown by its handler above.
  const protocol = await client.connect().catch(() => null);
  if (protocol === null) return;
  $("hud-protocol").textContent = protocol;
  client.join(character.id);
}

function feed(entry) {
  state.killFeed.push(entry);
  if (state.killFeed.length > 6) state.killFeed.shift();
  renderFeed();
}

function renderFeed() {
  $("killfeed").replaceChildren(...state.killFeed.slice().reverse().map((k) => {
    const item = el("li", "");
    item.append(el("span", k.killerName, "killer"), " killed ",
                el("span", k.victimName, "victim"), ` (${k.weapon})`);
    return item;
  }));
}

let refusalTimer = null;
function refusal(text) {
  $("refusal").textContent = text;
  $("refusal").hidden = false;
  clearTimeout(refusalTimer);
  refusalTimer = setTimeout(() => { $("refusal").hidden = true; }, 2500);
}

// Keys: held directions move; 1/2/3 pick a weapon. Only while playing and not typing.
function playing(event) {
  return !$("world").hidden && !["INPUT", "SELECT", "TEXTAREA"].includes(event.target.tagName);
}
document.addEventListener("keydown", (e) => {
  if (!playing(e)) return;
  const key = e.key.toLowerCase();
  const pick = Number(key) - 1;
  if (Number.isInteger(pick) && pick >= 0 && pick < state.weapons.length) {
    state.weapon = state.weapons[pick];
    $("weapon").value = state.weapon;
  } else if (["w", "a", "s", "d", "arrowup", "arrowdown", "arrowleft", "arrowright"].includes(key)) {
    state.keys.add(key);
    e.preventDefault();
  }
});
document.addEventListener("keyup", (e) => state.keys.delete(e.key.toLowerCase()));
window.addEventListener("blur", () => state.keys.clear());
$("weapon").addEventListener("change", (e) => { state.weapon = e.target.value; $("map").focus(); });

const canvas = $("map");
function mouseAt(e) {
  const box = canvas.getBoundingClientRect();
  return { x: (e.clientX - box.left) * (canvas.width / box.width),
           y: (e.clientY - box.top) * (canvas.height / box.height) };
}
canvas.addEventListener("mousemove", (e) => { state.mouse = mouseAt(e); });
canvas.addEventListener("mouseleave", () => { state.mouse = null; });
canvas.addEventListener("mousedown", (e) => {
  if (e.button !== 0 || !state.view) return;
  canvas.focus();
  state.mouse = mouseAt(e);
  const [wx, wy] = play.toWorld(state.view, state.mouse.x, state.mouse.y);
  play.fire(state, wx, wy, state.weapon);
  e.preventDefault();
});

// --- loops -------------------------------------------------------------------------------

let last = performance.now();
function animate(now) {
  const dt = Math.min(now - last, 250);
  last = now;
  if (!$("world").hidden) {
    play.frame(state, canvas, $("minimap"), now, dt);
    $("hud-players").textContent = state.onScreen;
    $("hud-link").textContent = state.connection;
    const hp = state.hp ?? 100;
    $("hp-fill").style.width = `${Math.max(hp, 0)}%`;
    $("hp-fill").style.background = hp > 50 ? "#4caf50" : hp > 25 ? "#e0a030" : "#e04040";
    $("hp-text").textContent = `${hp} HP`;
    const inS = play.respawnInS(state, state.client?.tick ?? null);
    $("overlay").hidden = inS === null;
    if (inS !== null) $("overlay-text").textContent = `You died. Respawning in ${inS} s`;
  }
  requestAnimationFrame(animate);
}

async function zones() {
  if ($("world").hidden || !state.client) return;
  const { zones: listed } = await api(location.origin, "/v1/world/zones");
  state.zoneRefreshes += 1;
  $("zones").replaceChildren(...listed.filter((z) => z.up && z.zone !== state.client.zone).map((z) => {
    const go = el("button", `${z.zone} (${z.players})`);
    go.addEventListener("click", () => state.client.travel(z.zone));
    return go;
  }));
}

setInterval(() => play.input(state, state.keys), 1000 / play.MOVE_HZ);
setInterval(() => { if (state.client) state.client.ping(); }, 2000);
// Keep the world's socket alive past its token's expiry: token() refreshes a token with
// under a minute left, and the socket is handed the new one.
setInterval(() => {
  const client = state.client;
  if (!client || !state.session.signedIn) return;
  state.session.token().then((token) => { if (token !== client.token) client.renew(token); })
    .catch(() => null);  // refused: the socket's own close (4001, 4012) says what to do
}, 20000);
setInterval(() => {
  $("hud-rate").textContent = state.snapshots;
  state.rate = state.snapshots;
  state.snapshots = 0;
}, 1000);
// The zone list: while the server is away this fails, quietly (the banner says so).
setInterval(() => { if (state.connection === "open") guarded(zones, "zones"); }, 3000);
requestAnimationFrame(animate);

show("account");
if (state.session.signedIn) {
  listCharacters().catch(() => {  // a session from an earlier visit, ended: log in again
    state.session.end();
    show("account");
  });
}
