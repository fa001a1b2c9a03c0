// The operator console (docs/operations.md, "The console"): the zones, the players of one,
// kicks, rescues of stranded characters and accounts, over the /v1/admin/ routes
// (docs/protocol.md, "Operator console"). The routes refuse anyone but an operator; this
// page only shows what they answer.

import { PageSession, api } from "./outpost-client.js";

const REFRESH_MS = 2000;  // the zone directory's figures change every third of a lease
const $ = (id) => document.getElementById(id);
const state = { session: new PageSession(location.origin, "console-session"), zone: null, account: null,
                zones: [], done: [], refreshing: false };
window.consoleState = state;  // what the browser test reads

// An error stays until dismissed, or until what failed works again (`from` says what).
function problem(text, from = "") {
  $("problem-text").textContent = text || "";
  $("problem").hidden = !text;
  state.problemFrom = text ? from : "";
}
$("dismiss").addEventListener("click", () => problem(""));

async function guarded(work, from = "") {
  try {
    const done = await work();
    if (from && state.problemFrom === from) problem("");  // it works again
    return done;
  } catch (error) {
    if (error.status === 401) signOut("Your session has ended: log in again.");
    else if (error.notOperator) signOut(`${error.message}. An account becomes an operator ` +
                                        "with `outpost operator grant <username>` on the server.");
    else problem(error.message, from);
    return undefined;
  }
}

async function admin(path, options = {}) {
  try {
    return await api(location.origin, `/v1/admin/${path}`, { token: await state.session.token(), ...options });
  } catch (error) {
    error.notOperator = error.status === 403 && error.code === "forbidden";
    throw error;
  }
}

function cell(content) {
  const td = document.createElement("td");
  td.append(content ?? "");
  return td;
}

function button(text, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", () => guarded(action));
  return b;
}

function badge(text, kind) {
  const span = document.createElement("span");
  span.className = `badge ${kind}`;
  span.textContent = text;
  return span;
}

function did(text) {
  state.done.unshift(`${new Date().toLocaleTimeString()}: ${text}`);
  $("done").replaceChildren(...state.done.slice(0, 20).map((line) => {
    const li = document.createElement("li");
    li.textContent = line;
    return li;
  }));
}

// The zones and the roster shown, every REFRESH_MS; the account only when asked (a table
// rebuilt under the operator's hand would lose the zone chosen to move a character to).
async function refresh() {
  if (!state.session.signedIn || state.refreshing) return;  // one at a time: no older answer last
  state.refreshing = true;
  try {
    await refreshZones();
  } finally {
    state.refreshing = false;
  }
}

async function refreshZones() {
  const { zones } = await admin("zones");
  state.zones = zones;
  $("zones").tBodies[0].replaceChildren(...zones.map((z) => {
    const row = document.createElement("tr");
    row.dataset.zone = z.zone;
    row.classList.toggle("selected", z.zone === state.zone);
    const ms = z.tick_ms ? `${z.tick_ms.p50 ?? "-"} / ${z.tick_ms.p99 ?? "-"}` : "";
    row.append(cell(z.zone), cell(z.up ? badge("up", "up") : badge("down", "down")),
               cell(z.owner ? z.owner.slice(0, 8) : ""), cell(String(z.players)), cell(ms),
               cell(z.snapshots_per_s == null ? "" : String(z.snapshots_per_s)),
               cell(z.up ? button("Players", () => showRoster(z.zone)) : ""));
    return row;
  }));
  $("zones-at").textContent = `as of ${new Date().toLocaleTimeString()}`;
  if (state.zone) await showRoster(state.zone);
}

