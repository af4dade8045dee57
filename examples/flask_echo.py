"""A Flask app with a WebSocket echo at /ws and a page at / that uses it.

Deno's response mode: the view calls ``upgrade_websocket(request)`` and returns
the response; returning it is what takes the connection over. Run it on any of:

    takeover serve examples.flask_echo:app --bind 127.0.0.1:8000
    gunicorn -k takeover.gunicorn.Worker -w 4 examples.flask_echo:app
    flask --app examples/flask_echo.py run          (Werkzeug, threaded)
    python examples/flask_echo.py --gevent          (plain gevent.pywsgi.WSGIServer)
"""

from __future__ import annotations

import argparse
import signal
import threading

from flask import Flask, request

from takeover import upgrade_websocket

app = Flask(__name__)

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>takeover echo</title>
<form id="form"><input id="text" value="hello" autocomplete="off"> <button>send</button></form>
<p>status: <b id="status">connecting</b></p>
<ul id="log"></ul>
<script>
  const url = location.origin.replace(/^http/, "ws") + "/ws";
  const ws = new WebSocket(url);
  const log = (line) => {
    const item = document.createElement("li");
    item.textContent = line;
    document.getElementById("log").append(item);
  };
  ws.onopen = () => { document.getElementById("status").textContent = "open"; };
  ws.onclose = (e) => { document.getElementById("status").textContent = "closed (" + e.code + ")"; };
  ws.onmessage = (e) => log("echo: " + e.data);
  document.getElementById("form").onsubmit = (e) => {
    e.preventDefault();
    ws.send(document.getElementById("text").value);
  };
</script>
"""


@app.route("/")
def index() -> str:
    """The page whose script opens the WebSocket and shows the echo."""
    return PAGE


@app.route("/ws", websocket=True)  # Werkzeug routes WebSocket requests only to such rules
def ws():  # type: ignore[no-untyped-def]
    """Echo every message back: text as text, binary as binary."""
    socket, response = upgrade_websocket(request)
    socket.add_event_listener("message", lambda event: socket.send(event.data))
    return response


def main() -> None:
    """Serve on plain gevent.pywsgi or Werkzeug's threaded server (the tests use both)."""
    parser = argparse.ArgumentParser(description="Serve the Flask echo app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--gevent", action="store_true", help="use gevent.pywsgi.WSGIServer")
    args = parser.parse_args()
    if args.gevent:
        import gevent
        from gevent.pywsgi import WSGIServer

        server = WSGIServer((args.host, args.port), app, log=None)
        server.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            gevent.signal_handler(signum, server.stop)
        print(f"flask_echo on gevent.pywsgi at ws://{args.host}:{server.server_port}/ws", flush=True)
        server.serve_forever()
    else:
        from werkzeug.serving import make_server

        werkzeug_server = make_server(args.host, args.port, app, threaded=True)

        def stop(signum: int, frame: object) -> None:
            # shutdown() waits for serve_forever to return: not from its own thread.
            threading.Thread(target=werkzeug_server.shutdown).start()

        signal.signal(signal.SIGTERM, stop)
        print(f"flask_echo on werkzeug at ws://{args.host}:{werkzeug_server.server_port}/ws", flush=True)
        werkzeug_server.serve_forever()


if __name__ == "__main__":
    main()
