"""The outbound guard: the one gate every call the line places through the trunk passes.

Why: whoever can make the line dial a number of their choosing (a caller typing a
callback number, a token that sets an agent's mobile or loads a campaign) can make it
call premium-rate or satellite numbers, again and again, and the bill is ours (toll
fraud). So a callback, a campaign or refund-decision call and an agent's mobile put
into a queue are all checked here before anything is sent to Asterisk:

1. the number is read as E.164 (``outbound.default_region`` for numbers without +);
2. it must start with one of ``outbound.allowed_prefixes`` (empty: nothing is dialled
   out) and with one of the caller's own narrower prefixes, if it has some (a
   campaign's ``allowed_prefixes``);
3. it must be a valid number of an allowed type (``outbound.allowed_types``: by default
   fixed lines and mobiles; never premium-rate, shared-cost, satellite or unknown unless
   listed);
4. it must not be on the do-not-call list, and a dial must fit both hourly caps (per
   number and in all), counted in Redis so every node shares one budget.

Steps 1-3 are ``judge()``, pure; step 4 is ``OutboundStore`` (ivr/store/outbound.py).
A refusal is logged (the number masked), counted in /metrics
(``ivr_outbound_refused_total{purpose,reason}``) and written to the audit log.
Calls to agents' own phones (``PJSIP/<agent id>``) never leave through the trunk and are
not the guard's business: ``internal_channel()`` is the only way to build one.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Iterable

import phonenumbers
from phonenumbers import PhoneNumberType
from ..store.errors import StoreError

from ..app.config import AgentConfig, Config, OutboundConfig

log = logging.getLogger(__name__)

# purposes (the metric's label): who asked for the call
PURPOSES = ("callback", "continuity", "campaign", "refund", "agent_mobile")
RETRY_LATER = frozenset({"cap_number", "cap_global", "unavailable"})
# country calling codes of global services that cost like satellites (phonenumbers types them as mobiles)
SATELLITE_CODES = frozenset({870, 881})
NETWORK_CODES = frozenset({882, 883})
TYPE_NAMES = {
    PhoneNumberType.FIXED_LINE: "fixed_line", PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile", PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.PREMIUM_RATE: "premium_rate", PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.VOIP: "voip", PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.PAGER: "pager", PhoneNumberType.UAN: "uan", PhoneNumberType.VOICEMAIL: "voicemail",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard says about one number: ``ok``, or the reason it is refused."""

    ok: bool
    number: str = ""      # E.164 ('' when it is not a phone number at all)
    reason: str = ""      # not_allowed_prefix, invalid, type_<name>, dnc, cap_number, cap_global, unavailable
    kind: str = ""        # the number's type (fixed_line, mobile, premium_rate, satellite, ...)

    @property
    def retry_later(self) -> bool:
        """Refused for now (a cap, Redis unreachable), not for what the number is."""
        return self.reason in RETRY_LATER

    @property
    def digits(self) -> str:
        """What the trunk is asked to dial: the E.164 number without its +."""
        return self.number.lstrip("+")


@dataclass(frozen=True, slots=True)
class Policy:
    """The pure part of ``outbound:`` (prefixes, types, region)."""

    allowed_prefixes: tuple[str, ...] = ()
    allowed_types: frozenset[str] = frozenset({"fixed_line", "mobile", "fixed_line_or_mobile"})
    region: str = ""

    @classmethod
    def from_config(cls, cfg: Config) -> "Policy":
        o = cfg.outbound
        return cls(tuple(o.allowed_prefixes), frozenset(o.allowed_types),
                   (o.default_region or cfg.continuity.region).upper())


def normalise(raw: str, region: str = "") -> phonenumbers.PhoneNumber | None:
    """The number as phonenumbers reads it (None: not a phone number). Without + it is a national number
    of ``region``, or international digits when there is no region (as most SIP trunks deliver them)."""
    text = (raw or "").strip()
    plus = text.startswith("+")
    body = text[1:] if plus else text
    if not (body.isascii() and body.isdigit()) or not 3 <= len(body) <= 17:
        return None
    try:
        if plus or not region:
            return phonenumbers.parse("+" + body, None)
        return phonenumbers.parse(body, region)
    except phonenumbers.NumberParseException:
        return None


def number_kind(num: phonenumbers.PhoneNumber) -> str:
    """The number's type name; ``unknown`` when it is not a valid number."""
    if not phonenumbers.is_valid_number(num):
        return "unknown"
    if num.country_code in SATELLITE_CODES:
        return "satellite"
    if num.country_code in NETWORK_CODES:
        return "international_network"
    return TYPE_NAMES.get(phonenumbers.number_type(num), "unknown")


