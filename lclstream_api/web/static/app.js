// lclstream web page: polls the service's JSON API and redraws; no framework.
"use strict";
const POLL_MS = 1000;
const LOG_POLL_MS = 5000;
const LOG_TAIL = 4096;
const LIVE = new Set(["provisioning", "streaming", "draining"]);
const body = document.body;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}

function bytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function when(t) { return new Date(t * 1000).toLocaleTimeString(); }

async function api(method, path) {
  const resp = await fetch(path, { method, headers: { accept: "application/json" } });
  const text = await resp.text();
  let doc = null;
  try { doc = JSON.parse(text); } catch (_) { /* a log or a proxy's plain error */ }
  if (!resp.ok) {
    const detail = doc && doc.detail ? JSON.stringify(doc.detail) : text;
    throw new Error(`${method} ${path}: HTTP ${resp.status}: ${detail}`);
  }
  return doc ?? text;
}

function status(msg, bad) {
  const s = document.getElementById("status");
  s.textContent = msg;
  s.style.color = bad ? "#ffb4b4" : "";
}

// Throughput (bytes/s out of the buffers) and fill (bytes held / bound) over all buffers.
function live(detail) {
  const m = Object.values(detail.metrics || {});
  const bound = detail.options.max_buffer_bytes * Math.max(m.length, 1);
  const held = m.reduce((a, x) => a + x.buffered_bytes, 0);
  return {
    rate: m.reduce((a, x) => a + x.rate_out, 0),
    fill: m.length ? held / bound : 0,
    sent: m.reduce((a, x) => a + x.sent, 0),
  };
}

function fillMeter(fill) {
  return el("meter", { min: "0", max: "1", value: String(fill), title: `${(fill * 100).toFixed(1)}%` });
}

async function cancel(id) {
  if (!confirm(`Cancel transfer ${id}?`)) return;
  try {
    const t = await api("DELETE", `/transfers/${encodeURIComponent(id)}`);
    status(`transfer ${id}: ${t.state}`);
  } catch (e) {
    status(e.message, true);
  }
  refresh();
}

function cancelButton(t) {
  return LIVE.has(t.state)
    ? el("button", { class: "cancel", "data-id": t.id, onclick: () => cancel(t.id) }, "Cancel")
    : "";
}

async function drawList() {
  const page = await api("GET", "/transfers?limit=100");
  const rows = page.transfers.slice().reverse(); // newest first
  const details = await Promise.all(
    rows.map((t) => (LIVE.has(t.state) ? api("GET", `/transfers/${t.id}`) : null)),
  );
  const tbody = document.querySelector("#transfers tbody");
  tbody.replaceChildren(...rows.map((t, i) => {
    const d = details[i];
    const m = d ? live(d) : null;
    return el("tr", { "data-id": t.id, "data-state": t.state },
      el("td", {}, el("a", { href: `/web/transfers/${t.id}` }, t.id)),
      el("td", {}, t.owner),
      el("td", { class: `state state-${t.state}` }, t.state),
      el("td", { class: "num" }, m ? `${bytes(m.rate)}/s` : ""),
      el("td", {}, m ? fillMeter(m.fill) : ""),
      el("td", { class: "num" }, m ? m.sent : ""),
      el("td", {}, when(t.updated)),
      el("td", {}, cancelButton(t)));
  }));
  document.getElementById("empty").hidden = rows.length > 0;
}

async function drawDetail(id) {
  const d = await api("GET", `/transfers/${encodeURIComponent(id)}`);
  document.getElementById("d-id").textContent = d.id;
  const st = document.getElementById("d-state");
  st.textContent = d.state;
  st.className = `state state-${d.state}`;
  body.dataset.state = d.state;
  const btn = document.getElementById("d-cancel");
  btn.hidden = !LIVE.has(d.state);
  btn.onclick = () => cancel(d.id);
  document.getElementById("d-reason").textContent = d.reason;
  const m = live(d);
  const facts = [
    ["owner", d.owner], ["created", when(d.created)], ["protocol", d.protocol],
    ["delivery", d.delivery], ["urls", d.urls.join(" ")],
    ["throughput", `${bytes(m.rate)}/s`], ["buffer fill", `${(m.fill * 100).toFixed(1)}%`],
  ];
  document.getElementById("d-facts").replaceChildren(
    ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const bound = d.options.max_buffer_bytes;
  document.querySelector("#d-buffers tbody").replaceChildren(
    ...Object.entries(d.metrics).map(([role, x]) => el("tr", {},
      el("td", {}, role), el("td", {}, x.state), el("td", { class: "num" }, x.producers),
      el("td", { class: "num" }, x.consumers), el("td", { class: "num" }, x.recvd),
      el("td", { class: "num" }, x.sent), el("td", { class: "num" }, x.dropped),
      el("td", { class: "num" }, `${bytes(x.rate_out)}/s`),
      el("td", {}, fillMeter(x.buffered_bytes / bound)))));
  document.querySelector("#d-jobs tbody").replaceChildren(
    ...Object.entries(d.jobs).map(([role, j]) => el("tr", {},
      el("td", {}, role), el("td", {}, j.jobid), el("td", {}, j.state), el("td", {}, j.info))));
  document.querySelector("#d-transitions tbody").replaceChildren(
    ...d.transitions.map((t) => el("tr", {},
      el("td", {}, when(t.time)), el("td", {}, t.old ?? ""), el("td", {}, t.new),
      el("td", {}, t.source), el("td", {}, t.reason))));
  return d;
}

async function drawLogs(id) {
  const index = await api("GET", `/transfers/${encodeURIComponent(id)}/logs`);
  const parts = [];
  for (const [role, info] of Object.entries(index)) {
    for (const stream of info.streams) {
      let text;
      try {
        text = await api("GET", `/transfers/${id}/logs/${role}/${stream}?tail=${LOG_TAIL}`);
      } catch (e) {
        text = `(${e.message})`;
      }
      parts.push(el("h4", {}, `${role} ${stream} (${info.jobid})`),
        el("pre", { "data-log": `${role}/${stream}` }, typeof text === "string" ? text : JSON.stringify(text)));
    }
  }
  document.getElementById("d-logs").replaceChildren(...parts);
}

let lastLogs = 0;
async function refresh() {
  try {
    if (body.dataset.view === "detail") {
      const id = body.dataset.transfer;
      const d = await drawDetail(id);
      if (Date.now() - lastLogs > LOG_POLL_MS) {
        lastLogs = Date.now();
        await drawLogs(id);
      }
    } else {
      await drawList();
    }
    status(`updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    status(e.message, true);
  }
}

document.getElementById(body.dataset.view).hidden = false;
refresh();
setInterval(refresh, POLL_MS);
