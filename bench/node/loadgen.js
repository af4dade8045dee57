#!/usr/bin/env node
// The load generator of `make bench`: one scenario against one server, result as JSON.
//
//   node loadgen.js '{"scenario": "echo", "url": "ws://127.0.0.1:9001/ws", ...}'
//
// Scenarios (parameters in the JSON argument; times in seconds):
//   echo       `connections` connections, each a closed loop: send a `size`-byte message
//              (`binary` or text), send the next one when its echo arrives. Counts the
//              echoes that arrive in `duration` seconds after `warmup` seconds.
//   handshake  `concurrency` loops of: open a connection, complete the opening handshake,
//              close it (close handshake, then TCP close). Counts completed cycles.
//   idle       open and close a few warm-up connections, print {"event":"ready"} and wait
//              for "go" on stdin; open `connections` connections and send nothing, print
//              {"event":"open"} and wait for "close" on stdin (or `hold` seconds); close all.
//   broadcast  open `connections` connections; connection 0 sends "broadcast:<batch>", the
//              server sends a 100-byte message `batch` times to every connection; the next
//              batch is asked for once every message of this one arrived. Counts deliveries.
//
// A `tcp://HOST:PORT` URL speaks raw TCP to a byte echo server instead of WebSocket: a
// message is `size` bytes sent with one write, and its echo has arrived when `size` bytes
// have come back (one message is in flight per connection, so no framing is needed).
//
// Progress goes to stdout as JSON lines ({"event":"start"} and {"event":"end"} bracket the
// measured window), the last line is {"event":"result", ...}. Every loop is bounded: the
// whole run stops after duration + warmup + `timeout` seconds whatever happens.
"use strict";

const net = require("net");
const readline = require("readline");
const WebSocket = require("ws");

const params = Object.assign(
  {
    connections: 1,
    size: 32,
    binary: false,
    duration: 3,
    warmup: 0.5,
    concurrency: 8,
    batch: 20,
    hold: 60,
    timeout: 60,
    openConcurrency: 64,
    settle: 0,
  },
  JSON.parse(process.argv[2] || "{}"),
);
const RAW = params.url.startsWith("tcp://");
const MAX_PAYLOAD = 64 * 1024 * 1024;
const WS_OPTIONS = {
  perMessageDeflate: false, // no server in the comparison compresses; keep it off everywhere
  maxPayload: MAX_PAYLOAD,
  skipUTF8Validation: true, // the client's cost only; servers still validate theirs
  handshakeTimeout: 10000,
};

function now() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function emit(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}

const cpuStart = process.cpuUsage();
const wallStart = now();

function finish(result, code = 0) {
  const cpu = process.cpuUsage(cpuStart);
  result.event = "result";
  result.client_cpu_seconds = (cpu.user + cpu.system) / 1e6;
  result.client_wall_seconds = now() - wallStart;
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(code));
}

function fail(message, extra = {}) {
  finish(Object.assign({ error: message }, extra), 1);
}

const hardLimit = setTimeout(
  () => fail(`load generator gave up after ${Math.round(hardLimitSeconds())} s`),
  hardLimitSeconds() * 1000,
);
function hardLimitSeconds() {
  const extra = params.scenario === "idle" ? params.hold : 0;
  return params.duration + params.warmup + params.timeout + extra;
}

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

// -- connections: the same small interface over WebSocket and raw TCP -------------------
//
// A message is prepared once (makeMessage) and sent many times. Three ways to carry it:
//   raw TCP  (tcp:// URL)   the payload itself; its echo is complete when as many bytes
//                           came back.
//   "ws"     (client: ws)   ws's API: ws.send(payload), the 'message' event.
//   "lean"   (the default)  ws opens the connection (opening handshake) and closes it
//                           (close handshake); in between the load generator writes a frame
//                           masked once in advance and counts the server's frames by size on
//                           the socket, so that the client's cost per message is a write and
//                           a read. ws's own per-message work (masking, parsing, events) costs
//                           about as much as the fastest servers', which would then measure
//                           the client. Every message of a scenario has the same size, and
//                           the first byte of each frame is checked (FIN + opcode).
const LEAN = !RAW && params.client !== "ws";
const MASK = Buffer.from([0x37, 0xfa, 0x21, 0x3d]); // any non-zero mask: servers unmask it all the same

