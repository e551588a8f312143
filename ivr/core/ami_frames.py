"""Sans-IO parser for the Asterisk Manager Interface (AMI) wire format.

The stream starts with one banner line (``Asterisk Call Manager/5.0.2``,
no blank line after it).  After that it is a sequence of frames: header lines
``Key: Value`` terminated by an empty line.  ``\\r\\n`` and bare ``\\n`` line
endings are both accepted.

``Response: Follows`` frames (the ``Command`` action on old Asterisk versions)
carry a body of free-form CLI output that ends with ``--END COMMAND--``.  The
CLI output may itself contain empty lines, so once the body has started an
empty line does *not* end the frame until the ``--END COMMAND--`` marker has
been seen.  Header-looking lines before the first free-form line are headers;
everything after it (up to and including the marker line) is body.

The parser never raises from :meth:`AmiFrameParser.feed`.  A frame that is
larger than ``max_frame_bytes`` or contains a line longer than
``max_line_bytes`` is reported as an :class:`AmiFrameError` item and the
parser then discards input, without buffering it, up to the next empty line
and carries on with the frame after it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AmiFrame", "AmiFrameError", "AmiFrameParser"]

_END_COMMAND = "--END COMMAND--"
_PREVIEW = 80  # bytes of offending input shown in error messages

# States of a ``Response: Follows`` frame.
_FOLLOWS_NO = 0  # ordinary frame
_FOLLOWS_HEADERS = 1  # saw "Response: Follows", still reading headers
_FOLLOWS_BODY = 2  # in the CLI output, waiting for "--END COMMAND--"


class AmiFrameError(Exception):
    """A frame (or part of the stream) that could not be parsed.

    ``reason`` says what is wrong, ``data`` holds up to 80 bytes of the
    offending input.
    """

    def __init__(self, reason: str, data: bytes | bytearray = b"") -> None:
        preview = bytes(data[:_PREVIEW])   # a copy: the parser's buffer is reused
        super().__init__(reason, preview)
        self.reason = reason
        self.data = preview

    def __str__(self) -> str:
        return f"{self.reason}: {self.data!r}" if self.data else self.reason


@dataclass(frozen=True, slots=True)
class AmiFrame:
    """One AMI message: headers in wire order (duplicates kept) and the
    lines that were not ``Key: Value`` (the ``Response: Follows`` output)."""

    headers: list[tuple[str, str]]
    body: list[str]

    def to_dict(self) -> dict[str, str | list[str]]:
        """Headers as a dict; a repeated key (compared case-insensitively)
        becomes a list of its values in wire order, under the spelling of its
        first occurrence."""
        out: dict[str, str | list[str]] = {}
        spelling: dict[str, str] = {}
        for key, value in self.headers:
            lower = key.lower()
            first = spelling.get(lower)
            if first is None:
                spelling[lower] = key
                out[key] = value
            else:
                current = out[first]
                if isinstance(current, list):
                    current.append(value)
                else:
                    out[first] = [current, value]
        return out


class AmiFrameParser:
    """Incremental AMI parser: feed it bytes, get frames back.

    ``banner`` is the first line of the stream (e.g.
    ``"Asterisk Call Manager/5.0.2"``) once it has been seen; it is taken to be
    the first non-empty line if that line is not a ``Key: Value`` header.
    ``encoding`` may be changed between calls to :meth:`feed`.
    """

    __slots__ = (
        "max_frame_bytes",
        "max_line_bytes",
        "encoding",
        "banner",
        "_buf",
        "_headers",
        "_body",
        "_frame_bytes",
        "_follows",
        "_head",
        "_discard",
        "_midline",
        "_at_start",
    )

    def __init__(
        self,
        *,
        max_frame_bytes: int = 256 * 1024,
        max_line_bytes: int = 64 * 1024,
        encoding: str = "utf-8",
    ) -> None:
        if max_frame_bytes < 1 or max_line_bytes < 1:
            raise ValueError("max_frame_bytes and max_line_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self.max_line_bytes = max_line_bytes
        self.encoding = encoding
        self.banner: str | None = None
        # Unprocessed input.  It never holds a b"\n": complete lines are
        # consumed as soon as they arrive, so only a partial line is kept and
        # searching for the next line end can start at the old length.
        self._buf = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._body: list[str] = []
        self._frame_bytes = 0  # bytes of the current frame consumed so far
        self._follows = _FOLLOWS_NO
        self._head = b""  # start of the current frame, for error messages
        self._discard = False  # dropping input until the next empty line
        self._midline = False  # (discarding) dropped part of a non-empty line
        self._at_start = True  # no non-empty line seen yet (banner pending)

    def feed(self, data: bytes) -> list[AmiFrame | AmiFrameError]:
        """Consume ``data``; return the frames and errors it completed, in
        stream order.  Never raises."""
        out: list[AmiFrame | AmiFrameError] = []
        if not data:
            return out
        try:
            self._feed(data, out)
        except Exception as exc:  # defensive: a parser bug must not kill the connection
            out.append(AmiFrameError(f"internal parser error {exc!r}; resynchronising", bytes(self._buf[:_PREVIEW])))
            self._buf.clear()
            self._drop_frame()
            self._discard = True
            self._midline = True
        return out

    def _drop_frame(self) -> None:
        self._headers = []
        self._body = []
        self._frame_bytes = 0
        self._follows = _FOLLOWS_NO
        self._head = b""

    def _feed(self, data: bytes, out: list[AmiFrame | AmiFrameError]) -> None:
        buf = self._buf
        scan = len(buf)  # buf holds no b"\n" (see __init__)
        buf += data
        end = len(buf)
        pos = 0

        encoding = self.encoding
        max_line = self.max_line_bytes
        max_frame = self.max_frame_bytes
        headers = self._headers
        body = self._body
        frame_bytes = self._frame_bytes
        follows = self._follows
        head = self._head
        discard = self._discard
        midline = self._midline
        at_start = self._at_start
        find = buf.find

        while True:
            nl = find(b"\n", scan)
            if nl < 0:
                break
            scan = nl + 1
            stop = nl
            if stop > pos and buf[stop - 1] == 13:  # b"\r"
                stop -= 1

            if discard:
                if stop == pos and not midline:
                    discard = False  # the empty line that ends the bad frame
                midline = False
                pos = scan
                continue

            if stop == pos:  # empty line
                if follows == _FOLLOWS_BODY:
                    frame_bytes += scan - pos
                    pos = scan
                    if frame_bytes > max_frame:
                        out.append(AmiFrameError(f"frame larger than {max_frame} bytes", head))
                        headers, body, frame_bytes, follows, head = [], [], 0, _FOLLOWS_NO, b""
                        discard = True
                    else:
                        body.append("")
                    continue
                pos = scan
                if headers or body:
                    out.append(AmiFrame(headers, body))
                    headers, body, frame_bytes, follows, head = [], [], 0, _FOLLOWS_NO, b""
                continue  # an empty line at the start of a frame is skipped

            if stop - pos > max_line:
                out.append(AmiFrameError(f"line longer than {max_line} bytes", buf[pos : min(stop, pos + _PREVIEW)]))
                headers, body, frame_bytes, follows, head = [], [], 0, _FOLLOWS_NO, b""
                discard = True
                at_start = False
                pos = scan
                continue
            frame_bytes += scan - pos
            if frame_bytes > max_frame:
                out.append(AmiFrameError(f"frame larger than {max_frame} bytes", head or buf[pos : min(stop, pos + _PREVIEW)]))
                headers, body, frame_bytes, follows, head = [], [], 0, _FOLLOWS_NO, b""
                discard = True
                at_start = False
                pos = scan
                continue
            if not head:
                head = bytes(buf[pos : min(stop, pos + _PREVIEW)])
            line = buf[pos:stop].decode(encoding, "replace")
            pos = scan

            if follows == _FOLLOWS_BODY:
                body.append(line)
                if line.endswith(_END_COMMAND):
                    follows = _FOLLOWS_NO
                continue

            i = line.find(": ")
            if i > 0:
                key = line[:i]
                value = line[i + 2 :]
            elif i < 0 and len(line) > 1 and line[-1] == ":":
                key = line[:-1]  # "Key:" with an empty value
                value = ""
            else:
                key = None

            if at_start:
                at_start = False
                if key is None and not body and not headers:
                    self.banner = line
                    frame_bytes = 0
                    head = b""
                    continue

            if key is not None:
                if (
                    not headers
                    and not body
                    and key.lower() == "response"
                    and value.strip().lower() == "follows"
                ):
                    follows = _FOLLOWS_HEADERS
                headers.append((key, value))
            else:
                body.append(line)
                if follows == _FOLLOWS_HEADERS:
                    follows = _FOLLOWS_NO if line.endswith(_END_COMMAND) else _FOLLOWS_BODY

        # What is left is a partial line: enforce the limits on it now, so a
        # never-ending line is not buffered.
        pending = end - pos
        if pending:
            if discard:
                # Keep a lone b"\r" at the start of a line: it may begin the
                # b"\r\n" empty line that ends the discarding.
                if midline or pending > 1 or buf[pos] != 13:
                    midline = True
                    pos = end
            elif pending > max_line + 1:  # + 1: a trailing b"\r" is not content
                out.append(AmiFrameError(f"line longer than {max_line} bytes", buf[pos : pos + _PREVIEW]))
                headers, body, frame_bytes, follows, head = [], [], 0, _FOLLOWS_NO, b""
                discard = midline = True
                at_start = False
                pos = end
            elif frame_bytes + pending > max_frame:
                out.append(AmiFrameError(f"frame larger than {max_frame} bytes", head or buf[pos : pos + _PREVIEW]))
                headers, body, frame_bytes, follows, head = [], [], 0, _FOLLOWS_NO, b""
                discard = midline = True
                at_start = False
                pos = end

        if pos == end:
            buf.clear()
        elif pos:
            del buf[:pos]
        self._headers = headers
        self._body = body
        self._frame_bytes = frame_bytes
        self._follows = follows
        self._head = head
        self._discard = discard
        self._midline = midline
        self._at_start = at_start
