"""Callback requests and the callback promise (the time offered to a caller)."""
