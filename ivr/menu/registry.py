"""The table of node kinds an engine runs: ``kind -> coroutine``, filled by ``register`` and handed to the
engine (``MenuEngine(..., registry=...)``). A kind registered twice is an error, never a silent replacement.

The standard kinds are registered in one place, ``nodes.default_registry()``.
"""

from __future__ import annotations

from typing import Iterator

from .context import FallbackOffer, NodeKind


class DuplicateNodeKind(ValueError):
    """A node kind (or the fallback offer) is registered twice."""


class NodeRegistry:
    """Node kinds by name, plus the callback offer the engine makes after the fallback queue's timeout."""

    def __init__(self) -> None:
        self._kinds: dict[str, NodeKind] = {}
        self._fallback: FallbackOffer | None = None

    def register(self, kind: str, handler: NodeKind) -> None:
        if not kind or not isinstance(kind, str):
            raise ValueError(f"a node kind is a non-empty name, got {kind!r}")
        if kind in self._kinds:
            raise DuplicateNodeKind(f"node kind {kind!r} is already registered ({self._kinds[kind].__qualname__})")
        self._kinds[kind] = handler

    def register_fallback(self, handler: FallbackOffer) -> None:
        if self._fallback is not None:
            raise DuplicateNodeKind(f"the fallback offer is already registered ({self._fallback.__qualname__})")
        self._fallback = handler

    def __getitem__(self, kind: str) -> NodeKind:
        try:
            return self._kinds[kind]
        except KeyError:
            raise KeyError(f"node kind {kind!r} is not registered") from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds

    def __iter__(self) -> Iterator[str]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._kinds)

    @property
    def fallback(self) -> FallbackOffer:
        if self._fallback is None:
            raise LookupError("no fallback offer is registered")
        return self._fallback
