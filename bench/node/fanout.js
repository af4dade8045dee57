#!/usr/bin/env node
// The fan-out driver of `make bench`: clients in one room, a publisher at fixed rates, one
// Node process for all of them, so that send and receive times come from the same clock.
//
//   node fanout.js '{"client": "ws", "url": "ws://127.0.0.1:9001/ws", "pubUrl": "...", ...}'
//
// Parameters (times in seconds):
//   client      "ws": takeover's app (bench/servers/hub_fanout.py). Members connect to `url`
//               (each server answers "joined:<pid>"), speaking just enough WebSocket to
//               read the server's frames (see LeanMember). The publisher is a ws
//               WebSocket to `pubUrl`; each message it sends is one publish.
//               "socket.io": Flask-SocketIO's app (bench/servers/socketio_fanout.py), every
//               member and the publisher a socket.io-client socket on `url` with
//               transports ["websocket"]; a member emits "join" (acknowledged with the
//               server's pid) and receives "msg" events; the publisher emits "publish".
//   clients, openConcurrency   members, and how many of them connect at a time
//   publishers  how many publishers take turns at publishing (default 1)
//   rates       publishes per second, one after the other on the same connections
//   warmup, duration, drain    per rate: publishing not counted, then counted, then at
//               most `drain` seconds more for the counted messages to arrive
//   timeout     seconds for opening the members and for the probe
//
// Each message is 100 characters of text: a phase letter ("p" probe, "w" warm-up, "m"
// measured), the rate's index (one digit), the send time in microseconds of this
// process's clock (15 digits), then padding. Before the rates, probes are published
// until every member got one (every worker has subscribed). Per rate the driver reports
// deliveries/s (messages received by all members in the counted window, by receive time),
// publish-to-receive latency of the counted messages (p50, p99, max), and lost messages:
// counted publishes x members - counted messages received by the end of the drain.
//
// Progress goes to stdout as JSON lines: {"event":"open", ...} once the members have
// joined, {"event":"start","rate":R} and {"event":"end","rate":R} around each counted
// window; the last line is {"event":"result", ...}. Every loop is bounded, and the whole
// run stops after `budget` seconds whatever happens.
"use strict";

const net = require("net");
const { performance } = require("perf_hooks");
const WebSocket = require("ws");

const params = Object.assign(
  {
    client: "ws",
    clients: 100,
    openConcurrency: 64,
    rates: [50],
    warmup: 0.5,
    duration: 3,
    drain: 5,
    pause: 0.5,
    timeout: 60,
    budget: 300,
    size: 100,
    publishers: 1,
  },
  JSON.parse(process.argv[2] || "{}"),
);
const WS_OPTIONS = { perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: 20000 };
const PHASE = { p: 0x70, w: 0x77, m: 0x6d };
const STAMP_DIGITS = 15;

function emit(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

const cpuStart = process.cpuUsage();
function finish(result, code = 0) {
  const cpu = process.cpuUsage(cpuStart);
  result.event = "result";
  result.client_cpu_seconds = (cpu.user + cpu.system) / 1e6;
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(code));
}
function fail(message, extra = {}) {
  finish(Object.assign({ error: message }, extra), 1);
}
setTimeout(() => fail(`fan-out driver gave up after ${params.budget} s`), params.budget * 1000).unref();

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));
const micros = () => Math.round(performance.now() * 1000);

function message(phase, rateIndex, stamp) {
  const head = phase + String(rateIndex) + String(stamp).padStart(STAMP_DIGITS, "0");
  return head + "x".repeat(params.size - head.length);
}

// -- latency: a log-scale histogram (32 buckets per doubling, about 2% wide) ----------

const PER_OCTAVE = 32;
class Histogram {
  constructor() {
    this.counts = new Float64Array(PER_OCTAVE * 40);
    this.total = 0;
    this.max = 0;
  }
  add(us) {
    const value = us < 1 ? 1 : us;
    const index = Math.min(this.counts.length - 1, Math.floor(Math.log2(value) * PER_OCTAVE));
    this.counts[index] += 1;
    this.total += 1;
    if (value > this.max) this.max = value;
  }
  // The q-quantile in milliseconds (the middle of its bucket), or null without samples.
  quantile(q) {
    if (this.total === 0) return null;
    const rank = q * this.total;
    let seen = 0;
    for (let i = 0; i < this.counts.length; i += 1) {
      seen += this.counts[i];
      if (seen >= rank) return Math.pow(2, (i + 0.5) / PER_OCTAVE) / 1000;
    }
    return this.max / 1000;
  }
}

