// The gateway console: reads and acts through the admin API only, next to this page
// (relative URLs, so any admin prefix works). The admin token, when one is needed,
// is kept for this tab only (sessionStorage) and sent in the Authorization header,
// never as a cookie. Every piece of data reaches the page through textContent:
// nothing an app or a route file holds is ever parsed as HTML.
"use strict";

const REFRESH_MS = 2000;
const INVENTORY_EVERY = 5; // refreshes (the inventory reads both apps' route tables)
const TOKEN_KEY = "gateway-admin-token";
const STATUSES = ["unreachable", "new-only", "canary", "migrated", "shadowed", "ready", "legacy-only"];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  routes: null, // the last GET routes
  legacy: null, // the legacy side's backend name
  events: [],
  lastEvent: 0,
  rows: new Map(), // route id -> {tr, cells}
  mismatchesShown: "",
  ticks: 0,
  timer: null,
  refreshing: false,
  again: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
}

// --- the admin API -------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = "Bearer " + state.token;
  let response;
  try {
    response = await fetch(path, {
      method: options.method || "GET",
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      headers,
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    return { ok: false, status: 0, body: { error: "the gateway did not answer (" + error.message + ")" } };
  }
  let body;
  try {
    body = await response.json();
  } catch (error) {
    body = { error: "the answer (" + response.status + ") is not JSON" };
  }
  return { ok: response.ok, status: response.status, body };
}

function reason(answer) {
  const body = answer.body || {};
  const lines = [body.error || "status " + answer.status];
  for (const problem of body.problems || []) lines.push(problem);
  return lines.join("\n");
}

// --- who may look ----------------------------------------------------------------

async function start() {
  const first = await api("console/figures");
  if (first.status === 401 || (first.status === 403 && state.token)) {
    showGate(first.status === 401 && !state.token ? "" : reason(first));
    return;
  }
  if (!first.ok) {
    $("denied").hidden = false;
    $("denied-reason").textContent = reason(first);
    return;
  }
  $("gate").hidden = true;
  $("console").hidden = false;
  $("forget-token").hidden = !state.token;
  await refresh(first);
}

function showGate(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  $("console").hidden = true;
  $("gate").hidden = false;
  $("gate-reason").textContent = why
    ? "Refused: " + why
    : "This gateway needs its admin token (GATEWAY_ADMIN_TOKEN) before it shows anything.";
  $("gate-reason").className = why ? "loud" : "";
  $("token").focus();
}

// --- the live view -----------------------------------------------------------------

// One refresh at a time: one asked for meanwhile (after an action) runs right after.
async function refresh(figures) {
  if (state.refreshing) {
    state.again = true;
    return;
  }
  state.refreshing = true;
  clearTimeout(state.timer);
  let live = false;
  try {
    live = await refreshOnce(figures);
  } finally {
    state.refreshing = false;
  }
  if (state.again) {
    state.again = false;
    refresh();
  } else if (live) {
    state.timer = setTimeout(refresh, REFRESH_MS);
  }
}

// Returns false when the admin API stopped answering this page (the gate shows).
async function refreshOnce(figures) {
  const wantInventory = state.ticks % INVENTORY_EVERY === 0;
  state.ticks += 1;
  const [routes, shadow, events, inventory, fresh] = await Promise.all([
    api("routes"),
    api("shadow"),
    api("events?since=" + state.lastEvent),
    wantInventory ? api("inventory") : null,
    figures ? figures : api("console/figures"),
  ]);
  const failed = [routes, shadow, events, fresh].find((answer) => !answer.ok);
  if (failed && (failed.status === 401 || failed.status === 403)) {
    state.again = false;
    showGate(reason(failed));
    return false;
  }
  if (routes.ok) {
    state.routes = routes.body;
    state.legacy = state.legacy || routes.body.default;
  }
  if (events.ok && events.body.events.length) {
    addEvents(events.body.events);
    state.ticks = 0; // the table changed: read the inventory again at the next refresh
  }
  if (inventory) renderInventory(inventory);
  if (state.routes) {
    renderRoutes(state.routes, shadow.ok ? shadow.body.routes : {}, fresh.ok ? fresh.body : null);
    renderMismatches(shadow.ok ? shadow.body.routes : {});
  }
  const live = $("live");
  if (failed) {
    live.textContent = "⚠ Not live: " + reason(failed) + " (retrying)";
    live.className = "live stale";
  } else {
    live.textContent = "● Live, updated " + new Date().toLocaleTimeString();
    live.className = "live";
  }
  return true;
}

function side(name) {
  const legacy = name === state.legacy;
  return el(
    "span",
    { class: "side " + (legacy ? "legacy" : "new"), title: legacy ? "the legacy side" : "a new side" },
    name,
  );
}

function renderInventory(answer) {
  const box = $("unreachable");
  if (!answer.ok || answer.body.error) {
    box.hidden = false;
    fill(box, "⚠ Inventory unavailable: " + (answer.ok ? answer.body.error : reason(answer)));
    fill($("progress-counts"));
    $("progress-summary").textContent = "";
    return;
  }
  const inventory = answer.body;
  state.legacy = inventory.legacy || state.legacy;
  const summary = inventory.summary;
  const unreachable = inventory.endpoints.filter((e) => e.status === "unreachable");
  box.hidden = unreachable.length === 0;
  fill(
    box,
    el("strong", {}, `⚠ ${unreachable.length} endpoint(s) unreachable: routed to a backend that does not implement them`),
    el(
      "ul",
      {},
      unreachable.map((e) =>
        el("li", {}, `${e.method} ${e.path}: route ${e.route} sends it to ${e.backend}; implemented by ${e.implemented_by.join(", ")}`),
      ),
    ),
  );
  const share = summary.traffic_share_new;
  fill(
    $("progress-summary"),
    `${summary.legacy_migrated} of ${summary.legacy_endpoints} legacy endpoints migrated (${summary.endpoints} endpoints in all). `,
    share === null || share === undefined
      ? "No traffic figures (the gateway counts nothing)."
      : el(
          "label",
          {},
          `${(share * 100).toFixed(1)}% of requests served by new sides `,
          el("meter", { min: 0, max: 1, value: share }),
        ),
  );
  fill(
    $("progress-counts"),
    STATUSES.map((status) => el("li", { class: summary[status] ? status : "" }, `${summary[status]} ${status}`)),
  );
}

function renderRoutes(view, shadows, figures) {
  const info = $("table-info");
  info.textContent = `${view.source || ""} · sha256 ${String(view.sha256 || "").slice(0, 12)} · loaded ${view.loaded_at || "-"}`;
  if (view.last_error) info.textContent += ` · ⚠ last file rejected at ${view.last_error.at}`;
  $("figures-info").textContent = figuresInfo(figures);
  const backends = Object.keys(view.backends || {});
  const body = $("routes").tBodies[0];
  const seen = new Set();
  for (const route of view.routes || []) {
    seen.add(route.id);
    let row = state.rows.get(route.id);
    if (!row) {
      row = newRow(route.id);
      state.rows.set(route.id, row);
    }
    body.append(row.tr); // in the table's order
    const c = row.cells;
    const prefix = route.strip_prefix ? el("span", { class: "prefix muted" }, ` (strips ${route.strip_prefix})`) : null;
    fill(c.route, el("strong", {}, route.id), el("br"), el("span", { class: "path" }, (route.methods || ["any"]).join(",") + " " + route.path), prefix);
    fill(c.backend, side(route.backend));
    fill(c.canary, route.canary ? [`${route.canary.percent}% to `, side(route.canary.backend)] : "none");
    fill(c.shadow, shadowCell(route, shadows[route.id]));
    fill(c.policy, policyCell(route));
    fill(c.traffic, trafficCell(figures && figures.routes[route.id]));
    updateActions(row, route, backends);
  }
  for (const [id, row] of state.rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      state.rows.delete(id);
    }
  }
}

