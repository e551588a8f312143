"""Outbound events to the business's own systems (webhooks).

- ``core``: the pure part: event types, the envelope, signing and verifying, the back-off schedule.
- ``events``: ``Events``, the publisher the features are given (one XADD per event, off the call path).
- ``sender``: one delivery task per webhook (aiohttp), reading the event stream through a consumer group.
- ``desk``: what ``GET /api/v1/webhooks/deliveries`` shows.

The Redis side is ivr/store/webhooks.py. See docs/integrations.md.
"""
