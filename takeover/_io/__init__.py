"""The I/O layer: drives the sans-I/O core over real sockets."""
