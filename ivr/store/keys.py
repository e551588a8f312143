"""Every Redis key the controller uses, in one place.

All keys start with the configured prefix (default ``ivr``) so several
deployments can share one Redis. ``{uid}`` is the Asterisk Uniqueid of the
caller's channel.

| key                       | type   | what                                                      |
|---------------------------|--------|-----------------------------------------------------------|
| {p}:call:{uid}            | hash   | call record being built (caller, menu, queue, wait, ...)  |
| {p}:calls                 | stream | finished call records (one entry per call), capped        |
| {p}:tokens                | hash   | sha256(token) -> JSON {name, role, created}               |
| {p}:banner:{lang}         | string | live crisis banner text or prompt for one language       |
| {p}:audit                 | stream | who changed what, when, old and new value                 |
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

    def banner(self, lang: str) -> str:
        return f"{self.prefix}:banner:{lang}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"
