// The gfsfs master's web page: plain JavaScript, no build step, no libraries.
// Talks to the master's JSON API under /web/api/ and polls it every 2 s.
// On a secured cluster it logs in first (POST /web/login: a session cookie and
// a CSRF token, sent back as X-GFS-CSRF with every change); any 401 shows the
// login form again.
"use strict";

const POLL_MS = 2000;
const $ = (sel) => document.querySelector(sel);
let lastListing = "";
let lastCluster = null;
let uploading = false;
// the login: {secured, user, role, csrf}; null until /web/api/session answered
let session = null;
let loggedOut = false;     // the login form is up: polling waits

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + " " + units[i];
}

function when(sec) {
  if (!sec) return "";
  const d = new Date(sec * 1000);
  return d.toLocaleString();
}

function ago(seconds) {
  if (seconds < 60) return seconds.toFixed(1) + " s ago";
  if (seconds < 3600) return (seconds / 60).toFixed(1) + " min ago";
  return (seconds / 3600).toFixed(1) + " h ago";
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function joinPath(dir, name) {
  return (dir === "/" ? "" : dir) + "/" + name;
}

function toast(msg, info) {
  const t = $("#toast");
  t.textContent = msg;
  t.className = "toast" + (info ? " info" : "");
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, info ? 2500 : 6000);
}

function changeHeaders() {
  const h = { "X-GFS-Web": "1" };
  if (session && session.csrf) h["X-GFS-CSRF"] = session.csrf;
  return h;
}

async function api(url, opts) {
  opts = opts || {};
  const headers = Object.assign({}, opts.headers || {});
  if (opts.method && opts.method !== "GET") Object.assign(headers, changeHeaders());
  const resp = await fetch(url, Object.assign({ credentials: "same-origin" }, opts, { headers }));
  if (resp.status === 401) {
    showLogin("please log in");
    throw new Error("UNAUTHORIZED: please log in");
  }
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : {}; } catch (e) { body = null; }
  if (!resp.ok) {
    const err = body && body.error ? body.error : { code: "HTTP " + resp.status, message: text };
    throw new Error(err.code + ": " + err.message);
  }
  return body;
}

function q(path) { return "?path=" + encodeURIComponent(path); }

// ------------------------------------------------------------------ files

function currentPath() {
  let p = decodeURIComponent(location.hash.replace(/^#/, ""));
  if (!p) {
    const fromQuery = new URLSearchParams(location.search).get("path");
    p = fromQuery || "/";
  }
  if (!p.startsWith("/")) p = "/" + p;
  return p;
}

function go(path) { location.hash = encodeURIComponent(path).replace(/%2F/g, "/"); }

function renderCrumbs(path) {
  const nav = $("#crumbs");
  nav.replaceChildren();
  nav.append(el("a", { href: "#/", text: "/ (root)" }));
  let acc = "";
  for (const part of path.split("/").filter(Boolean)) {
    acc += "/" + part;
    const target = acc;
    nav.append(el("span", { class: "sep", text: "›" }),
               el("a", { href: "#" + encodeURIComponent(target).replace(/%2F/g, "/"),
                         text: part }));
  }
}

function replicationCell(e) {
  if (e.type !== "file") return el("td", {});
  const text = e.state === "healthy" ? `healthy (${e.chunks} × ${e.goal})`
    : e.state === "under" ? `${e.under}/${e.chunks} chunks under goal ${e.goal}`
    : e.state === "lost" ? `${e.lost}/${e.chunks} chunks LOST`
    : "no chunks";
  return el("td", { class: "state " + e.state, text });
}

function renderListing(data) {
  renderCrumbs(data.path);
  const tbody = $("#listing tbody");
  tbody.replaceChildren();
  if (data.path !== "/") {
    const up = data.path.replace(/\/[^/]*$/, "") || "/";
    tbody.append(el("tr", { class: "up" },
      el("td", { class: "name" }, el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); go(up); },
                                           text: ".. (up)" })),
      el("td", {}), el("td", {}), el("td", {}), el("td", {}), el("td", {})));
  }
  for (const e of data.entries) {
    const full = joinPath(data.path, e.name);
    let nameCell;
    if (e.type === "dir") {
      nameCell = el("a", { href: "#", class: "dir",
                           onclick: (ev) => { ev.preventDefault(); go(full); } }, e.name + "/");
    } else if (e.type === "file" && !e.raw_name) {
      nameCell = el("a", { href: "/web/download" + q(full), class: "download", download: e.name },
                    e.name);
    } else if (e.type === "symlink") {
      nameCell = el("span", { class: "symlink" }, e.name + " → " + e.target);
    } else {
      nameCell = el("span", { class: "other" }, e.name);
    }
    const actions = el("td", { class: "actions" });
    if (e.type === "file") {
      actions.append(el("button", { class: "info", type: "button", title: "chunks and replicas",
                                    onclick: () => showInfo(full) }, "info"), " ");
    }
    if (!e.raw_name) {
      actions.append(el("button", { class: "delete danger", type: "button",
                                    onclick: () => remove(full, e.type) }, "delete"));
    }
    tbody.append(el("tr", { "data-name": e.name, "data-type": e.type },
      el("td", { class: "name" }, nameCell),
      el("td", { class: "num", text: e.type === "dir" ? "" : bytes(e.size) }),
      el("td", { class: "mode", text: e.mode }),
      el("td", { text: when(e.mtime) }),
      replicationCell(e), actions));
  }
  if (!data.entries.length) {
    tbody.append(el("tr", {}, el("td", { class: "muted", colspan: 6, text: "(empty directory)" })));
  }
  $("#listing-note").textContent = data.truncated
    ? `showing the first ${data.entries.length} of ${data.count} entries` : "";
}

