"""Blocking Redis access for the development tools (no event loop): a client (of one Redis, or of the primary
Sentinel names), an is-it-up check, and the questions a tool starting Redis and Sentinels asks them."""

from __future__ import annotations

from typing import Any, Self, Sequence

import redis as redis_sync
from redis.sentinel import Sentinel

from .connection import SENTINEL_TIMEOUTS, parse_address


def blocking_client(port: int | None = None, *, password: str | None = None, host: str = "127.0.0.1",
                    sentinels: Sequence[str] = (), master_name: str = "ivr", **kwargs: Any) -> Any:
    """A blocking redis-py client (close it with ``close_client``): of the Redis at ``host:port``, or, with
    ``sentinels`` ("host:port"), of the primary they name for ``master_name`` (``port`` is then ignored)."""
    if sentinels:
        auth = {"password": password} if password else {}
        manager = Sentinel([parse_address(s) for s in sentinels], sentinel_kwargs={**SENTINEL_TIMEOUTS, **auth},
                           **auth)
        client = manager.master_for(master_name, **kwargs)
        client._ivr_sentinel = manager   # closed by close_client
        return client
    if port is None:
        raise ValueError("blocking_client: a port or sentinels")
    return redis_sync.Redis(host=host, port=port, password=password or None, **kwargs)


def close_client(client: Any) -> None:
    """Close a client of ``blocking_client`` and, for a Sentinel one, its connections to the Sentinels."""
    client.close()
    manager = getattr(client, "_ivr_sentinel", None)
    if manager is not None:
        for sentinel in manager.sentinels:
            sentinel.close()


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


def ask(port: int, password: str, *command: str, timeout: float = 1.0) -> Any:
    """One command to the Redis or Sentinel on 127.0.0.1:``port`` with a fresh connection (answers decoded).
    Raises ``OSError`` when it cannot be reached or answers an error (the text says which)."""
    client = redis_sync.Redis(host="127.0.0.1", port=port, password=password or None, decode_responses=True,
                              socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return client.execute_command(*command)
    except redis_sync.RedisError as exc:
        raise OSError(f"127.0.0.1:{port} {' '.join(command[:2])}: {type(exc).__name__}: {exc}") from None
    finally:
        client.close()


def replication(port: int, password: str) -> dict[str, Any]:
    """``INFO replication`` of the Redis on 127.0.0.1:``port`` (role, master_link_status, ...)."""
    info = ask(port, password, "INFO", "replication")
    return dict(info) if isinstance(info, dict) else {}


def sentinel_master(port: int, password: str, master_name: str) -> dict[str, str]:
    """What the Sentinel on 127.0.0.1:``port`` knows of ``master_name`` (``SENTINEL MASTER``: ip, port,
    flags, num-slaves, num-other-sentinels, ...), as strings."""
    raw = ask(port, password, "SENTINEL", "MASTER", master_name)
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(raw[i]): str(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}


def current_leader(port: int | None, *, password: str | None, prefix: str, host: str = "127.0.0.1",
                   sentinels: Sequence[str] = (), master_name: str = "ivr") -> str:
    """The node holding the balancing leader's lease now ("" when nobody leads or Redis does not answer): read
    from the Redis at ``host:port``, or, with ``sentinels`` ("host:port"), from the primary they name."""
    from .keys import Keys

    client = blocking_client(port, password=password, host=host, sentinels=sentinels, master_name=master_name,
                             socket_timeout=2, socket_connect_timeout=1)
    try:
        holder = client.get(Keys(prefix).leader)
    except redis_sync.RedisError:   # MasterNotFoundError too: no Sentinel names a primary
        return ""
    finally:
        close_client(client)
    if not holder:
        return ""
    text = holder.decode() if isinstance(holder, bytes) else str(holder)
    return text.split(":", 1)[1] if ":" in text else text
