"""Tests for the sans-IO FastAGI core (ivr.core.agi): bytes in, events out."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.core.agi import (
    EOF,
    MAX_COMMAND_BYTES,
    NEED_DATA,
    AgiCommandError,
    AgiConnection,
    AgiEnvironment,
    AgiError,
    AgiHangup,
    AgiProtocolError,
    AgiReply,
    HangupNotice,
    format_command,
    parse_reply_line,
    quote_arg,
)

ENV = (
    b"agi_network: yes\n"
    b"agi_network_script: menu/main\n"
    b"agi_request: agi://127.0.0.1:4573/menu/main?x=1&lang=fr&empty=\n"
    b"agi_channel: PJSIP/trunk-00000001\n"
    b"agi_language: en\n"
    b"agi_type: PJSIP\n"
    b"agi_uniqueid: 1700000000.12\n"
    b"agi_version: 20.5.0\n"
    b"agi_callerid: 5551234\n"
    b"agi_calleridname: Jane Doe\n"
    b"agi_context: ivr-inbound\n"
    b"agi_extension: 100\n"
    b"agi_priority: 1\n"
    b"agi_enhanced: 0.0\n"
    b"agi_accountcode: \n"
    b"agi_threadid: 139872331\n"
    b"agi_arg_1: foo\n"
    b"agi_arg_2: bar baz\n"
    b"\n"
)


def connect(env: bytes = ENV, **limits: int) -> AgiConnection:
    """A connection that has consumed `env` and returned its AgiEnvironment."""
    conn = AgiConnection(**limits)
    conn.receive_data(env)
    assert isinstance(conn.next_event(), AgiEnvironment)
    return conn


def reply_to(conn: AgiConnection, data: bytes, *command: str) -> Any:
    conn.send_command(*(command or ("NOOP",)))
    conn.receive_data(data)
    return conn.next_event()


# --- environment -------------------------------------------------------------

def test_environment_variables_and_properties() -> None:
    conn = AgiConnection()
    conn.receive_data(ENV)
    env = conn.next_event()
    assert isinstance(env, AgiEnvironment) and conn.environment is env
    assert env.variables["network"] == "yes" and "agi_network" not in env.variables
    assert env.network_script == "menu/main"
    assert env.request == "agi://127.0.0.1:4573/menu/main?x=1&lang=fr&empty="
    assert (env.channel, env.uniqueid, env.language) == ("PJSIP/trunk-00000001", "1700000000.12", "en")
    assert (env.callerid, env.calleridname) == ("5551234", "Jane Doe")
    assert (env.context, env.extension) == ("ivr-inbound", "100")
    assert env.variables["accountcode"] == "" and env.variables["enhanced"] == "0.0"
    assert env.args == ("foo", "bar baz")
    assert env.query == {"x": "1", "lang": "fr", "empty": ""}
    assert conn.next_event() is NEED_DATA and not conn.awaiting_reply


def test_environment_args_are_ordered_numerically() -> None:
    lines = b"".join(b"agi_arg_%d: a%d\n" % (i, i) for i in (10, 2, 1, 11, 3, 4, 5, 6, 7, 8, 9))
    env = connect(b"agi_network: yes\n" + lines + b"\n").environment
    assert env is not None and env.args == tuple(f"a{i}" for i in range(1, 12))


def test_environment_defaults_when_keys_absent() -> None:
    env = connect(b"agi_network: yes\n\n").environment
    assert env is not None
    assert (env.network_script, env.request, env.channel, env.callerid) == ("", "", "", "")
    assert env.args == () and env.query == {}


def test_environment_crlf_and_values_containing_colons() -> None:
    env = connect(b"agi_calleridname: Dr: Who\r\nagi_accountcode: \r\nagi_context: a b\r\n\r\n").environment
    assert env is not None
    assert env.calleridname == "Dr: Who" and env.variables["accountcode"] == "" and env.context == "a b"


def test_environment_is_immutable() -> None:
    env = connect().environment
    assert env is not None
    with pytest.raises(TypeError):
        env.variables["channel"] = "x"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.args = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "without ': '"),
        (b"Host: example.com\r\n", "not agi_"),
        (b"agi_: empty name\n", "not agi_"),
        (b"agi_bad key: x\n", "not agi_"),
    ],
)
def test_environment_rejects_non_agi_lines(data: bytes, reason: str) -> None:
    conn = AgiConnection()
    conn.receive_data(data)
    with pytest.raises(AgiProtocolError, match=reason) as info:
        conn.next_event()
    assert repr(data.rstrip(b"\r\n").decode())[:20] in str(info.value)


def test_environment_line_limit() -> None:
    conn = AgiConnection(max_env_lines=3)
    conn.receive_data(b"agi_a: 1\nagi_b: 2\nagi_c: 3\n\n")
    assert isinstance(conn.next_event(), AgiEnvironment)
    conn = AgiConnection(max_env_lines=3)
    conn.receive_data(b"agi_a: 1\nagi_b: 2\nagi_c: 3\nagi_d: 4\n\n")
    with pytest.raises(AgiProtocolError, match="more than 3 environment lines"):
        conn.next_event()


def test_environment_invalid_utf8_is_replaced() -> None:
    env = connect(b"agi_calleridname: Jos\xe9 \xff\n\n").environment
    assert env is not None and env.calleridname == "Jos\ufffd \ufffd"


# --- reply lines ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "result", "data", "extra"),
    [
        ("200 result=0", "0", None, {}),
        ("200 result=49", "49", None, {}),
        ("200 result=1 (en)", "1", "en", {}),
        ("200 result=0 endpos=12345", "0", None, {"endpos": "12345"}),
        ("200 result=1 (some value with spaces)", "1", "some value with spaces", {}),
        ("200 result=-1", "-1", None, {}),
        ("200 result= (timeout)", "", "timeout", {}),  # GET DATA, no digits entered
        ("200 result=1 (f(x) = y) )", "1", "f(x) = y) ", {}),  # GET VARIABLE value with parens
        ("200 result=35 (dtmf) endpos=8000", "35", "dtmf", {"endpos": "8000"}),
        ('200 result=1 (speech) endpos=0 results=1 score0=912 text0="main menu" grammar0=g',
         "1", "speech", {"endpos": "0", "results": "1", "score0": "912", "text0": "main menu",
                         "grammar0": "g"}),
    ],
)
def test_parse_valid_replies(line: str, result: str, data: str | None, extra: dict[str, str]) -> None:
    reply = parse_reply_line(line)
    assert (reply.code, reply.result, reply.data, dict(reply.extra)) == (200, result, data, extra)


def test_result_int_is_strict() -> None:
    assert parse_reply_line("200 result=-1").result_int == -1
    assert parse_reply_line("200 result=12345").result_int == 12345
    for bad in ("", "12*", "1_0", "+1", "\u0663", "0x1", "1.0"):
        with pytest.raises(AgiProtocolError, match="not an integer"):
            _ = AgiReply(200, bad).result_int


def test_digit_maps_result_to_character() -> None:
    assert [AgiReply(200, r).digit for r in ("49", "35", "42", "65", "0")] == ["1", "#", "*", "A", None]
    with pytest.raises(AgiHangup):
        _ = AgiReply(200, "-1").digit
    with pytest.raises(AgiProtocolError):
        _ = AgiReply(200, "99999999").digit


def test_parse_reply_line_raises_for_error_codes() -> None:
    with pytest.raises(AgiCommandError) as info:
        parse_reply_line("510 Invalid or unknown command")
    assert (info.value.code, info.value.text) == (510, "Invalid or unknown command")
    with pytest.raises(AgiCommandError) as info:
        parse_reply_line("520 Invalid command syntax.  Proper usage not available.")
    assert info.value.code == 520
    with pytest.raises(AgiHangup, match="511"):
        parse_reply_line("511 Command Not Permitted on a dead channel or intercept routine")


@pytest.mark.parametrize(
    "line",
    ["", "200", "200 result", "200 foo=1", "hello", "999 what", "100 continue",
     "200 result=1 (unterminated", "2OO result=0"],
)
def test_parse_malformed_replies(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        parse_reply_line(line)


def test_protocol_error_message_is_short_and_shows_input() -> None:
    with pytest.raises(AgiProtocolError) as info:
        parse_reply_line("XYZZY" + "z" * 5000)
    message = str(info.value)
    assert "'XYZZY" in message and message.endswith("...") and len(message) < 150


# --- command encoding ------------------------------------------------------------

def test_quote_arg_escapes_backslash_and_quote() -> None:
    assert quote_arg('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    assert quote_arg("") == '""'
    assert quote_arg("tab\there é") == '"tab\there é"'


def test_quote_arg_rejects_unsendable_characters() -> None:
    for char, name in (("\r", "CR"), ("\n", "LF"), ("\0", "NUL")):
        with pytest.raises(ValueError, match=name):
            quote_arg(f"a{char}b")


def test_format_command() -> None:
    assert format_command("STREAM FILE", "hello", "0123456789*#") == b'STREAM FILE "hello" "0123456789*#"\n'
    assert format_command("ANSWER") == b"ANSWER\n"
    assert format_command("SET VARIABLE", "NAME", "Zoë") == 'SET VARIABLE "NAME" "Zoë"\n'.encode()
    assert format_command("GET", "DATA", raw_first=False) == b'"GET" "DATA"\n'


def test_format_command_rejects_bad_input() -> None:
    for verb in ("stream file", "STREAM  FILE", "", " NOOP", "NOOP ", "EXEC;rm", "NOOP\n"):
        with pytest.raises(ValueError, match="invalid AGI verb"):
            format_command(verb)
    with pytest.raises(ValueError):
        format_command()
    with pytest.raises(ValueError, match="LF"):
        format_command("VERBOSE", "line1\nEXEC System reboot")
    with pytest.raises(ValueError):
        format_command("VERBOSE", "\udc80")  # lone surrogate cannot be UTF-8 encoded


def test_format_command_respects_asterisk_limits() -> None:
    # res_agi.c splits longer lines into two commands, which would allow injection.
    fits = "x" * (MAX_COMMAND_BYTES - len(b'VERBOSE ""\n'))
    assert len(format_command("VERBOSE", fits)) == MAX_COMMAND_BYTES
    with pytest.raises(ValueError, match="bytes"):
        format_command("VERBOSE", fits + "x")
    assert format_command("EXEC", *["a"] * 126)  # 127 words: the most Asterisk parses
    with pytest.raises(ValueError, match="words"):
        format_command("EXEC", *["a"] * 127)


def asterisk_parse_args(line: str) -> list[str]:
    """Python transcription of parse_args() in Asterisk's res/res_agi.c."""
    argv: list[list[str]] = []
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                argv.append([])
                whitespace = False
        elif ch in " \t" and not quoted and not escaped:
            whitespace = True
        elif ch == "\\" and not escaped:
            escaped = True
        else:
            if whitespace:
                argv.append([])
                whitespace = False
            argv[-1].append(ch)
            escaped = False
    return ["".join(arg) for arg in argv]