async function loadListing(force) {
  const path = currentPath();
  try {
    const resp = await fetch("/web/api/list" + q(path), { cache: "no-store" });
    if (resp.status === 401) { showLogin("please log in"); return; }
    const text = await resp.text();
    if (!resp.ok) {
      let msg = text;
      try { const b = JSON.parse(text); msg = b.error.code + ": " + b.error.message; } catch (e) {}
      renderCrumbs(path);
      $("#listing tbody").replaceChildren(
        el("tr", {}, el("td", { class: "state dead", colspan: 6, text: msg })));
      lastListing = "";
      return;
    }
    if (force || text !== lastListing) {
      lastListing = text;
      renderListing(JSON.parse(text));
    }
  } catch (e) {
    $("#listing-note").textContent = "master unreachable: " + e.message;
  }
}

async function showInfo(path) {
  const box = $("#fileinfo");
  try {
    const info = await api("/web/api/file" + q(path));
    const rows = info.chunks.map((c) => el("tr", {},
      el("td", { class: "num", text: c.index }), el("td", { class: "num", text: c.handle }),
      el("td", { class: "num", text: c.version }),
      el("td", { class: "state " + (c.replicas.length === 0 ? "lost"
                 : c.replicas.length < info.entry.goal ? "under" : "healthy"),
                 text: c.replicas.join(", ") || "none (lost)" }),
      el("td", { text: c.primary || "" })));
    box.replaceChildren(
      el("div", {}, el("b", { text: path }), ` — ${bytes(info.entry.size)}, goal ${info.entry.goal}, ` +
         `chunk size ${bytes(info.chunk_size)} `,
         el("button", { type: "button", onclick: () => { box.hidden = true; } }, "close")),
      el("table", { class: "grid small" },
         el("thead", {}, el("tr", {}, ["index", "handle", "version", "live replicas", "lease holder"]
           .map((h) => el("th", { text: h })))),
         el("tbody", {}, rows)));
    box.hidden = false;
  } catch (e) {
    toast(e.message);
  }
}

async function remove(path, type) {
  const what = type === "dir" ? "directory (it must be empty)" : "file";
  if (!confirm(`Delete the ${what} ${path}?`)) return;
  try {
    const r = await api("/web/api/delete" + q(path), { method: "POST" });
    toast(`deleted ${path}` + (r.trashed ? " (in trash until purged)" : ""), true);
  } catch (e) {
    toast(e.message);
  }
  refresh(true);
}

async function mkdir(ev) {
  ev.preventDefault();
  const input = $("#mkdir-name");
  const name = input.value.trim();
  if (!name) return;
  const path = joinPath(currentPath(), name);
  try {
    await api("/web/api/mkdir" + q(path), { method: "POST" });
    input.value = "";
    toast(`made directory ${path}`, true);
  } catch (e) {
    toast(e.message);
  }
  refresh(true);
}

