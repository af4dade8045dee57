"""The status page's HTML, CSS and JavaScript, self-contained (nothing loaded from elsewhere).

Kept as Python strings so that packaging needs nothing new. :data:`STYLE` and
:data:`SCRIPT` are inlined in :data:`PAGE`; takeover.metrics.status hashes
them for the page's Content-Security-Policy, so they are ASCII and used
verbatim. The script opens a WebSocket to the page's own URL, renders each
JSON message it is sent (takeover.metrics.status documents the format), and
reconnects with a backoff when the socket drops. Data from the server only
ever reaches the DOM through ``textContent`` (room names are anyone's).
"""

from __future__ import annotations

__all__ = ["PAGE", "SCRIPT", "STYLE"]

STYLE = """
:root { color-scheme: light dark; --fg: #1d2330; --muted: #6b7385; --bg: #f5f6f8; --card: #fff;
  --line: #e1e4ea; --good: #17803d; --good-bg: #e3f5e9; --bad: #c0262d; --bad-bg: #fbe5e6;
  --wait: #8a5a00; --wait-bg: #fdf0d5; --bar: #4b6cd1; }
@media (prefers-color-scheme: dark) { :root { --fg: #e4e7ee; --muted: #9aa2b4; --bg: #14171d;
  --card: #1d212a; --line: #2d3340; --good: #4cc97a; --good-bg: #173322; --bad: #ff6b70;
  --bad-bg: #3a1c1e; --wait: #f0b54a; --wait-bg: #3a2e14; --bar: #7f9cff; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
body.stale main { opacity: .55; }
header { display: flex; align-items: baseline; gap: 12px; padding: 14px 20px 4px; flex-wrap: wrap; }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 15px; margin: 18px 0 8px; }
main { padding: 0 20px 12px; transition: opacity .2s; }
footer { padding: 0 20px 16px; font-size: 12px; }
.muted { color: var(--muted); font-weight: normal; }
.badge { border-radius: 10px; padding: 1px 9px; font-size: 12px; font-weight: 600; }
.good { color: var(--good); } .bad { color: var(--bad); } .wait { color: var(--wait); }
.badge.good { background: var(--good-bg); } .badge.bad { background: var(--bad-bg); }
.badge.wait { background: var(--wait-bg); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px;
  margin-top: 10px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card.good { border-color: var(--good); background: var(--good-bg); }
.card.bad { border-color: var(--bad); background: var(--bad-bg); }
.label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.big { font-size: 34px; font-weight: 650; font-variant-numeric: tabular-nums; line-height: 1.2;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.sub { color: var(--muted); font-size: 12px; min-height: 1.4em; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 0 24px; }
table { border-collapse: collapse; width: 100%; background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-size: 12px; font-weight: 600; }
td.n, th.n { text-align: right; }
tbody tr:last-child td { border-bottom: 0; }
td.room { max-width: 360px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.empty { color: var(--muted); margin: 6px 0; }
.spark { display: inline-flex; align-items: flex-end; gap: 1px; height: 18px; vertical-align: middle; }
.spark i { display: inline-block; width: 5px; min-height: 1px; background: var(--bar); opacity: .85; }
.spark i.zero { background: var(--line); }
"""

