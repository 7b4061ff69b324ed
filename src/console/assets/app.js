// DCI console: draws the page the path names from the agent's JSON endpoints (/api/...).
// Every change is a POST carrying the session's CSRF token; data is only ever put in the page as
// text (never as HTML), so nothing a blade reports can run here.
"use strict";

const POLL_MS = 2000;
let csrf = null;
const view = document.getElementById("view");

// An element: attrs may hold text, className, href, and any attribute or data-* name.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "className") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch("/api" + path, opts);
  if (r.status === 401) {
    location.href = "/login";
    throw new Error("the session ended");
  }
  const text = await r.text();
  let data = null;
  try { data = JSON.parse(text); } catch (_) { /* a plain-text refusal */ }
  if (!r.ok) throw new Error((data && data.error) || text.trim() || r.statusText);
  return data;
}

const enc = encodeURIComponent;

function bytes(n) {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GiB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / 1024).toFixed(1) + " KiB";
  return n + " B";
}

function when(ms) {
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function state(s) {
  return el("span", { className: "state state-" + s, text: s });
}

function percent(p) {
  if (p === null || p === undefined) return el("span", { className: "muted", text: "–" });
  const bar = el("span", { className: "bar" }, el("span"));
  bar.firstChild.style.width = Math.min(100, p) + "%";
  return el("span", {}, bar, p + "%");
}

function table(id, heads, rows) {
  return el("table", { id },
    el("thead", {}, el("tr", {}, heads.map(h => el("th", { className: h.endsWith("#") ? "num" : "", text: h.replace(/#$/, "") })))),
    el("tbody", {}, rows));
}

function card(title, ...body) {
  return el("section", { className: "card" }, el("h2", { text: title }), body);
}

function banner(message) {
  const b = document.getElementById("notice");
  b.textContent = message || "";
  b.classList.toggle("hidden", !message);
}

function crumbs(...links) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...links.map(([text, href]) => el("a", { href, text })));
}

// Repeats `draw` every POLL_MS; a failure shows once in the banner and polling goes on.
function poll(draw) {
  const tick = async () => {
    try { await draw(); banner(""); } catch (e) { banner(e.message); }
    setTimeout(tick, POLL_MS);
  };
  tick();
}

// ---- jobs (backups and restores) and alerts, on every page ----

const seenJobs = new Set();
let onJobDone = () => {};

async function drawJobs() {
  const jobs = await api("GET", "/jobs");
  const list = document.getElementById("jobs");
  if (jobs.length === 0) {
    list.replaceChildren(el("li", { className: "muted", text: "none yet" }));
    return;
  }
  list.replaceChildren(...jobs.map(j => {
    const secs = Math.round(j.elapsed_ms / 1000);
    let detail;
    if (j.state === "running") {
      detail = el("div", { className: "progress" }, el("span"));
    } else if (j.state === "failed") {
      detail = el("div", { className: "error", text: j.error });
    } else if (j.kind === "restore") {
      const r = j.result;
      detail = el("div", { className: "muted", text: `restored ${r.entries} entries (${bytes(r.bytes)}) from ${r.archives} archive(s) into ${r.target} on ${r.node}` });
    } else {
      const a = (j.result || [])[0];
      detail = el("div", { className: "muted", text: a ? `archive ${a.id}: ${a.files} files, ${bytes(a.bytes)}, on ${a.holders.join(", ") || "this node only"}` : "no archive made" });
    }
    if (j.state !== "running" && !seenJobs.has(j.id)) {
      seenJobs.add(j.id);
      onJobDone(j);
    }
    return el("li", { "data-job": j.id, "data-state": j.state },
      state(j.state === "done" ? "done" : j.state), " ", `${j.kind} of ${j.blade}`,
      el("span", { className: "muted", text: ` · ${j.user} · ${secs} s` }), detail);
  }));
}

async function drawAlerts() {
  const a = await api("GET", "/alerts");
  const worrying = ["suspect", "dead", "left", "link-unreachable", "degraded"];
  const items = [
    ...a.notices.map(n => el("li", {}, state(n.level), " ", `${n.part} ${n.name || n.id}: ${n.detail}`,
      el("div", { className: "muted", text: `${when(n.at_ms)} · from ${n.from}` }))),
    ...a.events.filter(e => worrying.includes(e.event)).slice(0, 20).map(e => el("li", {},
      state(e.event === "degraded" ? "moderate" : e.event), " ", `${e.name} ${e.event}${e.detail ? ": " + e.detail : ""}`,
      el("div", { className: "muted", text: when(e.at_ms) }))),
  ];
  const list = document.getElementById("alerts");
  list.replaceChildren(...(items.length ? items : [el("li", { className: "muted", text: "none" })]));
}

// ---- the overview: members and seats (the auto-discovery screen) ----

function memberRows(members) {
  return members.map(m => {
    const r = m.resources || {};
    const name = m.blade ? el("a", { href: "/blade/" + enc(m.blade), text: m.name }) : m.name;
    return el("tr", { "data-name": m.name, "data-state": m.state },
      el("td", {}, name), el("td", {}, state(m.state)), el("td", { text: m.role }),
      el("td", { text: m.zone }),
      el("td", { text: m.blade ? `${m.blade} @ ${m.epoch}` : "–" }),
      el("td", {}, percent(r.cpu)), el("td", {}, percent(r.memory)),
      el("td", {}, percent(r.disk)), el("td", {}, percent(r.load)),
      el("td", { className: "num", text: m.last_heard_ms ? (m.last_heard_ms / 1000).toFixed(1) + " s" : "now" }));
  });
}

function overview() {
  crumbs();
  const status = el("span", { className: "muted", id: "discover-status" });
  const discover = el("button", {
    id: "discover", type: "button", text: "Discover nodes",
    onclick: async () => {
      discover.disabled = true;
      status.textContent = "looking…";
      try {
        const members = await api("POST", "/discover");
        status.textContent = `${members.length} members known`;
      } catch (e) { status.textContent = e.message; }
      discover.disabled = false;
    },
  });
  const members = table("members", ["Name", "State", "Role", "Zone", "Blade @ epoch", "CPU", "Memory", "Disk", "Load", "Last heard#"], []);
  const seats = table("seats", ["Blade", "Holder", "Epoch#", "State"], []);
  view.replaceChildren(
    el("h1", { text: "Blades in the mesh" }),
    card("Members", members, el("div", { className: "row" }, discover, status)),
    card("Seats: which node acts as each blade", seats));
  poll(async () => {
    const o = await api("GET", "/overview");
    members.tBodies[0].replaceChildren(...memberRows(o.members));
    seats.tBodies[0].replaceChildren(...o.seats.map(s => el("tr", { "data-blade": s.blade },
      el("td", {}, el("a", { href: "/blade/" + enc(s.blade), text: s.blade })),
      el("td", { text: s.holder_name || s.holder }), el("td", { className: "num", text: s.epoch }),
      el("td", {}, state(s.state)))));
  });
}

// ---- a blade: configuration, schedule, backup, archives ----

function list(text, sep) {
  return text.split(sep).map(s => s.trim()).filter(s => s.length > 0);
}

// The checks the agent makes too, so that most mistakes are shown before sending.
function validate(f) {
  if (f.root && !f.root.startsWith("/")) return "the backup root must be an absolute path";
  if (!Number.isInteger(f.factor) || f.factor < 0 || f.factor > 16) return "the replication factor is a whole number from 0 to 16";
  if (f.exclude_dirs.some(d => d.startsWith("/") || d.split("/").includes(".."))) return "an excluded directory is a name or a path relative to the backup root";
  if (f.exclude_exts.some(x => /[/.]/.test(x.replace(/^\./, "")))) return "an excluded extension is one word like mp3";
  const rule = /^(hourly|daily( \d{1,2}:\d{2})?|weekly( (mon|tue|wed|thu|fri|sat|sun) \d{1,2}:\d{2})?|every \d+(ms|s|m|h|d|w)?)$/i;
  const bad = f.schedule.find(r => !rule.test(r));
  if (bad) return `"${bad}" is not a schedule rule (hourly, daily HH:MM, weekly DAY HH:MM, every DURATION)`;
  return null;
}

function bladePage(blade) {
  crumbs([blade, "/blade/" + enc(blade)]);
  const field = (id, label, hint, input) => el("div", {}, el("label", { for: id, text: label }), input, el("p", { className: "hint", text: hint }));
  const root = el("input", { id: "root", placeholder: "/srv/data" });
  const factor = el("input", { id: "factor", type: "number", min: 0, max: 16 });
  const dirs = el("input", { id: "exclude-dirs", placeholder: "tmp, cache, build/out" });
  const exts = el("input", { id: "exclude-exts", placeholder: "mp3, iso, exe" });
  const schedule = el("textarea", { id: "schedule", rows: 3, placeholder: "daily 02:00" });
  const freq = el("select", { id: "frequency" }, ["daily", "weekly", "hourly"].map(f => el("option", { value: f, text: f })));
  const day = el("select", { id: "day" }, ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].map(d => el("option", { value: d, text: d })));
  const time = el("input", { id: "time", type: "time", value: "06:00" });
  const add = el("button", {
    type: "button", className: "secondary", text: "Add time",
    onclick: () => {
      const rule = freq.value === "hourly" ? "hourly" : freq.value === "daily" ? `daily ${time.value}` : `weekly ${day.value} ${time.value}`;
      schedule.value = (schedule.value.trim() + "\n" + rule).trim();
    },
  });
  const status = el("span", { id: "settings-status", className: "muted" });
  const method = el("p", { className: "hint" });
  const fill = s => {
    root.value = s.root || "";
    factor.value = s.factor;
    dirs.value = s.exclude_dirs.join(", ");
    exts.value = s.exclude_exts.join(", ");
    schedule.value = s.schedule.join("\n");
    method.textContent = `Method ${s.method}${s.continuous ? ", continuous (changes are backed up as they happen)" : ""}; these come from the config file.`;
  };
  const save = el("button", { id: "save-settings", type: "submit", text: "Save settings" });
  const form = el("form", { id: "settings", novalidate: true,
    onsubmit: async ev => {
      ev.preventDefault();
      const f = {
        root: root.value.trim() || null,
        factor: Number(factor.value),
        exclude_dirs: list(dirs.value, ","),
        exclude_exts: list(exts.value, ","),
        schedule: list(schedule.value, "\n"),
      };
      const problem = validate(f);
      status.className = "error";
      if (problem) { status.textContent = problem; return; }
      save.disabled = true;
      status.className = "muted";
      status.textContent = "saving…";
      try {
        fill(await api("POST", `/blades/${enc(blade)}/settings`, f));
        status.className = "ok";
        status.textContent = "saved";
      } catch (e) {
        status.className = "error";
        status.textContent = e.message;
      }
      save.disabled = false;
    } },
    el("div", { className: "grid" },
      field("root", "Backup root", "Where the backup starts, on the node acting as this blade.", root),
      field("factor", "Replication factor", "How many other nodes keep this blade's archives (0 to 16).", factor),
      field("exclude-dirs", "Directory exclusions", "Comma-separated names, or paths relative to the root.", dirs),
      field("exclude-exts", "File exclusions", "Comma-separated extensions, e.g. mp3, iso.", exts)),
    el("label", { for: "schedule", text: "Schedule (UTC), one rule per line" }), schedule,
    el("div", { className: "row" }, freq, day, time, add),
    el("p", { className: "hint", text: "hourly · daily HH:MM · weekly DAY HH:MM · every DURATION (90s, 5m, 2h, 1d)" }),
    method,
    el("div", { className: "row" }, save, status));

  const backupStatus = el("span", { id: "backup-status", className: "muted" });
  const backup = el("button", {
    id: "backup-now", type: "button", text: "Back up now",
    onclick: async () => {
      try {
        const { job } = await api("POST", `/blades/${enc(blade)}/backup`);
        backupStatus.textContent = `job ${job} started`;
      } catch (e) { backupStatus.textContent = e.message; }
    },
  });
  const archives = table("archives", ["Archive#", "Time", "Kind", "Size#", "Files#", "Complete", "Holders"], []);
  view.replaceChildren(
    el("h1", { text: `Blade ${blade}` }),
    card("Configuration", form),
    card("Archives",
      el("div", { className: "row" }, backup, backupStatus,
        el("a", { id: "recovery-link", href: `/blade/${enc(blade)}/recovery`, text: "Recovery view" })),
      archives));
  const drawArchives = async () => {
    const list = await api("GET", `/blades/${enc(blade)}/archives`);
    archives.tBodies[0].replaceChildren(...archiveRows(blade, list, false));
  };
  onJobDone = j => { if (j.blade === blade) drawArchives().catch(e => banner(e.message)); };
  api("GET", `/blades/${enc(blade)}/settings`).then(fill).catch(e => { status.className = "error"; status.textContent = e.message; });
  drawArchives().catch(e => banner(e.message));
}

function archiveRows(blade, list, actions) {
  return list.slice().reverse().map(a => el("tr", { "data-archive": a.id },
    el("td", { className: "num" }, el("a", { href: `/blade/${enc(blade)}/archive/${a.id}`, text: a.id })),
    el("td", { text: when(a.time) }), el("td", { text: a.kind }),
    el("td", { className: "num", text: bytes(a.bytes) }), el("td", { className: "num", text: a.files }),
    el("td", {}, state(a.complete ? "ok" : "running"), a.lacking.length ? ` lacking ${a.lacking.join(", ")}` : ""),
    el("td", { text: a.holders.join(", ") }),
    actions ? el("td", {},
      el("a", { href: `/blade/${enc(blade)}/archive/${a.id}`, text: "View contents" }), " ",
      el("button", { type: "button", className: "secondary", "data-recover": a.id, text: "Recover sequentially to this archive",
        onclick: () => restore(blade, a.id, [], `every archive of ${blade} up to ${a.id}`) })) : null));
}

// Restore options shared by the recovery and archive views: where, on which node.
function restoreOptions() {
  return el("div", { className: "grid" },
    el("div", {}, el("label", { for: "restore-on", text: "Restore on node" }),
      el("input", { id: "restore-on", placeholder: "the node acting as the blade" })),
    el("div", {}, el("label", { for: "restore-to", text: "Into directory" }),
      el("input", { id: "restore-to", placeholder: "its backup root" })));
}

async function restore(blade, archive, files, what) {
  const status = document.getElementById("restore-status");
  if (!confirm(`Restore ${what}? Files of the same name are overwritten; others are left alone.`)) return;
  const on = document.getElementById("restore-on").value.trim() || null;
  const to = document.getElementById("restore-to").value.trim() || null;
  if (to && !to.startsWith("/")) { status.textContent = "the directory must be an absolute path"; return; }
  try {
    const { job } = await api("POST", `/blades/${enc(blade)}/restore`, { archive, files, on, to });
    status.textContent = `restore job ${job} started; its progress is under Jobs`;
  } catch (e) { status.textContent = e.message; }
}

function recovery(blade) {
  crumbs([blade, "/blade/" + enc(blade)], ["recovery", `/blade/${enc(blade)}/recovery`]);
  const archives = table("archives", ["Archive#", "Time", "Kind", "Size#", "Files#", "Complete", "Holders", ""], []);
  view.replaceChildren(
    el("h1", { text: `Recovery of ${blade}` }),
    card("Archives",
      el("p", { className: "hint", text: "Recovering to an archive applies every archive up to and including it, in order. It overwrites files of the same name and deletes nothing." }),
      archives, restoreOptions(), el("p", { id: "restore-status", className: "muted" })));
  api("GET", `/blades/${enc(blade)}/archives`)
    .then(list => archives.tBodies[0].replaceChildren(...archiveRows(blade, list, true)))
    .catch(e => banner(e.message));
}

function archiveView(blade, id) {
  crumbs([blade, "/blade/" + enc(blade)], ["recovery", `/blade/${enc(blade)}/recovery`], [`archive ${id}`, `/blade/${enc(blade)}/archive/${id}`]);
  const files = table("files", ["", "File", "Size#", "Modified"], []);
  const all = el("input", { type: "checkbox", id: "select-all", title: "select every file" });
  files.tHead.rows[0].cells[0].append(all);
  const button = el("button", { id: "restore-selected", type: "button", text: "Restore selected files",
    onclick: () => {
      const picked = [...files.querySelectorAll("tbody input:checked")].map(c => c.dataset.path);
      const status = document.getElementById("restore-status");
      if (picked.length === 0) { status.textContent = "select the files to restore first"; return; }
      restore(blade, id, picked, `${picked.length} file(s) of archive ${id}`);
    } });
  all.addEventListener("change", () => files.querySelectorAll("tbody input").forEach(c => { c.checked = all.checked; }));
  view.replaceChildren(
    el("h1", { text: `Archive ${id} of ${blade}` }),
    card("Files", el("p", { className: "hint", text: "The blade's tree as this archive leaves it (with the archives before it). Select files for a partial restore." }),
      files, restoreOptions(), el("div", { className: "row" }, button, el("span", { id: "restore-status", className: "muted" }))));
  api("GET", `/blades/${enc(blade)}/archives/${id}/files`).then(entries => {
    files.tBodies[0].replaceChildren(...entries.filter(e => e.kind !== "dir").map(e => el("tr", { "data-path": e.path },
      el("td", {}, el("input", { type: "checkbox", "data-path": e.path, "aria-label": e.path })),
      el("td", { text: e.path + (e.target ? " → " + e.target : "") }),
      el("td", { className: "num", text: bytes(e.size) }),
      el("td", { text: when(e.mtime * 1000) }))));
  }).catch(e => banner(e.message));
}

// ---- start ----

async function start() {
  const s = await api("GET", "/session");
  csrf = s.csrf;
  document.getElementById("node").textContent = s.node;
  document.getElementById("whoami").textContent = s.user;
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
    location.href = "/login";
  });
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) overview();
  else if (parts[0] === "blade" && parts.length === 2) bladePage(parts[1]);
  else if (parts[0] === "blade" && parts[2] === "recovery") recovery(parts[1]);
  else if (parts[0] === "blade" && parts[2] === "archive") archiveView(parts[1], parts[3]);
  else view.replaceChildren(el("p", { text: "No such page." }));
  poll(drawJobs);
  poll(drawAlerts);
}

start().catch(e => banner(e.message));
