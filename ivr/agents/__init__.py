"""The agent roster."""
