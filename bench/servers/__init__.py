"""The servers under test that are not in examples/: echo servers with a ``--port``.

Each is a script (``python bench/servers/NAME.py --port P [--broadcast]``) that prints
one line once it listens. ``--broadcast`` selects the variant of scenario 5: a text
message ``broadcast:<n>`` makes the server send a 100-byte text message to every
connected client ``n`` times; other messages are echoed.
"""