SCRIPT = """
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const DASH = "\\u2013";
  const MEANINGS = {
    1000: "normal", 1001: "going away", 1002: "protocol error", 1003: "unsupported data",
    1005: "no code", 1006: "connection lost", 1007: "invalid data",
    1008: "policy (e.g. a client that stopped reading)", 1009: "message too big",
    1010: "extension missing", 1011: "server error", 1012: "service restart",
    1013: "try again later", 1014: "bad gateway", 1015: "TLS failure",
  };
  const meaning = (code) => MEANINGS[code] ||
    (code >= 4000 && code < 5000 ? "application" : code >= 3000 && code < 4000 ? "registered" : "");
  const whole = new Intl.NumberFormat("en-US", {maximumFractionDigits: 0});
  const count = (value) => whole.format(value);
  const rate = (value) => value === 0 ? "0" : value < 10 ? value.toFixed(1) : whole.format(value);
  const bytes = (value) => {
    const units = ["B", "kB", "MB", "GB"];
    let index = 0;
    while (value >= 1000 && index < units.length - 1) { value /= 1000; index += 1; }
    return (index === 0 ? whole.format(value) : value.toFixed(1)) + " " + units[index];
  };
  const seconds = (value) => {
    if (value === null || value === undefined) return DASH;
    if (value < 0.01) return (value * 1000).toFixed(1) + " ms";
    if (value < 1) return (value * 1000).toFixed(0) + " ms";
    return value.toFixed(2) + " s";
  };
  const duration = (value) => {
    const s = Math.floor(value), m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    if (d > 0) return d + "d " + (h % 24) + "h";
    if (h > 0) return h + "h " + (m % 60) + "m";
    if (m > 0) return m + "m " + (s % 60) + "s";
    return s + "s";
  };
  const health = (healthy) =>
    healthy === null ? ["none", ""] : healthy ? ["up", "good"] : ["down", "bad"];
  const pool = (value) => value === null ? DASH :
    value.busy + "/" + value.threads + " busy" + (value.queued ? ", " + value.queued + " queued" : "");
  const handlers = (value) => value.cap === null ? String(value.running) : value.running + "/" + value.cap;
  const codes = (closes) => Object.keys(closes).map(Number).sort((a, b) => a - b);
  const closesText = (closes) => {
    const list = codes(closes);
    return list.length ? list.map((code) => code + " \\u00d7" + closes[code]).join(", ") : DASH;
  };

  function text(id, value) { $(id).textContent = value; }

  function cell(row, value, className) {
    const td = document.createElement("td");
    td.textContent = value;
    if (className) td.className = className;
    row.append(td);
    return td;
  }

  function spark(byMinute, code) {
    const span = document.createElement("span");
    span.className = "spark";
    const counts = byMinute.map((entry) => entry[1][code] || 0);
    const top = Math.max(1, ...counts);
    byMinute.forEach((entry, index) => {
      const bar = document.createElement("i");
      bar.style.height = Math.max(1, Math.round(18 * counts[index] / top)) + "px";
      if (!counts[index]) bar.className = "zero";
      bar.title = new Date(entry[0] * 60000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"}) +
        ": " + counts[index];
      span.append(bar);
    });
    return span;
  }

  function renderCards(data) {
    const total = data.total;
    text("open", count(total.connections_open));
    text("open-sub", count(total.connections_total) + " opened since start");
    text("in-rate", rate(total.messages_in_per_second));
    text("in-sub", bytes(total.bytes_in_per_second) + "/s");
    text("out-rate", rate(total.messages_out_per_second));
    text("out-sub", bytes(total.bytes_out_per_second) + "/s");
    const [state, kind] = health(total.hub_healthy);
    text("hub", state);
    $("hub-card").className = "card " + kind;
    text("hub-sub", data.hubs.length ? data.hubs.length + (data.hubs.length === 1 ? " hub, " : " hubs, ") +
      count(data.members) + " members in " + count(data.room_count) + " rooms" : "no hub in use");
    const lag = total.hub_lag;
    text("lag", seconds(lag.p99));
    text("lag-sub", lag.count ? "mean " + seconds(lag.mean) + " over " + count(lag.count) + " deliveries"
      : "nothing delivered yet");
    text("pool", total.listener_pool === null ? DASH :
      total.listener_pool.busy + "/" + total.listener_pool.threads);
    text("pool-sub", total.listener_pool === null ? "not in use (no threaded server)" :
      "busy; " + total.listener_pool.queued + " queued");
    text("handlers", handlers(total.handler_threads));
  }

  function renderProcesses(data) {
    const rows = data.processes.map((process) => {
      const row = document.createElement("tr");
      row.dataset.pid = process.pid;
      cell(row, String(process.pid));
      cell(row, duration(process.uptime), "n");
      cell(row, count(process.connections_open), "n open");
      cell(row, count(process.connections_total), "n");
      cell(row, rate(process.messages_in_per_second), "n");
      cell(row, rate(process.messages_out_per_second), "n");
      cell(row, closesText(process.closes_recent));
      cell(row, handlers(process.handler_threads), "n");
      cell(row, pool(process.listener_pool));
      const [state, kind] = health(process.hub_healthy);
      cell(row, state, kind);
      cell(row, seconds(process.hub_lag.p99), "n");
      return row;
    });
    $("processes").tBodies[0].replaceChildren(...rows);
    text("process-count", "(" + data.processes.length + ")");
  }

  function renderCloses(data) {
    const total = data.total;
    const rows = codes(total.closes_recent).map((code) => {
      const row = document.createElement("tr");
      row.dataset.code = code;
      cell(row, String(code), "code");
      cell(row, meaning(code));
      cell(row, count(total.closes_recent[code]), "n count");
      cell(row, "").append(spark(total.closes_by_minute, code));
      return row;
    });
    $("closes").tBodies[0].replaceChildren(...rows);
    $("closes").hidden = rows.length === 0;
    $("closes-empty").hidden = rows.length !== 0;
  }

  function renderRooms(data) {
    const rooms = Object.entries(data.rooms).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const rows = rooms.map(([name, members]) => {
      const row = document.createElement("tr");
      cell(row, name, "room").title = name;
      cell(row, count(members), "n");
      return row;
    });
    $("rooms").tBodies[0].replaceChildren(...rows);
    $("rooms").hidden = rows.length === 0;
    $("rooms-empty").hidden = rows.length !== 0;
    text("room-count", data.room_count > rows.length ?
      "(top " + rows.length + " of " + count(data.room_count) + ")" : "(" + rows.length + ")");
  }

  function renderHubs(data) {
    const rows = data.hubs.map((hub) => {
      const row = document.createElement("tr");
      cell(row, hub.url);
      const [state, kind] = health(hub.healthy);
      cell(row, state, kind);
      cell(row, String(hub.processes), "n");
      cell(row, count(hub.rooms), "n");
      cell(row, count(hub.members), "n");
      cell(row, count(hub.deliveries), "n");
      cell(row, count(hub.gaps), "n");
      cell(row, seconds(hub.lag.mean), "n");
      cell(row, seconds(hub.lag.p99), "n");
      return row;
    });
    $("hubs").tBodies[0].replaceChildren(...rows);
    $("hubs-section").hidden = rows.length === 0;
  }

  function render(data) {
    renderCards(data);
    renderProcesses(data);
    renderCloses(data);
    renderRooms(data);
    renderHubs(data);
    text("updated", "updated " + new Date(data.time * 1000).toLocaleTimeString());
    document.title = "takeover \\u00b7 " + count(data.total.connections_open) + " open";
  }

  function setState(value, kind) {
    const badge = $("state");
    badge.textContent = value;
    badge.className = "badge " + kind;
  }

  const MIN_DELAY = 500, MAX_DELAY = 10000;
  let delay = MIN_DELAY, opened = false;
  window.statusPage = {connects: 0, messages: 0};

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + location.pathname;
    const socket = new WebSocket(url);
    window.statusPage.connects += 1;
    socket.onopen = () => {
      delay = MIN_DELAY;
      opened = true;
      setState("live", "good");
      document.body.classList.remove("stale");
    };
    socket.onmessage = (event) => {
      render(JSON.parse(event.data));
      window.statusPage.messages += 1;
    };
    socket.onclose = () => {
      const wait = Math.round(delay * (0.5 + Math.random() / 2));
      delay = Math.min(delay * 2, MAX_DELAY);
      document.body.classList.add("stale");
      setState(opened ? "reconnecting" : "connecting", "bad");
      setTimeout(connect, wait);
    };
  }

  setState("connecting", "wait");
  connect();
})();
"""

