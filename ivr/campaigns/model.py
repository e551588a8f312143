"""Campaign definitions (YAML or API JSON) validated into a frozen ``Campaign``.

A campaign says what to tell the callee and in which languages, what each key
does, when it may call (the callee's local time), how often to retry each
outcome, how fast to dial, and the safety limits (allowed destinations, an
hourly cap) that keep a bad list or a leaked token from running up a bill.
Errors name the key (``pacing.cps: must be 0.1-50``).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any, Sequence, Mapping

ACTIONS = ("refund", "callback", "agent", "optout", "repeat")
OUTCOMES = ("busy", "no_answer", "failed", "machine", "unknown", "no_key")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_PROMPT_RE = re.compile(r"^[A-Za-z0-9_-]{1,60}$")
_TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_PREFIX_RE = re.compile(r"^\+[1-9][0-9]{0,5}$")
# a campaign's own ceiling; the deployment's outbound.global_hourly caps every call out together
MAX_HOURLY_CAP = 10_000


class CampaignError(ValueError):
    """The campaign definition is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class Pacing:
    cps: float = 1.0                 # new calls per second
    max_channels: int = 10           # concurrent outbound calls
    max_transfers: int = 2           # concurrent "connect me to an agent" transfers into the queues


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    name: str = ""
    message: Mapping[str, str] = field(default_factory=lambda: {"en": "notice-cancelled"})
    machine_message: str = "notice-machine"
    options: Mapping[str, str] = field(default_factory=lambda: {"1": "refund", "2": "callback", "3": "agent",
                                                               "9": "optout"})
    window_start: datetime.time = datetime.time(9, 0)
    window_end: datetime.time = datetime.time(20, 0)
    max_attempts: int = 3
    retry: Mapping[str, float] = field(default_factory=lambda: {"busy": 300, "no_answer": 900, "failed": 1800,
                                                               "machine": 3600, "unknown": 1800, "no_key": 3600})
    pacing: Pacing = field(default_factory=Pacing)
    priority: int = 0
    allowed_prefixes: tuple[str, ...] = ()
    hourly_cap: int = 1000
    queue: str = "support"
    default_lang: str = "en"
    amd: bool = True
    ring_timeout: int = 30           # seconds to let it ring before "no answer"

    def in_window(self, local: datetime.datetime) -> bool:
        t = local.time()
        if self.window_start <= self.window_end:
            return self.window_start <= t < self.window_end
        return t >= self.window_start or t < self.window_end   # a window across midnight

    def next_window_start(self, local: datetime.datetime) -> datetime.datetime:
        start = local.replace(hour=self.window_start.hour, minute=self.window_start.minute, second=0, microsecond=0)
        return start if start > local else start + datetime.timedelta(days=1)

    def in_window_everywhere(self, now: datetime.datetime, zones: Sequence[datetime.tzinfo]) -> bool:
        """Inside the calling window in every one of the contact's zones (``now`` is aware)."""
        return all(self.in_window(now.astimezone(z)) for z in zones)

    def next_common_start(self, now: datetime.datetime, zones: Sequence[datetime.tzinfo],
                          step_min: int = 5) -> datetime.datetime | None:
        """The first moment (5-minute steps, within 48 h) inside the window in every zone; None if the
        zones are too far apart for the window (the contact needs a tz column)."""
        t = now.replace(second=0, microsecond=0)
        for _ in range(48 * 60 // step_min):
            t += datetime.timedelta(minutes=step_min)
            if self.in_window_everywhere(t, zones):
                return t
        return None

    def allows(self, e164: str) -> bool:
        return not self.allowed_prefixes or any(e164.startswith(p) for p in self.allowed_prefixes)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "message": dict(self.message), "machine_message": self.machine_message,
                "options": dict(self.options), "window": {"start": self.window_start.strftime("%H:%M"),
                                                         "end": self.window_end.strftime("%H:%M")},
                "max_attempts": self.max_attempts, "retry": dict(self.retry),
                "pacing": {"cps": self.pacing.cps, "max_channels": self.pacing.max_channels,
                           "max_transfers": self.pacing.max_transfers},
                "priority": self.priority, "allowed_prefixes": list(self.allowed_prefixes),
                "hourly_cap": self.hourly_cap, "queue": self.queue, "default_lang": self.default_lang, "amd": self.amd,
                "ring_timeout": self.ring_timeout}


def _time(key: str, value: Any) -> datetime.time:
    m = _TIME_RE.fullmatch(str(value))
    if not m:
        raise CampaignError(f"{key}: expected HH:MM, got {value!r}")
    return datetime.time(int(m[1]), int(m[2]))