function frameHeader(opcode, length, masked) {
  const maskBit = masked ? 0x80 : 0;
  let header;
  if (length < 126) {
    header = Buffer.from([0x80 | opcode, maskBit | length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = maskBit | 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = maskBit | 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  return header;
}

function makeMessage(payload, binary) {
  const opcode = binary ? 0x2 : 0x1;
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i += 1) masked[i] ^= MASK[i & 3];
  return {
    payload,
    binary,
    // what a lean client writes, and the size of the server's (unmasked) frame for it
    frame: Buffer.concat([frameHeader(opcode, payload.length, true), MASK, masked]),
    echoLength: frameHeader(opcode, payload.length, false).length + payload.length,
    firstByte: 0x80 | opcode,
  };
}

// Counts complete units of `unit` bytes on a socket: echoes, or broadcast frames.
class UnitCounter {
  constructor(socket, firstByte) {
    this.socket = socket;
    this.firstByte = firstByte; // null for raw TCP
    this.unit = 0; // bytes per message on the wire
    this.size = 0; // the payload's size, reported to onmessage
    this.pending = 0;
    this.wrongType = 0;
    this.onmessage = null;
    this.listener = (chunk) => {
      if (this.pending === 0 && this.firstByte !== null && chunk[0] !== this.firstByte) this.wrongType += 1;
      this.pending += chunk.length;
      while (this.unit > 0 && this.pending >= this.unit) {
        this.pending -= this.unit;
        if (this.onmessage) this.onmessage(this.size);
      }
    };
  }
}

class RawConnection {
  constructor(url) {
    const { hostname, port } = new URL(url.replace(/^tcp:/, "http:"));
    this.socket = net.connect({ host: hostname, port: Number(port), noDelay: true });
    this.counter = new UnitCounter(this.socket, null);
    this.closed = new Promise((resolve) => this.socket.once("close", resolve));
    this.socket.on("data", this.counter.listener);
    this.socket.on("error", () => {});
  }
  set onmessage(callback) {
    this.counter.onmessage = callback;
  }
  get errors() {
    return 0;
  }
  opened() {
    return new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("error", reject);
    });
  }
  expect(message) {
    this.counter.unit = this.counter.size = message.payload.length;
  }
  send(message) {
    this.expect(message);
    this.socket.write(message.payload);
  }
  close() {
    this.socket.end();
    return this.closed;
  }
  terminate() {
    this.socket.destroy();
  }
}

