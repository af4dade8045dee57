#!/usr/bin/env node
// Drive a WebSocket server with Node's `ws` client and print what happened as JSON.
//
//   node client.js URL SCENARIO [ARGS...]
//
// Scenarios:
//   text | binary | empty-text | empty-binary   send one message, report the echo
//   large-binary [BYTES]                        send random bytes (default 16 MiB), report hashes
//   ordered [COUNT]                             alternate text/binary messages, report the echoes
//   ping [PAYLOAD]                              ping, report the pong
//   subprotocol PROTOCOL...                     offer protocols, report the handshake outcome
//   close CODE [REASON]                         close, report the server's close frame
//
// Messages are reported as {isBinary, length, text} (text: UTF-8 decoding, or base64 for binary).
// Failures (an 'error' event, a timeout) still print JSON, with "error", and exit 1.
"use strict";

const crypto = require("crypto");
const WebSocket = require("ws");

const [url, scenario, ...args] = process.argv.slice(2);
const TIMEOUT_MS = 30000;

function describe(data, isBinary) {
  return {
    isBinary,
    length: data.length,
    text: isBinary ? data.toString("base64") : data.toString("utf8"),
  };
}

function sha256(buffer) {
  return crypto.createHash("sha256").update(buffer).digest("hex");
}

function finish(result, code = 0) {
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(code));
}

function fail(error, extra = {}) {
  finish({ ...extra, error: String(error && error.message ? error.message : error) }, 1);
}

setTimeout(() => fail(`timed out after ${TIMEOUT_MS} ms in scenario ${scenario}`), TIMEOUT_MS).unref();

// Send `messages` ([data, isBinary] pairs) and resolve with the echoes once all arrived.
function echo(messages, options = {}) {
  const ws = new WebSocket(url, options);
  const received = [];
  ws.on("error", fail);
  ws.on("open", () => {
    for (const [data, binary] of messages) ws.send(data, { binary });
  });
  return new Promise((resolve) => {
    ws.on("message", (data, isBinary) => {
      received.push([data, isBinary]);
      if (received.length === messages.length) {
        ws.close(1000);
        ws.on("close", (code) => resolve({ received, closeCode: code, extensions: ws.extensions }));
      }
    });
  });
}

const scenarios = {
  async text() {
    const { received, closeCode } = await echo([["héllo, wörld 🌍", false]]);
    return { messages: received.map(([d, b]) => describe(d, b)), closeCode };
  },

  async binary() {
    const { received, closeCode } = await echo([[Buffer.from([0x00, 0xff, 0x10, 0x80]), true]]);
    return { messages: received.map(([d, b]) => describe(d, b)), closeCode };
  },

  async "empty-text"() {
    const { received, closeCode } = await echo([["", false]]);
    return { messages: received.map(([d, b]) => describe(d, b)), closeCode };
  },

  async "empty-binary"() {
    const { received, closeCode } = await echo([[Buffer.alloc(0), true]]);
    return { messages: received.map(([d, b]) => describe(d, b)), closeCode };
  },

  async "large-binary"(size = String(16 * 1024 * 1024)) {
    const payload = crypto.randomBytes(Number(size));
    const { received, closeCode, extensions } = await echo([[payload, true]]);
    const [data, isBinary] = received[0];
    return {
      extensions,
      sentLength: payload.length,
      sentSha256: sha256(payload),
      receivedLength: data.length,
      receivedSha256: sha256(data),
      isBinary,
      closeCode,
    };
  },

  async ordered(count = "200") {
    const messages = [];
    for (let i = 0; i < Number(count); i++) {
      messages.push(i % 2 ? [Buffer.from(String(i)), true] : [String(i), false]);
    }
    const { received, closeCode, extensions } = await echo(messages);
    return {
      messages: received.map(([d, b]) => ({ isBinary: b, text: d.toString("utf8") })),
      closeCode,
      extensions,
    };
  },

  ping(payload = "are you there?") {
    return new Promise((resolve) => {
      const ws = new WebSocket(url);
      ws.on("error", fail);
      ws.on("open", () => ws.ping(payload));
      ws.on("pong", (data) => {
        ws.close(1000);
        ws.on("close", (code) => resolve({ pong: data.toString("utf8"), closeCode: code }));
      });
    });
  },

  subprotocol(...protocols) {
    return new Promise((resolve) => {
      const result = { offered: protocols, opened: false };
      const ws = new WebSocket(url, protocols);
      // 'upgrade' fires with the 101 response before ws checks Sec-WebSocket-Protocol.
      ws.on("upgrade", (response) => {
        result.status = response.statusCode;
        result.protocolHeader = response.headers["sec-websocket-protocol"] ?? null;
      });
      ws.on("error", (error) => resolve({ ...result, error: error.message }));
      ws.on("open", () => {
        result.opened = true;
        result.protocol = ws.protocol;
        ws.send("with protocol");
      });
      ws.on("message", (data, isBinary) => {
        result.echo = describe(data, isBinary);
        ws.close(1000);
        ws.on("close", (code) => resolve({ ...result, closeCode: code }));
      });
    });
  },

  close(code = "1000", reason = "") {
    return new Promise((resolve) => {
      const ws = new WebSocket(url);
      let started;
      ws.on("error", fail);
      ws.on("open", () => {
        started = Date.now();
        ws.close(Number(code), reason);
      });
      // ws reports the code and reason of the server's close frame (1005 when it had none,
      // 1006 when the connection dropped without one).
      ws.on("close", (closeCode, closeReason) =>
        resolve({
          sentCode: Number(code),
          sentReason: reason,
          closeCode,
          closeReason: closeReason.toString("utf8"),
          // ws waits up to 30 s for the server to close TCP after the closing handshake.
          elapsedMs: Date.now() - started,
        }),
      );
    });
  },
};

async function main() {
  const run = scenarios[scenario];
  if (!url || !run) {
    process.stderr.write(`usage: client.js URL {${Object.keys(scenarios).join("|")}} [ARGS...]\n`);
    process.exit(2);
  }
  finish(await run(...args));
}

main().catch(fail);