function uploadOne(file, dir) {
  return new Promise((resolve) => {
    const path = joinPath(dir, file.name);
    const exists = document.querySelector(`#listing tr[data-name="${CSS.escape(file.name)}"]`);
    let url = "/web/upload" + q(path);
    if (exists) {
      if (!confirm(`${path} exists. Replace it?`)) { resolve(false); return; }
      url += "&overwrite=1";
    }
    const box = $("#upload-box"), bar = $("#upload-progress"), label = $("#upload-label");
    const status = $("#upload-status");
    box.hidden = false;
    bar.value = 0;
    status.dataset.state = "running";
    status.textContent = "";
    label.textContent = `${file.name}: 0 of ${bytes(file.size)}`;
    const started = performance.now();
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    for (const [k, v] of Object.entries(changeHeaders())) xhr.setRequestHeader(k, v);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (ev) => {
      if (!ev.lengthComputable) return;
      bar.value = Math.round(100 * ev.loaded / ev.total);
      const secs = (performance.now() - started) / 1000;
      label.textContent = `${file.name}: ${bytes(ev.loaded)} of ${bytes(ev.total)}` +
        (secs > 0.5 ? ` (${bytes(ev.loaded / secs)}/s)` : "");
    };
    xhr.onload = () => {
      box.hidden = true;
      if (xhr.status === 401) showLogin("please log in");
      if (xhr.status >= 200 && xhr.status < 300) {
        const r = JSON.parse(xhr.responseText);
        status.dataset.state = "done";
        status.textContent = `uploaded ${r.path} (${bytes(r.size)})`;
        resolve(true);
      } else {
        let msg = xhr.responseText;
        try { const b = JSON.parse(msg); msg = b.error.code + ": " + b.error.message; } catch (e) {}
        status.dataset.state = "error";
        status.textContent = `upload of ${path} failed: ${msg}`;
        toast(status.textContent);
        resolve(false);
      }
    };
    xhr.onerror = () => {
      box.hidden = true;
      status.dataset.state = "error";
      status.textContent = `upload of ${path} failed: network error`;
      toast(status.textContent);
      resolve(false);
    };
    xhr.send(file);
  });
}

async function upload(ev) {
  const files = Array.from(ev.target.files);
  ev.target.value = "";
  const dir = currentPath();
  uploading = true;
  try {
    for (const f of files) {
      await uploadOne(f, dir);
      await loadListing(true);
    }
  } finally {
    uploading = false;
  }
}

// ------------------------------------------------------------------ cluster

function stat(label, value, cls) {
  return el("div", { class: "stat " + (cls || "") }, el("b", { text: value }), el("span", { text: label }));
}

// the masters: this one's role and epoch, its shadows' lag or its own
function haPill(ha) {
  if (!ha) return "";
  if (!ha.primary) {
    const f = ha.following || {};
    return el("span", { class: "pill warn", "data-ha": "shadow" },
      `read-only shadow of ${ha.primary_url || "an unknown primary"}, ` +
      `${f.records_behind ?? "?"} records behind (epoch ${ha.epoch})`);
  }
  const sync = ha.shadows.filter((x) => x.synchronous).length;
  const text = ha.shadows.length
    ? `primary, epoch ${ha.epoch}; ${sync} of ${plural(ha.shadows.length, "shadow")} in sync`
    : `primary, epoch ${ha.epoch}; no shadow`;
  return el("span", { class: "pill " + (ha.shadows.length && !sync ? "warn" : "ok"),
                      "data-ha": "primary" }, text);
}

