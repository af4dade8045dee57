#!/usr/bin/env node
// Node's ws 8 echo server for `make bench`, in the shape takeover mirrors:
// http.createServer + server.on("upgrade") + wss.handleUpgrade (noServer: true).
//
//   node server.js --port PORT [--host 127.0.0.1] [--broadcast]
//
// Echoes text as text and binary as binary. With --broadcast, a text message
// "broadcast:<n>" makes the server send a 100-byte text message to every connected
// client n times (a loop over wss.clients, as in ws's README).
"use strict";

const http = require("http");
const { WebSocketServer, WebSocket } = require("ws");

const args = process.argv.slice(2);
function option(name, fallback) {
  const index = args.indexOf(name);
  return index >= 0 ? args[index + 1] : fallback;
}
const host = option("--host", "127.0.0.1");
const port = Number(option("--port", "9001"));
const broadcastMode = args.includes("--broadcast");
const MESSAGE = Buffer.alloc(100, 0x62); // 100 bytes of "b"

const server = http.createServer((request, response) => {
  response.writeHead(426, { "Content-Type": "text/plain", Upgrade: "websocket" });
  response.end("ws echo server: connect with a WebSocket client\n");
});
const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024 });

function onEcho(ws) {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
}

function onBroadcast(ws) {
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? "" : data.toString();
    if (text.startsWith("broadcast:")) {
      const count = Number(text.slice("broadcast:".length));
      for (let i = 0; i < count; i += 1) {
        for (const client of wss.clients) {
          if (client.readyState === WebSocket.OPEN) client.send(MESSAGE, { binary: false });
        }
      }
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
}

const onConnection = broadcastMode ? onBroadcast : onEcho;
server.on("upgrade", (request, socket, head) => {
  socket.on("error", () => {});
  wss.handleUpgrade(request, socket, head, (ws) => {
    ws.on("error", () => {});
    onConnection(ws);
  });
});
server.listen(port, host, () => {
  const address = server.address();
  console.log(`ws ${require("ws/package.json").version} echo server listening on ws://${address.address}:${address.port}/`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