@given(
    verb=st.sampled_from(["NOOP", "STREAM FILE", "SET VARIABLE", "DATABASE PUT"]),
    args=st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=40),
                  max_size=6),
)
def test_quoting_round_trips_through_asterisk_parser(verb: str, args: list[str]) -> None:
    line = format_command(verb, *args)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert asterisk_parse_args(line[:-1].decode()) == verb.split() + args


# --- connection state machine ------------------------------------------------------

def test_full_session() -> None:
    conn = connect()
    data = conn.send_command("STREAM FILE", "hello", "0123456789*#")
    assert data == b'STREAM FILE "hello" "0123456789*#"\n'
    assert conn.awaiting_reply
    conn.receive_data(b"200 result=49 endpos=12345\r\n")
    reply = conn.next_event()
    assert isinstance(reply, AgiReply) and reply.digit == "1" and reply.extra["endpos"] == "12345"
    assert not conn.awaiting_reply and conn.next_event() is NEED_DATA
    conn.receive_data(b"HANGUP\n")
    assert conn.next_event() == HangupNotice() and conn.hung_up
    conn.receive_data(b"")
    assert conn.next_event() is EOF and conn.closed


def test_partial_reply_needs_more_data() -> None:
    conn = connect()
    conn.send_command("ANSWER")
    conn.receive_data(b"200 res")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"ult=0\r")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\n")
    assert conn.next_event() == AgiReply(200, "0")


