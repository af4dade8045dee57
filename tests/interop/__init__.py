"""Real third-party clients: Node's ws, Chromium, Autobahn (kosoku), websockets, the soak driver."""
