"""The I/O layer in this process: transports and the parker on socket pairs, the emitter, WebSockets."""
