"""The seed's node:http + Deno.upgradeWebSocket snippet, translated line by line.

JavaScript (node:http, Deno)                      | Python (takeover)
--------------------------------------------------+----------------------------------------------
import http from "node:http";                     | from takeover import (create_server,
                                                  |                       upgrade_websocket)
const server = http.createServer();               | server = create_server()
server.on("upgrade", (req, socket, head) => {     | def on_upgrade(req, socket, head):
  const { socket: ws } =                          |     ws, _ = upgrade_websocket(
    Deno.upgradeWebSocket(req, { socket, head }); |         req, socket=socket, head=head)
  ws.addEventListener("open",                     |     ws.add_event_listener("open",
    () => console.log("a client connected!"));    |         lambda e: print("a client connected!"))
  ws.addEventListener("message", (event) => {     |     def on_message(event):
    if (event.data === "ping") ws.send("pong");   |         if event.data == "ping": ws.send("pong")
  });                                             |     ws.add_event_listener("message", on_message)
});                                               | server.on("upgrade", on_upgrade)
server.listen(8080);                              | server.listen(8080)
                                                  | server.serve_forever()

The differences are Python's: a named function where JavaScript has a
multi-line arrow function, tuple unpacking for ``{ socket: ws }`` (the second
item is the 101 response, for information only: with ``socket=`` the WebSocket
writes the 101 itself), and an
explicit ``serve_forever()`` because nothing keeps a Python program alive by
itself. ``listen`` binds 127.0.0.1 by default (Node binds every interface).

Run: python examples/node_migration.py [--host 127.0.0.1] [--port 8080]
"""

from __future__ import annotations

import argparse
import signal

from takeover import create_server, upgrade_websocket


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()

    # const server = http.createServer();
    server = create_server()

    # server.on("upgrade", (req, socket, head) => {
    def on_upgrade(req, socket, head):
        # const { socket: ws } = Deno.upgradeWebSocket(req, { socket, head });
        ws, _ = upgrade_websocket(req, socket=socket, head=head)
        # ws.addEventListener("open", () => console.log("a client connected!"));
        ws.add_event_listener("open", lambda event: print("a client connected!", flush=True))

        # ws.addEventListener("message", (event) => {
        def on_message(event):
            # if (event.data === "ping") ws.send("pong");
            if event.data == "ping":
                ws.send("pong")

        ws.add_event_listener("message", on_message)  # });

    server.on("upgrade", on_upgrade)  # });
    # server.listen(8080);
    server.listen(args.port, args.host)

    print(f"listening on {server.url}", flush=True)
    server.serve_forever(close_on=(signal.SIGINT, signal.SIGTERM))


if __name__ == "__main__":
    main()