async function showRoster(zone) {
  state.zone = zone;
  let roster;
  try {
    roster = await admin(`zones/${encodeURIComponent(zone)}/players`);
  } catch (error) {
    if (error.code !== "zone_unavailable" && error.code !== "not_found") throw error;
    roster = { zone, total: 0, players: [] };  // it stopped: the zones table says so
  }
  $("roster").hidden = false;
  $("roster-zone").textContent = zone;
  $("roster-total").textContent = roster.total > roster.players.length
    ? `(${roster.players.length} of ${roster.total} listed)` : `(${roster.total})`;
  $("players").tBodies[0].replaceChildren(...roster.players.map((p) => {
    const row = document.createElement("tr");
    row.dataset.character = p.character_id;
    const fields = Object.entries(p.fields).map(([k, v]) => `${k} ${v}`).join(", ");
    row.append(cell(p.name), cell(`${p.x.toFixed(1)}, ${p.y.toFixed(1)}`), cell(fields),
               cell(button("Account", () => showAccount(p.user_id))),
               cell(button("Kick", async () => {
                 await admin(`characters/${p.character_id}/kick`, { method: "POST" });
                 did(`kicked ${p.name} from ${zone}`);
                 await showRoster(zone);
               })));
    return row;
  }));
}

async function showAccount(who) {
  const account = await admin(`users/${encodeURIComponent(who)}`);
  state.account = account.user_id;
  $("account").hidden = false;
  $("account-name").textContent = account.username;
  $("account-email").textContent = `${account.email}${account.operator ? " (operator)" : ""}`;
  $("account-state").textContent = account.disabled ? "disabled" : "active";
  $("account-state").className = `badge ${account.disabled ? "disabled" : ""}`;
  const toggle = $("disable");
  toggle.textContent = account.disabled ? "Enable" : "Disable";
  toggle.onclick = () => guarded(async () => {
    const verb = account.disabled ? "enable" : "disable";
    await admin(`users/${account.user_id}/${verb}`, { method: "POST" });
    did(`${verb}d ${account.username}`);
    await showAccount(account.user_id);
  });
  const running = state.zones.filter((z) => z.up).map((z) => z.zone);
  $("characters").tBodies[0].replaceChildren(...account.characters.map((c) => {
    const row = document.createElement("tr");
    row.dataset.character = c.id;
    const zone = document.createElement("span");
    zone.append(c.zone_id, " ", c.zone_up ? "" : badge("stranded", "stranded"));
    const to = document.createElement("select");
    to.replaceChildren(...running.filter((z) => z !== c.zone_id).map((z) => new Option(z, z)));
    const move = button("Move", async () => {
      await admin(`characters/${c.id}/move`, { method: "POST", body: { zone: to.value } });
      did(`moved ${c.name} from ${c.zone_id} to ${to.value}`);
      await showAccount(account.user_id);
    });
    move.disabled = !to.options.length;
    const controls = document.createElement("span");
    controls.append(to, " ", move);
    row.append(cell(c.name), cell(c.class), cell(zone), cell(`${c.x.toFixed(1)}, ${c.y.toFixed(1)}`),
               cell(controls));
    return row;
  }));
}

function signedIn() {
  $("signin").hidden = true;
  $("desk").hidden = false;
  $("logout").hidden = false;
}

function signOut(why) {
  state.session.logout();
  Object.assign(state, { zone: null, account: null });
  $("roster").hidden = true;
  $("account").hidden = true;
  $("signin").hidden = false;
  $("desk").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  problem(why || "");
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    const body = Object.fromEntries(new FormData($("login")));
    const session = await api(location.origin, "/v1/auth/login", { method: "POST", body });
    state.session.start(session);
    await admin("zones");  // an operator's? 403 otherwise, before anything is shown
    $("who").textContent = body.username;
    problem("");
    signedIn();
    await refresh();
  });
});

$("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(() => showAccount(new FormData($("lookup")).get("who").trim()));
});

$("logout").addEventListener("click", () => signOut(""));

setInterval(() => { if (state.session.signedIn) guarded(refresh, "refresh"); }, REFRESH_MS);
if (state.session.signedIn) {
  signedIn();
  guarded(refresh, "refresh");
}