def judge(raw: str, policy: Policy, narrower: Iterable[str] = ()) -> Verdict:
    """The pure verdict on one number: prefixes (the deployment's and the caller's ``narrower`` ones),
    validity and type. No I/O: the do-not-call list and the caps are checked by ``OutboundGuard``."""
    num = normalise(raw, policy.region)
    if num is None:
        return Verdict(False, "", "invalid")
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    narrower = tuple(narrower)
    if not e164.startswith(policy.allowed_prefixes) or (narrower and not e164.startswith(narrower)):
        return Verdict(False, e164, "not_allowed_prefix")
    kind = number_kind(num)
    if kind == "unknown":
        return Verdict(False, e164, "invalid", kind)
    if kind not in policy.allowed_types:
        return Verdict(False, e164, f"type_{kind}", kind)
    return Verdict(True, e164, "", kind)


def mask(number: str) -> str:
    """A number for the logs: all but the last four digits hidden."""
    digits = number.lstrip("+")
    return ("+" if number.startswith("+") else "") + "*" * max(0, len(digits) - 4) + digits[-4:]


def internal_channel(agent: AgentConfig) -> str:
    """The channel of an agent's own phone (an endpoint of ours, not the trunk): the only Originate that does
    not pass the guard (coaching rings the coach's phone)."""
    if not (agent.id.isascii() and agent.id.isdigit()):
        raise ValueError(f"agent id: digits only, got {agent.id!r}")
    return agent.interface


class OutboundGuard:
    """``check(number, purpose)``: the verdict, with the shared do-not-call list and hourly caps applied.

    ``count=False`` checks without using up the caps (a number typed in the menu, a mobile put into a
    queue); a dial about to be sent uses ``count=True``. Fails closed: Redis unreachable is a refusal
    (``unavailable``) the caller may try again later.
    """

    def __init__(self, cfg: Config, store: Any, metrics: Any = None) -> None:
        self.cfg: OutboundConfig = cfg.outbound
        self.policy = Policy.from_config(cfg)
        self.store = store
        self.metrics = metrics
        self.refused = 0

    def describe(self) -> str:
        """One line for the start-up log."""
        if not self.policy.allowed_prefixes:
            return ("outbound: outbound.allowed_prefixes is empty: NOTHING is dialled out (callbacks, campaigns, "
                    "refund decision calls and agents' mobiles are all refused)")
        return (f"outbound: calls out only to {', '.join(self.policy.allowed_prefixes)} "
                f"({', '.join(sorted(self.policy.allowed_types))}); at most {self.cfg.per_number_hourly} an hour to "
                f"one number and {self.cfg.global_hourly} an hour in all")

    def judge(self, number: str, narrower: Iterable[str] = ()) -> Verdict:
        return judge(number, self.policy, narrower)

    async def check(self, number: str, purpose: str, *, count: bool = True, narrower: Iterable[str] = (),
                    ref: str = "", report: bool = True) -> Verdict:
        """The verdict on ``number`` for ``purpose``; ``report=False`` leaves a refusal unreported (a caller
        that checks the same number again and again reports it with ``report_refusal`` when it changes)."""
        verdict = judge(number, self.policy, narrower)
        if verdict.ok:
            try:
                reason = await self.store.outbound.admit(verdict.number, per_number=self.cfg.per_number_hourly,
                                                         global_cap=self.cfg.global_hourly, count=count)
            except (StoreError, OSError) as exc:
                log.warning("outbound %s: do-not-call list and caps unreadable (%s): refused", purpose, exc)
                reason = "unavailable"
            if reason:
                verdict = dataclasses.replace(verdict, ok=False, reason=reason)
        if not verdict.ok and report:
            await self.report_refusal(number, verdict, purpose, ref)
        return verdict

    async def report_refusal(self, raw: str, v: Verdict, purpose: str, ref: str) -> None:
        self.refused += 1
        shown = v.number or (raw or "")[:20]
        log.warning("outbound %s%s to %s refused: %s", purpose, f" {ref}" if ref else "", mask(shown), v.reason)
        if self.metrics is not None:
            self.metrics.outbound_refused.labels(purpose, v.reason).inc()
        if v.reason == "unavailable":
            return      # Redis is down: the audit log is too
        try:
            await self.store.audit("outbound-guard", "outbound.refused", shown, None,
                                   {"purpose": purpose, "reason": v.reason, **({"ref": ref} if ref else {})})
        except (StoreError, OSError) as exc:
            log.warning("outbound %s: refusal not audited (Redis: %s)", purpose, exc)
