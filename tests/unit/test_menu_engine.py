"""Focused tests of the menu engine and its node kinds, with a scripted in-memory Asterisk.

The engine runs over a real ``AgiSession`` whose reader and writer are in
memory: ``ScriptedAsterisk`` checks each command line against a script and
feeds back the scripted reply (or asks a responder function), so quoting and
reply parsing are the real ones. Menus are small YAML texts parsed by the real
schema. The fakes (refund backend, stores, call sink) come from
``test_menu_transcripts``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import textwrap
import time
from collections import deque
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

import pytest
import redis.exceptions
from aiohttp import web
from aiohttp.test_utils import TestServer

from ivr.core.agi import AgiConnection, AgiEnvironment, AgiHangup, quote_arg
from ivr.asterisk.agi_server import AgiRouter, AgiServer, AgiSession
from ivr.balance.forecast import Promise
from ivr.menu import node_lookup
from ivr.menu.engine import MAX_STEPS, MenuEngine
from ivr.menu.schema import FORBIDDEN_IN_VALUES, Menu, MenuError, MenuSet, parse_menu
from ivr.menu.services import HttpBackend, LookupFailed, RefundsBackend
from ivr.prompts.library import PromptLibrary
from ivr.store.keys import Keys
from ivr.store.redis_store import Store
from ivr.store.selfservice import CallbackStore

from .test_menu_transcripts import LANGUAGES, QUEUES, FakePromises, FakeRefunds, World, prompt_root

BACKENDS = frozenset({"refunds", "crm", "slow"})
UID = "1795700000.7"
CALLER = "5551234"
PLAYED = "200 result=0 endpos=8000"
OK = "200 result=1"
EXEC_OK = "200 result=0"
TIMEOUT = "200 result= (timeout)"


# ========================================================== scripted Asterisk
class ScriptedAsterisk:
    """Asterisk's side of one in-memory AgiSession.

    ``script`` is a list of (expected command line, reply line); a reply of
    ``HOLD`` keeps the engine waiting until ``release(reply)``. Once the script
    is used up, ``responder`` (if any) answers; otherwise, and on the first
    unexpected command, Asterisk closes the connection (the engine sees a hang-up).
    Every command line is kept in ``commands``.
    """

    HOLD = object()

    def __init__(self, script: Iterable[tuple[str, Any]] = (), responder: Callable[[str], str] | None = None) -> None:
        self.script = deque(script)
        self.expected = [cmd for cmd, _ in self.script]
        self.responder = responder
        self.commands: list[str] = []
        self.conn: AgiConnection | None = None     # the session's protocol core, set by make_session
        self.arrived = asyncio.Event()
        self.held = asyncio.Event()

    def _feed(self, data: bytes) -> None:
        assert self.conn is not None
        if not self.conn.closed:
            self.conn.receive_data(data)
        self.arrived.set()

    # the AgiSession's link: write() and wait_data()
    def write(self, data: bytes) -> None:
        cmd = data.decode()
        assert cmd.endswith("\n") and cmd.count("\n") == 1, f"one command per line: {cmd!r}"
        cmd = cmd[:-1]
        self.commands.append(cmd)
        if self.script:
            expected, reply = self.script.popleft()
            if cmd != expected:
                self._feed(b"")
            elif reply is self.HOLD:
                self.held.set()
            else:
                self._feed(f"{reply}\n".encode())
        elif self.responder is not None:
            self._feed(f"{self.responder(cmd)}\n".encode())
        else:
            self._feed(b"")

    async def wait_data(self, timeout: float) -> None:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()

    def release(self, reply: str) -> None:
        self._feed(f"{reply}\n".encode())


def make_session(fake: ScriptedAsterisk, script: str = "menu/t", *, callerid: str = CALLER, language: str = "en",
                 uid: str = UID) -> AgiSession:
    env_lines = ["agi_network: yes", f"agi_network_script: {script}",
                 f"agi_request: agi://127.0.0.1:4573/{script}", "agi_channel: PJSIP/trunk-00000007",
                 f"agi_language: {language}", "agi_type: PJSIP", f"agi_uniqueid: {uid}",
                 f"agi_callerid: {callerid}", "agi_calleridname: unknown", "agi_context: ivr-entry",
                 "agi_extension: s", "agi_priority: 3", "agi_enhanced: 0.0", "agi_accountcode: ",
                 "agi_threadid: 140236417423104"]
    conn = AgiConnection()
    conn.receive_data(("\n".join(env_lines) + "\n\n").encode())
    env = conn.next_event()
    assert isinstance(env, AgiEnvironment)
    fake.conn = conn
    session = AgiSession(fake, conn, env, read_timeout=2.0)  # type: ignore[arg-type]
    session.route_arg = script.partition("/")[2]
    return session


# ================================================================== helpers
@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> PromptLibrary:
    return PromptLibrary(prompt_root(tmp_path_factory))


@pytest.fixture(scope="module")
def P(prompts: PromptLibrary) -> str:
    """The prompt root as it appears inside a quoted AGI argument."""
    return quote_arg(str(prompts.root))[1:-1]


def menu(text: str, source: str = "t.yaml") -> Menu:
    return parse_menu(textwrap.dedent(text), source, QUEUES, LANGUAGES, BACKENDS)


def engine_for(m: Menu, prompts: PromptLibrary, world: World, **services: Any) -> MenuEngine:
    return MenuEngine({m.name: m}, prompts, world.sink, "en", world.services(**services))  # type: ignore[arg-type]


def record_of(world: World) -> dict[str, Any]:
    (_, fields), = world.sink.saved
    out = dict(fields)
    out["path"] = json.loads(out["path"])
    out["vars"] = json.loads(out.get("vars", "{}"))
    return out


def sf(P: str, name: str, escape: str = "", lang: str = "en") -> str:
    return f'STREAM FILE "{P}/{lang}/{name}" "{escape}"'


def handed_back(values: str, P: str = "", *names: str, lang: str = "en") -> tuple[str, str]:
    """How a call leaves the IVR: the variables for the dialplan (``values``, IVR_NEXT among them) and the
    prompts it plays before it hangs up or queues the call (IVR_PLAY), in one MSet."""
    files = "&".join(f"{P}/{lang}/{n}" for n in names)
    return f'EXEC "MSet" "{values},IVR_PLAY={files}"', EXEC_OK


def bye(P: str = "", *names: str, lang: str = "en") -> tuple[str, str]:
    """How a call leaves by a hangup node: IVR_NEXT=hangup and the node's prompts."""
    return handed_back("IVR_NEXT=hangup", P, *names, lang=lang)


def gd(P: str, name: str, ms: int, digits: int, lang: str = "en") -> str:
    return f'GET DATA "{P}/{lang}/{name}" "{ms}" "{digits}"'


def key(digit: str) -> str:
    """STREAM FILE / SAY interrupted by ``digit``."""
    return f"200 result={ord(digit)} endpos=1600"


