"""Blocking Redis access for the development tools (no event loop): a client, and an is-it-up check."""

from __future__ import annotations

from typing import Any, Self

import redis as redis_sync


def blocking_client(port: int, *, password: str | None = None, host: str = "127.0.0.1", **kwargs: Any) -> Any:
    """A blocking redis-py client (close it when done)."""
    return redis_sync.Redis(host=host, port=port, password=password or None, **kwargs)


class Pinger:
    """Asks one Redis whether it answers yet (a server being started)."""

    def __init__(self, port: int, *, password: str | None = None, host: str = "127.0.0.1",
                 connect_timeout: float = 0.5) -> None:
        self.client = blocking_client(port, password=password, host=host, socket_connect_timeout=connect_timeout)

    def answers(self) -> bool:
        """True once PING is answered; False while the connection is refused."""
        try:
            return bool(self.client.ping())
        except redis_sync.ConnectionError:
            return False

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def current_leader(port: int, *, password: str | None, prefix: str, host: str = "127.0.0.1") -> str:
    """The node holding the balancing leader's lease now ("" when nobody leads or Redis does not answer)."""
    from .keys import Keys

    client = blocking_client(port, password=password, host=host, socket_timeout=2, socket_connect_timeout=1)
    try:
        holder = client.get(Keys(prefix).leader)
    except redis_sync.RedisError:
        return ""
    finally:
        client.close()
    if not holder:
        return ""
    text = holder.decode() if isinstance(holder, bytes) else str(holder)
    return text.split(":", 1)[1] if ":" in text else text
