"""make soak: thousands of connections for a minute, then everything back (fds, greenlets, RSS)."""
