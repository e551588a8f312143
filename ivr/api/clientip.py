"""The client address the failed-login limit counts against.

Behind a reverse proxy every request comes from the proxy's address, so counting failures by the TCP peer
would lock every supervisor out after a handful of bad guesses from anyone. The proxy's header
(``api.client_ip_header``, e.g. ``X-Forwarded-For``) is believed only when the peer is one of
``api.trusted_proxies``: anyone else could write any address there. In a list the proxies append
to, the client is the rightmost address that is not itself a trusted proxy; what a client put further
left is never read.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:          # [2001:db8::1]:443
        text = text[1:text.index("]")]
    elif text.count(":") == 1:                        # 203.0.113.7:51234
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(addr, "ipv4_mapped", None)       # ::ffff:192.0.2.1 on a dual-stack socket
    return mapped if mapped is not None else addr


@dataclass(frozen=True)
class ClientAddress:
    """Resolves a request's client address from its peer and the trusted proxy's header."""

    trusted: tuple[Network, ...] = ()
    header: str = "X-Forwarded-For"

    @classmethod
    def from_config(cls, trusted_proxies: Iterable[str], header: str) -> "ClientAddress":
        """From ``api.trusted_proxies`` and ``api.client_ip_header`` (validated by ivr.app.config_load)."""
        return cls(tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies), header)

    def is_trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in net for net in self.trusted)

    def resolve(self, peer: str | None, header_value: str | None) -> str:
        """The client's address as text: the peer's, unless the peer is a trusted proxy that named one."""
        peer_addr = _address(peer or "")
        if peer_addr is None:
            return peer or "unknown"
        if not header_value or not self.is_trusted(peer_addr):
            return str(peer_addr)
        for hop in reversed(header_value.split(",")):
            addr = _address(hop)
            if addr is None:
                return str(peer_addr)     # a proxy that writes garbage: count against the proxy itself
            if not self.is_trusted(addr):
                return str(addr)
        return str(peer_addr)
