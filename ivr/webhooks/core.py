"""The pure part of webhooks: event types, the envelope, the signature and the back-off schedule (no I/O).

Signature header (what a receiver checks, see ``verify`` and docs/integrations.md)::

    X-Ivr-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with the webhook's secret>
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any, Mapping

SIGNATURE_HEADER = "X-Ivr-Signature"
EVENT_TYPES = ("refund.requested", "refund.decided", "callback.requested", "callback.done", "call.finished",
               "campaign.contact_done", "feedback.recorded")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
TOLERANCE_S = 300          # a receiver refuses signatures older (or newer) than this
BACKOFF_BASE_S = 1.0       # the first retry waits this long ...
BACKOFF_CAP_S = 300.0      # ... doubling up to this


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def envelope(event_type: str, data: Mapping[str, Any], *, event_id: str | None = None,
             created: float | None = None) -> dict[str, Any]:
    """The body of a delivery: ``{"id", "type", "created", "data"}`` (``created``: unix seconds, an integer)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r} (known: {', '.join(EVENT_TYPES)})")
    return {"id": event_id or new_event_id(), "type": event_type,
            "created": int(time.time() if created is None else created), "data": dict(data)}


def encode(env: Mapping[str, Any]) -> bytes:
    """The raw body as sent (and signed): compact JSON, UTF-8."""
    return json.dumps(env, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``."""
    return hmac.new(secret.encode(), str(int(timestamp)).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: float | None = None) -> str:
    """The ``X-Ivr-Signature`` header value for ``body``: ``t=<unix seconds>,v1=<hex>``."""
    t = int(time.time() if timestamp is None else timestamp)
    return f"t={t},v1={signature(secret, t, body)}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None,
           tolerance: float = TOLERANCE_S) -> bool:
    """A receiver's check: the header's ``v1`` is the HMAC of ``"<t>.<body>"`` and ``t`` is within ``tolerance``
    seconds of ``now`` (a replayed old delivery is refused). Compared in constant time."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, t, body), parts.get("v1", ""))


def backoff(attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): base, 2 base, 4 base, ... up to cap."""
    if attempt < 1:
        return 0.0
    return float(min(cap, base * 2 ** min(attempt - 1, 30)))


def from_fields(fields: Mapping[str, str]) -> dict[str, Any]:
    """The envelope of a stream entry (fields id, type, created, data as JSON text)."""
    try:
        data = json.loads(fields.get("data") or "{}")
    except ValueError:
        data = {"raw": fields.get("data")}
    return {"id": fields.get("id", ""), "type": fields.get("type", ""),
            "created": int(float(fields.get("created") or 0)), "data": data}


def to_fields(env: Mapping[str, Any]) -> dict[str, str]:
    """A stream entry's fields for an envelope (``from_fields`` reads them back)."""
    return {"id": str(env["id"]), "type": str(env["type"]), "created": str(env["created"]),
            "data": json.dumps(env["data"], separators=(",", ":"), ensure_ascii=False, default=str)}


def success(status: int) -> bool:
    return 200 <= status < 300