// -- what one rate counts ----------------------------------------------------------------

class RateStats {
  constructor(index) {
    this.index = index;
    this.windowStart = Infinity; // ms, performance.now()
    this.windowEnd = Infinity;
    this.inWindow = 0; // deliveries received in the counted window, any phase of this rate
    this.received = 0; // counted ("m") messages received, whenever
    this.latency = new Histogram();
    this.stale = 0; // messages of an earlier rate that arrived during this one
  }
}

let current = null; // the RateStats being filled
let probing = false;
let probed = 0; // members that received a probe
let wrong = 0; // messages that are not ours (wrong size or unparsable)

// One delivery: `at` is the receive time in ms, `code(i)` the payload's i-th char code.
function record(member, length, code, at) {
  if (length !== params.size) {
    wrong += 1;
    return;
  }
  const phase = code(0);
  if (phase === PHASE.p) {
    if (probing && !member.probed) {
      member.probed = true;
      probed += 1;
    }
    return;
  }
  const stats = current;
  if (stats === null) return;
  if (code(1) - 48 !== stats.index) {
    stats.stale += 1;
    return;
  }
  if (at >= stats.windowStart && at < stats.windowEnd) stats.inWindow += 1;
  if (phase === PHASE.m) {
    let stamp = 0;
    for (let i = 2; i < 2 + STAMP_DIGITS; i += 1) stamp = stamp * 10 + (code(i) - 48);
    stats.received += 1;
    stats.latency.add(at * 1000 - stamp);
  }
}

// -- members and the publisher, for takeover's app (plain WebSocket) ---------------------

// A member's connection without ws: a fixed upgrade request (RFC 6455's example key), the
// 101 checked for its accept value, then the server's frames parsed straight from the
// socket's reads (net's `onread`: no stream and no 'data' event per read, one buffer shared
// by every member, as a read is handled before the next one). The driver's cost per
// delivery is then a fraction of ws's, and the driver shares the machine with the servers.
// The first message must be "joined:<pid>". Pings are answered; a close frame or a closed
// socket is counted.
const HANDSHAKE_KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const HANDSHAKE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const READ_BUFFER = Buffer.alloc(256 * 1024);
const CLOSE_FRAME = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]); // 1000, masked with a zero key

