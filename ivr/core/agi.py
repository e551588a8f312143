"""Sans-IO core of the Asterisk FastAGI protocol (Asterisk 16-22), in the style of h11.

Design: no sockets, clocks or asyncio here. The transport feeds received bytes to
``AgiConnection.receive_data`` (``b""`` = EOF), pulls events from ``next_event`` until
``NEED_DATA``, and writes what ``send_command`` returns. Lines are cut from one
``bytearray``, searching for the newline only from where the last search stopped
(linear even when fed byte by byte). Protocol state is an explicit ``(_State, _Input) -> _State``
table; an input missing from it is a protocol error. "Hung up" is a flag beside the
state, since Asterisk keeps answering (with 511) after ``HANGUP``. 510/520/511 replies
are returned as exception instances; only malformed input raises, and then sticks.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Union, overload
from urllib.parse import parse_qsl

__all__ = [
    "AgiError", "AgiProtocolError", "AgiHangup", "AgiCommandError", "AgiEnvironment",
    "AgiReply", "HangupNotice", "Event", "Sentinel", "NEED_DATA", "EOF", "MAX_COMMAND_BYTES",
    "parse_reply_line", "quote_arg", "format_command", "AgiConnection",
]

#: res_agi.c reads each command with fgets() into a 2048-byte buffer; longer
#: lines are silently split into two commands, so we refuse to produce them.
MAX_COMMAND_BYTES: Final = 2047
_MAX_WORDS: Final = 127  # res_agi.c MAX_ARGS (128) includes the NULL terminator
_USAGE_END: Final = "520 End of proper usage."

_VERB_RE: Final = re.compile(r"[A-Z]+(?: [A-Z]+)*")
_INT_RE: Final = re.compile(r"-?[0-9]+")
_ENV_KEY_RE: Final = re.compile(r"agi_\w+", re.ASCII)
_UNPRINTABLE_RE: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufffd]")
_EXTRA_RE: Final = re.compile(r'([^\s="()]+)=("[^"]*"|[^\s"]*)(?:\s+|$)')


def _show(data: bytes | bytearray | str, limit: int = 60) -> str:
    """Short repr of offending input for error messages."""
    head = bytes(data[:limit]) if isinstance(data, bytearray) else data[:limit]
    return repr(head) + ("..." if len(data) > limit else "")


class AgiError(Exception):
    """Base class of all AGI errors."""


class AgiProtocolError(AgiError):
    """Asterisk sent malformed, truncated or oversized data."""


class AgiHangup(AgiError):
    """The channel hung up (``HANGUP`` line, 511 reply or negative digit result)."""


class AgiCommandError(AgiError):
    """Asterisk rejected a command (510 unknown, 520 bad syntax, other 5xx); ``usage`` for 520."""

    def __init__(self, code: int, text: str, usage: tuple[str, ...] = ()) -> None:
        super().__init__("\n".join((f"{code} {text}", *usage)))
        self.code = code
        self.text = text
        self.usage = usage


class _EnvVar:
    """Read-only ``str`` attribute mirroring ``variables[<attribute name>]`` ("" if absent)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    @overload
    def __get__(self, env: None, owner: type) -> _EnvVar: ...
    @overload
    def __get__(self, env: AgiEnvironment, owner: type | None = None) -> str: ...
    def __get__(self, env: AgiEnvironment | None, owner: type | None = None) -> _EnvVar | str:
        return self if env is None else env.variables.get(self.key, "")


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The ``agi_*`` block sent on connect; ``variables`` keys have no ``agi_`` prefix.

    ``args`` holds ``agi_arg_1``, ``agi_arg_2``... in numeric order. The attributes
    ``network_script`` (path after ``host:port/``; Asterisk includes any ``?query``),
    ``request``, ``channel``, ``uniqueid``, ``callerid``, ``calleridname``, ``language``,
    ``context`` and ``extension`` read the variable of that name, "" if absent.
    """

    variables: Mapping[str, str]
    args: tuple[str, ...] = ()

    network_script = _EnvVar()
    request = _EnvVar()
    channel = _EnvVar()
    uniqueid = _EnvVar()
    callerid = _EnvVar()
    calleridname = _EnvVar()
    language = _EnvVar()
    context = _EnvVar()
    extension = _EnvVar()

    @property
    def query(self) -> dict[str, str]:
        """Query string of ``agi_request`` as a dict (last value wins, blanks kept)."""
        return dict(parse_qsl(self.request.partition("?")[2], keep_blank_values=True))


@dataclass(frozen=True, slots=True)
class AgiReply:
    """A successful ``200 result=...`` reply."""

    code: int
    result: str  # raw text after "result=", may be "" (GET DATA timeout without digits)
    data: str | None = None  # text inside the parentheses
    extra: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def result_int(self) -> int:
        """``result`` as an int; :class:`AgiProtocolError` if it is not an integer."""
        if _INT_RE.fullmatch(self.result) is None:
            raise AgiProtocolError(f"result is not an integer: {_show(self.result)}")
        return int(self.result)

    @property
    def digit(self) -> str | None:
        """Digit pressed (STREAM FILE, WAIT FOR DIGIT, ...): None for result 0.

        Raises :class:`AgiHangup` for a negative result (hangup, but also e.g. a
        missing sound file: check ``result_int`` first to tell those apart).
        """
        value = self.result_int
        if value == 0:
            return None
        if value < 0:
            raise AgiHangup(f"result={value}: channel hung up or command failed")
        if value > 0x10FFFF:
            raise AgiProtocolError(f"result is not a character code: {_show(self.result)}")
        return chr(value)


@dataclass(frozen=True, slots=True)
class HangupNotice:
    """Asterisk sent a ``HANGUP`` line: the channel is gone."""


class Sentinel(enum.Enum):
    """Non-event results of :meth:`AgiConnection.next_event`."""

    NEED_DATA = "NEED_DATA"
    EOF = "EOF"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = Sentinel.NEED_DATA
EOF: Final = Sentinel.EOF
Event = Union[AgiEnvironment, AgiReply, HangupNotice, AgiCommandError, AgiHangup]


def _parse_reply(line: str) -> AgiReply | AgiCommandError | AgiHangup:
    if line.startswith("200 result="):
        result, _, rest = line[11:].partition(" ")
        rest = rest.strip(" ")
        data = None
        if rest.startswith("("):
            end = rest.rfind(")")  # data may contain ")"; the extras never do
            if end < 0:
                raise AgiProtocolError(f"unterminated '(' in reply line {_show(line)}")
            data, rest = rest[1:end], rest[end + 1:].lstrip(" ")
        extra: dict[str, str] = {}
        pos = 0
        while pos < len(rest):
            m = _EXTRA_RE.match(rest, pos)
            if m is None:  # free text such as "Gosub complete": kept, not an error
                extra["text"] = rest[pos:].strip()
                break
            value = m[2]
            extra[m[1]] = value[1:-1] if value.startswith('"') else value
            pos = m.end()
        return AgiReply(200, result, data, MappingProxyType(extra))
    code = line[:3]
    if len(code) == 3 and code.isascii() and code.isdigit() and line[3:4] in ("", " ", "-"):
        if code == "511":
            return AgiHangup(line)
        if code[0] == "5":
            return AgiCommandError(int(code), line[4:])
    raise AgiProtocolError(f"bad reply line {_show(line)}")


def parse_reply_line(line: str) -> AgiReply:
    """Parse one reply line (without line ending) such as ``200 result=1 (en)``.

    Raises :class:`AgiHangup` for 511, :class:`AgiCommandError` for other 5xx
    codes and :class:`AgiProtocolError` for anything malformed.
    """
    reply = _parse_reply(line)
    if isinstance(reply, AgiError):
        raise reply
    return reply


def quote_arg(value: str) -> str:
    """Quote one AGI argument: wrap in ``"``, backslash-escape ``\\`` and ``"``.

    Raises :class:`ValueError` for CR, LF or NUL, which cannot be transmitted.
    """
    for char, name in (("\n", "LF"), ("\r", "CR"), ("\0", "NUL")):
        if char in value:
            raise ValueError(f"AGI argument contains {name}, which cannot be sent: {_show(value)}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(*words: str, raw_first: bool = True) -> bytes:
    """Encode one command line, e.g. ``format_command("STREAM FILE", "hello", "#")``.

    With ``raw_first`` the first word is the verb (one or more words of
    ``A-Z`` separated by single spaces) and is written unquoted; every other
    word is quoted with :func:`quote_arg`. Raises :class:`ValueError` for a bad
    verb, a bad argument, more than 127 words or more than 2047 bytes.
    """
    if not words:
        raise ValueError("empty AGI command")
    parts = [quote_arg(w) for w in words[1 if raw_first else 0:]]
    count = len(parts)
    if raw_first:
        verb = words[0]
        if _VERB_RE.fullmatch(verb) is None:
            raise ValueError(f"invalid AGI verb {verb!r:.60}: only A-Z and single spaces allowed")
        parts.insert(0, verb)
        count += verb.count(" ") + 1
    if count > _MAX_WORDS:
        raise ValueError(f"AGI command has {count} words; Asterisk accepts at most {_MAX_WORDS}")
    data = (" ".join(parts) + "\n").encode("utf-8")
    if len(data) > MAX_COMMAND_BYTES:
        raise ValueError(f"AGI command is {len(data)} bytes; limit is {MAX_COMMAND_BYTES}")
    return data


# Protocol state; "hung up" is a separate flag (see the module comment).
_State = enum.Enum("_State", "ENV IDLE AWAITING USAGE CLOSED ERROR")
_Input = enum.Enum(
    "_Input", "ENV_LINE ENV_END SEND REPLY USAGE_START USAGE_LINE USAGE_END HANGUP EOF")
_S, _I = _State, _Input
_TRANSITIONS: Final[Mapping[tuple[_State, _Input], _State]] = {
    (_S.ENV, _I.ENV_LINE): _S.ENV, (_S.ENV, _I.ENV_END): _S.IDLE, (_S.ENV, _I.EOF): _S.CLOSED,
    (_S.IDLE, _I.SEND): _S.AWAITING, (_S.IDLE, _I.HANGUP): _S.IDLE, (_S.IDLE, _I.EOF): _S.CLOSED,
    (_S.AWAITING, _I.REPLY): _S.IDLE, (_S.AWAITING, _I.USAGE_START): _S.USAGE,
    (_S.AWAITING, _I.HANGUP): _S.AWAITING, (_S.AWAITING, _I.EOF): _S.CLOSED,
    (_S.USAGE, _I.USAGE_LINE): _S.USAGE, (_S.USAGE, _I.USAGE_END): _S.IDLE,
    (_S.CLOSED, _I.EOF): _S.CLOSED,
}


class AgiConnection:
    """One FastAGI session, seen from the FastAGI server (our) side.

    Feed bytes with :meth:`receive_data`, then call :meth:`next_event` until it
    returns ``NEED_DATA``. Events: :class:`AgiEnvironment` (once, first),
    :class:`AgiReply`, :class:`HangupNotice`, and :class:`AgiCommandError` /
    :class:`AgiHangup` *instances* for 5xx/511 replies; ``EOF`` after a clean close.
    """

    def __init__(self, *, max_line: int = 8192, max_env_lines: int = 256,
                 max_usage_lines: int = 64) -> None:
        self._max_line, self._max_env_lines = max_line, max_env_lines
        self._max_usage_lines = max_usage_lines
        self._buf = bytearray()
        self._scan = 0  # bytes at the start of _buf already known to hold no b"\n"
        self._state, self._failure = _State.ENV, ""
        self._eof = self._hung_up = False
        self._env: dict[str, str] = {}
        self._env_last: str | None = None
        self.env_repeats = 0          # agi_<name> lines seen twice (a value carried a line break)
        self._env_lines = 0
        self._usage_head = ""
        self._usage: list[str] = []
        self.environment: AgiEnvironment | None = None

    @property
    def hung_up(self) -> bool:
        """True after a ``HANGUP`` line or a 511 reply."""
        return self._hung_up

    @property
    def closed(self) -> bool:
        """True once EOF was received (events may still be buffered)."""
        return self._eof

    @property
    def awaiting_reply(self) -> bool:
        """True between :meth:`send_command` and the end of its reply."""
        return self._state in (_State.AWAITING, _State.USAGE)

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes received from Asterisk; ``b""`` signals EOF."""
        if self._eof:
            raise AgiError("receive_data() called after EOF")
        if data:
            self._buf += data
        else:
            self._eof = True

    def send_command(self, *words: str) -> bytes:
        """Return the bytes for one command (see :func:`format_command`) and await its reply."""
        if self._state is _State.ERROR:
            raise AgiError(f"connection failed earlier: {self._failure}")
        if self._eof or self._hung_up:
            raise AgiHangup("connection closed" if self._eof else "channel hung up")
        if self._state is not _State.IDLE:
            why = "before the environment" if self._state is _State.ENV else "awaiting a reply"
            raise AgiError(f"cannot send a command {why}")
        data = format_command(*words)
        self._transition(_Input.SEND)
        return data

    def next_event(self) -> Event | Sentinel:
        """Return the next event, ``NEED_DATA`` or ``EOF``.

        Raises :class:`AgiProtocolError` on malformed, oversized or truncated
        input; the connection is then failed and every later call raises too.
        """
        if self._state is _State.ERROR:
            raise AgiProtocolError(f"connection failed earlier: {self._failure}")
        try:
            if self._state is _State.ENV:
                env = self._env_block()
                if env is not None:
                    return env
            while True:
                line = self._next_line()
                if line is None:
                    return self._end_of_buffer()
                event = self._handle_line(line)
                if event is not None:
                    return event
        except AgiProtocolError as exc:
            self._state, self._failure = _State.ERROR, str(exc)
            raise

    def _transition(self, inp: _Input, line: str = "") -> None:
        try:
            self._state = _TRANSITIONS[self._state, inp]
        except KeyError:
            msg = f"unexpected {inp.name} in state {self._state.name}: {_show(line)}"
            raise AgiProtocolError(msg) from None

    def _next_line(self) -> str | None:
        buf = self._buf
        end = buf.find(b"\n", self._scan)
        if end < 0:
            self._scan = len(buf)
            if len(buf) > self._max_line + 1:  # +1: room for a "\r" before the "\n"
                raise AgiProtocolError(f"line longer than {self._max_line} bytes: {_show(buf)}")
            return None
        stop = end - 1 if end and buf[end - 1] == 13 else end
        if stop > self._max_line:
            raise AgiProtocolError(f"line longer than {self._max_line} bytes: {_show(buf[:stop])}")
        line = buf[:stop].decode("utf-8", "replace")
        del buf[:end + 1]  # CPython deletes a bytearray prefix in O(1)
        self._scan = 0
        return line

    def _end_of_buffer(self) -> Sentinel:
        if not self._eof:
            return NEED_DATA
        if self._buf:
            raise AgiProtocolError(f"truncated line at EOF: {_show(self._buf)}")
        if self._state is _State.USAGE or (self._state is _State.ENV and self._env_lines):
            raise AgiProtocolError(f"truncated input: EOF in state {self._state.name}")
        self._transition(_Input.EOF)
        return EOF

    def _handle_line(self, line: str) -> Event | None:
        state = self._state
        if state is _State.ENV:
            return self._env_line(line)
        if state is _State.USAGE:
            return self._usage_line(line)
        if line == "HANGUP":
            self._transition(_Input.HANGUP, line)
            self._hung_up = True
            return HangupNotice()
        if line.startswith("520-"):
            self._transition(_Input.USAGE_START, line)
            self._usage_head, self._usage = line[4:], []
            return None
        if line.startswith("100 "):  # interim "100 result=0 Trying..." (GOSUB): the real reply follows
            return None
        self._transition(_Input.REPLY, line)
        reply = _parse_reply(line)
        if isinstance(reply, AgiHangup):
            self._hung_up = True
        return reply

    def _env_block(self) -> AgiEnvironment | None:
        """The environment lines already here, all at once: one search and one decode for the lot instead
        of one each (the same lines, the same checks, the same result as line by line); the environment
        once its blank line is among them. Anything unusual (a CR, more than a line's length at once, a
        blank first line) is left to the line-by-line path."""
        buf = self._buf
        end = buf.find(b"\n\n")
        stop = end if end >= 0 else buf.rfind(b"\n")
        if stop <= 0 or buf[0] == 10 or stop > self._max_line or buf.find(b"\r", 0, stop) >= 0:
            return None
        text = buf[:stop].decode("utf-8", "replace")
        del buf[:stop + (2 if end >= 0 else 1)]
        self._scan = 0
        for line in text.split("\n"):
            self._env_line(line)
        return self._env_line("") if end >= 0 else None

    def _env_line(self, line: str) -> AgiEnvironment | None:
        if not line:
            self._transition(_Input.ENV_END)
            args = sorted((int(k[4:]), v) for k, v in self._env.items()
                          if k.startswith("arg_") and k[4:].isdigit())
            env = AgiEnvironment(MappingProxyType(self._env), tuple(v for _, v in args))
            self.environment = env
            return env
        self._env_lines += 1            # (ENV_LINE keeps the state ENV: no table look-up per line)
        if self._env_lines > self._max_env_lines:
            raise AgiProtocolError(f"more than {self._max_env_lines} environment lines")
        key, sep, value = line.partition(": ")
        if not sep or _ENV_KEY_RE.fullmatch(key) is None:
            # a value with a line break in it (a caller ID can carry one): printable text after a first
            # agi_<name> line belongs to the value before; anything else is not an AGI environment at all
            if self._env_last is None or _UNPRINTABLE_RE.search(line):
                if not sep:
                    raise AgiProtocolError(f"environment line without ': ': {_show(line)}")
                raise AgiProtocolError(f"environment key is not agi_<name>: {_show(line)}")
            self._env[self._env_last] += "\n" + line
            return None
        name = key[4:]
        if name in self._env and self._env_last is not None:
            # a second agi_<name> can only come from a value with a line break: the first one stands, the
            # line stays part of the value it came in
            self.env_repeats += 1
            self._env[self._env_last] += "\n" + line
            return None
        self._env[name] = value
        self._env_last = name
        return None

    def _usage_line(self, line: str) -> AgiCommandError | None:
        if line.startswith("520 ") or line.endswith(_USAGE_END):
            if not line.startswith("520 "):  # usage text did not end in "\n"
                self._usage.append(line[:-len(_USAGE_END)])
            self._transition(_Input.USAGE_END, line)
            return AgiCommandError(520, self._usage_head, tuple(self._usage))
        if len(self._usage) >= self._max_usage_lines:
            raise AgiProtocolError(f"more than {self._max_usage_lines} lines in 520 usage reply")
        self._transition(_Input.USAGE_LINE, line)
        self._usage.append(line)
        return None
