// The soak test's load: N connections, each a closed loop of sequence-numbered
// text messages for `seconds`, checking that every echo arrives in order.
//   node client.js URL N SECONDS
// Prints one JSON line: connections opened, messages, errors, lost, reordered.
"use strict";
const WebSocket = require(process.env.WS_MODULE || "ws");
const [url, total, seconds] = [process.argv[2], +process.argv[3], +process.argv[4]];
const result = { opened: 0, closed: 0, messages: 0, errors: 0, lost: 0, reordered: 0, firstError: null };
let openNow = 0, started = 0, finished = 0;
const deadline = Date.now() + seconds * 1000;
function fail(message) { result.errors++; if (!result.firstError) result.firstError = message; }
function open(i) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  let next = 0, expected = 0;
  ws.on("open", () => {
    result.opened++; openNow++;
    launch();
    ws.send(`${i}:${next++}`);
  });
  ws.on("message", (data) => {
    const [who, seq] = String(data).split(":").map(Number);
    if (who !== i) fail(`connection ${i} got a message for ${who}`);
    else if (seq !== expected) { if (seq > expected) result.lost += seq - expected; else result.reordered++; }
    expected = seq + 1; result.messages++;
    if (Date.now() < deadline) ws.send(`${i}:${next++}`);
    else ws.close(1000);
  });
  ws.on("error", (e) => fail(String(e.message)));
  ws.on("close", (code) => {
    openNow--; result.closed++;
    if (code !== 1000) fail(`connection ${i} closed with ${code}`);
    if (++finished === total) { console.log(JSON.stringify(result)); process.exit(0); }
  });
}
function launch() { if (started < total) open(started++); }
for (let k = 0; k < Math.min(50, total); k++) launch();
setTimeout(() => { fail("timed out"); console.log(JSON.stringify(result)); process.exit(1); }, (seconds + 120) * 1000);