class LeanMember {
  constructor(url) {
    const { hostname, port, pathname } = new URL(url.replace(/^ws:/, "http:"));
    this.request =
      `GET ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    this.pid = null;
    this.probed = false;
    this.closed = false; // the server closed (a close frame or the TCP connection)
    this.upgraded = false;
    this.rest = null; // bytes of an incomplete response head or frame, copied out of READ_BUFFER
    this.waiting = null; // {resolve, reject} until the join answer
    this.socket = net.connect({
      host: hostname,
      port: Number(port),
      noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (length, buffer) => this.onRead(buffer, length) },
    });
    this.socket.on("error", (error) => this.settle(error));
    this.done = new Promise((resolve) => this.socket.once("close", resolve));
    this.socket.once("close", () => {
      this.closed = true;
      this.settle(new Error("connection closed before the join answer"));
    });
  }
  settle(error) {
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting === null) return;
    if (error) waiting.reject(error);
    else waiting.resolve();
  }
  opened() {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.settle(new Error("no join answer within 20 s")), 20000);
      this.waiting = {
        resolve: () => (clearTimeout(timer), resolve()),
        reject: (error) => (clearTimeout(timer), reject(error)),
      };
      this.socket.once("connect", () => this.socket.write(this.request));
    });
  }
  onRead(chunk, length) {
    const at = performance.now();
    let buffer = chunk.subarray(0, length);
    if (this.rest !== null) buffer = Buffer.concat([this.rest, buffer]);
    this.rest = null;
    let start = 0;
    if (!this.upgraded) {
      const end = buffer.indexOf("\r\n\r\n");
      if (end < 0) {
        this.rest = Buffer.from(buffer);
        return;
      }
      const head = buffer.toString("latin1", 0, end);
      if (!head.startsWith("HTTP/1.1 101") || !head.includes(HANDSHAKE_ACCEPT)) {
        this.settle(new Error(`bad handshake response: ${head.split("\r\n")[0]}`));
        this.socket.destroy();
        return;
      }
      this.upgraded = true;
      start = end + 4;
    }
    let offset = 0;
    const code = (i) => buffer[offset + i];
    while (buffer.length - start >= 2) {
      let size = buffer[start + 1] & 0x7f;
      let header = 2;
      if (size === 126) {
        if (buffer.length - start < 4) break;
        size = buffer.readUInt16BE(start + 2);
        header = 4;
      } else if (size === 127) {
        if (buffer.length - start < 10) break;
        size = Number(buffer.readBigUInt64BE(start + 2));
        header = 10;
      }
      if (buffer.length - start < header + size) break;
      const opcode = buffer[start] & 0x0f;
      offset = start + header;
      if (opcode === 0x1 || opcode === 0x2) {
        if (this.pid === null) this.join(buffer.toString("latin1", offset, offset + size));
        else record(this, size, code, at);
      } else if (opcode === 0x9) {
        // a pong with the ping's payload, masked with a zero key (any key will do)
        const payload = buffer.subarray(offset, offset + size);
        this.socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | size, 0, 0, 0, 0]), payload]));
      } else if (opcode === 0x8) {
        this.closed = true;
      }
      start += header + size;
    }
    if (start < buffer.length) this.rest = Buffer.from(buffer.subarray(start));
  }
  join(text) {
    if (!text.startsWith("joined:")) return this.settle(new Error(`unexpected first message ${text}`));
    this.pid = text.slice("joined:".length);
    this.settle(null);
  }
  // The close handshake: our close frame, then the server's and its TCP close.
  close() {
    if (!this.socket.destroyed) {
      if (this.closed) this.socket.destroy();
      else this.socket.end(CLOSE_FRAME);
    }
    return this.done;
  }
  terminate() {
    this.socket.destroy();
  }
}

class WsPublisher {
  constructor(url) {
    this.ws = new WebSocket(url, WS_OPTIONS);
    this.ws.on("error", () => {});
    this.done = new Promise((resolve) => this.ws.once("close", resolve));
  }
  opened() {
    return new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("error", reject);
    });
  }
  publish(text) {
    this.ws.send(text);
  }
  close() {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    return this.done;
  }
  terminate() {
    this.ws.terminate();
  }
}

// -- members and the publisher, for Flask-SocketIO (socket.io-client) --------------------

let io = null;
function socketio(url) {
  if (io === null) ({ io } = require("socket.io-client"));
  return io(url, {
    transports: ["websocket"],
    forceNew: true, // one engine.io connection per socket, not one shared by all
    reconnection: false,
    timeout: 20000,
    perMessageDeflate: false,
  });
}

class SocketioMember {
  constructor(url) {
    this.socket = socketio(url);
    this.pid = null;
    this.probed = false;
    this.closed = false;
    this.socket.on("disconnect", () => (this.closed = true));
    this.socket.on("msg", (data) => {
      const at = performance.now();
      if (typeof data !== "string") {
        wrong += 1;
        return;
      }
      record(this, data.length, (i) => data.charCodeAt(i), at);
    });
  }
  opened() {
    return new Promise((resolve, reject) => {
      this.socket.once("connect_error", reject);
      this.socket.once("connect", () => {
        this.socket.timeout(20000).emit("join", (error, pid) => {
          if (error) return reject(new Error("no join acknowledgement within 20 s"));
          this.pid = String(pid);
          resolve();
        });
      });
    });
  }
  close() {
    const done = new Promise((resolve) => {
      if (!this.socket.connected) return resolve();
      this.socket.once("disconnect", resolve);
    });
    this.socket.disconnect();
    return done;
  }
  terminate() {
    this.socket.disconnect();
  }
}

class SocketioPublisher extends SocketioMember {
  opened() {
    return new Promise((resolve, reject) => {
      this.socket.once("connect_error", reject);
      this.socket.once("connect", resolve);
    });
  }
  publish(text) {
    this.socket.emit("publish", text);
  }
}

const KINDS = {
  ws: { Member: LeanMember, Publisher: WsPublisher, pubUrl: () => params.pubUrl },
  "socket.io": { Member: SocketioMember, Publisher: SocketioPublisher, pubUrl: () => params.url },
};

// -- the run ------------------------------------------------------------------------------

async function openMembers(Member) {
  const members = [];
  const failures = [];
  let next = 0;
  async function worker() {
    while (next < params.clients) {
      next += 1;
      const member = new Member(params.url);
      try {
        await member.opened();
        members.push(member);
      } catch (error) {
        failures.push(String(error && error.message ? error.message : error));
        member.terminate();
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(params.openConcurrency, params.clients) }, worker));
  return { members, failures };
}

async function closeAll(connections, seconds = 10) {
  const all = Promise.all(connections.map((connection) => connection.close()));
  const done = await Promise.race([all.then(() => true), sleep(seconds).then(() => false)]);
  if (!done) connections.forEach((connection) => connection.terminate());
  return done;
}

// Probes every 100 ms until every member got one, at most `timeout` seconds.
async function probe(publisher, members) {
  probing = true;
  const deadline = performance.now() + params.timeout * 1000;
  while (probed < members.length && performance.now() < deadline) {
    publisher.publish(message("p", 0, micros()));
    await sleep(0.1);
  }
  probing = false;
  return probed === members.length;
}

// One rate: the k-th publish is due at start + k / rate; every tick sends those due (a
// late tick sends the backlog at once, and the lag is reported).
function publishAt(publisher, rateIndex, rate, stats) {
  const start = performance.now();
  const warmEnd = start + params.warmup * 1000;
  const end = warmEnd + params.duration * 1000;
  stats.windowStart = warmEnd;
  stats.windowEnd = end;
  const counts = { sent: 0, measured: 0, maxLagMs: 0 };
  let started = false;
  return new Promise((resolve) => {
    function tick() {
      const now = performance.now();
      if (!started && now >= warmEnd) {
        started = true;
        emit({ event: "start", rate });
      }
      while (true) {
        const due = start + (counts.sent * 1000) / rate;
        if (due > now || due >= end) break;
        const phase = due >= warmEnd ? "m" : "w";
        if (phase === "m") {
          counts.measured += 1;
          counts.maxLagMs = Math.max(counts.maxLagMs, now - due);
        }
        publisher.publish(message(phase, rateIndex, micros()));
        counts.sent += 1;
      }
      if (now >= end) {
        emit({ event: "end", rate });
        resolve(counts);
        return;
      }
      setTimeout(tick, 1);
    }
    tick();
  });
}

async function main() {
  const kind = KINDS[params.client];
  if (!kind) return fail(`unknown client ${params.client}`);
  const openStart = performance.now();
  const { members, failures } = await openMembers(kind.Member);
  const openSeconds = (performance.now() - openStart) / 1000;
  if (members.length < params.clients) {
    await closeAll(members, 5);
    return fail(`opened ${members.length} of ${params.clients} members`, { failures: failures.slice(0, 5) });
  }
  const perPid = {};
  for (const member of members) perPid[member.pid] = (perPid[member.pid] || 0) + 1;
  // Several publishers take turns: each publish goes to the next one.
  const publishers = Array.from({ length: params.publishers }, () => new kind.Publisher(kind.pubUrl()));
  try {
    await Promise.all(publishers.map((each) => each.opened()));
  } catch (error) {
    await closeAll([...publishers, ...members], 5);
    return fail(`a publisher did not connect: ${error && error.message ? error.message : error}`);
  }
  let turn = 0;
  const publisher = {
    publish(text) {
      publishers[turn].publish(text);
      turn = (turn + 1) % publishers.length;
    },
  };
  emit({ event: "open", members: members.length, per_pid: perPid, open_seconds: openSeconds });
  if (!(await probe(publisher, members))) {
    await closeAll([...publishers, ...members], 5);
    return fail(`only ${probed} of ${members.length} members received a probe within ${params.timeout} s`);
  }
  await sleep(params.pause);
  const rates = [];
  for (let index = 0; index < params.rates.length; index += 1) {
    const rate = params.rates[index];
    const stats = new RateStats(index);
    current = stats;
    const counts = await publishAt(publisher, index, rate, stats);
    const expected = counts.measured * members.length;
    const drainStart = performance.now();
    while (stats.received < expected && performance.now() - drainStart < params.drain * 1000) await sleep(0.02);
    const drained = (performance.now() - drainStart) / 1000;
    rates.push({
      rate,
      published: counts.measured,
      publish_rate: counts.measured / params.duration,
      max_publish_lag_ms: counts.maxLagMs,
      deliveries: stats.inWindow,
      deliveries_per_second: stats.inWindow / params.duration,
      expected,
      received: stats.received,
      lost: expected - stats.received,
      drain_seconds: drained,
      p50_ms: stats.latency.quantile(0.5),
      p99_ms: stats.latency.quantile(0.99),
      max_ms: stats.latency.max / 1000,
      stale: stats.stale,
      closed_members: members.filter((member) => member.closed).length,
    });
    await sleep(params.pause);
  }
  current = null;
  const cleanClose = await closeAll([...publishers, ...members]);
  finish({
    client: params.client,
    members: members.length,
    per_pid: perPid,
    open_seconds: openSeconds,
    duration: params.duration,
    rates,
    wrong_messages: wrong,
    clean_close: cleanClose,
  });
}

main().catch((error) => fail(String(error && error.stack ? error.stack : error)));