class WsConnection {
  constructor(url) {
    this.ws = new WebSocket(url, WS_OPTIONS);
    this.callback = null;
    this.expected = null;
    this.typeErrors = 0;
    this.counter = null; // lean mode, once open
    this.saved = null; // ws's own 'data' listeners while the counter reads the socket
    this.closed = new Promise((resolve) => this.ws.once("close", resolve));
    this.ws.on("message", (data, isBinary) => {
      if (this.expected && isBinary !== this.expected.binary) this.typeErrors += 1;
      if (this.callback) this.callback(data.length);
    });
    this.ws.on("error", () => {});
  }
  set onmessage(callback) {
    this.callback = callback;
    if (this.counter) this.counter.onmessage = callback;
  }
  get errors() {
    return this.typeErrors + (this.counter ? this.counter.wrongType : 0);
  }
  opened() {
    return new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("error", reject);
      this.ws.once("unexpected-response", (request, response) =>
        reject(new Error(`HTTP ${response.statusCode} instead of 101`)),
      );
    });
  }
  // Lean mode: take the socket's reads over from ws, counting frames of this size.
  expect(message) {
    this.expected = message;
    if (!LEAN) return;
    if (this.counter === null) {
      const socket = this.ws._socket;
      this.saved = socket.listeners("data");
      socket.removeAllListeners("data");
      this.counter = new UnitCounter(socket, message.firstByte);
      this.counter.onmessage = this.callback;
      socket.on("data", this.counter.listener);
    }
    this.counter.unit = message.echoLength;
    this.counter.size = message.payload.length;
    this.counter.firstByte = message.firstByte;
  }
  send(message) {
    if (LEAN) {
      if (this.counter === null) this.expect(message);
      this.ws._socket.write(message.frame);
    } else {
      this.expected = message;
      this.ws.send(message.payload, { binary: message.binary });
    }
  }
  // Hand the socket back to ws (at a frame boundary: nothing is in flight) for its close.
  release() {
    if (this.counter === null) return;
    const socket = this.ws._socket;
    socket.removeListener("data", this.counter.listener);
    for (const listener of this.saved) socket.on("data", listener);
    this.counter = null;
  }
  close() {
    this.release();
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    return this.closed;
  }
  terminate() {
    this.ws.terminate();
  }
}

function connect(url) {
  return RAW ? new RawConnection(url) : new WsConnection(url);
}

// Open `count` connections, at most `concurrency` handshakes at a time.
async function openMany(count, concurrency) {
  const connections = [];
  const failures = [];
  let next = 0;
  async function worker() {
    while (next < count) {
      next += 1;
      const connection = connect(params.url);
      try {
        await connection.opened();
        connections.push(connection);
      } catch (error) {
        failures.push(String(error && error.message ? error.message : error));
        connection.terminate();
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { connections, failures };
}

// Close politely, then cut whatever has not closed within `seconds`.
async function closeAll(connections, seconds = 10) {
  const all = Promise.all(connections.map((connection) => connection.close()));
  const done = await Promise.race([all.then(() => true), sleep(seconds).then(() => false)]);
  if (!done) connections.forEach((connection) => connection.terminate());
  return done;
}

function checkOpened(opened, wanted) {
  if (opened.connections.length < wanted) {
    opened.connections.forEach((connection) => connection.terminate());
    fail(`opened ${opened.connections.length} of ${wanted} connections`, {
      failures: opened.failures.slice(0, 5),
    });
    return false;
  }
  return true;
}

// -- scenarios -------------------------------------------------------------------------

async function echo() {
  const opened = await openMany(params.connections, params.openConcurrency);
  if (!checkOpened(opened, params.connections)) return;
  const { connections } = opened;
  const message = makeMessage(Buffer.alloc(params.size, params.binary ? 0xa5 : 0x61), params.binary);
  let counting = false;
  let running = true;
  let messages = 0;
  let bytes = 0;
  let wrongSize = 0;
  let inFlight = 0;
  for (const connection of connections) {
    connection.onmessage = (length) => {
      inFlight -= 1;
      if (length !== params.size) wrongSize += 1;
      if (counting) {
        messages += 1;
        bytes += length;
      }
      if (running) {
        inFlight += 1;
        connection.send(message);
      }
    };
    inFlight += 1;
    connection.send(message);
  }
  await sleep(params.warmup);
  counting = true;
  const t0 = now();
  emit({ event: "start" });
  await sleep(params.duration);
  counting = false;
  const elapsed = now() - t0;
  emit({ event: "end" });
  running = false;
  // Let the last echoes arrive, so that lean connections are at a frame boundary.
  for (let i = 0; i < 100 && inFlight > 0; i += 1) await sleep(0.1);
  const cleanClose = await closeAll(connections);
  const errors = connections.reduce((sum, connection) => sum + connection.errors, 0);
  finish({
    messages,
    bytes,
    seconds: elapsed,
    messages_per_second: messages / elapsed,
    mb_per_second: bytes / elapsed / 1e6,
    wrong_size: wrongSize,
    wrong_type: errors,
    clean_close: cleanClose,
  });
}

// One lean handshake cycle without ws: a fixed upgrade request, the 101 checked for the
// accept value of its key (RFC 6455's example), a masked close frame, the server's close
// frame, then both ends close the TCP connection.
const HANDSHAKE_KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const HANDSHAKE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
function leanHandshake(url) {
  const { hostname, port, pathname } = new URL(url.replace(/^ws:/, "http:"));
  const request = Buffer.from(
    `GET ${pathname} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const close = makeMessage(Buffer.from([0x03, 0xe8]), false); // 1000
  close.frame[0] = 0x88;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port), noDelay: true });
    let buffered = Buffer.alloc(0);
    let stage = "response";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no ${stage} within 10 s`));
    }, 10000);
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on("connect", () => socket.write(request));
    socket.on("data", (chunk) => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      if (stage === "response") {
        const end = buffered.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buffered.subarray(0, end).toString("latin1");
        if (!head.startsWith("HTTP/1.1 101") || !head.includes(HANDSHAKE_ACCEPT)) {
          socket.destroy();
          clearTimeout(timer);
          reject(new Error(`bad handshake response: ${head.split("\r\n")[0]}`));
          return;
        }
        buffered = buffered.subarray(end + 4);
        stage = "close frame";
        socket.write(close.frame);
      }
      if (stage === "close frame" && buffered.length >= 2) {
        if (buffered[0] !== 0x88) {
          socket.destroy();
          clearTimeout(timer);
          reject(new Error(`expected a close frame, got first byte ${buffered[0]}`));
          return;
        }
        stage = "TCP close";
        socket.end();
      }
    });
    socket.on("close", () => {
      clearTimeout(timer);
      if (stage === "TCP close") resolve();
      else reject(new Error(`connection closed while waiting for the ${stage}`));
    });
  });
}

