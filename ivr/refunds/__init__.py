"""The refund self-service."""