async def run_call(engine: MenuEngine, fake: ScriptedAsterisk, **kw: Any) -> None:
    await engine.run(make_session(fake, **kw))


# ======================================================================= hours
HOURS_MENU = """\
name: t
start: check
nodes:
  check:
    type: hours
    timezone: {tz}
    open: {{"mon-fri": "08:00-20:00", "sat": ["09:00-12:00", "13:00-17:00"]}}
    holidays: [2026-12-25]
    next: open_end
    closed: closed_end
  open_end: {{type: hangup, outcome: open}}
  closed_end: {{type: hangup, outcome: closed}}
"""


def clock(at: str, seen: list[datetime.tzinfo] | None = None) -> Callable[[datetime.tzinfo], datetime.datetime]:
    instant = datetime.datetime.fromisoformat(at)

    def now(tz: datetime.tzinfo) -> datetime.datetime:
        if seen is not None:
            seen.append(tz)
        return instant.astimezone(tz)
    return now


@pytest.mark.parametrize(("at", "expected"), [
    ("2026-11-25T10:00:00+01:00", "open"),      # Wednesday
    ("2026-11-25T07:59:00+01:00", "closed"),    # before opening
    ("2026-11-25T08:00:00+01:00", "open"),      # the start minute is open
    ("2026-11-25T19:59:00+01:00", "open"),
    ("2026-11-25T20:00:00+01:00", "closed"),    # the end minute is not
    ("2026-11-28T12:30:00+01:00", "closed"),    # Saturday lunch gap
    ("2026-11-28T13:00:00+01:00", "open"),      # Saturday afternoon
    ("2026-11-29T10:00:00+01:00", "closed"),    # Sunday
    ("2026-12-25T10:00:00+01:00", "closed"),    # Friday, but a holiday
    ("2026-11-25T09:30:00+00:00", "open"),      # 10:30 in Berlin (the instant is converted)
    ("2026-11-25T19:30:00+00:00", "closed"),    # 20:30 in Berlin although 19:30 UTC
])
async def test_hours_open_closed_holiday(at: str, expected: str, prompts: PromptLibrary) -> None:
    world = World()
    seen: list[datetime.tzinfo] = []
    engine = engine_for(menu(HOURS_MENU.format(tz="Europe/Berlin")), prompts, world, now=clock(at, seen))
    fake = ScriptedAsterisk([bye()])
    await run_call(engine, fake)
    assert fake.commands == fake.expected                 # the hours node itself says nothing
    rec = record_of(world)
    assert rec["ivr_outcome"] == expected
    assert rec["path"] == ["check", f"{expected}_end"]
    assert [str(tz) for tz in seen] == ["Europe/Berlin"]


@pytest.mark.parametrize(("at", "expected"), [
    ("2026-12-24T16:00:00+00:00", "closed"),    # 25 Dec 01:00 in Tokyo: a holiday there, not yet in UTC
    ("2026-12-25T16:00:00+00:00", "open"),      # 26 Dec 01:00 in Tokyo: no longer a holiday there
])
async def test_holidays_are_dates_in_the_node_timezone(at: str, expected: str, prompts: PromptLibrary) -> None:
    text = """\
    name: t
    start: check
    nodes:
      check:
        type: hours
        timezone: Asia/Tokyo
        open: {"mon-sun": "00:00-24:00"}
        holidays: [2026-12-25]
        next: open_end
        closed: closed_end
      open_end: {type: hangup, outcome: open}
      closed_end: {type: hangup, outcome: closed}
    """
    world = World()
    engine = engine_for(menu(text), prompts, world, now=clock(at))
    await run_call(engine, ScriptedAsterisk([bye()]))
    assert record_of(world)["ivr_outcome"] == expected


async def test_hours_default_timezone_is_utc_and_day_ranges_wrap(prompts: PromptLibrary) -> None:
    text = """\
    name: t
    start: check
    nodes:
      check: {type: hours, open: {"fri-mon": "10:00-11:00"}, next: open_end, closed: closed_end}
      open_end: {type: hangup, outcome: open}
      closed_end: {type: hangup, outcome: closed}
    """
    outcomes = []
    for at in ("2026-11-29T10:30:00+00:00",    # Sunday: inside fri-mon
               "2026-11-30T10:30:00+00:00",    # Monday
               "2026-11-25T10:30:00+00:00",    # Wednesday: outside
               "2026-11-29T10:30:00+05:00"):   # Sunday 05:30 UTC: outside the hours in UTC
        world = World()
        seen: list[datetime.tzinfo] = []
        await run_call(engine_for(menu(text), prompts, world, now=clock(at, seen)), ScriptedAsterisk([bye()]))
        assert [str(tz) for tz in seen] == ["UTC"]
        outcomes.append(record_of(world)["ivr_outcome"])
    assert outcomes == ["open", "open", "closed", "closed"]


# ====================================================================== lookup
LOOKUP_MENU = """\
name: t
start: ask
nodes:
  ask:
    type: collect
    prompts: [enter-booking]
    min: 6
    max: 6
    validate: booking
    save_as: booking
    next: look
  look:
    type: lookup
    backend: {backend}
    operation: {operation}
    params: {{booking: "{{booking}}"}}
    say:
      - prompt: "status-{{status}}"
      - digits: "{{reference}}"
    save_as: res
    found: found
    not_found: none
    error: err
  found: {{type: hangup, outcome: found}}
  none: {{type: hangup, outcome: not_found}}
  err: {{type: hangup, outcome: error}}
"""


def lookup_menu(backend: str = "refunds", operation: str = "status") -> Menu:
    return menu(LOOKUP_MENU.format(backend=backend, operation=operation))


class FailingBackend:
    operations = frozenset({"status"})

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    async def lookup(self, operation: str, params: Any) -> dict[str, Any] | None:
        self.calls += 1
        raise self.exc


class HangingBackend:
    operations = frozenset({"status"})

    def __init__(self) -> None:
        self.started = False
        self.cancelled = False

    async def lookup(self, operation: str, params: Any) -> dict[str, Any] | None:
        self.started = True
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return None  # pragma: no cover


def booking_script(P: str, booking: str = "314150") -> list[tuple[str, Any]]:
    return [(gd(P, "enter-booking", 6000, 6), f"200 result={booking}")]


async def test_lookup_found_speaks_the_result_and_saves_it(prompts: PromptLibrary, P: str) -> None:
    world = World(refunds=FakeRefunds({"314150": {"status": "paid", "reference": "1000042", "amount": 12.5,
                                                  "final": True, "history": [{"status": "paid"}]}}))
    fake = ScriptedAsterisk(booking_script(P) + [
        (sf(P, "status-paid"), PLAYED),
        ('SAY DIGITS "1000042" ""', EXEC_OK),
        bye()])
    await run_call(engine_for(lookup_menu(), prompts, world), fake)
    assert fake.commands == fake.expected
    rec = record_of(world)
    assert rec["path"] == ["ask", "look", "found"]
    # flat str/int/float fields only: no bool, no list
    assert rec["vars"] == {"booking": "314150", "res_status": "paid", "res_reference": "1000042", "res_amount": "12.5",
                           "said": "look:paid"}
    assert world.refunds.calls == [("status", {"booking": "314150", "uid": UID, "caller": CALLER, "lang": "en"})]


