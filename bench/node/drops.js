#!/usr/bin/env node
// The drops driver of `make bench`: members of one room behind a proxy that cuts every
// connection on a schedule, a publisher that is never cut, and what each member got.
//
//   node drops.js '{"client": "ws", "target": 9001, "url": "/ws", "pubUrl": "ws://...", ...}'
//
// Parameters (times in seconds):
//   client      "ws": takeover's app (bench/servers/hub_fanout.py). A member is a ws WebSocket
//               to `path` through the proxy, joined with ?envelope=1: each message comes as
//               {"room", "offset", "data"}. It keeps the last offset it got and, when its
//               connection drops, reconnects with ?since=<that offset> (the hub replays what it
//               missed) after a jittered, doubling wait (takeover.js's: `minDelay` to twice
//               that, doubling, capped at `maxDelay`). The publisher is a ws WebSocket to
//               `pubUrl` (not through the proxy); each message it sends is one publish.
//               "socket.io": Flask-SocketIO's app (bench/servers/socketio_fanout.py). A member
//               is a socket.io-client socket through the proxy, transports ["websocket"], with
//               socket.io-client's own reconnection at its defaults; it emits "join" at every
//               connect (the room membership is per connection) and receives "msg" events.
//               The publisher is a socket.io-client socket (not through the proxy) emitting
//               "publish".
//   target      the server's port on 127.0.0.1; the proxy listens on a free port and forwards
//   clients, openConcurrency   members, and how many of them connect at a time
//   rate, duration             publishes per second, for this long
//   cutEvery, refuseFor        every `cutEvery` seconds from the first publish, every proxied
//               connection is closed at once and new ones are refused (closed on accept) for
//               `refuseFor` seconds
//   drain       seconds after the last publish for members to reconnect and catch up
//   timeout     seconds for opening the members and for the probe
//
// Each measured message is "m<n>" (n = 0, 1, ... in publish order). Before them, probes
// ("p") are published until every member got one (every worker has subscribed). Per member
// the driver counts distinct messages received, duplicates (an n received again), messages
// out of order (an n below one already received), reconnects (opens after the first), gap
// envelopes and reconnects the server could not resume ("not-resumed": trimmed history). It reports
// the sums: delivered / expected (= published x members), and the same per connection.
//
// Progress goes to stdout as JSON lines: {"event":"open"} once the members have joined,
// {"event":"cut"} at each cut; the last line is {"event":"result", ...}. Every loop is
// bounded, and the whole run stops after `budget` seconds whatever happens.
"use strict";

const net = require("net");
const WebSocket = require("ws");

const params = Object.assign(
  {
    client: "ws",
    target: 0,
    path: "/ws",
    pubUrl: "",
    clients: 60,
    openConcurrency: 32,
    rate: 40,
    duration: 20,
    cutEvery: 5,
    refuseFor: 2,
    drain: 15,
    minDelay: 250,
    maxDelay: 10000,
    timeout: 60,
    budget: 180,
  },
  JSON.parse(process.argv[2] || "{}"),
);
const WS_OPTIONS = { perMessageDeflate: false, handshakeTimeout: 20000 };

function emit(object) {
  process.stdout.write(JSON.stringify(object) + "\n");
}
function finish(result, code = 0) {
  result.event = "result";
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(code));
}
function fail(message) {
  finish({ error: message }, 1);
}
setTimeout(() => fail(`drops driver gave up after ${params.budget} s`), params.budget * 1000).unref();
const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

// -- the proxy: forwards to the server, cuts everything on demand, refuses for a while ----