async function handshake() {
  const message = makeMessage(Buffer.alloc(params.size, 0x61), false);
  let counting = false;
  let running = true;
  let cycles = 0;
  let failures = 0;
  let firstFailure = null;
  async function cycle() {
    if (LEAN) {
      try {
        await leanHandshake(params.url);
        if (counting) cycles += 1;
      } catch (error) {
        failures += 1;
        if (firstFailure === null) firstFailure = String(error && error.message ? error.message : error);
      }
      return;
    }
    const connection = connect(params.url);
    try {
      await connection.opened();
      if (RAW) {
        // No handshake in raw TCP: one 32-byte round trip stands for it.
        await new Promise((resolve) => {
          connection.onmessage = resolve;
          connection.send(message);
        });
      }
      await connection.close();
      if (counting) cycles += 1;
    } catch (error) {
      failures += 1;
      if (firstFailure === null) firstFailure = String(error && error.message ? error.message : error);
      connection.terminate();
    }
  }
  async function worker() {
    while (running) await cycle();
  }
  const workers = Promise.all(Array.from({ length: params.concurrency }, worker));
  await sleep(params.warmup);
  counting = true;
  const t0 = now();
  emit({ event: "start" });
  await sleep(params.duration);
  counting = false;
  const elapsed = now() - t0;
  emit({ event: "end" });
  running = false;
  await Promise.race([workers, sleep(15)]);
  finish({
    handshakes: cycles,
    seconds: elapsed,
    handshakes_per_second: cycles / elapsed,
    failures,
    first_failure: firstFailure,
  });
}

function waitForLine(expected, seconds) {
  return new Promise((resolve) => {
    const input = readline.createInterface({ input: process.stdin });
    const timer = setTimeout(() => {
      input.close();
      resolve(false);
    }, seconds * 1000);
    input.on("line", (line) => {
      if (line.trim() === expected) {
        clearTimeout(timer);
        input.close();
        resolve(true);
      }
    });
  });
}

