/* scalejob dashboard: login, API calls, SSE over fetch, hash routing and the services table.
 *
 * The token lives only in sessionStorage and the Authorization header: never in a URL, a
 * cookie or the console. SSE is read with fetch() + a stream reader because EventSource
 * cannot send headers. service.js and request.js add the other views to SJ.views.
 */
"use strict";

const SJ = (window.SJ = { views: {}, rows: {}, rowListeners: new Set() });
const TOKEN_KEY = "scalejob.token";

SJ.token = () => sessionStorage.getItem(TOKEN_KEY);

/* Build DOM without innerHTML: h("td", {class: "num", text: "3"}, child...) */
SJ.h = function (tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
};

SJ.fmtAge = function (seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
};

SJ.fmtTime = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "–");

SJ.progressBar = function (value, state) {
  const pct = Math.max(0, Math.min(100, Number(value) || 0));
  const fill = SJ.h("div", { class: `fill ${state || ""}` });
  fill.style.width = `${pct}%`; // CSSOM, allowed by the CSP (no inline style attributes)
  return SJ.h("div", { class: "bar", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100, title: `${pct}%` },
    fill, SJ.h("span", { class: "bar-label", text: `${pct.toFixed(pct % 1 ? 1 : 0)}%` }));
};

class AuthError extends Error {}
SJ.AuthError = AuthError;

/* fetch with the token; JSON in and out; a 401 logs out with the server's one-line reason. */
SJ.api = async function (path, opts = {}) {
  const headers = { Accept: "application/json", ...(opts.headers || {}) };
  const token = opts.token || SJ.token();
  if (token) headers.Authorization = token;
  const res = await fetch(path, { ...opts, headers, credentials: "omit", cache: "no-store" });
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (res.status === 401) {
    if (!opts.token) SJ.logout((body && body.detail) || "token refused");
    throw new AuthError((body && body.detail) || "token refused");
  }
  if (!res.ok) throw new Error((body && body.detail) || `${res.status} ${res.statusText}`);
  return body;
};

/* Server-Sent Events over fetch: calls onEvent(kind, data, id) per event until the stream ends
 * or `signal` aborts. Resolves when the server closes the stream. */
SJ.sse = async function (path, onEvent, signal) {
  const res = await fetch(path, { headers: { Authorization: SJ.token(), Accept: "text/event-stream" }, signal, credentials: "omit", cache: "no-store" });
  if (res.status === 401) { SJ.logout("token refused"); return; }
  if (!res.ok || !res.body) throw new Error(`stream ${path}: ${res.status}`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let kind = "message", id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") kind = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
      if (data.length || kind !== "message") onEvent(kind, data.join("\n"), id);
    }
  }
};

/* --- session ------------------------------------------------------------------------------ */
const $ = (id) => document.getElementById(id);
let feed = null; // AbortController of the services table stream
let viewAbort = null; // AbortController of the current view's streams and timers

SJ.logout = function (reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (feed) feed.abort();
  if (viewAbort) viewAbort.abort();
  feed = viewAbort = null;
  SJ.session = null;
  SJ.rows = {};
  $("main").replaceChildren();
  $("main").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("live").hidden = true;
  $("who").textContent = "";
  $("crumbs").replaceChildren();
  $("login-error").textContent = reason || "";
};

async function login(token) {
  const who = await SJ.api("/api/ui/session", { token });
  sessionStorage.setItem(TOKEN_KEY, token);
  start(who);
}

function start(who) {
  SJ.session = who;
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = who.admin ? "admin" : `service token: ${who.services.join(", ")}${who.tenant ? ` (tenant ${who.tenant})` : ""}`;
  startFeed();
  route();
}

