"""Caller continuity: place keeping, notified callers, reached contacts and call history."""
