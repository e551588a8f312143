"""Every Redis key the controller uses, in one place.

All keys start with the configured prefix (default ``ivr``) so several
deployments can share one Redis. ``{uid}`` is the Asterisk Uniqueid of the
caller's channel.

| key                       | type   | what                                                      |
|---------------------------|--------|-----------------------------------------------------------|
| {p}:call:{uid}            | hash   | call record being built (caller, menu, queue, wait, ...)  |
| {p}:calls                 | stream | finished call records (one entry per call), capped        |
| {p}:tokens                | hash   | sha256(token) -> JSON {name, role, created}               |
| {p}:streamticket:{sha}    | string | sha256(stream ticket) -> JSON {name, role}; 30 s, used once |
| {p}:banner:{lang}         | string | live crisis banner text or prompt for one language       |
| {p}:audit                 | stream | who changed what, when, old and new value                 |
| {p}:refund:seq            | string | last refund reference number (INCR)                       |
| {p}:refund:{ref}          | hash   | refund request: booking, status, caller, created, history |
| {p}:refund:booking:{b}    | string | newest refund reference for booking number b              |
| {p}:refunds               | stream | refund request events (created, decided)                  |
| {p}:refunds:in:{status}   | zset   | refund references in that status -> created time           |
| {p}:callback:seq          | string | last callback id (INCR)                                   |
| {p}:callback:{id}         | hash   | callback request: number, queue, lang, status, attempts,  |
|                           |        | promise_s, due (epoch s), made_at, kept (yes/no/none)     |
| {p}:callbacks:pending     | zset   | callback id -> the time the caller first joined (their place) |
| {p}:callbacks:leases      | zset   | callback id claimed for dialling -> when its lease runs out   |
| {p}:surveys               | stream | post-call survey answers (uid, menu, queue, agent, score) |
| {p}:dnc                   | set    | do-not-call numbers (E.164), for every call out           |
| {p}:outbound:{hour}       | string | calls out counted in that UTC hour (YYYYMMDDHH), all nodes |
| {p}:outbound:{hour}:{n}   | string | calls out to E.164 number n counted in that hour          |
"""

from __future__ import annotations


class Keys:
    """Key builder bound to one prefix."""

    def __init__(self, prefix: str = "ivr") -> None:
        self.prefix = prefix

    def call(self, uid: str) -> str:
        return f"{self.prefix}:call:{uid}"

    @property
    def calls(self) -> str:
        return f"{self.prefix}:calls"

    @property
    def tokens(self) -> str:
        return f"{self.prefix}:tokens"

    def stream_ticket(self, digest: str) -> str:
        return f"{self.prefix}:streamticket:{digest}"

    def auth_failures(self, address: str) -> str:
        return f"{self.prefix}:authfail:{address}"

    def banner(self, lang: str) -> str:
        return f"{self.prefix}:banner:{lang}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    @property
    def refund_seq(self) -> str:
        return f"{self.prefix}:refund:seq"

    def refund(self, ref: str) -> str:
        return f"{self.prefix}:refund:{ref}"

    def refund_by_booking(self, booking: str) -> str:
        return f"{self.prefix}:refund:booking:{booking}"

    @property
    def refunds(self) -> str:
        return f"{self.prefix}:refunds"

    def refunds_in(self, status: str) -> str:
        return f"{self.prefix}:refunds:in:{status}"

    @property
    def callback_seq(self) -> str:
        return f"{self.prefix}:callback:seq"

    def callback(self, cb_id: str) -> str:
        return f"{self.prefix}:callback:{cb_id}"

    @property
    def callbacks_pending(self) -> str:
        return f"{self.prefix}:callbacks:pending"

    @property
    def callbacks_leases(self) -> str:
        return f"{self.prefix}:callbacks:leases"

    @property
    def surveys(self) -> str:
        return f"{self.prefix}:surveys"

    @property
    def dnc(self) -> str:
        return f"{self.prefix}:dnc"

    def outbound_hour(self, hour: str) -> str:
        return f"{self.prefix}:outbound:{hour}"

    def outbound_number(self, hour: str, number: str) -> str:
        return f"{self.prefix}:outbound:{hour}:{number}"