def _number(key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise CampaignError(f"{key}: must be a number from {lo:g} to {hi:g}, got {value!r}")
    return float(value)


def parse_campaign(data: Mapping[str, Any], *, queues: frozenset[str] | None = None,
                   languages: tuple[str, ...] = ("en", "fa", "zh")) -> Campaign:
    """Validate a campaign definition (a parsed YAML file or API body)."""
    if not isinstance(data, Mapping):
        raise CampaignError("campaign: expected a mapping")
    known = {"id", "name", "message", "machine_message", "options", "window", "max_attempts", "retry", "pacing",
             "priority", "allowed_prefixes", "hourly_cap", "queue", "default_lang", "amd", "ring_timeout"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CampaignError(f"{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
    cid = data.get("id")
    if not isinstance(cid, str) or not _ID_RE.fullmatch(cid):
        raise CampaignError("id: lower-case letters, digits and - (up to 40), e.g. flights-nov25")
    name = data.get("name", "")
    if not isinstance(name, str):
        raise CampaignError("name: text")
    kw: dict[str, Any] = {"id": cid, "name": name[:100]}
    message = data.get("message", {"en": "notice-cancelled"})
    if isinstance(message, str):
        message = {languages[0]: message}
    if not isinstance(message, Mapping) or not message:
        raise CampaignError("message: a prompt name per language, e.g. {en: notice-cancelled}")
    for lang, prompt in message.items():
        if lang not in languages:
            raise CampaignError(f"message.{lang}: unknown language (configured: {', '.join(languages)})")
        if not isinstance(prompt, str) or not _PROMPT_RE.fullmatch(prompt):
            raise CampaignError(f"message.{lang}: bad prompt name {prompt!r}")
    kw["message"] = dict(message)
    if "machine_message" in data:
        if not isinstance(data["machine_message"], str) or not _PROMPT_RE.fullmatch(data["machine_message"]):
            raise CampaignError(f"machine_message: bad prompt name {data['machine_message']!r}")
        kw["machine_message"] = str(data["machine_message"])
    if "options" in data:
        opts = data["options"]
        if not isinstance(opts, Mapping) or not opts:
            raise CampaignError("options: a mapping of key to action, e.g. {'1': refund, '9': optout}")
        for k, v in opts.items():
            if str(k) not in list("0123456789*"):
                raise CampaignError(f"options.{k}: not a keypad key (0-9, *)")
            if v not in ACTIONS:
                raise CampaignError(f"options.{k}: unknown action {v!r} (known: {', '.join(ACTIONS)})")
        kw["options"] = {str(k): str(v) for k, v in opts.items()}
    if "window" in data:
        w = data["window"]
        if not isinstance(w, Mapping) or set(w) - {"start", "end"}:
            raise CampaignError("window: {start: 'HH:MM', end: 'HH:MM'} in the callee's local time")
        kw["window_start"] = _time("window.start", w.get("start", "09:00"))
        kw["window_end"] = _time("window.end", w.get("end", "20:00"))
        if kw["window_start"] == kw["window_end"]:
            raise CampaignError("window: start and end are the same")
    if "max_attempts" in data:
        kw["max_attempts"] = int(_number("max_attempts", data["max_attempts"], 1, 10))
    if "retry" in data:
        r = data["retry"]
        if not isinstance(r, Mapping):
            raise CampaignError("retry: a mapping of outcome to seconds")
        retry = dict(Campaign(id="").retry)   # the defaults, overridden per outcome below
        for k, v in r.items():
            if k not in OUTCOMES:
                raise CampaignError(f"retry.{k}: unknown outcome (known: {', '.join(OUTCOMES)})")
            retry[k] = _number(f"retry.{k}", v, 0, 7 * 86400)
        kw["retry"] = retry
    if "pacing" in data:
        p = data["pacing"]
        if not isinstance(p, Mapping) or set(p) - {"cps", "max_channels", "max_transfers"}:
            raise CampaignError("pacing: {cps, max_channels, max_transfers}")
        kw["pacing"] = Pacing(cps=_number("pacing.cps", p.get("cps", 1.0), 0.1, 50),
                              max_channels=int(_number("pacing.max_channels", p.get("max_channels", 10), 1, 500)),
                              max_transfers=int(_number("pacing.max_transfers", p.get("max_transfers", 2), 0, 500)))
    if "priority" in data:
        kw["priority"] = int(_number("priority", data["priority"], 0, 100))
    if "allowed_prefixes" in data:
        prefixes = data["allowed_prefixes"]
        if not isinstance(prefixes, list) or not all(isinstance(x, str) and _PREFIX_RE.fullmatch(x) for x in prefixes):
            raise CampaignError("allowed_prefixes: a list of E.164 prefixes like ['+44', '+98']")
        kw["allowed_prefixes"] = tuple(prefixes)
    if "hourly_cap" in data:
        kw["hourly_cap"] = int(_number("hourly_cap", data["hourly_cap"], 1, MAX_HOURLY_CAP))
    if "queue" in data:
        if queues is not None and data["queue"] not in queues:
            raise CampaignError(f"queue: {data['queue']!r} is not a configured queue")
        kw["queue"] = str(data["queue"])
    if "default_lang" in data:
        if data["default_lang"] not in languages:
            raise CampaignError(f"default_lang: {data['default_lang']!r} is not configured")
        kw["default_lang"] = str(data["default_lang"])
    if "ring_timeout" in data:
        kw["ring_timeout"] = int(_number("ring_timeout", data["ring_timeout"], 5, 120))
    if "amd" in data:
        if not isinstance(data["amd"], bool):
            raise CampaignError("amd: true or false")
        kw["amd"] = data["amd"]
    return Campaign(**kw)


def campaign_from_dict(d: Mapping[str, Any]) -> Campaign:
    """Rebuild a stored campaign (the output of ``Campaign.to_dict``); a cap stored before the ceiling was
    lowered is brought down to it."""
    cap = d.get("hourly_cap")
    if isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap > MAX_HOURLY_CAP:
        d = {**d, "hourly_cap": MAX_HOURLY_CAP}
    return parse_campaign(d)
