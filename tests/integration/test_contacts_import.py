"""Contacts CSV import/export against a real Redis (a private redis-server started by the fixture)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from ivr.campaigns import contacts, contacts_parse
from ivr.app.config import PROJECT_ROOT
from ivr.devtools.stack import start_scratch_redis

P = "t"
ALLOWED = ("+1", "+44", "+98", "+86")
# line numbers are the physical lines where each row starts (the header is line 1)
CSV_TEXT = (
    "Phone,Name,Lang,TZ,Booking,Flight\n"                          # 1
    "+1 212 555 0123,Alice,en,,1001,\n"                             # 2  contact 1
    "12345,Bob,,,,\n"                                               # 3  bad number
    "+44 20 7946 0958,Carol,,Europe/London,,BA118\n"                # 4  contact 2
    "(212) 555-0123,Alice Again,fa,,2002,BA119\n"                   # 5  duplicate of 1: merged
    "+98 912 123 4567,Dariush,fa,,,\n"                              # 6  contact 3, on the DNC list
    '+86 138 1234 5678,"${EXEC(System(rm -rf /))}",zh,,,\n'         # 7  hostile name
    '+44 20 7946 0959,"Eve\nSmith",en,,,\n'                         # 8-9 embedded newline
    "+33 1 42 68 53 00,Frank,,,,\n"                                 # 10 outside the allowed prefixes
    "+86 138 1234 5679,Wang,zh,,,\n"                                # 11 contact 4
    "\n"                                                            # 12 blank: skipped
    "+1 415 555 0134,Grace,,Mars/Phobos,,\n"                        # 13 bad tz
    "+1 415 555 0135,Heidi\x07,,,,\n"                               # 14 contact 5, control char stripped
)
EXPECTED_ERRORS = [
    (3, "Phone: +112345 is not a valid number"),
    (7, "Name: contains '${'"),
    (8, "Name: contains a line break"),
    (10, "destination +33 not allowed"),
    (13, "TZ: unknown time zone 'Mars/Phobos'"),
]


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `bash scripts/install.sh` first")
    proc, port = start_scratch_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def r(redis_port: int) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=redis_port, decode_responses=True)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


async def _import(r: aioredis.Redis, path: Path, cid: str = "c1", **kw: object) -> contacts.ImportReport:
    return await contacts.import_csv(r, P, cid, path, allowed_prefixes=ALLOWED, keep_columns=("flight",),
                                     **kw)  # type: ignore[arg-type]


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "contacts.csv"
    path.write_text(CSV_TEXT, encoding="utf-8", newline="")
    return path


async def test_import_reports_stores_dedupes_and_exports(r: aioredis.Redis, csv_path: Path, tmp_path: Path) -> None:
    assert await contacts.add_dnc(r, P, ["+98 912 123 4567", "(617) 203-0000"]) == 2
    calls: list[tuple[int, int]] = []
    report = await _import(r, csv_path, batch=3, progress=lambda rows, done: calls.append((rows, done)),
                           errors_path=tmp_path / "errors.csv")

    assert (report.rows, report.imported, report.dnc, report.merged, report.rejected) == (11, 4, 1, 1, 5)
    assert report.errors == EXPECTED_ERRORS and report.error_count == 5
    assert report.rows == report.imported + report.dnc + report.merged + report.rejected
    with open(tmp_path / "errors.csv", newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == [["line", "reason", "number"]] + [
            [str(line), reason, number] for (line, reason), number in zip(EXPECTED_ERRORS, [   # ' : text, no formula
                "12345", "'+86 138 1234 5678", "'+44 20 7946 0959", "'+33 1 42 68 53 00", "'+1 415 555 0134"])]
    assert [rows for rows, _ in calls] == [3, 6, 9, 11]
    assert calls[-1][1] == csv_path.stat().st_size

    # Redis contents
    assert await r.get(f"{P}:campaign:c1:seq") == "5"
    assert await contacts.contact(r, P, "c1", 1) == {
        "n": "1", "number": "+12125550123", "name": "Alice", "lang": "en", "tz": "America/New_York",
        "status": "pending", "attempts": "0", "line": "2", "booking": "1001", "flight": "BA119"}   # filled by line 5
    assert await contacts.contact(r, P, "c1", 2) == {
        "n": "2", "number": "+442079460958", "name": "Carol", "lang": "en", "tz": "Europe/London",
        "status": "pending", "attempts": "0", "line": "4", "flight": "BA118"}
    c3 = await contacts.contact(r, P, "c1", 3)
    assert c3 is not None and (c3["number"], c3["status"], c3["lang"], c3["tz"]) == (
        "+989121234567", "dnc", "fa", "Asia/Tehran")
    c4, c5 = await contacts.contact(r, P, "c1", 4), await contacts.contact(r, P, "c1", 5)
    assert c4 is not None and (c4["number"], c4["line"], c4["tz"]) == ("+8613812345679", "11", "Asia/Shanghai")
    assert c5 is not None and (c5["name"], c5["line"]) == ("Heidi", "14")
    assert await contacts.contact(r, P, "c1", 6) is None
    assert await r.hgetall(f"{P}:campaign:c1:numbers") == {
        "+12125550123": "1", "+442079460958": "2", "+989121234567": "3", "+8613812345679": "4", "+14155550135": "5"}
    assert await r.zrange(f"{P}:campaign:c1:due", 0, -1, withscores=True) == [
        ("1", 0.0), ("2", 0.0), ("4", 0.0), ("5", 0.0)]
    assert await contacts.counts(r, P, "c1") == {
        "pending": 4, "dnc": 1, "in_progress": 0, "done": 0, "failed": 0, "optout": 0, "reached": 0}
    summary = await r.hgetall(f"{P}:campaign:c1:import")
    assert summary["state"] == "done" and summary["rows"] == "11" and summary["rejected"] == "5"

    # export, and its round trip: importing the export into another campaign gives the same contacts
    out = io.StringIO(newline="")
    assert await contacts.export_csv(r, P, "c1", out, batch=2) == 5
    exported = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(exported[0]) == list(contacts.EXPORT_COLUMNS)
    assert [(e["n"], e["number"], e["name"], e["status"]) for e in exported] == [   # ' : text, never a formula
        ("1", "'+12125550123", "Alice", "pending"), ("2", "'+442079460958", "Carol", "pending"),
        ("3", "'+989121234567", "Dariush", "dnc"), ("4", "'+8613812345679", "Wang", "pending"),
        ("5", "'+14155550135", "Heidi", "pending")]
    assert all(e["last_outcome"] == e["keypress"] == e["updated"] == "" and e["attempts"] == "0" for e in exported)
    again = await contacts.import_csv(r, P, "c2", io.StringIO(out.getvalue(), newline=""))
    assert (again.imported, again.dnc, again.merged, again.rejected) == (4, 1, 0, 0)
    out2 = io.StringIO(newline="")
    await contacts.export_csv(r, P, "c2", out2)
    strip = [{k: v for k, v in e.items() if k != "updated"} for e in exported]
    assert [{k: v for k, v in e.items() if k != "updated"} for e in csv.DictReader(io.StringIO(out2.getvalue()))] \
        == strip


async def test_importing_the_same_file_twice_merges_everything(r: aioredis.Redis, csv_path: Path) -> None:
    await contacts.add_dnc(r, P, ["+989121234567"])
    first = await _import(r, csv_path)
    second = await _import(r, csv_path)
    assert (first.imported, first.dnc, first.merged) == (4, 1, 1)
    assert (second.rows, second.imported, second.dnc, second.merged, second.rejected) == (11, 0, 0, 6, 5)
    assert second.errors == EXPECTED_ERRORS
    assert await r.get(f"{P}:campaign:c1:seq") == "5"
    assert await r.zcard(f"{P}:campaign:c1:due") == 4
    assert await contacts.counts(r, P, "c1") == {
        "pending": 4, "dnc": 1, "in_progress": 0, "done": 0, "failed": 0, "optout": 0, "reached": 0}


async def test_set_status_moves_the_counters(r: aioredis.Redis, csv_path: Path) -> None:
    await _import(r, csv_path)
    assert await contacts.set_status(r, P, "c1", 1, "in_progress", attempts="1", attempt_id="c:c1:1:1") == "pending"
    assert (await contacts.counts(r, P, "c1"))["pending"] == 4 and (await contacts.counts(r, P, "c1"))[
        "in_progress"] == 1
    assert await contacts.set_status(r, P, "c1", 1, "done", last_outcome="refund", keypress="1",
                                     updated="1700000000.5") == "in_progress"
    assert await contacts.set_status(r, P, "c1", 2, "in_progress") == "pending"
    assert await contacts.set_status(r, P, "c1", 2, "in_progress", attempts="2") == "in_progress"   # no move
    assert await contacts.counts(r, P, "c1") == {
        "pending": 3, "dnc": 0, "in_progress": 1, "done": 1, "failed": 0, "optout": 0, "reached": 0}
    c1 = await contacts.contact(r, P, "c1", 1)
    assert c1 is not None and (c1["status"], c1["attempts"], c1["keypress"], c1["last_outcome"]) == (
        "done", "1", "1", "refund")
    assert await contacts.set_status(r, P, "c1", 99, "done") is None          # no such contact: nothing written
    assert not await r.exists(f"{P}:campaign:c1:contact:99")
    with pytest.raises(ValueError):
        await contacts.set_status(r, P, "c1", 1, "exploded")
    assert sum((await contacts.counts(r, P, "c1")).values()) == 5   # every contact counted once
    out = io.StringIO(newline="")
    await contacts.export_csv(r, P, "c1", out)
    row = next(csv.DictReader(io.StringIO(out.getvalue())))
    assert (row["status"], row["keypress"], row["last_outcome"], row["updated"]) == (
        "done", "1", "refund", "1700000000.5")


async def test_dnc_helpers_normalise_numbers(r: aioredis.Redis) -> None:
    assert await contacts.add_dnc(r, P, ["+44 20 7946 0958", "020 7946 0958"], default_region="GB") == 1
    assert await contacts.is_dnc(r, P, "+442079460958")
    assert await contacts.is_dnc(r, P, "(020) 7946-0958", default_region="GB")
    assert not await contacts.is_dnc(r, P, "not a number")
    assert await contacts.remove_dnc(r, P, ["+44 20 7946 0958"]) == 1
    assert not await contacts.is_dnc(r, P, "+442079460958")
    with pytest.raises(ValueError):
        await contacts.add_dnc(r, P, ["nonsense"])


async def test_file_level_problems_raise(r: aioredis.Redis, tmp_path: Path) -> None:
    for text, why in (("", "header"), ("+12125550123,Alice\n", "phone column"),
                      ("phone,number\n+1,+1\n", "phone, number")):
        with pytest.raises(contacts_parse.ContactsError, match=why):
            await contacts.import_csv(r, P, "c1", io.StringIO(text))
    with pytest.raises(contacts_parse.ContactsError, match="flight"):
        await contacts.import_csv(r, P, "c1", io.StringIO("number\n+12125550123\n"), keep_columns=("flight",))
    with pytest.raises(contacts_parse.ContactsError, match="reserved"):
        await contacts.import_csv(r, P, "c1", io.StringIO("number,status\n+12125550123,x\n"), keep_columns=("status",))
    with pytest.raises(contacts_parse.ContactsError, match="E.164 prefix"):
        await contacts.import_csv(r, P, "c1", io.StringIO("number\n"), allowed_prefixes=("44",))
    assert (await r.hgetall(f"{P}:campaign:c1:import"))["state"] == "failed"
    assert not await r.exists(f"{P}:campaign:c1:seq")


async def test_ragged_rows_and_a_bad_quote_do_not_stop_the_import(r: aioredis.Redis) -> None:
    text = ("number,name\n+12125550123\n+12125550124,Ann,\n+12125550125,Bob,extra\n"
            '+12125550126,"' + "x" * 140_000 + '"\n+12125550127,Cy\n')
    report = await contacts.import_csv(r, P, "c1", io.BytesIO(text.encode()))
    assert (report.rows, report.imported, report.rejected) == (5, 3, 2), report
    assert report.errors[0] == (4, "3 fields, the header has 2")
    assert report.errors[1][0] == 5 and report.errors[1][1].startswith("CSV: field larger than field limit")
    last = await contacts.contact(r, P, "c1", 3)
    assert last is not None and (last["number"], last["name"], last["line"]) == ("+12125550127", "Cy", "6")


def test_benchmark_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("contacts_import_bench", PROJECT_ROOT / "benchmarks" /
                                                  "contacts_import.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--rows", "2000", "--json", "--workdir", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    big, small = result["runs"]
    assert (big["rows"], small["rows"]) == (2000, 200)
    for run in (big, small):
        assert run["imported"] + run["merged"] + run["dnc"] + run["rejected"] == run["rows"]
        assert 0 < run["rejected"] < run["rows"] * 0.05 and run["merged"] > 0
        assert run["rows_per_s"] > 0 and run["peak_rss_mb"] > 0
    assert result["rss_ratio"] > 0 and result["consistent"] is True