async def test_lookup_not_found(prompts: PromptLibrary, P: str) -> None:
    world = World()
    fake = ScriptedAsterisk(booking_script(P) + [bye()])
    await run_call(engine_for(lookup_menu(), prompts, world), fake)
    assert fake.commands == fake.expected
    assert record_of(world)["path"] == ["ask", "look", "none"]


@pytest.mark.parametrize("exc", [LookupFailed("refunds: Redis: connection refused"),
                                 asyncio.TimeoutError()])
async def test_lookup_failure_takes_the_error_branch(exc: BaseException, prompts: PromptLibrary, P: str) -> None:
    world = World()
    backend = FailingBackend(exc)
    fake = ScriptedAsterisk(booking_script(P) + [bye()])
    await run_call(engine_for(lookup_menu(), prompts, world, backends={"refunds": backend}), fake)
    assert fake.commands == fake.expected
    assert backend.calls == 1
    rec = record_of(world)
    assert rec["path"] == ["ask", "look", "lookup-error", "err"]
    assert rec["ivr_outcome"] == "error"


async def test_lookup_without_a_configured_backend_takes_the_error_branch(prompts: PromptLibrary, P: str) -> None:
    world = World()
    fake = ScriptedAsterisk(booking_script(P) + [bye()])
    await run_call(engine_for(lookup_menu(), prompts, world, backends={}), fake)
    assert record_of(world)["path"] == ["ask", "look", "lookup-error", "err"]


def test_lookup_timeout_is_five_seconds() -> None:
    assert node_lookup.LOOKUP_TIMEOUT == 5.0          # docs/menus.md: "backend down or slow (5 s)"


async def test_a_backend_that_hangs_is_abandoned_after_the_timeout(monkeypatch: pytest.MonkeyPatch,
                                                                    prompts: PromptLibrary, P: str) -> None:
    monkeypatch.setattr(node_lookup, "LOOKUP_TIMEOUT", 0.05)
    world = World()
    backend = HangingBackend()
    fake = ScriptedAsterisk(booking_script(P) + [bye()])
    t0 = time.monotonic()
    await asyncio.wait_for(run_call(engine_for(lookup_menu(), prompts, world, backends={"refunds": backend}), fake), 2)
    assert time.monotonic() - t0 < 1.0
    assert backend.started and backend.cancelled
    assert record_of(world)["path"] == ["ask", "look", "lookup-error", "err"]


class StubRedis:
    """Just enough of redis.asyncio.Redis for RefundStore.by_booking: every call fails like a dead server."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def get(self, key: str) -> str | None:
        raise self.exc

    async def hgetall(self, key: str) -> dict[str, str]:
        raise self.exc


@pytest.mark.parametrize("exc", [
    redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:6379"),
])
async def test_refunds_backend_with_redis_down_takes_the_error_branch(exc: Exception, prompts: PromptLibrary,
                                                                      P: str) -> None:
    backend = RefundsBackend(Store(StubRedis(exc)))  # type: ignore[arg-type]
    world = World()
    fake = ScriptedAsterisk(booking_script(P) + [bye()])
    await run_call(engine_for(lookup_menu(), prompts, world, backends={"refunds": backend}), fake)
    assert record_of(world)["path"] == ["ask", "look", "lookup-error", "err"]


@pytest.mark.parametrize("template", ["status-{status.name}", "status-{status[x]}"])
def test_a_say_template_with_attribute_or_index_access_is_refused_at_load(template: str) -> None:
    from ivr.menu.schema import MenuError, parse_menu

    text = LOOKUP_MENU.format(backend="refunds", operation="status").replace('"status-{status}"', f'"{template}"')
    with pytest.raises(MenuError, match="placeholders"):
        parse_menu(text, "look.yaml", frozenset({"support", "refunds", "rebooking"}))


def test_format_part_never_raises_on_a_bad_template() -> None:
    from ivr.menu.services import format_part

    assert format_part("status-{status.name}", {"status": "paid"}) == ""
    assert format_part("status-{status[x]}", {"status": "paid"}) == ""
    assert format_part("status-{missing}", {"status": "paid"}) == ""
    assert format_part("status-{status}", {"status": "paid"}) == "status-paid"


# ================================================================ HTTP backend
class CrmApp:
    """A small JSON service: /api/refunds/{booking}/status, plus a catch-all that records escapes."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []    # (raw path, booking, authorization)
        self.escaped: list[str] = []

    async def status(self, request: web.Request) -> web.StreamResponse:
        booking = request.match_info["booking"]
        self.requests.append((request.raw_path, booking, request.headers.get("Authorization")))
        if booking == "404404":
            return web.json_response({"error": "no such booking"}, status=404)
        if booking == "500500":
            return web.Response(status=500, text="boom")
        if booking == "777777":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if booking == "888888":
            return web.json_response([{"status": "paid"}])
        if booking == "999999":
            await asyncio.sleep(1)
        return web.json_response({"status": "paid", "reference": "1000042", "booking": booking,
                                  "amount": 12.5, "final": True, "items": [1, 2]})

    async def other(self, request: web.Request) -> web.StreamResponse:
        self.escaped.append(request.raw_path)
        return web.json_response({"status": "rejected", "reference": "666"})


@pytest.fixture
async def crm() -> AsyncIterator[tuple[CrmApp, str]]:
    app_state = CrmApp()
    app = web.Application()
    app.router.add_get("/api/refunds/{booking}/status", app_state.status)
    app.router.add_get("/{tail:.*}", app_state.other)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield app_state, f"http://127.0.0.1:{server.port}/api/refunds/{{booking}}/status"
    finally:
        await server.close()


@pytest.fixture
async def http_backend(crm: tuple[CrmApp, str]) -> AsyncIterator[HttpBackend]:
    backend = HttpBackend("crm", crm[1], timeout=0.5, headers={"Authorization": "Bearer t0ken"})
    try:
        yield backend
    finally:
        await backend.close()


async def test_http_backend_200_json_is_found(crm: tuple[CrmApp, str], http_backend: HttpBackend) -> None:
    result = await http_backend.lookup("get", {"booking": "314150", "uid": UID})
    assert result is not None and result["status"] == "paid" and result["booking"] == "314150"
    assert crm[0].requests == [("/api/refunds/314150/status", "314150", "Bearer t0ken")]