def test_send_command_before_environment_is_refused() -> None:
    conn = AgiConnection()
    conn.receive_data(b"agi_network: yes\n")
    with pytest.raises(AgiError, match="before the environment"):
        conn.send_command("NOOP")


def test_send_command_while_awaiting_reply_is_refused() -> None:
    conn = connect()
    conn.send_command("ANSWER")
    with pytest.raises(AgiError, match="awaiting a reply") as info:
        conn.send_command("NOOP")
    assert not isinstance(info.value, AgiHangup)


def test_510_is_returned_and_session_continues() -> None:
    conn = connect()
    event = reply_to(conn, b"510 Invalid or unknown command\n", "FOO")
    assert isinstance(event, AgiCommandError)
    assert (event.code, event.text) == (510, "Invalid or unknown command")
    assert reply_to(conn, b"200 result=0\n") == AgiReply(200, "0")


def test_520_usage_block_is_a_single_event() -> None:
    conn = connect()
    conn.send_command("STREAM FILE")
    conn.receive_data(b"520-Invalid command syntax.  Proper usage follows:\n"
                      b" Usage: STREAM FILE <filename> <escape digits> [sample offset]\n"
                      b"\n"
                      b"  Send the given file.\n"
                      b"520 End of proper usage.\n")
    event = conn.next_event()
    assert isinstance(event, AgiCommandError) and event.code == 520
    assert event.text == "Invalid command syntax.  Proper usage follows:"
    assert event.usage == (" Usage: STREAM FILE <filename> <escape digits> [sample offset]", "",
                           "  Send the given file.")
    assert not conn.awaiting_reply and conn.next_event() is NEED_DATA


