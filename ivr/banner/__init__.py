"""The live crisis banner message."""
