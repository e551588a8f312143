"""panoramisk AMI protocol on top of :mod:`ivr.core.ami_frames`.

:class:`HardenedAMIProtocol` replaces panoramisk's ``data_received`` (which
splits the decoded stream on ``"\\r\\n\\r\\n"``) with :class:`AmiFrameParser`:

* ``\\r\\n`` and bare ``\\n`` line endings both work;
* an oversized frame, an over-long line or garbage is logged (at most one
  warning per second), counted in ``frame_errors`` and skipped; the frames
  after it are still delivered;
* an exception raised while handling a message (usually a bug in an event
  callback run by ``factory.dispatch``) is logged, counted in
  ``handler_errors`` and does not drop the connection;
* a ``Response: Follows`` message keeps *all* its output lines in
  ``message.content`` (joined by ``"\\n"``); panoramisk keeps only the last.

Use it with ``panoramisk.Manager(protocol_factory=HardenedAMIProtocol, ...)``.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic as _monotonic
from typing import Any
from urllib.parse import unquote

from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ..app.logutil import RateLimit
from ..core.ami_frames import AmiFrame, AmiFrameError, AmiFrameParser

__all__ = ["HardenedAMIProtocol", "frame_to_message"]

_log = logging.getLogger(__name__)

_QUOTED_KEYS = frozenset(k.lower() for k in Message.quoted_keys)


def frame_to_message(frame: AmiFrame) -> Message | None:
    """Convert a frame like panoramisk's ``Message.from_line`` does: repeated
    headers become lists, ``Result`` values are URL-unquoted and stripped, and
    frames with neither an ``Event`` nor a ``Response`` header give ``None``.
    ``content`` is all body lines joined by ``"\\n"``."""
    headers = frame.to_dict()
    kind = False
    for key, value in headers.items():
        lower = key.lower()
        if lower == "event" or lower == "response":
            kind = True
        elif lower in _QUOTED_KEYS:
            if isinstance(value, list):
                headers[key] = [unquote(v).strip() for v in value]
            else:
                headers[key] = unquote(value).strip()
    if not kind:
        return None
    return Message(headers, "\n".join(frame.body))


def _describe(message: Message) -> str:
    if "event" in message:
        return f"event {message['event']!r}"
    text = f"response {message.get('response', '')!r}"
    if "actionid" in message:
        text += f" (ActionID {message['actionid']!r})"
    return text


def _RateLimit(interval: float) -> RateLimit:
    # the clock is looked up at each call, so tests can move it (protocol._monotonic)
    return RateLimit(interval, clock=lambda: _monotonic())


class HardenedAMIProtocol(AMIProtocol):
    """``AMIProtocol`` whose framing survives malformed input and whose
    connection survives failing message handlers."""

    #: Limits passed to :class:`AmiFrameParser`; override in a subclass.
    max_frame_bytes = 256 * 1024
    max_line_bytes = 64 * 1024
    #: Minimum seconds between two warning lines of the same kind.
    log_interval = 1.0

    #: Frames rejected by the parser since the connection was made.
    frame_errors = 0
    #: Exceptions raised by ``handle_message`` since the connection was made.
    handler_errors = 0
    #: From the banner (set to None by AMIProtocol.__init__).
    version: str | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # The Manager sets ``self.encoding`` only after this; data_received
        # passes it on to the parser.
        self.parser = AmiFrameParser(
            max_frame_bytes=self.max_frame_bytes,
            max_line_bytes=self.max_line_bytes,
            encoding=getattr(self, "encoding", None) or "utf-8",
        )
        self.frame_errors = 0
        self.handler_errors = 0
        self._frame_error_limit = _RateLimit(self.log_interval)
        self._handler_error_limit = _RateLimit(self.log_interval)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        encoding = getattr(self, "encoding", None)
        if encoding and encoding != parser.encoding:
            parser.encoding = encoding
        stream = getattr(self.factory, "save_stream", None)
        if stream:  # pragma: no cover - debugging aid, as in panoramisk
            self._save_stream(stream, data)

        items = parser.feed(data)

        if self.version is None and parser.banner is not None:
            banner = parser.banner
            self.version = banner.partition("/")[2].strip() if "/" in banner else banner.strip()
            self.log.info("protocol version: '%s'", self.version)

        for item in items:
            if isinstance(item, AmiFrameError):
                self._frame_error(item)
                continue
            message = frame_to_message(item)
            if message is None:
                continue
            try:
                self.handle_message(message)
            except Exception:
                self._handler_error(message)

    def _frame_error(self, error: AmiFrameError) -> None:
        self.frame_errors += 1
        suppressed = self._frame_error_limit.allow()
        if suppressed is not None:
            _log.warning(
                "skipped malformed AMI frame: %s (%d skipped in total, %d not logged since the last warning)",
                error,
                self.frame_errors,
                suppressed,
            )

    def _handler_error(self, message: Message) -> None:
        self.handler_errors += 1
        suppressed = self._handler_error_limit.allow()
        if suppressed is not None:
            _log.exception(
                "error while handling AMI %s; connection kept (%d not logged since the last one)",
                _describe(message),
                suppressed,
            )

    def _save_stream(self, stream: Any, data: bytes) -> None:  # pragma: no cover
        try:
            if hasattr(stream, "write"):
                stream.write(data)
            else:
                with open(stream, "ab") as fd:
                    fd.write(data)
        except Exception:
            _log.debug("could not write the AMI stream to %r", stream, exc_info=True)