function renderCluster(c) {
  const s = c.status;
  const used = s.total_bytes ? s.used_bytes / s.total_bytes : 0;
  $("#summary").replaceChildren(
    el("span", { class: "pill " + (s.chunkds_dead ? "bad" : "ok") },
       `${s.chunkds_alive} chunkd${s.chunkds_alive === 1 ? "" : "s"} alive` +
       (s.chunkds_dead ? `, ${s.chunkds_dead} dead` : "")),
    el("span", { class: "pill " + (s.lost ? "bad" : s.under_goal ? "warn" : "ok") },
       s.lost ? `${s.lost} chunks lost` : s.under_goal ? `${s.under_goal} chunks under-replicated`
              : "all chunks healthy"),
    el("span", { class: "pill" }, `${plural(s.files, "file")}, ${plural(s.dirs, "dir")}, ` +
       plural(s.chunks, "chunk")),
    el("span", { class: "pill" }, `${bytes(s.used_bytes)} of ${bytes(s.total_bytes)} used ` +
       `(${(100 * used).toFixed(1)}%)`),
    haPill(s.ha));
  $("#updated").textContent = "updated " + new Date(c.now * 1000).toLocaleTimeString();

  // chunk servers
  const tbody = $("#servers tbody");
  tbody.replaceChildren();
  for (const srv of s.servers) {
    const frac = srv.capacity_bytes ? srv.used_bytes / srv.capacity_bytes : 0;
    tbody.append(el("tr", { "data-chunkd": srv.id, class: srv.state },
      el("td", { text: srv.id }), el("td", { text: srv.addr }), el("td", { text: srv.rack }),
      el("td", { class: "state " + srv.state, text: srv.state }),
      el("td", { class: "num", text: bytes(srv.capacity_bytes) }),
      el("td", { class: "num", text: bytes(srv.used_bytes) }),
      el("td", {}, el("span", { class: "bar", title: (100 * frac).toFixed(1) + "%" },
                      el("span", { style: `width:${Math.min(100, 100 * frac).toFixed(1)}%` }))),
      el("td", { class: "num", text: srv.chunks }),
      el("td", { class: "num", text: ago(srv.last_heartbeat_age) })));
  }
  if (!s.servers.length) {
    tbody.append(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "no chunk server has registered" })));
  }

  // replication
  $("#replication").replaceChildren(
    stat("healthy chunks", s.healthy, "ok"),
    stat("under-replicated", s.under_goal, s.under_goal ? "warn" : ""),
    stat("lost (no replica)", s.lost, s.lost ? "bad" : ""),
    stat("over goal", s.over_goal),
    stat("default goal", s.default_goal),
    stat("leases", s.leases));
  const pt = $("#problems");
  pt.hidden = !c.problems.length;
  pt.querySelector("tbody").replaceChildren(...c.problems.map((p) => el("tr", {},
    el("td", { class: "num", text: p.handle }),
    el("td", { class: "state " + p.states[0], text: p.states.join(", ") }),
    el("td", { class: "num", text: `${p.live}/${p.goal}` }),
    el("td", { class: "name", text: p.files.join(", ") }))));

  // traffic
  const t = c.traffic;
  $("#traffic").replaceChildren(
    stat("requests/s", t.requests_per_sec),
    stat("in", bytes(t.bytes_in_per_sec) + "/s"),
    stat("out", bytes(t.bytes_out_per_sec) + "/s"),
    stat("errors/s", t.errors_per_sec, t.errors_per_sec ? "bad" : ""),
    stat("requests since start", t.total_requests));
  drawSpark(t.history);
  $("#routes tbody").replaceChildren(...t.top_routes.map(([r, n]) => el("tr", {},
    el("td", { text: r }), el("td", { class: "num", text: n + "/s" }))));

  // quotas (docs/quotas.md)
  const qs = c.quotas || [];
  $("#quota-summary").textContent = `${qs.length} director${qs.length === 1 ? "y" : "ies"}`;
  const lim = (hard, soft, fmt) => (hard ? fmt(hard) : "-") + (soft ? ` (${fmt(soft)})` : "");
  const qstate = (q) => (q.soft_bytes_expired || q.soft_inodes_expired) ? "soft limit in force"
    : (q.since_bytes || q.since_inodes) ? "over soft, in grace"
    : ((q.bytes && q.used_bytes >= q.bytes) || (q.inodes && q.used_inodes >= q.inodes)) ? "full" : "ok";
  const qt = $("#quotas tbody");
  qt.replaceChildren(...qs.map((q) => el("tr", {},
    el("td", { class: "name", text: q.path || `(ino ${q.ino})` }),
    el("td", { class: "num", text: bytes(q.used_bytes) }),
    el("td", { class: "num", text: lim(q.bytes, q.soft_bytes, bytes) }),
    el("td", { class: "num", text: String(q.used_inodes) }),
    el("td", { class: "num", text: lim(q.inodes, q.soft_inodes, String) }),
    el("td", { text: qstate(q) }))));
  if (!qs.length) qt.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "(none)" })));

  // trash
  const tr = c.trash;
  $("#trash-summary").textContent =
    `${tr.count} file${tr.count === 1 ? "" : "s"}, ${bytes(tr.bytes)}; purged ${tr.trash_time} s after deletion`;
  const tt = $("#trash tbody");
  tt.replaceChildren(...tr.entries.map((e) => el("tr", {},
    el("td", { class: "name", text: e.path || `${e.name} (ino ${e.ino})` }),
    el("td", { class: "num", text: bytes(e.size) }),
    el("td", { text: when(e.deleted) }),
    el("td", { text: when(e.purge_at) }))));
  if (!tr.entries.length) tt.append(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "(empty)" })));
}

