"""Caller continuity's pure part, no store: a caller ID as the E.164 key their history is kept under
(``caller_key``), what a caller's history keeps of one call (``summarise``), and the reading of a call record
the service needs (its uid, its menu variables, whether it came in through the IVR, JSON and numbers that may
be missing or malformed). ``service.py`` keeps the data in Redis and decides with these.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Mapping

import phonenumbers

SUMMARY_FIELDS = ("outcome", "queue", "agent", "wait", "talk", "language", "menu", "kind", "campaign", "keypress")


@functools.lru_cache(maxsize=20_000)   # pure; each call asks at its start and at its end
def caller_key(raw: str, region: str = "") -> str:
    """The E.164 form of a caller ID ('' when it is not a usable number).

    Without a region, caller IDs are taken as international digits (what most
    SIP trunks deliver: 4420..., +4420...); with one, national numbers of that
    region (020..., or 0044... with the international prefix) are understood too.
    """
    digits = raw.strip()
    if digits.startswith("+"):
        digits = digits[1:]
    if not (digits.isascii() and digits.isdigit()) or not 6 <= len(digits) <= 15:
        return ""
    try:
        if region:
            num = phonenumbers.parse(digits if not raw.strip().startswith("+") else "+" + digits, region.upper())
        else:
            num = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return "+" + digits
    if not phonenumbers.is_possible_number(num):
        return "+" + digits
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def summarise(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a caller's history keeps of one call."""
    out: dict[str, Any] = {"uid": record_uid(record),
                           "at": to_float(record.get("started_at") or record.get("joined_at") or record.get("ended_at"))}
    for k in SUMMARY_FIELDS:
        if record.get(k) not in (None, ""):
            out[k] = record[k]
    if record.get("campaign") and "kind" not in out:
        out["kind"] = "notice"
    path = record.get("path")
    if isinstance(path, str):
        path = load_json(path, [])
    if path:
        out["path"] = list(path)[-12:]
    v = record_vars(record)
    if v.get("refund_reference"):
        out["refund"] = v["refund_reference"]
    if v.get("booking"):
        out["booking"] = v["booking"]
    if v.get("notice_action"):
        out["notice"] = v["notice_action"]
    if v.get("place_since"):
        out["returning"] = True
    return out


def came_in(record: Mapping[str, Any]) -> bool:
    """Did this call come in through the IVR (not a campaign's or a callback's call out)?"""
    return not record.get("campaign") and record.get("kind") != "callback" and bool(record.get("menu"))


def record_uid(record: Mapping[str, Any]) -> str:
    return str(record.get("uniqueid") or record.get("uid") or "")


def record_vars(record: Mapping[str, Any]) -> dict[str, Any]:
    v = record.get("vars")
    if isinstance(v, str):
        v = load_json(v, {})
    return v if isinstance(v, dict) else {}


def load_json(raw: Any, default: Any = None) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return default


def to_float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