def test_520_usage_without_final_newline() -> None:
    # res_agi.c sends the usage text with "%s": it may not end in "\n".
    conn = connect()
    event = reply_to(conn, b"520-Invalid command syntax.  Proper usage follows:\n"
                           b"Usage: GET DATA <file>520 End of proper usage.\n")
    assert isinstance(event, AgiCommandError) and event.usage == ("Usage: GET DATA <file>",)
    assert not conn.awaiting_reply


def test_usage_block_limit() -> None:
    conn = connect(max_usage_lines=2)
    with pytest.raises(AgiProtocolError, match="more than 2 lines"):
        reply_to(conn, b"520-Invalid\na\nb\nc\n520 End of proper usage.\n")


def test_511_is_returned_as_hangup_and_blocks_commands() -> None:
    conn = connect()
    event = reply_to(conn, b"511 Command Not Permitted on a dead channel or intercept routine\n")
    assert isinstance(event, AgiHangup) and "511" in str(event)
    assert conn.hung_up and not conn.awaiting_reply
    with pytest.raises(AgiHangup):
        conn.send_command("NOOP")


def test_hangup_before_reply_still_delivers_reply() -> None:
    conn = connect()
    conn.send_command("WAIT FOR DIGIT", "5000")
    conn.receive_data(b"HANGUP\n200 result=-1\n")
    assert isinstance(conn.next_event(), HangupNotice)
    assert conn.hung_up and conn.awaiting_reply
    reply = conn.next_event()
    assert isinstance(reply, AgiReply) and reply.result_int == -1
    with pytest.raises(AgiHangup):
        conn.send_command("NOOP")


def test_unsolicited_reply_is_protocol_error() -> None:
    conn = connect()
    conn.receive_data(b"200 result=0\n")
    with pytest.raises(AgiProtocolError, match="REPLY in state IDLE"):
        conn.next_event()


def test_line_length_limit_boundary() -> None:
    for eol in (b"\n", b"\r\n"):
        conn = connect(b"agi_network: yes\n\n", max_line=20)
        assert reply_to(conn, b"200 result=1 (" + b"x" * 5 + b")" + eol) == AgiReply(200, "1", "xxxxx")
        conn = connect(b"agi_network: yes\n\n", max_line=20)
        with pytest.raises(AgiProtocolError, match=r"longer than 20 bytes: b'200 result=1 \(x{6}\)'$"):
            reply_to(conn, b"200 result=1 (" + b"x" * 6 + b")" + eol + b"200 result=0\n")


def test_oversized_line_rejected_before_newline_arrives() -> None:
    conn = connect(max_line=100)
    conn.send_command("NOOP")
    conn.receive_data(b"200 result=1 (")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"A" * 200)
    with pytest.raises(AgiProtocolError, match=r"longer than 100 bytes: b'200 result=1 \(AAA"):
        conn.next_event()


