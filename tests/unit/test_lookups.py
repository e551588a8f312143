"""Look-ups against the business's own systems: the response mapping, the circuit breaker (pure, on a fake
clock), the guarded backend (breaker, concurrency cap, metrics), the ``lookups:`` config, and the HTTP backend
against a real aiohttp server on 127.0.0.1 (found, 404, slow, 500, invalid JSON, the breaker opening and
closing), then through a menu's ``lookup`` node."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

import pytest
from aiohttp import web

from ivr.app.config import ConfigError
from ivr.app.config_checks import LOOKUP_BUDGET
from ivr.app.config_load import from_mapping, load
from ivr.app.controller import http_backends
from ivr.app.metrics import Metrics
from ivr.menu import node_lookup
from ivr.menu.lookups import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, GuardedBackend
from ivr.menu.mapping import map_response
from ivr.menu.schema import parse_menu
from ivr.menu.services import HTTP_TIMEOUT, HttpBackend, LookupFailed
from ivr.prompts.library import PromptLibrary

from .test_menu_engine import (EXEC_OK, LOOKUP_MENU, PLAYED, P, ScriptedAsterisk, booking_script,  # noqa: F401
                               bye, engine_for, prompts, record_of, run_call, sf)                   # (fixtures)
from .test_menu_transcripts import LANGUAGES, QUEUES, World

NO_ENV: dict[str, str] = {}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ mapping
BODY = {"booking": {"ref": "AB12", "state": "confirmed", "seats": 2, "paid": True,
                    "legs": [{"flight": "123"}, {"flight": "456"}]}, "note": None}


def test_the_mapping_picks_fields_by_path_and_indexes_lists() -> None:
    got = map_response(BODY, {"status": "booking.state", "reference": "booking.ref", "seats": "booking.seats",
                              "first": "booking.legs.0.flight", "second": "booking.legs.1.flight",
                              "paid": "booking.paid"})
    assert got == {"status": "confirmed", "reference": "AB12", "seats": 2, "first": "123", "second": "456",
                   "paid": "yes"}


def test_the_mapping_leaves_out_what_leads_nowhere() -> None:
    got = map_response(BODY, {"a": "booking.missing", "b": "booking.legs.7.flight", "c": "booking.legs",
                              "d": "note", "e": "booking.ref.x", "f": "booking.legs.x"})
    assert got == {}


def test_no_mapping_passes_the_answer_through() -> None:
    assert map_response({"status": "ok"}, {}) == {"status": "ok"}


# ------------------------------------------------------------------ breaker
def test_the_breaker_opens_after_n_failures_within_the_window() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, window=10, cooldown=30, clock=clock)
    assert b.failure() is False
    clock.now += 11                           # the first failure leaves the window
    assert b.failure() is False and b.failure() is False
    assert b.state == CLOSED and b.allow()
    assert b.failure() is True                # the third within 10 s: opened (the caller logs it once)
    assert b.state == OPEN and not b.allow() and b.retry_in() == 30
    assert b.failure() is False               # failures while open do not open it again
    assert b.openings == 1


def test_the_breaker_lets_one_trial_through_after_the_cool_down() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, window=10, cooldown=30, clock=clock)
    b.failure()
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert b.state == HALF_OPEN
    assert b.allow() is True and b.allow() is False      # the trial, and nobody else meanwhile
    b.success()
    assert b.state == CLOSED and b.allow() and b.allow()


def test_a_failed_trial_opens_it_for_another_cool_down() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=2, window=10, cooldown=5, clock=clock)
    b.failure(), b.failure()
    clock.now += 5
    assert b.allow()
    assert b.failure() is True and b.state == OPEN and b.openings == 2
    clock.now += 4
    assert not b.allow()


def test_an_abandoned_trial_lets_the_next_caller_try() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, window=10, cooldown=5, clock=clock)
    b.failure()
    clock.now += 6
    assert b.allow() and not b.allow()
    b.abandoned()
    assert b.allow()


def test_a_success_forgets_earlier_failures() -> None:
    b = CircuitBreaker(failures=2, window=10, cooldown=5, clock=Clock())
    b.failure()
    b.success()
    assert b.failure() is False and b.state == CLOSED


def test_the_breaker_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)


# ------------------------------------------------------------------ guarded backend
class Fake:
    operations = frozenset({"get"})

    def __init__(self) -> None:
        self.fail: LookupFailed | None = None
        self.gate: asyncio.Event | None = None
        self.calls = 0

    async def lookup(self, operation: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {"status": "ok"}


class Seen:
    def __init__(self) -> None:
        self.done: list[tuple[str, str | None]] = []
        self.states: list[str] = []

    def lookup_done(self, backend: str, seconds: float, error: str | None) -> None:
        self.done.append((backend, error))

    def lookup_breaker(self, backend: str, state: str) -> None:
        self.states.append(state)


async def test_over_the_concurrency_cap_a_lookup_fails_at_once() -> None:
    fake, seen = Fake(), Seen()
    fake.gate = asyncio.Event()
    g = GuardedBackend("b", fake, CircuitBreaker(), max_concurrent=2, observer=seen)
    first = [asyncio.create_task(g.lookup("get", {})) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(LookupFailed) as exc:
        await asyncio.wait_for(g.lookup("get", {}), 0.5)   # no queueing: refused before any wait
    assert exc.value.kind == "busy" and fake.calls == 2
    fake.gate.set()
    assert [await t for t in first] == [{"status": "ok"}] * 2
    assert await g.lookup("get", {}) == {"status": "ok"}     # a slot is free again
    assert seen.done.count(("b", "busy")) == 1 and seen.done.count(("b", None)) == 3


async def test_the_guarded_backend_opens_logs_once_and_refuses_until_the_cool_down(
        caplog: pytest.LogCaptureFixture) -> None:
    fake, seen, clock = Fake(), Seen(), Clock()
    fake.fail = LookupFailed("down", kind="connect")
    g = GuardedBackend("b", fake, CircuitBreaker(2, 10, 30, clock=clock), observer=seen, clock=clock)
    with caplog.at_level(logging.INFO, logger="ivr.menu.lookups"):
        for _ in range(5):
            with pytest.raises(LookupFailed):
                await g.lookup("get", {})
    assert fake.calls == 2                                  # then refused without asking
    assert [r.getMessage() for r in caplog.records if "circuit opened" in r.getMessage()] != []
    assert len([r for r in caplog.records if "circuit opened" in r.getMessage()]) == 1
    assert seen.done.count(("b", "breaker_open")) == 3 and seen.states == [CLOSED, OPEN]
    clock.now += 30
    fake.fail = None
    assert await g.lookup("get", {}) == {"status": "ok"}
    assert seen.states == [CLOSED, OPEN, HALF_OPEN, CLOSED]


async def test_a_call_missing_a_parameter_does_not_count_against_the_backend() -> None:
    fake = Fake()
    fake.fail = LookupFailed("the URL needs 'booking'", kind="params")
    g = GuardedBackend("b", fake, CircuitBreaker(1, 10, 30, clock=Clock()))
    with pytest.raises(LookupFailed):
        await g.lookup("get", {})
    assert g.breaker.state == CLOSED


# ------------------------------------------------------------------ config
def lookups_cfg(**entry: Any) -> dict[str, Any]:
    return {"lookups": {"bookings": {"url": "http://127.0.0.1:9/b/{booking}", **entry}}}


def test_a_lookups_section_is_read_with_its_defaults() -> None:
    cfg = from_mapping(lookups_cfg(map={"status": "booking.state"}), env=NO_ENV)
    (lk,) = cfg.lookups
    assert (lk.name, lk.url, lk.timeout, lk.retries, lk.auth_header, lk.auth) == (
        "bookings", "http://127.0.0.1:9/b/{booking}", HTTP_TIMEOUT, 1, "", "")
    assert dict(lk.map) == {"status": "booking.state"}
    assert lk.timeout == HttpBackend("x", "http://h/").timeout    # the config and the backend agree


def test_the_docs_state_the_default_timeout() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "integrations.md").read_text(encoding="utf-8")
    assert f"| `timeout` | {HTTP_TIMEOUT:g} |" in docs


def test_the_budget_is_the_lookup_nodes_time_out() -> None:
    assert LOOKUP_BUDGET == node_lookup.LOOKUP_TIMEOUT


@pytest.mark.parametrize("entry, message", [
    ({"url": "ftp://x/"}, "lookups.bookings.url: expected http(s)://"),
    ({"url": "http://user:pw@host/x"}, "lookups.bookings.url: no credentials in the URL"),
    ({"url": "http://{host}/x"}, "lookups.bookings.url: expected http(s)://"),
    ({"url": "http://h/{booking.__class__}"}, "lookups.bookings.url: placeholders are plain names"),
    ({"url": "http://h/{booking!r}"}, "lookups.bookings.url: placeholders are plain names"),
    ({"url": "http://h/{booking"}, "lookups.bookings.url: "),
    ({"timeout": 0}, "lookups.bookings.timeout: expected 0.1 to 5"),
    ({"timeout": 3, "retries": 1}, "lookups.bookings.retries: timeout x (retries + 1) = 6s is over"),
    ({"retries": 9}, "lookups.bookings.retries: expected 0 to 3"),
    ({"max_concurrent": 0}, "lookups.bookings.max_concurrent: expected 1 to 1000"),
    ({"breaker_failures": 0}, "lookups.bookings.breaker_failures:"),
    ({"breaker_cooldown": 0}, "lookups.bookings.breaker_cooldown:"),
    ({"map": {"status": "a..b"}}, "lookups.bookings.map.status: expected a path"),
    ({"map": {"1x": "a"}}, "lookups.bookings.map.1x: field names"),
    ({"map": ["a"]}, "lookups.bookings.map: expected a mapping"),
    ({"auth_header": "Authorization"}, "lookups.bookings.auth_header: its value is missing: put it in "
                                       "secrets.yaml (lookup_bookings_auth) or IVR_LOOKUP_BOOKINGS_AUTH"),
    ({"auth_header": "Bad Header", "auth": "x"}, "lookups.bookings.auth_header: a header name"),
    ({"colour": "red"}, "lookups.bookings.colour: unknown key"),
    ({"timeout": "soon"}, "lookups.bookings.timeout: expected a number"),
])
def test_bad_lookups_are_refused_naming_the_key(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        from_mapping(lookups_cfg(**entry), env=NO_ENV)
    assert str(exc.value).startswith(message), str(exc.value)


def test_other_bad_lookup_sections() -> None:
    for data, message in (({"lookups": ["x"]}, "lookups: expected a mapping"),
                          ({"lookups": {"refunds": {"url": "http://h/"}}}, "lookups.refunds: 'refunds' is a built-in"),
                          ({"lookups": {"b": {"timeout": 1}}}, "lookups.b.url: missing"),
                          ({"lookups": {"a b": {"url": "http://h/"}}}, "lookups.a b: names are")):
        with pytest.raises(ConfigError) as exc:
            from_mapping(data, env=NO_ENV)
        assert str(exc.value).startswith(message), str(exc.value)
    with pytest.raises(ConfigError, match="^IVR_LOOKUP_NOPE_AUTH: no look-up backend of that name"):
        from_mapping({}, env={"IVR_LOOKUP_NOPE_AUTH": "x"})


def test_the_auth_value_comes_from_secrets_yaml_or_the_environment_never_ivr_yaml(tmp_path: Path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text("lookups:\n  my-bookings:\n    url: https://b.example/api/{booking}\n"
                    "    auth_header: Authorization\n")
    with pytest.raises(ConfigError, match="auth_header: its value is missing"):
        load(path, env=NO_ENV)
    (tmp_path / "secrets.yaml").write_text("lookup_my-bookings_auth: Bearer from-secrets\n")
    assert load(path, env=NO_ENV).lookups[0].auth == "Bearer from-secrets"
    env = {"IVR_LOOKUP_MY_BOOKINGS_AUTH": "Bearer from-env"}
    assert load(path, env=env).lookups[0].auth == "Bearer from-env"
    path.write_text("lookups:\n  b:\n    url: https://b.example/\n    auth_header: X-Key\n    auth: oops\n")
    with pytest.raises(ConfigError, match=r"^lookups.b.auth: not in ivr.yaml; put it in secrets.yaml "
                                          r"\(lookup_b_auth\) or IVR_LOOKUP_B_AUTH"):
        load(path, env=NO_ENV)


def test_the_controller_registers_each_lookup_behind_its_breaker() -> None:
    cfg = from_mapping(lookups_cfg(auth_header="X-Key", auth="k1", max_concurrent=3, breaker_failures=4,
                                   map={"status": "s"}), env=NO_ENV)
    (name, g), = http_backends(cfg).items()
    assert name == "bookings" and isinstance(g, GuardedBackend) and g.max_concurrent == 3
    assert g.breaker.failures == 4
    inner = g.inner
    assert isinstance(inner, HttpBackend) and inner.headers == {"X-Key": "k1"} and inner.mapping == {"status": "s"}


# ------------------------------------------------------------------ a real HTTP server
class Server:
    """An aiohttp app on 127.0.0.1 (ephemeral port) answering like a business's booking system."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.auth: list[str | None] = []
        self.down = False
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ref = request.match_info["ref"]
        self.hits[ref] = self.hits.get(ref, 0) + 1
        self.auth.append(request.headers.get("Authorization"))
        if self.down or ref == "500500":
            return web.Response(status=500, text="boom")
        if ref == "404404":
            return web.json_response({"error": "no such booking"}, status=404)
        if ref == "777777":
            await asyncio.sleep(2)
            return web.json_response({"booking": {"state": "late"}})
        if ref == "888888":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if ref == "999999":
            return web.json_response(["a", "list"])
        return web.json_response({"booking": {"ref": ref, "state": "paid", "legs": [{"flight": "4711"}]}})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    app = web.Application()
    app.router.add_get("/api/bookings/{ref}", s.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp keeps the bound socket here
    s.url = f"http://127.0.0.1:{port}/api/bookings/{{booking}}"
    try:
        yield s
    finally:
        await runner.cleanup()


MAP = {"status": "booking.state", "reference": "booking.ref", "flight": "booking.legs.0.flight"}


async def test_found_mapped_and_the_auth_header_sent(server: Server) -> None:
    b = HttpBackend("bookings", server.url, timeout=1, retries=0, mapping=MAP,
                    headers={"Authorization": "Bearer t0k"})
    try:
        got = await b.lookup("get", {"booking": "123456"})
        assert got == {"status": "paid", "reference": "123456", "flight": "4711"}
        assert await b.lookup("get", {"booking": "404404"}) is None
        assert server.auth == ["Bearer t0k", "Bearer t0k"]
    finally:
        await b.close()


@pytest.mark.parametrize("ref, kind, hits", [
    ("777777", "timeout", 2),       # slow: a time-out, tried once more
    ("500500", "http", 2),          # a 5xx, tried once more
    ("888888", "invalid_json", 1),  # not JSON: not tried again
    ("999999", "invalid_json", 1),  # JSON but not an object
])
async def test_failures_have_a_kind_and_only_transient_ones_are_retried(server: Server, ref: str, kind: str,
                                                                        hits: int) -> None:
    b = HttpBackend("bookings", server.url, timeout=0.3, retries=1, mapping=MAP)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(LookupFailed) as exc:
            await b.lookup("get", {"booking": ref})
        assert exc.value.kind == kind and server.hits[ref] == hits
        assert loop.time() - started < 1.5       # two short attempts, never the server's 2 s
    finally:
        await b.close()


async def test_a_refused_connection_is_a_connect_failure() -> None:
    b = HttpBackend("bookings", "http://127.0.0.1:9/x/{booking}", timeout=0.5, retries=0)
    try:
        with pytest.raises(LookupFailed) as exc:
            await b.lookup("get", {"booking": "1"})
        assert exc.value.kind in ("connect", "timeout")
    finally:
        await b.close()


async def test_the_breaker_opens_on_a_failing_server_and_closes_when_it_recovers(server: Server) -> None:
    cfg = from_mapping({"lookups": {"bookings": {"url": server.url, "timeout": 0.5, "retries": 0,
                                                 "breaker_failures": 3, "breaker_window": 10,
                                                 "breaker_cooldown": 1, "map": MAP}}}, env=NO_ENV)
    metrics = Metrics()
    g = http_backends(cfg, metrics)["bookings"]
    try:
        server.down = True
        for _ in range(6):
            with pytest.raises(LookupFailed):
                await g.lookup("get", {"booking": "123456"})
        assert server.hits["123456"] == 3 and g.breaker.state == OPEN     # the last 3 never reached it
        text = metrics.render().decode()
        assert 'ivr_lookup_breaker_state{backend="bookings"} 1.0' in text
        assert 'ivr_lookup_errors_total{backend="bookings",kind="http"} 3.0' in text
        assert 'ivr_lookup_errors_total{backend="bookings",kind="breaker_open"} 3.0' in text
        assert 'ivr_lookup_seconds_count{backend="bookings"} 3.0' in text
        server.down = False
        await asyncio.sleep(1.05)                                        # the cool-down
        assert (await g.lookup("get", {"booking": "123456"}) or {})["status"] == "paid"
        assert g.breaker.state == CLOSED
        assert 'ivr_lookup_breaker_state{backend="bookings"} 0.0' in metrics.render().decode()
    finally:
        await g.close()


# ------------------------------------------------------------------ through a menu's lookup node
async def test_a_lookup_node_speaks_the_mapped_answer_and_takes_error_when_the_circuit_is_open(
        server: Server, prompts: PromptLibrary, P: str) -> None:
    cfg = from_mapping({"lookups": {"bookings": {"url": server.url, "timeout": 0.5, "retries": 0,
                                                 "breaker_failures": 1, "breaker_cooldown": 60, "map": MAP}}},
                       env=NO_ENV)
    backends = http_backends(cfg)
    m = parse_menu(textwrap.dedent(LOOKUP_MENU.format(backend="bookings", operation="get")), "t.yaml", QUEUES,
                   LANGUAGES, frozenset({"refunds", *backends}))
    try:
        world = World()
        fake = ScriptedAsterisk(booking_script(P, "123456") + [
            (sf(P, "status-paid"), PLAYED), ('SAY DIGITS "123456" ""', EXEC_OK), bye()])
        await run_call(engine_for(m, prompts, world, backends=backends), fake)
        assert fake.commands == fake.expected
        assert record_of(world)["path"] == ["ask", "look", "found"]
        assert record_of(world)["vars"]["res_status"] == "paid"

        server.down = True                     # one failure opens this breaker: the next caller is not kept
        for expected_hits in (2, 2):
            world = World()
            fake = ScriptedAsterisk(booking_script(P, "123456") + [bye()])
            await run_call(engine_for(m, prompts, world, backends=backends), fake)
            assert record_of(world)["path"] == ["ask", "look", "lookup-error", "err"]
            assert server.hits["123456"] == expected_hits
    finally:
        for g in backends.values():
            await g.close()


def test_menus_check_knows_the_configured_backends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from ivr.app.cli import cmd_menus_check

    (tmp_path / "menus").mkdir()
    (tmp_path / "menus" / "t.yaml").write_text(textwrap.dedent(LOOKUP_MENU.format(backend="bookings",
                                                                                  operation="get")))
    (tmp_path / "ivr.yaml").write_text("lookups:\n  bookings: {url: 'http://127.0.0.1:9/{booking}'}\n")
    assert cmd_menus_check(argparse.Namespace(config=str(tmp_path / "ivr.yaml"), dir=str(tmp_path / "menus"))) == 0
    (tmp_path / "ivr.yaml").write_text("node: n1\n")
    assert cmd_menus_check(argparse.Namespace(config=str(tmp_path / "ivr.yaml"), dir=str(tmp_path / "menus"))) == 1
    assert "unknown backend 'bookings' (known: refunds)" in capsys.readouterr().out


def test_the_worked_example_in_the_docs_is_valid() -> None:
    import re

    import yaml

    docs = (Path(__file__).resolve().parents[2] / "docs" / "integrations.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(lookups:.*?)```", docs, re.S).group(1)  # type: ignore[union-attr]  # it is there
    cfg = from_mapping(yaml.safe_load(block), env={"IVR_LOOKUP_BOOKINGS_AUTH": "Bearer x"})
    (lk,) = cfg.lookups
    assert (lk.name, lk.timeout, lk.retries, lk.auth) == ("bookings", 1.5, 1, "Bearer x")
    assert map_response({"booking": {"state": "confirmed", "ref": "AB1", "legs": [{"flight_number": "12"}]}},
                        lk.map) == {"status": "confirmed", "reference": "AB1", "flight": "12"}
