"""takeover's tests, by layer: protocol/ (bytes only), io/ (transports and WebSockets in this
process), servers/ (servers on 127.0.0.1, in this process or as processes), interop/ (third-party
clients: Node's ws, Chromium, Autobahn, websockets, the soak driver).

A package, so that helpers are imported as ``from tests.frames import ...`` from any layer, and
test files in different layers may share a name.
"""
