"""Late-bound references for the composition root.

A few parts need to call one built after them: the roster wakes the balancing loop after a SIP account change,
and the phone login (``*81``) wakes it too, but the balancing loop is built on the roster. Rather than patch an
attribute in after construction, the earlier part is given a ``Later`` at construction, and the composition root
``bind``s it once, explicitly, as soon as the later object exists. Calling through it before then is a wiring
bug and says so.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Later(Generic[T]):
    """A reference to an object built later, bound exactly once."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._target: T | None = None

    def bind(self, target: T) -> T:
        if self._target is not None:
            raise RuntimeError(f"{self._what} is bound already")
        self._target = target
        return target

    def get(self) -> T:
        if self._target is None:
            raise RuntimeError(f"{self._what} is used before the composition root bound it")
        return self._target