async function idle() {
  // Warm-up: a few connections that exchange one message, so lazily imported code and
  // first-use caches are in the server's "before" figure, not in the per-connection one.
  const warm = await openMany(params.warmupConnections || 20, 8);
  if (!checkOpened(warm, params.warmupConnections || 20)) return;
  const message = makeMessage(Buffer.alloc(32, 0x61), false);
  await Promise.all(
    warm.connections.map(
      (connection) =>
        new Promise((resolve) => {
          connection.onmessage = resolve;
          connection.send(message);
        }),
    ),
  );
  await closeAll(warm.connections);
  emit({ event: "ready" });
  if (!(await waitForLine("go", params.hold))) return fail("no 'go' on stdin");
  const t0 = now();
  const opened = await openMany(params.connections, params.openConcurrency);
  const openSeconds = now() - t0;
  if (!checkOpened(opened, params.connections)) return;
  // From here until "close" the client sends nothing (ws answers pings, if any come).
  emit({ event: "open", count: opened.connections.length, open_seconds: openSeconds });
  const told = await waitForLine("close", params.hold);
  const cleanClose = await closeAll(opened.connections, 15);
  const stillOpen = opened.connections.filter(
    (connection) => connection.ws && connection.ws.readyState !== WebSocket.CLOSED,
  ).length;
  finish({
    connections: opened.connections.length,
    open_seconds: openSeconds,
    told_to_close: told,
    clean_close: cleanClose,
    still_open: stillOpen,
  });
}

async function broadcast() {
  const opened = await openMany(params.connections, params.openConcurrency);
  if (!checkOpened(opened, params.connections)) return;
  const { connections } = opened;
  const size = 100;
  const expected = makeMessage(Buffer.alloc(size, 0x62), false); // what the server sends
  let received = 0;
  let wrongSize = 0;
  let target = 0;
  let wake = null;
  for (const connection of connections) {
    connection.expect(expected);
    connection.onmessage = (length) => {
      if (length !== size) wrongSize += 1;
      received += 1;
      if (wake !== null && received >= target) {
        const resolve = wake;
        wake = null;
        resolve(true);
      }
    };
  }
  const controller = connections[0];
  const command = makeMessage(Buffer.from(`broadcast:${params.batch}`), false);
  const perBatch = params.batch * connections.length;
  async function batch() {
    target = received + perBatch;
    const arrived = new Promise((resolve) => (wake = resolve));
    controller.send(command);
    return Promise.race([arrived, sleep(params.batchTimeout || 10).then(() => false)]);
  }
  const warmupEnd = now() + params.warmup;
  while (now() < warmupEnd) {
    if (!(await batch())) {
      await closeAll(connections, 2);
      return fail("warm-up batch incomplete", { received, target });
    }
  }
  emit({ event: "start" });
  const t0 = now();
  const start = received;
  let batches = 0;
  let complete = true;
  while (now() - t0 < params.duration) {
    if (!(await batch())) {
      complete = false;
      break;
    }
    batches += 1;
  }
  const elapsed = now() - t0;
  emit({ event: "end" });
  const delivered = received - start;
  wake = null;
  const cleanClose = await closeAll(connections);
  finish({
    delivered,
    batches,
    expected: batches * perBatch + (complete ? 0 : perBatch),
    complete,
    seconds: elapsed,
    deliveries_per_second: delivered / elapsed,
    wrong_size: wrongSize,
    wrong_type: connections.reduce((sum, connection) => sum + connection.errors, 0),
    clean_close: cleanClose,
  });
}

const SCENARIOS = { echo, handshake, idle, broadcast };

async function main() {
  const run = SCENARIOS[params.scenario];
  if (!run) return fail(`unknown scenario ${params.scenario}`);
  try {
    await run();
  } catch (error) {
    fail(String(error && error.stack ? error.stack : error));
  }
}

main();
void hardLimit;
