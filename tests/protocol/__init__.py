"""Bytes only, no sockets: the sans-I/O core (frames, handshake, masking, deflate, origins)."""