def test_eof_with_partial_line_is_truncation() -> None:
    conn = connect()
    conn.send_command("NOOP")
    conn.receive_data(b"200 result=")
    conn.receive_data(b"")
    with pytest.raises(AgiProtocolError, match="truncated line at EOF: b'200 result='"):
        conn.next_event()


def test_eof_inside_multiline_block_is_truncation() -> None:
    conn = AgiConnection()
    conn.receive_data(b"agi_network: yes\nagi_channel: SIP/x\n")
    conn.receive_data(b"")
    with pytest.raises(AgiProtocolError, match="truncated input: EOF in state ENV"):
        conn.next_event()
    conn = connect()
    conn.send_command("NOOP")
    conn.receive_data(b"520-Invalid command syntax.\nUsage: x\n")
    conn.receive_data(b"")
    with pytest.raises(AgiProtocolError, match="truncated input: EOF in state USAGE"):
        conn.next_event()


def test_clean_eof() -> None:
    conn = AgiConnection()  # e.g. a TCP health check: connect and close
    conn.receive_data(b"")
    assert conn.next_event() is EOF and conn.next_event() is EOF and conn.environment is None
    conn = connect()
    conn.send_command("ANSWER")  # Asterisk may close without replying (AGIEXITONHANGUP)
    conn.receive_data(b"")
    assert conn.next_event() is EOF and conn.closed and not conn.awaiting_reply


def test_use_after_eof() -> None:
    conn = connect()
    conn.receive_data(b"")
    with pytest.raises(AgiError, match="after EOF"):
        conn.receive_data(b"200 result=0\n")
    with pytest.raises(AgiHangup):
        conn.send_command("NOOP")


def test_protocol_error_is_sticky() -> None:
    conn = connect()
    conn.send_command("NOOP")
    conn.receive_data(b"bogus\n200 result=0\n")
    with pytest.raises(AgiProtocolError, match="bad reply line 'bogus'"):
        conn.next_event()
    with pytest.raises(AgiProtocolError, match="failed earlier"):
        conn.next_event()
    with pytest.raises(AgiError, match="failed earlier"):
        conn.send_command("NOOP")


def test_invalid_command_does_not_change_state() -> None:
    conn = connect()
    with pytest.raises(ValueError):
        conn.send_command("VERBOSE", "a\nb")
    assert not conn.awaiting_reply
    assert conn.send_command("VERBOSE", "ok") == b'VERBOSE "ok"\n'


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # TLS ClientHello
        b"\x00" * 64 + b"\n",
        b"agi_network: yes\n\x00\xff\xfe\n",
        b"\n",  # empty environment is fine, but then an unsolicited empty line is not
    ],
)
def test_garbage_input_raises_protocol_error(data: bytes) -> None:
    conn = AgiConnection(max_line=128)
    conn.receive_data(data + b"\n")
    conn.receive_data(b"")
    with pytest.raises(AgiProtocolError):
        for _ in range(5):
            assert conn.next_event() is not EOF


# --- properties -------------------------------------------------------------------

def normalize(event: object) -> object:
    if isinstance(event, AgiCommandError):
        return ("command-error", event.code, event.text, event.usage)
    if isinstance(event, AgiHangup):
        return ("hangup-reply", str(event))
    return event


def drive(chunks: Iterable[bytes], **limits: int) -> tuple[list[object], bool]:
    """Run a client that sends NOOP whenever it may; return (events, failed)."""
    conn = AgiConnection(**limits)
    pending = iter(chunks)
    events: list[object] = []
    for _ in range(100_000):
        try:
            event = conn.next_event()
        except AgiProtocolError:
            return events, True
        if event is NEED_DATA:
            conn.receive_data(next(pending, b""))
            continue
        events.append(normalize(event))
        if event is EOF:
            return events, False
        if conn.environment is not None and not (conn.awaiting_reply or conn.hung_up or conn.closed):
            conn.send_command("NOOP")
    raise AssertionError("connection did not make progress")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


FRAGMENTS = [
    b"agi_network: yes\n", b"agi_arg_1: x\n", b"\n", b"\r\n", b"\r", b"HANGUP\n", b"200 result=",
    b"0", b"-1", b"49", b" (", b")", b" endpos=", b"=", b'"', b":", b": ", b"\xff\xfe", b"x" * 30,
    b"200 result=0\n", b"200 result=1 (en) endpos=5\r\n", b"520-Invalid\n", b"520 End of proper usage.\n",
    b"510 Invalid or unknown command\n", b"511 dead\n",
]
noisy_bytes = st.one_of(
    st.binary(max_size=200),
    st.tuples(
        st.sampled_from([b"", b"agi_network: yes\n\n", b"agi_request: agi://h/?a=b\r\n\r\n"]),
        st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)), max_size=40),
    ).map(lambda parts: parts[0] + b"".join(parts[1])),
)