function figuresInfo(figures) {
  if (!figures) return "Traffic figures unavailable.";
  if (!figures.counted) return "This gateway counts nothing (started with --no-metrics): no traffic figures.";
  if (figures.window_seconds === null) return "Measuring traffic: the first figures appear within a few seconds.";
  const minutes = figures.window_seconds / 60;
  const span = minutes >= 1 ? `${minutes.toFixed(1)} min` : `${figures.window_seconds.toFixed(0)} s`;
  return `Traffic over the last ${span}, from every worker's counters, refreshed every few seconds.`;
}

function newRow(id) {
  const cells = {};
  const tr = el("tr", { "data-route": id });
  for (const [key, label] of [
    ["route", "Route"],
    ["backend", "Backend"],
    ["canary", "Canary"],
    ["shadow", "Shadow"],
    ["policy", "Fallback / rollback"],
    ["traffic", "Traffic"],
    ["actions", "Actions"],
  ]) {
    cells[key] = el("td", { "data-label": label, class: key });
    tr.append(cells[key]);
  }
  return { tr, cells, backends: "", target: null, touched: false };
}

function shadowCell(route, report) {
  if (!route.shadow) return "none";
  const counts = (report && report.counts) || {};
  return [
    `${route.shadow.percent}% copied to `,
    side(route.shadow.backend),
    el(
      "ul",
      { class: "figures" },
      el("li", {}, `✓ ${counts.match || 0} match`),
      el("li", { class: counts.mismatch ? "state-bad" : "" }, `✗ ${counts.mismatch || 0} mismatch`),
      el("li", { class: counts.error ? "state-bad" : "" }, `! ${counts.error || 0} error`),
    ),
  ];
}

