"""A chat room on takeover: ``takeover serve examples.chat.app:app`` (see ``app.py``)."""