@settings(max_examples=300)
@given(data=noisy_bytes, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_bytes_raise_only_protocol_errors_regardless_of_split(data: bytes, cuts: list[int]) -> None:
    limits = {"max_line": 40, "max_env_lines": 6, "max_usage_lines": 3}
    whole = drive([data], **limits)  # anything but AgiProtocolError propagates and fails
    assert drive(split(data, cuts), **limits) == whole
    assert drive([bytes([b]) for b in data], **limits) == whole


VALID_REPLIES = [
    b"200 result=0", b"200 result=49 endpos=16000", b"200 result=1 (en)", b"200 result= (timeout)",
    b"200 result=1 (caf\xc3\xa9 (au lait))", b"200 result=-1", b"200 result=1 (bad \xff utf8)",
    b"510 Invalid or unknown command", b"520 Invalid command syntax.  Proper usage not available.",
    b"520-Invalid command syntax.  Proper usage follows:\nUsage: X\n\n 520 End of proper usage.",
]


@st.composite
def transcripts(draw: st.DrawFn) -> bytes:
    env_values = st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))
    env = draw(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True), env_values),
                        max_size=8))
    lines = [b"agi_%s: %s" % (key.encode(), value) for key, value in env] + [b""]
    replies = draw(st.lists(st.sampled_from(VALID_REPLIES), max_size=8))
    ending = draw(st.sampled_from(["none", "hangup-idle", "hangup-before-last", "511"]))
    if ending == "hangup-before-last" and replies:
        replies.insert(-1, b"HANGUP")
    replies += {"hangup-idle": [b"HANGUP"], "511": [b"511 Command Not Permitted"]}.get(ending, [])
    for reply in replies:
        lines += reply.split(b"\n")
    return b"".join(line + draw(st.sampled_from([b"\n", b"\r\n"])) for line in lines)


@settings(max_examples=300)
@given(data=transcripts(), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_valid_input_split_anywhere_gives_same_events(data: bytes, cuts: list[int]) -> None:
    events, failed = drive([data])
    assert not failed and events[-1] is EOF and isinstance(events[0], AgiEnvironment)
    assert drive(split(data, cuts)) == (events, False)
    assert drive([bytes([b]) for b in data]) == (events, False)


def test_interim_100_reply_is_skipped_and_free_text_kept() -> None:
    conn = AgiConnection()
    conn.receive_data(b"agi_uniqueid: 1\n\n")
    assert isinstance(conn.next_event(), AgiEnvironment)
    conn.send_command("GOSUB", "ctx", "s", "1")
    conn.receive_data(b"100 result=0 Trying...\n200 result=0 Gosub complete\n")
    reply = conn.next_event()
    assert isinstance(reply, AgiReply)
    assert reply.result == "0" and reply.extra["text"] == "Gosub complete"
    assert not conn.awaiting_reply


def test_a_line_break_in_a_value_stays_in_that_value_and_cannot_forge_a_key() -> None:
    """A caller ID with a line break in it (the dialplan filters it; this is the second line of defence)."""
    conn = AgiConnection()
    conn.receive_data(b"agi_network_script: menu/main\nagi_uniqueid: 17.1\nagi_callerid: 555\r\n"
                      b"Event: Hangup\nagi_network_script: menu/evil\nagi_calleridname: x\n\n")
    env = conn.next_event()
    assert isinstance(env, AgiEnvironment)
    assert env.network_script == "menu/main" and env.uniqueid == "17.1"
    assert env.callerid == "555\nEvent: Hangup\nagi_network_script: menu/evil"     # CRs are line ends
    assert conn.env_repeats == 1


def test_a_first_line_that_is_not_agi_is_still_refused() -> None:
    conn = AgiConnection()
    conn.receive_data(b"Event: Hangup\n\n")
    with pytest.raises(AgiProtocolError, match="environment key is not agi_<name>"):
        conn.next_event()