/* --- live services table feed ------------------------------------------------------------- */
function startFeed() {
  if (feed) feed.abort();
  const ctl = (feed = new AbortController());
  const run = async () => {
    while (!ctl.signal.aborted) {
      try {
        await SJ.sse("/api/ui/stream", (kind, data) => {
          if (kind === "snapshot") { SJ.rows = JSON.parse(data).rows; notify(Object.keys(SJ.rows), true); }
          else if (kind === "delta") {
            const d = JSON.parse(data);
            Object.assign(SJ.rows, d.rows);
            for (const n of d.removed) delete SJ.rows[n];
            notify([...Object.keys(d.rows), ...d.removed], false);
          }
          $("live").hidden = false;
        }, ctl.signal);
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      $("live").hidden = true;
      await new Promise((r) => setTimeout(r, 2000)); // reconnect after a dropped stream
    }
  };
  run();
}

function notify(names, full) {
  for (const fn of SJ.rowListeners) fn(names, full);
}

SJ.onRows = function (fn, signal) {
  SJ.rowListeners.add(fn);
  signal.addEventListener("abort", () => SJ.rowListeners.delete(fn));
};

/* --- services table view ------------------------------------------------------------------ */
const STATES = ["starting", "idle", "busy", "draining"];

function serviceRow(row) {
  const age = row.decided_at ? Date.now() / 1000 - row.decided_at : null;
  const num = (v) => SJ.h("td", { class: "num", text: v === null || v === undefined ? "–" : v });
  return SJ.h("tr", { dataset: { service: row.name } },
    SJ.h("td", {}, SJ.h("a", { href: `#/service/${encodeURIComponent(row.name)}`, text: row.name })),
    num(row.waiting), num(row.running),
    STATES.map((s) => num(row.workers[s] || 0)),
    num(row.desired), num(`${row.min}–${row.max}`),
    SJ.h("td", { class: "rule", text: row.rule ? `${row.rule} · ${SJ.fmtAge(age)} ago` : "–" }),
    SJ.h("td", { class: "reason", text: row.reason || "no decision yet" }));
}

SJ.views.services = function (main, signal) {
  SJ.crumbs([]);
  const body = SJ.h("tbody");
  const empty = SJ.h("p", { class: "muted", text: "Waiting for the live feed…" });
  main.append(SJ.h("section", { class: "card" },
    SJ.h("h2", { text: "Services" }),
    SJ.h("table", { id: "services", class: "grid" },
      SJ.h("thead", {}, SJ.h("tr", {},
        ["service", "waiting", "running", ...STATES, "desired", "min–max", "last decision", "reason"].map((c) => SJ.h("th", { text: c })))),
      body),
    empty));
  const paint = (names, full) => {
    if (full) body.replaceChildren();
    for (const n of names) {
      const old = body.querySelector(`tr[data-service="${CSS.escape(n)}"]`);
      const row = SJ.rows[n];
      if (!row) { if (old) old.remove(); continue; }
      const tr = serviceRow(row);
      if (old) old.replaceWith(tr); else body.append(tr);
    }
    const n = Object.keys(SJ.rows).length;
    empty.textContent = n ? "" : "No services you may see are deployed.";
  };
  paint(Object.keys(SJ.rows).sort(), true);
  SJ.onRows(paint, signal);
};

/* --- routing ------------------------------------------------------------------------------ */
SJ.crumbs = function (parts) {
  $("crumbs").replaceChildren(SJ.h("a", { href: "#/", text: "services" }),
    ...parts.flatMap(([label, href]) => [" / ", href ? SJ.h("a", { href, text: label }) : SJ.h("span", { text: label })]));
};

function route() {
  if (!SJ.session) return;
  if (viewAbort) viewAbort.abort();
  viewAbort = new AbortController();
  const main = $("main");
  main.replaceChildren();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "service" && parts[1] && SJ.views.service) SJ.views.service(main, viewAbort.signal, parts[1]);
  else if (parts[0] === "request" && parts[1] && SJ.views.request) SJ.views.request(main, viewAbort.signal, parts[1]);
  else SJ.views.services(main, viewAbort.signal);
}
SJ.route = route;

/* Run fn now and every `ms` until the view goes away (lists refresh at most every 2 s). */
SJ.every = function (ms, fn, signal) {
  let timer = null;
  const tick = async () => {
    if (signal.aborted) return;
    try { await fn(); } catch (e) { if (!(e instanceof AuthError)) console.warn("dashboard refresh:", e.message); }
    if (!signal.aborted) timer = setTimeout(tick, ms);
  };
  signal.addEventListener("abort", () => clearTimeout(timer));
  tick();
};

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("token");
    const token = input.value.trim();
    input.value = "";
    $("login-error").textContent = "";
    try { await login(token); } catch (e) { $("login-error").textContent = `Token refused: ${e.message}`; }
  });
  $("logout").addEventListener("click", () => SJ.logout(""));
  window.addEventListener("hashchange", route);
  const saved = SJ.token();
  if (saved) login(saved).catch((e) => SJ.logout(`Token refused: ${e.message}`));
  else SJ.logout("");
});
