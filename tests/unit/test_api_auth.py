"""Token checks and the failed-login limit of the API (the real middleware and routes, an in-memory store)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ivr.api.access import AccessService
from ivr.api.app import LIVE_FEED, build_app
from ivr.api.live import LiveFeed
from ivr.api.clientip import ClientAddress
from ivr.api.services import Services
from ivr.outcomes.desk import OutcomesDesk
from ivr.app.config_load import from_mapping
from ivr.store.redis_store import _hash_token

VALID = "valid-token-of-a-supervisor"


class FakeStore:
    """The store methods the API's authentication uses, in memory."""

    def __init__(self) -> None:
        self.tokens = {_hash_token(VALID): {"name": "sup", "role": "supervisor"}}
        self.failures: dict[str, tuple[int, float]] = {}
        self.verified = 0
        self.tickets: dict[str, tuple[dict[str, Any], float]] = {}

    async def verify_token(self, token: str) -> dict[str, Any] | None:
        self.verified += 1
        return self.tokens.get(_hash_token(token))

    async def create_stream_ticket(self, info: dict[str, Any], ttl: int) -> str:
        ticket = f"ticket-{len(self.tickets)}"
        self.tickets[_hash_token(ticket)] = ({"name": info["name"], "role": info["role"]}, time.time() + ttl)
        return ticket

    async def take_stream_ticket(self, ticket: str) -> dict[str, Any] | None:
        info, until = self.tickets.pop(_hash_token(ticket), (None, 0.0))
        return info if until > time.time() else None

    async def auth_failures(self, address: str) -> tuple[int, int]:
        count, until = self.failures.get(address, (0, 0.0))
        left = int(until - time.time())
        return (count, left) if left > 0 else (0, 0)

    async def auth_failed(self, address: str, window: int) -> int:
        count, until = self.failures.get(address, (0, 0.0))
        if until <= time.time():
            count, until = 0, time.time() + window
        self.failures[address] = (count + 1, until)
        return count + 1


DETAIL = {"status": "degraded", "node": "n1", "ami": {"connected": False, "last_error": "auth failed for ivr@10.1.2.3"},
          "menus": {"loaded": ["main"], "errors": ["sales.yaml: /srv/ivr/dialplans/sales.yaml: bad node"]}}


def controller(**api: Any) -> SimpleNamespace:
    cfg = from_mapping({"api": {"auth_fail_limit": 3, "auth_fail_window": 60, **api}}, env={})
    ctl = SimpleNamespace(cfg=cfg, store=FakeStore(), detail=dict(DETAIL, status="ok"), stopping=asyncio.Event())

    async def health() -> dict[str, Any]:
        return dict(ctl.detail)
    ctl.health = health
    return ctl


def services(ctl: SimpleNamespace) -> Services:
    """The services these routes use: access (the fake store), the node's health, the dispositions."""
    api = ctl.cfg.api
    none: Any = None
    return Services(access=AccessService(ctl.store, ctl.store, fail_limit=api.auth_fail_limit,
                                         fail_window=api.auth_fail_window),
                    client_address=ClientAddress.from_config(api.trusted_proxies, api.client_ip_header),
                    system=ctl, outcomes=OutcomesDesk(none, none, none, ctl.cfg.dispositions),
                    stopping=ctl.stopping)


@pytest.fixture
async def behind_proxy() -> AsyncIterator[tuple[TestClient, SimpleNamespace]]:
    ctl = controller(trusted_proxies=["127.0.0.1"], client_ip_header="X-Forwarded-For")
    async with TestClient(TestServer(build_app(services(ctl)))) as client:
        yield client, ctl


@pytest.fixture
async def direct() -> AsyncIterator[tuple[TestClient, SimpleNamespace]]:
    ctl = controller()
    async with TestClient(TestServer(build_app(services(ctl)))) as client:
        yield client, ctl


