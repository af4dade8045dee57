"""Flask-SocketIO with its Redis message queue, fan-out scenario: every client joins one room.

    BENCH_REDIS_URL=redis://127.0.0.1:P/0 gunicorn \
        -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 4 bench.servers.socketio_fanout:app

(the harness starts it with bench/servers/fanout_gunicorn.py). ``SocketIO(app,
message_queue=redis_url, async_mode="gevent")``, WebSocket transport only; gunicorn's
gevent worker monkey-patches the standard library, which the Redis queue needs. A
client's ``join`` event puts it in ROOM and is acknowledged with this worker's pid; a
``publish`` event is ``socketio.emit("msg", data, to=ROOM)``, which python-socketio's
RedisManager delivers to the room's members in every worker.
"""

from __future__ import annotations

import os

from flask import Flask
from flask_socketio import SocketIO, join_room

ROOM = "room"
app = Flask(__name__)
socketio = SocketIO(
    app,
    message_queue=os.environ["BENCH_REDIS_URL"],
    async_mode="gevent",
    transports=["websocket"],
    logger=False,
    engineio_logger=False,
)


@socketio.on("join")  # type: ignore[untyped-decorator]
def on_join() -> int:
    join_room(ROOM)
    return os.getpid()  # the acknowledgement


@socketio.on("publish")  # type: ignore[untyped-decorator]
def on_publish(data: str) -> None:
    socketio.emit("msg", data, to=ROOM)