async def test_http_backend_404_is_not_found(http_backend: HttpBackend) -> None:
    assert await http_backend.lookup("get", {"booking": "404404"}) is None


@pytest.mark.parametrize(("booking", "message"), [
    ("500500", "HTTP 500"),
    ("777777", "JSONDecodeError"),
    ("888888", "expected a JSON object"),
    ("999999", "TimeoutError"),            # over the backend's own 0.5 s
])
async def test_http_backend_errors_raise_lookup_failed(booking: str, message: str, http_backend: HttpBackend) -> None:
    with pytest.raises(LookupFailed, match=message):
        await http_backend.lookup("get", {"booking": booking})


async def test_http_backend_missing_placeholder_and_unreachable_host(crm: tuple[CrmApp, str]) -> None:
    backend = HttpBackend("crm", crm[1])
    try:
        with pytest.raises(LookupFailed, match="needs 'booking'"):
            await backend.lookup("get", {"caller": CALLER})
    finally:
        await backend.close()
    assert crm[0].requests == []
    dead = HttpBackend("dead", "http://127.0.0.1:9/x/{booking}", timeout=1.0)   # discard port: refused
    try:
        with pytest.raises(LookupFailed, match="dead: "):
            await dead.lookup("get", {"booking": "1"})
    finally:
        await dead.close()


@pytest.mark.parametrize(("value", "raw"), [
    ("1/../x", "1%2F..%2Fx"),
    ("../../admin", "..%2F..%2Fadmin"),
    ("1?admin=1", "1%3Fadmin=1"),
    ("1#frag", "1%23frag"),
    ("a b", "a%20b"),
    ("%2e%2e", "%252e%252e"),
])
async def test_http_backend_placeholders_are_url_quoted(value: str, raw: str, crm: tuple[CrmApp, str],
                                                        http_backend: HttpBackend) -> None:
    result = await http_backend.lookup("get", {"booking": value})
    assert result is not None and result["booking"] == value
    assert crm[0].requests == [(f"/api/refunds/{raw}/status", value, "Bearer t0ken")]
    assert crm[0].escaped == []


@pytest.mark.parametrize("value", ["..", "."])
async def test_http_backend_dot_segments_cannot_change_the_path(value: str, crm: tuple[CrmApp, str],
                                                               http_backend: HttpBackend) -> None:
    try:
        await http_backend.lookup("get", {"booking": value})
    except LookupFailed:
        pass
    assert crm[0].escaped == []


@pytest.mark.parametrize(("booking", "outcome", "spoken"), [
    ("314150", "found", True),
    ("404404", "not_found", False),
    ("500500", "error", False),
])
async def test_http_backend_in_a_menu(booking: str, outcome: str, spoken: bool, http_backend: HttpBackend,
                                      prompts: PromptLibrary, P: str) -> None:
    world = World()
    script = booking_script(P, booking)
    if spoken:
        script += [(sf(P, "status-paid"), PLAYED), ('SAY DIGITS "1000042" ""', EXEC_OK)]
    fake = ScriptedAsterisk(script + [bye()])
    engine = engine_for(lookup_menu("crm", "get"), prompts, world, backends={"crm": http_backend})
    await run_call(engine, fake)
    assert fake.commands == fake.expected
    rec = record_of(world)
    assert rec["ivr_outcome"] == outcome
    if spoken:
        assert rec["vars"] == {"booking": booking, "res_status": "paid", "res_reference": "1000042",
                               "res_booking": booking, "res_amount": "12.5", "said": "look:paid"}


# ====================================================================== banner
BANNER_MENU = """\
name: t
start: banner
nodes:
  banner: {type: banner, prompts: [crisis-banner], skip_keys: "#", next: bye}
  bye: {type: hangup, outcome: done}
"""


async def test_live_banner_is_played_instead_of_the_prompts(prompts: PromptLibrary) -> None:
    live = "/var/lib/ivr/live/fa/banner-3f2a9c"
    world = World(banner_path=live)
    fake = ScriptedAsterisk([(f'STREAM FILE "{live}" "#"', key("#")), bye()])
    await run_call(engine_for(menu(BANNER_MENU), prompts, world), fake, language="fa")
    assert fake.commands == fake.expected
    assert world.banner_asked == ["fa"]


async def test_without_a_live_banner_the_prompts_play(prompts: PromptLibrary, P: str) -> None:
    world = World(banner_path=None)
    fake = ScriptedAsterisk([(sf(P, "crisis-banner", "#", lang="zh"), PLAYED), bye()])
    await run_call(engine_for(menu(BANNER_MENU), prompts, world), fake, language="zh")
    assert fake.commands == fake.expected
    assert world.banner_asked == ["zh"]
    world = World()
    fake = ScriptedAsterisk([(sf(P, "crisis-banner", "#"), PLAYED), bye()])
    await run_call(engine_for(menu(BANNER_MENU), prompts, world, banner=None), fake)   # no banner service
    assert fake.commands == fake.expected


# ======================================================== queue: announce wait
QUEUE_MENU = """\
name: t
start: q
nodes:
  q: {type: queue, queue: support, prompts: [please-hold], announce_wait: true}
"""
SUPPORT = "IVR_QUEUE=support,IVR_PRIORITY=0,IVR_NEXT=queue"


@pytest.mark.parametrize(("estimate", "minutes"), [
    (None, None), (0.0, None), (59.9, None),         # unknown or under a minute: nothing said
    (60.0, 1), (89.0, 1), (91.0, 2), (119.0, 2), (601.0, 10), (3599.0, 60), (14399.0, 240),
    (14400.0, None), (math.inf, None), (math.nan, None),   # 4 hours or more, or nonsense: nothing said
])
async def test_announce_wait_says_the_rounded_minutes(estimate: float | None, minutes: int | None,
                                                      prompts: PromptLibrary, P: str) -> None:
    world = World(estimates={"support": estimate})
    # the node's prompt, and the minutes after the number, are played by the dialplan just before Queue()
    said = [handed_back(SUPPORT, P, "please-hold")] if minutes is None else [
        (sf(P, "please-hold"), PLAYED), (sf(P, "wait-estimate"), PLAYED), (f'SAY NUMBER "{minutes}" ""', EXEC_OK),
        handed_back(SUPPORT, P, "minutes")]
    fake = ScriptedAsterisk(said)
    await run_call(engine_for(menu(QUEUE_MENU), prompts, world), fake)
    assert fake.commands == fake.expected
    assert world.estimates_asked == ["support"]
    rec = record_of(world)
    assert (rec["ivr_outcome"], rec["ivr_queue"], rec["path"]) == ("queued", "support", ["q"])