PAGE = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>takeover status</title>
<link rel="icon" href="data:,">
<style>"""
    + STYLE
    + """</style>
</head>
<body class="stale">
<header>
  <h1>takeover status</h1>
  <span id="state" class="badge wait">connecting</span>
  <span id="updated" class="muted"></span>
</header>
<main>
  <section class="cards">
    <div class="card"><div class="label">Open sockets</div><div class="big" id="open">&ndash;</div>
      <div class="sub" id="open-sub"></div></div>
    <div class="card"><div class="label">Messages in / s</div><div class="big" id="in-rate">&ndash;</div>
      <div class="sub" id="in-sub"></div></div>
    <div class="card"><div class="label">Messages out / s</div><div class="big" id="out-rate">&ndash;</div>
      <div class="sub" id="out-sub"></div></div>
    <div class="card" id="hub-card"><div class="label">Hub</div><div class="big" id="hub">&ndash;</div>
      <div class="sub" id="hub-sub"></div></div>
    <div class="card"><div class="label">Hub lag p99</div><div class="big" id="lag">&ndash;</div>
      <div class="sub" id="lag-sub"></div></div>
    <div class="card"><div class="label">Listener pool</div><div class="big" id="pool">&ndash;</div>
      <div class="sub" id="pool-sub"></div></div>
    <div class="card"><div class="label">Handler threads</div><div class="big" id="handlers">&ndash;</div>
      <div class="sub">running / cap</div></div>
  </section>
  <h2>Processes <span class="muted" id="process-count"></span></h2>
  <table id="processes"><thead><tr><th>PID</th><th class="n">Up</th><th class="n">Open</th>
    <th class="n">Opened</th><th class="n">In/s</th><th class="n">Out/s</th><th>Closes (15 min)</th>
    <th class="n">Handlers</th><th>Listener pool</th><th>Hub</th><th class="n">Lag p99</th></tr></thead>
    <tbody></tbody></table>
  <div class="columns">
    <section>
      <h2>Closes by code <span class="muted">(last 15 minutes)</span></h2>
      <table id="closes" hidden><thead><tr><th>Code</th><th>Meaning</th><th class="n">Count</th>
        <th>Per minute</th></tr></thead><tbody></tbody></table>
      <p class="empty" id="closes-empty">No closes in the last 15 minutes.</p>
    </section>
    <section>
      <h2>Rooms <span class="muted" id="room-count"></span></h2>
      <table id="rooms" hidden><thead><tr><th>Room</th><th class="n">Members</th></tr></thead>
        <tbody></tbody></table>
      <p class="empty" id="rooms-empty">No rooms.</p>
    </section>
  </div>
  <section id="hubs-section" hidden>
    <h2>Hubs</h2>
    <table id="hubs"><thead><tr><th>URL</th><th>Health</th><th class="n">Processes</th>
      <th class="n">Rooms</th><th class="n">Members</th><th class="n">Deliveries</th><th class="n">Gaps</th>
      <th class="n">Lag mean</th><th class="n">Lag p99</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<footer class="muted">Open sockets include this page's own. Rates are per second over the last update;
  other worker processes' figures are up to a second old.</footer>
<script>"""
    + SCRIPT
    + """</script>
</body>
</html>
"""
)
