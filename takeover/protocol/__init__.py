"""The sans-I/O WebSocket core: handshake, framing, masking, connection state."""