function policyCell(route) {
  const parts = [];
  if (route.fallback) parts.push(el("div", {}, "Fallback to ", side(route.fallback)));
  const tripped = trippedRollback(route);
  if (tripped) parts.push(el("div", { class: "state-bad rollback-state" }, tripped));
  else if (route.rollback) {
    const r = route.rollback;
    parts.push(el("div", { class: "rollback-state" }, `Rollback armed: over ${r.error_ratio} errors in ${r.window}s (at least ${r.min_requests} requests)`));
  }
  return parts.length ? parts : "none";
}

function trippedRollback(route) {
  if (route.rolled_back) {
    const r = route.rolled_back;
    return `Rollback tripped ${r.at}: moved from ${r.from} to ${r.to}, ${r.why}${r.persisted ? "" : " (not persisted)"}`;
  }
  // A stored rollback is a flip of the source: the event says so, until a later edit.
  for (let i = state.events.length - 1; i >= 0; i -= 1) {
    const event = state.events[i];
    if (!(event.routes || []).includes(route.id) && event.route !== route.id) continue;
    if (event.kind === "rollback" && route.backend === event.to) {
      return `Rollback tripped ${event.at}: moved from ${event.from} to ${event.to}, ${event.failed} of ${event.total} answers failed in ${event.window}s (over the ${event.error_ratio} limit)`;
    }
    if (event.kind !== "reload") return null;
  }
  return null;
}

function trafficCell(routeFigures) {
  if (!routeFigures) return el("span", { class: "muted" }, "no requests");
  return el(
    "ul",
    { class: "figures" },
    Object.entries(routeFigures).map(([backend, f]) =>
      el(
        "li",
        { "data-backend": backend },
        side(backend),
        ` ${f.rate.toFixed(2)} req/s · `,
        el("span", { class: f.error_ratio ? "state-bad" : "" }, `${f.error_ratio === null ? "-" : (f.error_ratio * 100).toFixed(1)}% errors`),
        ` · p50 ${ms(f.p50)} · p99 ${ms(f.p99)}`,
      ),
    ),
  );
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  return seconds >= 1 ? `${seconds.toFixed(2)} s` : `${(seconds * 1000).toFixed(seconds < 0.01 ? 1 : 0)} ms`;
}

// --- actions ---------------------------------------------------------------------

function updateActions(row, route, backends) {
  const key = backends.join(",");
  const other = backends.find((name) => name !== route.backend) || route.backend;
  if (row.backends === key) {
    // Built already: keep what the person typed or chose, else offer the other side.
    if (!row.touched) row.target.value = other;
    return;
  }
  row.backends = key;
  row.touched = false;
  const id = route.id;
  const target = el(
    "select",
    { id: `target-${id}`, name: "target", onchange: () => { row.touched = true; } },
    backends.map((name) => el("option", { value: name }, name)),
  );
  target.value = other;
  row.target = target;
  const percent = el("input", { id: `canary-${id}`, type: "number", min: 0, max: 100, step: "any", value: route.canary ? route.canary.percent : 10 });
  fill(
    row.cells.actions,
    el(
      "div",
      { class: "actions" },
      el(
        "form",
        { onsubmit: (event) => { event.preventDefault(); flipRoute(id, target.value); } },
        el("label", { for: target.id }, "Backend"),
        target,
        el("button", { type: "submit", "aria-label": `Flip ${id}` }, "Flip"),
      ),
      el(
        "form",
        // novalidate: the admin API judges the value, and its refusal says why.
        { novalidate: true, onsubmit: (event) => { event.preventDefault(); setCanary(id, percent.value, target.value); } },
        el("label", { for: percent.id }, "Canary %"),
        percent,
        el("button", { type: "submit", "aria-label": `Set the canary of ${id}` }, "Set"),
      ),
    ),
  );
}

async function flipRoute(id, backend) {
  const route = (state.routes.routes || []).find((r) => r.id === id);
  const from = route ? route.backend : "?";
  if (!(await confirmed(`Flip route ${id} from ${from} to ${backend}? Every worker serves it from ${backend} within a second.`))) return;
  const answer = await api(`routes/${encodeURIComponent(id)}`, { method: "PUT", body: { backend } });
  report(answer, answer.ok ? (answer.body.changed ? `${id} now served by ${backend}.` : `${id} was already on ${backend}; nothing changed.`) : "");
}