function drawSpark(history) {
  const svg = $("#spark");
  const w = 300, h = 60;
  const line = (values, color) => {
    const max = Math.max(1, ...values);
    const pts = values.map((v, i) =>
      `${(i * w / Math.max(1, values.length - 1)).toFixed(1)},${(h - 2 - (h - 4) * v / max).toFixed(1)}`);
    const p = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    p.setAttribute("points", pts.join(" "));
    p.setAttribute("fill", "none");
    p.setAttribute("stroke", color);
    p.setAttribute("stroke-width", "1.5");
    p.setAttribute("vector-effect", "non-scaling-stroke");
    return p;
  };
  svg.replaceChildren(line(history.map((x) => x[0]), "#2f6fde"),
                      line(history.map((x) => x[1] + x[2]), "#e08a1e"));
}

async function loadCluster() {
  try {
    const c = await api("/web/api/cluster");
    lastCluster = c;
    renderCluster(c);
  } catch (e) {
    $("#summary").replaceChildren(el("span", { class: "pill bad" }, "master unreachable: " + e.message));
  }
}

// ------------------------------------------------------------------ login

function showSession() {
  const secured = session && session.secured;
  $("#account").hidden = !(secured && session.user);
  $("#who").textContent = secured && session.user ? `${session.user} (${session.role})` : "";
  document.body.classList.toggle("viewer", !!(session && session.role === "viewer"));
}

function showLogin(why) {
  if (session && !session.secured) return;      // an open cluster: nothing to log in to
  loggedOut = true;
  session = Object.assign({}, session || {}, { secured: true, user: null, role: null, csrf: null });
  showSession();
  $("#main").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = why && why !== "please log in" ? why : "";
  $("#summary").replaceChildren(el("span", { class: "pill warn" }, "not logged in"));
  $("#login-user").focus();
}

function loggedIn(s) {
  session = Object.assign({ secured: true }, s);
  loggedOut = false;
  showSession();
  $("#login").hidden = true;
  $("#main").hidden = false;
  refresh(true);
}

async function login(ev) {
  ev.preventDefault();
  const user = $("#login-user").value, password = $("#login-password").value;
  $("#login-error").textContent = "";
  try {
    const resp = await fetch("/web/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-GFS-Web": "1" },
      body: JSON.stringify({ user, password }) });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) {
      $("#login-error").textContent = body.error ? body.error.message : "HTTP " + resp.status;
      return;
    }
    $("#login-password").value = "";
    loggedIn(body);
  } catch (e) {
    $("#login-error").textContent = "master unreachable: " + e.message;
  }
}

async function logout() {
  try {
    await fetch("/web/logout", { method: "POST", credentials: "same-origin",
                                 headers: changeHeaders() });
  } catch (e) { /* the cookie may outlive an unreachable master; it expires */ }
  showLogin("logged out");
}

async function start() {
  try {
    const resp = await fetch("/web/api/session", { cache: "no-store", credentials: "same-origin" });
    session = await resp.json();
  } catch (e) {
    session = { secured: false };
  }
  if (session.secured && !session.user) showLogin("");
  else loggedIn(session);
}

// ------------------------------------------------------------------ main

function refresh(force) {
  if (loggedOut || !session) return;
  loadListing(force);
  loadCluster();
}

window.addEventListener("hashchange", () => { $("#fileinfo").hidden = true; loadListing(true); });
$("#upload-input").addEventListener("change", upload);
$("#mkdir-form").addEventListener("submit", mkdir);
$("#login-form").addEventListener("submit", login);
$("#logout-btn").addEventListener("click", logout);
start();
setInterval(() => refresh(false), POLL_MS);