class CuttingProxy {
  constructor(target) {
    this.target = target;
    this.pairs = new Set();
    this.refusing = false;
    this.refused = 0;
    this.server = net.createServer((client) => this.accept(client));
  }
  listen() {
    return new Promise((resolve) => this.server.listen(0, "127.0.0.1", () => resolve(this.server.address().port)));
  }
  accept(client) {
    if (this.refusing) {
      this.refused += 1;
      client.destroy();
      return;
    }
    const upstream = net.connect(this.target, "127.0.0.1");
    const pair = [client, upstream];
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  }
  cut() {
    for (const [client, upstream] of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    this.refusing = true;
    setTimeout(() => (this.refusing = false), params.refuseFor * 1000);
  }
  close() {
    this.cut();
    this.server.close();
  }
}

// -- what one member got ------------------------------------------------------------

class Tally {
  constructor() {
    this.seen = new Uint8Array(Math.ceil(params.rate * params.duration) + 16);
    this.distinct = 0;
    this.duplicates = 0;
    this.reordered = 0;
    this.highest = -1;
    this.reconnects = 0;
    this.gaps = 0;
    this.notResumed = 0;
    this.probed = false;
    this.joined = false;
    this.state = () => ({}); // how its connection stands, for a member that ends incomplete
  }
  record(data) {
    if (typeof data !== "string") return;
    if (data === "p") {
      if (!this.probed) probed += 1;
      this.probed = true;
      return;
    }
    if (data[0] !== "m") return;
    const n = Number(data.slice(1));
    if (!Number.isInteger(n) || n < 0 || n >= this.seen.length) return;
    if (this.seen[n]) {
      this.duplicates += 1;
      return;
    }
    this.seen[n] = 1;
    this.distinct += 1;
    if (n < this.highest) this.reordered += 1;
    else this.highest = n;
  }
}

let probed = 0;
let stopping = false;

// A takeover member: ws through the proxy, envelopes, ?since= on every reconnect.
function wsMember(port, tally, onJoined) {
  let lastOffset = null;
  let attempt = 0; // failed attempts since the last open
  let opened = 0;
  const connect = () => {
    if (stopping) return;
    let url = `ws://127.0.0.1:${port}${params.path}?envelope=1`;
    if (lastOffset !== null) url += `&since=${lastOffset}`;
    const ws = new WebSocket(url, WS_OPTIONS);
    const began = Date.now();
    tally.state = () => ({ readyState: ws.readyState, attempt, opened, lastOffset, ms: Date.now() - began });
    ws.on("open", () => {
      if (opened > 0) tally.reconnects += 1;
      opened += 1;
      attempt = 0;
    });
    ws.on("message", (raw, isBinary) => {
      if (isBinary) return;
      const text = raw.toString();
      if (text === "not-resumed") {
        tally.notResumed += 1; // the server said so: what it missed is lost to it, and it knows
        return;
      }
      if (text.startsWith("joined:")) {
        if (!tally.joined) {
          tally.joined = true;
          onJoined();
        }
        return;
      }
      let envelope;
      try {
        envelope = JSON.parse(text);
      } catch {
        return;
      }
      if (Array.isArray(envelope.gap)) {
        tally.gaps += 1;
        return;
      }
      if (typeof envelope.offset === "number") {
        if (lastOffset !== null && envelope.offset <= lastOffset) return; // as takeover.js drops it
        lastOffset = envelope.offset;
      }
      tally.record(envelope.data);
    });
    ws.on("error", () => {});
    ws.on("close", () => {
      if (stopping) return;
      const ceiling = Math.min(params.maxDelay, params.minDelay * 2 ** (Math.min(attempt, 30) + 1));
      attempt += 1;
      setTimeout(connect, ceiling / 2 + (Math.random() * ceiling) / 2);
    });
    return ws;
  };
  connect();
}

// A Flask-SocketIO member: socket.io-client through the proxy, its own reconnection.
function socketioMember(io, port, tally, onJoined, sockets) {
  const socket = io(`http://127.0.0.1:${port}`, { transports: ["websocket"] });
  sockets.push(socket);
  let connects = 0;
  socket.on("connect", () => {
    connects += 1;
    if (connects > 1) tally.reconnects += 1;
    socket.emit("join", () => {
      if (!tally.joined) {
        tally.joined = true;
        onJoined();
      }
    });
  });
  socket.on("msg", (data) => tally.record(data));
}

async function openMembers(port, tallies, sockets) {
  let joined = 0;
  const onJoined = () => (joined += 1);
  const io = params.client === "socket.io" ? require("socket.io-client").io : null;
  for (let start = 0; start < tallies.length; start += params.openConcurrency) {
    for (const tally of tallies.slice(start, start + params.openConcurrency)) {
      if (io) socketioMember(io, port, tally, onJoined, sockets);
      else wsMember(port, tally, onJoined);
    }
    const deadline = Date.now() + params.timeout * 1000;
    const want = Math.min(tallies.length, start + params.openConcurrency);
    for (let i = 0; i < 10 * params.timeout * 10 && joined < want; i += 1) {
      if (Date.now() > deadline) break;
      await sleep(0.01);
    }
    if (joined < want) throw new Error(`${joined} of ${tallies.length} members joined within ${params.timeout} s`);
  }
}

async function openPublisher() {
  if (params.client === "socket.io") {
    const { io } = require("socket.io-client");
    const socket = io(params.pubUrl, { transports: ["websocket"] });
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    return { send: (data) => socket.emit("publish", data), close: () => socket.close() };
  }
  const ws = new WebSocket(params.pubUrl, WS_OPTIONS);
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  return { send: (data) => ws.send(data), close: () => ws.close() };
}

async function main() {
  const proxy = new CuttingProxy(params.target);
  const port = await proxy.listen();
  const tallies = Array.from({ length: params.clients }, () => new Tally());
  const sockets = [];
  await openMembers(port, tallies, sockets);
  const publisher = await openPublisher();
  // Probes until every member got one: every worker has subscribed to the room.
  for (let i = 0; i < params.timeout * 10 && probed < tallies.length; i += 1) {
    publisher.send("p");
    await sleep(0.1);
  }
  if (probed < tallies.length) throw new Error(`${probed} of ${tallies.length} members got a probe`);
  emit({ event: "open", clients: tallies.length });

  const count = Math.round(params.rate * params.duration);
  const started = Date.now();
  let cuts = 0;
  let nextCut = params.cutEvery;
  for (let n = 0; n < count; n += 1) {
    const due = started + (n * 1000) / params.rate;
    const wait = due - Date.now();
    if (wait > 0) await sleep(wait / 1000);
    if ((Date.now() - started) / 1000 >= nextCut) {
      proxy.cut();
      cuts += 1;
      nextCut += params.cutEvery;
      emit({ event: "cut", n });
    }
    publisher.send(`m${n}`);
  }
  const publishSeconds = (Date.now() - started) / 1000;
  // Drain: until every member has every message, or `drain` seconds.
  const deadline = Date.now() + params.drain * 1000;
  for (let i = 0; i < params.drain * 20 && Date.now() < deadline; i += 1) {
    if (tallies.every((tally) => tally.distinct >= count)) break;
    await sleep(0.05);
  }
  stopping = true;
  const sum = (key) => tallies.reduce((total, tally) => total + tally[key], 0);
  const result = {
    client: params.client,
    members: tallies.length,
    published: count,
    publish_seconds: publishSeconds,
    cuts,
    refused: proxy.refused,
    expected: count * tallies.length,
    delivered: sum("distinct"),
    duplicates: sum("duplicates"),
    reordered: sum("reordered"),
    reconnects: sum("reconnects"),
    gaps: sum("gaps"),
    not_resumed: sum("notResumed"),
    complete_members: tallies.filter((tally) => tally.distinct >= count).length,
    min_member_delivered: Math.min(...tallies.map((tally) => tally.distinct)),
    // Up to 5 members that did not get everything: what they got, and their connection's state.
    incomplete: tallies
      .filter((tally) => tally.distinct < count)
      .slice(0, 5)
      .map((tally) => Object.assign({ distinct: tally.distinct, highest: tally.highest }, tally.state())),
  };
  for (const socket of sockets) socket.close();
  publisher.close();
  proxy.close();
  finish(result);
}

main().catch((error) => fail(String(error && error.stack ? error.stack : error)));