async function setCanary(id, value, backend) {
  const percent = Number(value);
  if (value === "" || !Number.isFinite(percent)) {
    report({ ok: false, status: 0, body: { error: "the canary percent must be a number from 0 to 100" } });
    return;
  }
  if (!(await confirmed(`Send ${percent}% of route ${id}'s requests to ${backend}?`))) return;
  const answer = await api(`routes/${encodeURIComponent(id)}`, { method: "PUT", body: { canary: { percent, backend } } });
  report(answer, `${id}: ${percent}% of its requests go to ${backend}.`);
}

async function flipAll() {
  const legacy = state.legacy;
  if (!(await confirmed(`Flip every route to ${legacy}? Routes ${legacy} does not implement stay where they are.`))) return;
  const answer = await api("flip-all", { method: "POST", body: { backend: legacy } });
  if (!answer.ok) {
    report(answer);
    return;
  }
  const b = answer.body;
  let text = b.changed.length ? `Flipped to ${legacy}: ${b.changed.join(", ")}.` : `Every route was already on ${legacy}; nothing changed.`;
  for (const [route, why] of Object.entries(b.left || {})) text += ` Left ${route} as it was: ${why}.`;
  if (b.unknown) text += ` Note: ${b.unknown}.`;
  report(answer, text);
}

function report(answer, done) {
  const outcome = $("outcome");
  outcome.hidden = false;
  outcome.className = "outcome " + (answer.ok ? "ok" : "refused");
  outcome.textContent = answer.ok ? "✓ Done: " + done : `✗ Refused (${answer.status || "no answer"}): ${reason(answer)}`;
  state.ticks = 0; // the inventory changes with the table
  refresh();
}

function confirmed(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    const done = (ok) => {
      dialog.removeEventListener("close", onClose);
      $("confirm-ok").onclick = null;
      $("confirm-cancel").onclick = null;
      if (dialog.open) dialog.close();
      resolve(ok);
    };
    const onClose = () => done(false); // Escape
    dialog.addEventListener("close", onClose);
    $("confirm-ok").onclick = () => done(true);
    $("confirm-cancel").onclick = () => done(false);
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

// --- shadow mismatches and events ---------------------------------------------------

function renderMismatches(shadows) {
  const shown = JSON.stringify(shadows);
  if (shown === state.mismatchesShown) return; // keep what the person opened
  state.mismatchesShown = shown;
  const items = [];
  for (const [id, report] of Object.entries(shadows)) {
    for (const m of [...report.mismatches].reverse()) {
      items.push(
        el(
          "details",
          { class: "mismatch" },
          el("summary", {}, `${m.at} · ${id} · ${m.request}`),
          (m.differences || []).map((difference) => diffBlock(difference)),
        ),
      );
    }
  }
  fill($("mismatches"), items.length ? items : el("p", { class: "muted" }, "None."));
}

function diffBlock(text) {
  return el(
    "pre",
    { class: "diff" },
    String(text)
      .split("\n")
      .map((line) => el("span", { class: line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "" }, line + "\n")),
  );
}

function addEvents(events) {
  const list = $("events");
  for (const event of events) {
    state.events.push(event);
    state.lastEvent = Math.max(state.lastEvent, event.id);
    list.prepend(eventItem(event));
  }
  while (list.children.length > 200) list.lastElementChild.remove();
}

function eventItem(e) {
  const facts = [];
  if (e.routes && e.routes.length) facts.push("routes: " + e.routes.join(", "));
  if (e.change) facts.push(e.change);
  if (e.kind === "rollback") facts.push(`${e.route} from ${e.from} to ${e.to}: ${e.failed} of ${e.total} failed in ${e.window}s (limit ${e.error_ratio})${e.persisted ? "" : ", not persisted"}`);
  if (e.reason) facts.push(e.reason);
  return el(
    "li",
    { "data-kind": e.kind },
    el("time", { datetime: e.at }, e.at),
    " ",
    el("span", { class: "kind" + (e.kind === "rejected" || e.kind === "rollback" ? " state-bad" : "") }, e.kind),
    ` by ${e.by}`,
    facts.length ? " · " + facts.join(" · ") : "",
    e.problems ? el("div", { class: "problems" }, e.problems.join("\n")) : null,
  );
}

// --- wiring ------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    $("token").value = "";
    if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
    start();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  $("flip-all").addEventListener("click", flipAll);
  start();
});