async def get(client: TestClient, token: str, forwarded: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    async with client.get("/api/v1/dispositions", headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_a_valid_token_is_accepted_from_a_locked_out_address(direct) -> None:
    client, ctl = direct
    assert [await get(client, f"guess-{i}") for i in range(3)] == [401, 401, 401]
    assert await get(client, "guess-again") == 429
    assert await get(client, VALID) == 200                 # checked before the lock-out
    assert ctl.store.failures["127.0.0.1"][0] == 3         # the 429 and the success counted nothing


async def test_successes_are_not_counted(direct) -> None:
    client, ctl = direct
    for _ in range(10):
        assert await get(client, VALID) == 200
    assert ctl.store.failures == {}


async def test_behind_a_trusted_proxy_the_client_is_locked_out_not_the_proxy(behind_proxy) -> None:
    client, ctl = behind_proxy
    attacker, colleague = "203.0.113.7", "198.51.100.20"
    assert [await get(client, f"guess-{i}", attacker) for i in range(4)] == [401, 401, 401, 429]
    assert await get(client, "typo", colleague) == 401      # another client behind the same proxy
    assert await get(client, VALID, colleague) == 200
    assert set(ctl.store.failures) == {attacker, colleague}


async def test_a_client_cannot_name_its_own_address_through_the_header(direct) -> None:
    client, ctl = direct                                   # no trusted proxy: the header is ignored
    for i in range(3):
        assert await get(client, f"guess-{i}", f"10.9.9.{i}") == 401
    assert await get(client, "guess", "10.9.9.99") == 429
    assert set(ctl.store.failures) == {"127.0.0.1"}


async def test_behind_a_proxy_a_forged_left_part_of_the_header_is_not_read(behind_proxy) -> None:
    client, ctl = behind_proxy                             # the proxy appends the real client on the right
    for i in range(3):
        assert await get(client, f"guess-{i}", f"10.0.0.{i}, 203.0.113.7") == 401
    assert set(ctl.store.failures) == {"203.0.113.7"}


@pytest.mark.parametrize("peer,header,expected", [
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "1.1.1.1, 203.0.113.7", "203.0.113.7"),
    ("127.0.0.1", "203.0.113.7, 10.0.0.2", "203.0.113.7"),     # 10.0.0.2: a second trusted proxy
    ("127.0.0.1", "203.0.113.7, garbage", "127.0.0.1"),
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", "[2001:db8::5]:443", "2001:db8::5"),
    ("127.0.0.1", "203.0.113.7:51234", "203.0.113.7"),
    ("::ffff:127.0.0.1", "2001:db8::5", "2001:db8::5"),
    ("192.0.2.50", "203.0.113.7", "192.0.2.50"),              # not a trusted proxy: the header is not read
    ("127.0.0.1", "10.0.0.2", "127.0.0.1"),                    # only proxies named: the nearest counts
])
def test_client_address(peer: str, header: str | None, expected: str) -> None:
    resolver = ClientAddress.from_config(["127.0.0.1", "10.0.0.0/24"], "X-Forwarded-For")
    assert resolver.resolve(peer, header) == expected


async def test_health_without_a_token_says_only_up_or_down(direct) -> None:
    client, ctl = direct
    async with client.get("/health") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ok"}
    ctl.detail = dict(DETAIL)
    async with client.get("/health") as resp:
        assert resp.status == 503 and await resp.json() == {"status": "degraded"}
        assert resp.headers["Cache-Control"] == "no-store"


async def test_health_with_a_token_gives_the_detail(direct) -> None:
    client, ctl = direct
    ctl.detail = dict(DETAIL)
    async with client.get("/health", headers={"Authorization": f"Bearer {VALID}"}) as resp:
        assert resp.status == 503 and await resp.json() == DETAIL
    async with client.get("/health", headers={"Authorization": "Bearer guess"}) as resp:
        assert resp.status == 401 and "last_error" not in await resp.text()
    assert ctl.store.failures["127.0.0.1"][0] == 1       # a wrong token here counts like anywhere else


async def first_event(client: TestClient, url: str, **kw: Any) -> tuple[int, str]:
    async with client.get(url, **kw) as resp:
        if resp.status != 200:
            return resp.status, (await resp.json())["error"]
        assert resp.headers["Content-Type"] == "text/event-stream"
        return resp.status, (await resp.content.readline()).decode()


@pytest.fixture
async def streaming() -> AsyncIterator[tuple[TestClient, SimpleNamespace]]:
    ctl = controller()

    async def picture() -> dict[str, Any]:
        return {"queues": {}, "agents": []}
    app = build_app(services(ctl))
    app[LIVE_FEED] = LiveFeed(picture)
    async with TestClient(TestServer(app)) as client:
        yield client, ctl
    ctl.stopping.set()


async def test_the_stream_opens_with_a_ticket_once(streaming) -> None:
    client, ctl = streaming
    async with client.post("/api/v1/stream/ticket", headers={"Authorization": f"Bearer {VALID}"}) as resp:
        assert resp.status == 201 and resp.headers["Cache-Control"] == "no-store"
        body = await resp.json()
    ticket = body["ticket"]
    assert body["expires_in"] == 30 and body["stream"] == f"/api/v1/stream?ticket={ticket}"
    assert VALID not in str(ctl.store.tickets)
    status, event = await first_event(client, f"/api/v1/stream?ticket={ticket}")
    assert status == 200 and event.startswith("data: {")
    status, error = await first_event(client, f"/api/v1/stream?ticket={ticket}")      # used once
    assert status == 401 and "unknown, used or expired stream ticket" in error
    assert ctl.store.failures == {}       # a spent ticket is not a failed login


async def test_a_ticket_expires(streaming) -> None:
    client, ctl = streaming
    ticket = await ctl.store.create_stream_ticket({"name": "sup", "role": "supervisor"}, ttl=0)
    assert (await first_event(client, f"/api/v1/stream?ticket={ticket}"))[0] == 401


async def test_a_token_in_the_url_is_refused(streaming) -> None:
    client, ctl = streaming
    status, error = await first_event(client, f"/api/v1/stream?token={VALID}")
    assert status == 401 and "a token in the URL is refused" in error
    status, error = await first_event(client, "/api/v1/stream")
    assert status == 401 and "missing bearer token" in error
    status, event = await first_event(client, "/api/v1/stream", headers={"Authorization": f"Bearer {VALID}"})
    assert status == 200 and event.startswith("data: ")     # clients that can send headers still may


async def test_a_stream_ticket_needs_a_token(streaming) -> None:
    client, ctl = streaming
    async with client.post("/api/v1/stream/ticket") as resp:
        assert resp.status == 401
    async with client.post("/api/v1/stream/ticket", headers={"Authorization": "Bearer guess"}) as resp:
        assert resp.status == 401
    assert ctl.store.tickets == {}


async def test_health_with_a_token_while_redis_is_down_says_up_or_down(direct) -> None:
    from ivr.store.errors import StoreUnavailable
    client, ctl = direct
    ctl.detail = dict(DETAIL)

    async def unreachable(token: str) -> None:     # what the store raises when Redis cannot be reached
        raise StoreUnavailable("Connection refused")
    ctl.store.verify_token = unreachable
    async with client.get("/health", headers={"Authorization": f"Bearer {VALID}"}) as resp:
        assert resp.status == 503 and await resp.json() == {"status": "degraded"}


async def test_a_405_names_the_methods_the_resource_allows(direct) -> None:
    """RFC 9110: a 405 carries Allow; the error middleware answers JSON and keeps the header."""
    client, _ = direct
    async with client.request("TRACE", "/api/v1/dispositions", headers={"Authorization": f"Bearer {VALID}"}) as resp:
        assert resp.status == 405
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert (await resp.json())["status"] == 405


async def test_the_served_document_lists_configured_names_and_the_route_table_alone_patterns() -> None:
    from ivr.api.app import PUBLIC
    from ivr.api.openapi_spec import spec

    served = spec(build_app(Services(choices={"lang": ("en", "fa")})), PUBLIC)
    banner = served["paths"]["/api/v1/banner/{lang}"]["put"]
    assert banner["parameters"][0]["schema"] == {"enum": ["en", "fa"]}
    assert set(banner["responses"]) >= {"200", "400", "401", "403", "404", "409", "413", "429", "503"}
    refund = served["paths"]["/api/v1/refunds"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert refund["properties"]["lang"] == {"enum": ["en", "fa", ""]}
    assert refund["additionalProperties"] is False
    offline = spec(build_app(None), PUBLIC)
    assert offline["paths"]["/api/v1/banner/{lang}"]["put"]["parameters"][0]["schema"]["pattern"] == "^[a-z]{2,3}$"
    assert "x-choices" not in str(offline)
