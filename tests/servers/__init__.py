"""Servers on 127.0.0.1: takeover's in this process, and servers run as processes (examples, the CLI,
gunicorn, pywsgi, Werkzeug, gevent-websocket apps). apps/ holds the scripts some of them run."""
