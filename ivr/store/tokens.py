"""The API token record: ``{p}:tokens`` field sha256(token) -> JSON {name, role, created}.

``put_token`` is the only code that writes one. It takes either Redis client: with the asyncio client
(``Store``) it returns the awaitable write; with a blocking one (``ivr up`` registers the install's admin
token before the controller runs, see ``register_token_sync``) the write is done when it returns.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Sequence

from .keys import Keys

ROLES = ("viewer", "supervisor", "admin")


def hash_token(token: str) -> str:
    """What a token is stored and looked up by (the token itself is never stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def put_token(client: Any, keys: Keys, token: str, name: str, role: str) -> Any:
    """Write the record of ``token`` (HSET); returns what the client's ``hset`` returns (an awaitable for
    the asyncio client)."""
    if role not in ROLES:
        raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    return client.hset(keys.tokens, hash_token(token),
                       json.dumps({"name": name, "role": role, "created": time.time()}))


def register_token_sync(port: int | None, password: str, prefix: str, token: str, *, name: str = "admin",
                        role: str = "admin", host: str = "127.0.0.1", sentinels: Sequence[str] = (),
                        master_name: str = "ivr", db: int = 0) -> None:
    """Register a token with a blocking client (no event loop needed), e.g. before the controller is up: on
    the Redis at ``host:port``, or, with ``sentinels`` ("host:port"), on the primary they name for
    ``master_name`` (``port`` is then ignored)."""
    from .sync import blocking_client, close_client

    client = blocking_client(port, password=password, host=host, sentinels=sentinels, master_name=master_name,
                             db=db, socket_timeout=5, socket_connect_timeout=2)
    try:
        put_token(client, Keys(prefix), token, name, role)
    finally:
        close_client(client)