async def test_queue_variables_for_the_dialplan(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: q
    survey: s
    nodes:
      q: {type: queue, queue: refunds, priority: 7, timeout: 120}
      s: {type: survey}
    """
    fake = ScriptedAsterisk([
        handed_back("IVR_QUEUE=refunds,IVR_PRIORITY=7,IVR_QUEUE_TIMEOUT=120,IVR_SURVEY=t,IVR_NEXT=queue")])
    await run_call(engine_for(menu(text), prompts, World()), fake)
    assert fake.commands == fake.expected


# ============================================================ callback offers
OFFER_MENU = """\
name: t
start: q
nodes:
  q:
    type: queue
    queue: rebooking
    prompts: [please-hold]
    announce_wait: true
    callback_over: 300
    callback: cb
  cb: {type: callback, queue: rebooking}
"""
REBOOKING = "IVR_QUEUE=rebooking,IVR_PRIORITY=0,IVR_NEXT=queue"


def queued_after_estimate(P: str, minutes: int) -> list[tuple[str, Any]]:
    return [(sf(P, "please-hold"), PLAYED), (sf(P, "wait-estimate"), PLAYED),
            (f'SAY NUMBER "{minutes}" ""', EXEC_OK), handed_back(REBOOKING, P, "minutes")]


def promise_said(P: str, minutes: int, lang: str = "en") -> list[tuple[str, str]]:
    """How a kept callback ends: "we will call you back within" N "minutes" (the last word by the dialplan)."""
    return [(sf(P, "callback-promise", lang=lang), PLAYED), (f'SAY NUMBER "{minutes}" ""', EXEC_OK),
            bye(P, "minutes", lang=lang)]


async def test_callback_offered_over_the_threshold_and_accepted(prompts: PromptLibrary, P: str) -> None:
    world = World(estimates={"rebooking": 301.0}, promises=FakePromises(1200.0))
    fake = ScriptedAsterisk([
        (gd(P, "callback-offer", 5000, 1), "200 result=1"),
        (sf(P, "callback-number-is", "12"), PLAYED),
        (f'SAY DIGITS "{CALLER}" "12"', EXEC_OK),
        (gd(P, "callback-confirm", 5000, 1), "200 result=1"),
        *promise_said(P, 20)])
    await run_call(engine_for(menu(OFFER_MENU), prompts, world), fake)
    assert fake.commands == fake.expected
    (cb,) = world.callbacks.requests
    assert (cb["number"], cb["queue"], cb["lang"], cb["call_uid"], cb["caller"]) == (CALLER, "rebooking", "en",
                                                                                      UID, CALLER)
    assert cb["promise_s"] == 1200.0 and world.promises.told == [("rebooking", 1200.0)]
    assert world.promises.asked == ["rebooking"]        # computed once: the offer's promise is the one told
    rec = record_of(world)
    assert rec["path"] == ["q", "cb"]
    assert (rec["ivr_outcome"], rec["ivr_queue"], rec["vars"]) == ("callback_requested", "rebooking",
                                                                   {"callback_id": "1"})
    assert isinstance(cb["place"], float) and rec["started_at"] == round(cb["place"], 3)   # the caller's place


@pytest.mark.parametrize(("estimate", "offer_answer", "minutes"), [
    (300.0, None, 5),       # not over the threshold: no offer
    (301.0, "2", 5),        # offered, declined
    (301.0, "", 5),         # offered, no answer
])
async def test_callback_not_taken(estimate: float, offer_answer: str | None, minutes: int, prompts: PromptLibrary,
                                  P: str) -> None:
    world = World(estimates={"rebooking": estimate}, promises=FakePromises(1200.0))
    offer = [] if offer_answer is None else [
        (gd(P, "callback-offer", 5000, 1), f"200 result={offer_answer}" if offer_answer else TIMEOUT)]
    fake = ScriptedAsterisk(offer + queued_after_estimate(P, minutes))
    await run_call(engine_for(menu(OFFER_MENU), prompts, world), fake)
    assert fake.commands == fake.expected
    assert world.callbacks.requests == []
    assert record_of(world)["ivr_outcome"] == "queued"


async def test_callback_for_an_anonymous_caller_asks_for_the_number(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: cb
    nodes:
      cb: {type: callback}
    """
    world = World()
    fake = ScriptedAsterisk([
        (gd(P, "enter-number", 10000, 15), "200 result=5550101010"),
        (sf(P, "callback-number-is", "12"), PLAYED),
        ('SAY DIGITS "5550101010" "12"', key("1")),
        bye(P, "callback-booked")])
    await run_call(engine_for(menu(text), prompts, world), fake, callerid="anonymous")
    assert fake.commands == fake.expected
    (cb,) = world.callbacks.requests
    assert (cb["number"], cb["queue"], cb["caller"]) == ("5550101010", "support", "")   # the fallback queue


async def test_callback_never_confirmed_queues_the_caller(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: cb
    nodes:
      cb: {type: callback, queue: refunds}
    """
    world = World()
    read_back = [(sf(P, "callback-number-is", "12"), PLAYED), (f'SAY DIGITS "{CALLER}" "12"', EXEC_OK),
                 (gd(P, "callback-confirm", 5000, 1), TIMEOUT)]
    fake = ScriptedAsterisk(read_back * 3 + [handed_back("IVR_QUEUE=refunds,IVR_PRIORITY=0,IVR_NEXT=queue")])
    await run_call(engine_for(menu(text), prompts, world), fake)
    assert fake.commands == fake.expected
    assert world.callbacks.requests == []
    rec = record_of(world)
    assert rec["path"] == ["cb", "callback-not-confirmed"]
    assert (rec["ivr_outcome"], rec["ivr_queue"]) == ("queued", "refunds")


class MiniRedis:
    """Enough of redis.asyncio.Redis for the real CallbackStore.request."""

    def __init__(self) -> None:
        self.n = 0
        self.ops: list[tuple[Any, ...]] = []

    async def incr(self, key: str) -> int:
        self.n += 1
        return self.n

    def pipeline(self, transaction: bool = True) -> "MiniRedis":
        return self

    async def __aenter__(self) -> "MiniRedis":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    def hset(self, *a: Any, **kw: Any) -> None:
        self.ops.append(("hset", a, kw))

    def zadd(self, *a: Any, **kw: Any) -> None:
        self.ops.append(("zadd", a, kw))

    async def execute(self) -> list[Any]:
        return []


def lenient_asterisk(cmd: str) -> str:
    """A caller who presses 1 when asked to confirm and keys in 5550101010 when asked for a number."""
    if cmd.startswith("GET DATA") and "/enter-number" in cmd:
        return "200 result=5550101010"
    if cmd.startswith("GET DATA") and "/callback-confirm" in cmd:
        return "200 result=1"
    if cmd.startswith("SAY DIGITS"):
        return key("1")
    if cmd.startswith("SET VARIABLE"):
        return OK
    return PLAYED if cmd.startswith("STREAM FILE") else EXEC_OK


async def test_non_ascii_digit_caller_id_does_not_lose_the_callback(prompts: PromptLibrary) -> None:
    text = """\
    name: t
    start: cb
    nodes:
      cb: {type: callback}
    """
    client = MiniRedis()
    world = World()
    engine = engine_for(menu(text), prompts, world, callbacks=CallbackStore(client, Keys("ivr")))  # type: ignore[arg-type]
    await run_call(engine, ScriptedAsterisk(responder=lenient_asterisk), callerid="٥٥٥٠١٠١٠")
    assert record_of(world)["ivr_outcome"] == "callback_requested"


# ======================================================================== mset
@pytest.mark.parametrize("char", list(FORBIDDEN_IN_VALUES))
async def test_mset_refuses_forbidden_characters(char: str) -> None:
    engine = MenuEngine({}, PromptLibrary("/nonexistent"), World().sink)  # type: ignore[arg-type]
    fake = ScriptedAsterisk([])
    with pytest.raises(ValueError, match="not allowed"):
        await engine.mset(make_session(fake), {"IVR_OK": "fine", "IVR_X": f"a{char}IVR_NEXT=hangup"})
    assert fake.commands == []                 # nothing reached Asterisk


async def test_mset_sends_one_exec_and_set_nodes_use_it(prompts: PromptLibrary) -> None:
    engine = MenuEngine({}, prompts, World().sink)  # type: ignore[arg-type]
    fake = ScriptedAsterisk([('EXEC "MSet" "A=1,B=two words,C=x=y"', EXEC_OK)])
    await engine.mset(make_session(fake), {"A": "1", "B": "two words", "C": "x=y"})
    assert fake.commands == fake.expected

    text = """\
    name: t
    start: s
    nodes:
      s: {type: set, values: {VIP: "yes", TIER: 2}, next: bye}
      bye: {type: hangup}
    """
    world = World()
    fake = ScriptedAsterisk([('EXEC "MSet" "VIP=yes,TIER=2"', EXEC_OK), bye()])
    await run_call(engine_for(menu(text), prompts, world), fake)
    assert fake.commands == fake.expected
    assert record_of(world)["vars"] == {"VIP": "yes", "TIER": "2"}


# ====================================================================== reload
RELOAD_V1 = """\
name: t
start: main
nodes:
  main:
    type: menu
    prompts: [main-menu]
    options: {"1": bye}
  bye: {type: hangup, prompts: [goodbye], outcome: v1}
"""
RELOAD_V2 = """\
name: t
start: main
nodes:
  main:
    type: menu
    prompts: [welcome]
    options: {"1": closed_now}
  closed_now: {type: hangup, prompts: [closed], outcome: v2}
"""


async def test_reload_during_a_call_does_not_change_that_call(tmp_path: Path, prompts: PromptLibrary,
                                                              P: str) -> None:
    (tmp_path / "t.yaml").write_text(RELOAD_V1)
    menus = MenuSet(tmp_path, QUEUES, LANGUAGES, BACKENDS)
    assert menus.load() == []
    world = World()
    engine = MenuEngine(menus, prompts, world.sink, "en", world.services())
    fake = ScriptedAsterisk([(gd(P, "main-menu", 5000, 1), ScriptedAsterisk.HOLD),
                             bye(P, "goodbye")])
    call = asyncio.create_task(run_call(engine, fake, uid="1.1"))
    await asyncio.wait_for(fake.held.wait(), 2)        # the caller is listening to the v1 main menu

    (tmp_path / "t.yaml").write_text(RELOAD_V2)
    assert menus.load() == []
    assert "closed_now" in menus.get("t").nodes          # type: ignore[union-attr]

    fake.release("200 result=1")
    await asyncio.wait_for(call, 2)
    assert fake.commands == fake.expected                # v1's "bye" node, although v2 has no such node
    (uid, rec), = world.sink.saved
    assert (uid, rec["ivr_outcome"], json.loads(rec["path"])) == ("1.1", "v1", ["main", "bye"])

    fake2 = ScriptedAsterisk([(gd(P, "welcome", 5000, 1), "200 result=1"), bye(P, "closed")])
    await run_call(engine, fake2, uid="1.2")            # a new call gets the new version
    assert fake2.commands == fake2.expected
    assert world.sink.saved[1][1]["ivr_outcome"] == "v2"


# =================================================================== MAX_STEPS
LOOP_MENU = """\
name: t
start: check
nodes:
  check: {type: hours, open: {"mon-sun": "00:00-00:01"}, next: bye, closed: again}
  again: {type: goto, next: check}
  bye: {type: hangup}
"""


async def test_max_steps_stops_a_loop_the_schema_lets_through(prompts: PromptLibrary) -> None:
    """hours -> goto -> hours never waits for the caller; the schema only looks for goto/play/set loops."""
    world = World()
    engine = engine_for(menu(LOOP_MENU), prompts, world, now=clock("2026-11-25T12:00:00+00:00"))
    fake = ScriptedAsterisk([])
    with pytest.raises(RuntimeError, match=f"more than {MAX_STEPS} steps"):
        await run_call(engine, fake)
    assert fake.commands == []
    rec = record_of(world)                               # the record is still written
    assert len(rec["path"]) == MAX_STEPS and rec["path"][:3] == ["check", "again", "check"]
    assert engine.calls_completed == 0


async def test_max_steps_over_fastagi_falls_back(prompts: PromptLibrary) -> None:
    world = World()
    engine = engine_for(menu(LOOP_MENU), prompts, world, now=clock("2026-11-25T12:00:00+00:00"))
    router = AgiRouter()
    router.register("menu", engine.run)
    server = AgiServer(router, "127.0.0.1", 0, read_timeout=2.0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        session_env = ("agi_network: yes\nagi_network_script: menu/t\nagi_uniqueid: 9.9\n"
                       "agi_callerid: 5551234\nagi_language: en\n\n")
        writer.write(session_env.encode())
        line = await asyncio.wait_for(reader.readline(), 2)
        assert line == b'SET VARIABLE "IVR_NEXT" "fallback"\n'
        writer.write(b"200 result=1\n")
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
    finally:
        await server.stop(grace=1)
    assert server.calls_failed == 1


# ============================================================ menus and input
async def test_language_timeout_uses_the_default(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: lang
    nodes:
      lang: {type: language, prompts: [lang-en, lang-fa, lang-zh], options: {"1": en, "2": fa}, timeout: 3,
             retries: 0, default: fa, next: bye}
      bye: {type: hangup, prompts: [goodbye]}
    """
    world = World()
    fake = ScriptedAsterisk([(sf(P, "lang-en", "0123456789*#"), PLAYED), (sf(P, "lang-fa", "0123456789*#"), PLAYED),
                             (gd(P, "lang-zh", 3000, 1), TIMEOUT), ('SET VARIABLE "CHANNEL(language)" "fa"', OK),
                             bye(P, "goodbye", lang="fa")])
    await run_call(engine_for(menu(text), prompts, world), fake)
    assert fake.commands == fake.expected
    assert record_of(world)["language"] == "fa"


async def test_repeat_key_replays_without_using_a_try(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: main
    nodes:
      main: {type: menu, prompts: [main-menu], retries: 0, repeat_key: "*", options: {"1": bye}, on_fail: q}
      bye: {type: hangup, outcome: chose}
      q: {type: queue, queue: support}
    """
    world = World()
    ask = gd(P, "main-menu", 5000, 1)
    fake = ScriptedAsterisk([(ask, "200 result=*"), (ask, "200 result=*"), (ask, "200 result=1"), bye()])
    await run_call(engine_for(menu(text), prompts, world), fake)
    assert fake.commands == fake.expected
    assert record_of(world)["ivr_outcome"] == "chose"


async def test_key_during_an_earlier_prompt_is_the_first_digit(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: ask
    nodes:
      ask: {type: collect, prompts: [enter-booking, "sound:beep"], min: 6, max: 6, save_as: booking, next: bye}
      bye: {type: hangup}
    """
    world = World()
    fake = ScriptedAsterisk([(sf(P, "enter-booking", "0123456789*#"), key("3")),
                             ('GET DATA "silence/1" "6000" "5"', "200 result=14150"), bye()])
    await run_call(engine_for(menu(text), prompts, world), fake)
    assert fake.commands == fake.expected
    assert record_of(world)["vars"] == {"booking": "314150"}


async def test_hash_menu_option_is_reachable_or_refused(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: m
    nodes:
      m: {type: menu, prompts: [main-menu, "sound:beep"], options: {"#": bye, "1": q}, retries: 0, on_fail: q}
      bye: {type: hangup, outcome: hash}
      q: {type: queue, queue: support}
    """
    try:
        m = menu(text)
    except MenuError:
        return                                            # refused at load time: fine
    world = World()

    def caller_presses_hash(cmd: str) -> str:
        if cmd.startswith("STREAM FILE") and "/main-menu" in cmd:
            return key("#")
        if cmd.startswith("GET DATA"):
            return "200 result="                           # what GET DATA answers when # ends the input
        return lenient_asterisk(cmd)

    await run_call(engine_for(m, prompts, world), ScriptedAsterisk(responder=caller_presses_hash))
    assert record_of(world)["ivr_outcome"] == "hash"


async def test_unknown_menu_and_missing_survey(prompts: PromptLibrary) -> None:
    text = """\
    name: t
    start: bye
    nodes:
      bye: {type: hangup}
      other: {type: goto, next: bye}
    """
    engine = engine_for(menu(text), prompts, World())
    with pytest.raises(LookupError, match="'nope' is not loaded"):
        await engine.run(make_session(ScriptedAsterisk(), "menu/nope"))
    with pytest.raises(LookupError, match="has no survey"):
        await engine.run_survey(make_session(ScriptedAsterisk(), "survey/t"))


async def test_survey_invalid_key_then_score(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: bye
    survey: s
    nodes:
      bye: {type: hangup}
      s: {type: survey, prompts: [survey-intro], thanks: [survey-thanks], retries: 1}
    """
    world = World()
    ask = gd(P, "survey-intro", 6000, 1, lang="zh")
    fake = ScriptedAsterisk([('GET VARIABLE "IVR_QUEUE"', "200 result=1 (refunds)"),
                             (ask, "200 result=9"), (sf(P, "invalid", lang="zh"), PLAYED),
                             (ask, "200 result=5"), (sf(P, "survey-thanks", lang="zh"), PLAYED)])
    await engine_for(menu(text), prompts, world).run_survey(make_session(fake, "survey/t", language="zh"))
    assert fake.commands == fake.expected
    assert world.surveys.records == [{"uid": UID, "score": 5, "menu": "t", "lang": "zh", "queue": "refunds",
                                      "agent": ""}]
    assert world.sink.saved == []


async def test_hangup_mid_menu_still_saves_the_record(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: main
    nodes:
      main: {type: menu, prompts: [main-menu], options: {"1": bye}}
      bye: {type: hangup}
    """
    world = World()
    fake = ScriptedAsterisk([(gd(P, "main-menu", 5000, 1), "HANGUP\n511 Command Not Permitted on a dead channel or intercept routine")])
    with pytest.raises(AgiHangup):
        await run_call(engine_for(menu(text), prompts, world), fake)
    rec = record_of(world)
    assert (rec["path"], rec["ivr_outcome"], rec["ivr_queue"]) == (["main"], "", "")


async def test_prompts_the_dialplan_could_misread_are_played_over_agi_before_the_hand_back(tmp_path: Path) -> None:
    """IVR_PLAY carries prompt paths into the dialplan (Playback); a path with a character the dialplan
    parses (a comma here) is never put there: the prompt is played over AGI and IVR_PLAY is left empty."""
    root = tmp_path / "prompts, 2026" / "build"
    (root / "en").mkdir(parents=True)
    (root / "en" / "goodbye.wav").write_bytes(b"")
    odd = PromptLibrary(root)
    text = """\
    name: t
    start: bye
    nodes:
      bye: {type: hangup, prompts: [goodbye], outcome: done}
    """
    fake = ScriptedAsterisk([(f'STREAM FILE "{root}/en/goodbye" ""', PLAYED), bye()])
    world = World()
    await run_call(engine_for(menu(text), odd, world), fake)
    assert fake.commands == fake.expected
    assert record_of(world)["ivr_outcome"] == "done"


async def test_the_last_prompts_are_handed_to_the_dialplan(prompts: PromptLibrary, P: str) -> None:
    """A hangup node's prompts and a queue node's are played by the dialplan after the AGI connection is
    released: one MSet with IVR_NEXT and IVR_PLAY (files joined by &), no STREAM FILE."""
    text = """\
    name: t
    start: m
    nodes:
      m: {type: menu, prompts: [main-menu], options: {"1": bye, "2": q}, timeout: 3, retries: 0}
      bye: {type: hangup, prompts: [goodbye, survey-thanks], outcome: done}
      q: {type: queue, queue: support, prompts: [please-hold]}
    """
    fake = ScriptedAsterisk([(gd(P, "main-menu", 3000, 1), "200 result=1"), bye(P, "goodbye", "survey-thanks")])
    await run_call(engine_for(menu(text), prompts, World()), fake)
    assert fake.commands == fake.expected
    fake = ScriptedAsterisk([(gd(P, "main-menu", 3000, 1), "200 result=2"), handed_back(SUPPORT, P, "please-hold")])
    await run_call(engine_for(menu(text), prompts, World()), fake)
    assert fake.commands == fake.expected


# ================================================= fallback queue timed out


async def run_fallback(engine: MenuEngine, fake: ScriptedAsterisk, **kw: Any) -> None:
    await engine.run_fallback(make_session(fake, script="fallback/t", **kw))


async def test_fallback_timeout_offers_a_callback_that_keeps_the_place(prompts: PromptLibrary, P: str) -> None:
    world = World()
    since = f"{time.time() - 620:.3f}"      # joined the fallback queue before its timeout
    fake = ScriptedAsterisk([
        ('GET VARIABLE "IVR_FALLBACK_SINCE"', f"200 result=1 ({since})"),
        (gd(P, "fallback-offer", 6000, 1), "200 result=1"),
        (sf(P, "callback-number-is", "12"), PLAYED),
        (f'SAY DIGITS "{CALLER}" "12"', EXEC_OK),
        (gd(P, "callback-confirm", 5000, 1), "200 result=1"),
        bye(P, "callback-booked")])
    await run_fallback(engine_for(menu(OFFER_MENU), prompts, world), fake)
    assert fake.commands == fake.expected
    (cb,) = world.callbacks.requests
    # the fallback queue, and the place in line from when the caller joined it
    assert (cb["number"], cb["queue"], cb["call_uid"]) == (CALLER, "support", UID)
    assert cb["place"] == float(since)
    (_, fields), = world.sink.saved
    assert fields["fallback_timeout"] == "1" and fields["ivr_outcome"] == "callback_requested"


@pytest.mark.parametrize("answer", ["2", ""])
async def test_fallback_timeout_offer_declined_leaves_the_apology_to_the_dialplan(
        answer: str, prompts: PromptLibrary, P: str) -> None:
    world = World()
    fake = ScriptedAsterisk([
        ('GET VARIABLE "IVR_FALLBACK_SINCE"', "200 result=0"),
        (gd(P, "fallback-offer", 6000, 1), f"200 result={answer}" if answer else TIMEOUT)])
    await run_fallback(engine_for(menu(OFFER_MENU), prompts, world), fake)
    assert fake.commands == fake.expected      # no IVR_NEXT: the dialplan plays fallback-sorry and hangs up
    assert world.callbacks.requests == []
    (_, fields), = world.sink.saved
    assert fields["ivr_outcome"] == "fallback_timeout"


# ================================================= the callback promise spoken and kept
AUTO_MENU = OFFER_MENU.replace("callback_over: 300", "callback_over: auto")


async def test_no_offer_without_a_promise_that_can_be_kept(prompts: PromptLibrary, P: str) -> None:
    world = World(estimates={"rebooking": 3000.0})          # a long wait, but nothing can be promised
    fake = ScriptedAsterisk(queued_after_estimate(P, 50))
    await run_call(engine_for(menu(OFFER_MENU), prompts, world), fake)
    assert fake.commands == fake.expected
    assert world.promises.asked == ["rebooking"] and world.callbacks.requests == []


async def test_no_promise_is_computed_when_no_offer_could_be_made(prompts: PromptLibrary, P: str) -> None:
    world = World(estimates={"rebooking": 120.0}, promises=FakePromises(900.0))
    fake = ScriptedAsterisk(queued_after_estimate(P, 2))
    await run_call(engine_for(menu(OFFER_MENU), prompts, world), fake)       # 120 s < callback_over 300
    assert fake.commands == fake.expected and world.promises.asked == []


@pytest.mark.parametrize(("estimate", "promise_s", "offered"), [
    (91.0, 900.0, True), (89.0, 900.0, False),            # auto: over max(60 s, a tenth of the promise)
    (700.0, 7200.0, False), (721.0, 7200.0, True),        # a 2 h promise is offered from a 12 min wait
])
async def test_auto_offers_against_the_promise(estimate: float, promise_s: float, offered: bool,
                                              prompts: PromptLibrary, P: str) -> None:
    world = World(estimates={"rebooking": estimate}, promises=FakePromises(promise_s))
    minutes = max(1, int(estimate / 60 + 0.5))
    offer = [(gd(P, "callback-offer", 5000, 1), "200 result=2")] if offered else []
    fake = ScriptedAsterisk(offer + queued_after_estimate(P, minutes))
    await run_call(engine_for(menu(AUTO_MENU), prompts, world), fake)
    assert fake.commands == fake.expected


async def test_a_failing_promise_service_means_no_offer(prompts: PromptLibrary, P: str) -> None:
    class Broken(FakePromises):
        async def callback_promise(self, queue: str) -> Promise:
            raise ConnectionError("Redis down")
    world = World(estimates={"rebooking": 3000.0}, promises=Broken(900.0))
    fake = ScriptedAsterisk(queued_after_estimate(P, 50))
    await run_call(engine_for(menu(AUTO_MENU), prompts, world), fake)
    assert fake.commands == fake.expected


async def test_a_caller_who_asks_for_a_callback_hears_the_promise_in_their_language(prompts: PromptLibrary,
                                                                                   P: str) -> None:
    text = """\
    name: t
    start: cb
    nodes:
      cb: {type: callback, queue: refunds}
    """
    world = World(promises=FakePromises(2700.0))
    fake = ScriptedAsterisk([
        (sf(P, "callback-number-is", "12", lang="fa"), key("1")),
        *promise_said(P, 45, lang="fa")])
    await run_call(engine_for(menu(text), prompts, world), fake, language="fa")
    assert fake.commands == fake.expected
    (cb,) = world.callbacks.requests
    assert cb["queue"] == "refunds" and cb["promise_s"] == 2700.0
    assert world.promises.asked == ["refunds"] and world.promises.told == [("refunds", 2700.0)]


async def test_a_callback_with_a_next_node_says_the_promise_then_goes_on(prompts: PromptLibrary, P: str) -> None:
    text = """\
    name: t
    start: cb
    nodes:
      cb: {type: callback, queue: refunds, prompts: [survey-thanks], next: bye}
      bye: {type: hangup, prompts: [goodbye]}
    """
    world = World(promises=FakePromises(900.0))
    fake = ScriptedAsterisk([
        (sf(P, "callback-number-is", "12"), key("1")),
        (sf(P, "survey-thanks"), PLAYED), (sf(P, "callback-promise"), PLAYED), ('SAY NUMBER "15" ""', EXEC_OK),
        (sf(P, "minutes"), PLAYED), bye(P, "goodbye")])
    await run_call(engine_for(menu(text), prompts, world), fake)
    assert fake.commands == fake.expected


async def test_the_fallback_offer_says_the_promise(prompts: PromptLibrary, P: str) -> None:
    world = World(promises=FakePromises(1800.0))
    fake = ScriptedAsterisk([
        ('GET VARIABLE "IVR_FALLBACK_SINCE"', "200 result=0"),
        (gd(P, "fallback-offer", 6000, 1), "200 result=1"),
        (sf(P, "callback-number-is", "12"), key("1")),
        *promise_said(P, 30)])
    await run_fallback(engine_for(menu(OFFER_MENU), prompts, world), fake)
    assert fake.commands == fake.expected
    (cb,) = world.callbacks.requests
    assert cb["queue"] == "support" and cb["promise_s"] == 1800.0
