"""Reports by hour/day from crafted call records and campaign attempts (pure functions)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest

from ivr.reports import service as reports

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc).timestamp()   # 08:00 UTC


def rec(at: float, outcome: str, *, caller: str = "", wait: float | None = None, talk: float | None = None,
        survey: int | None = None, menu: str = "main", **extra: object) -> dict:
    r = {"ended_at": str(at), "started_at": str(at - 60), "outcome": outcome, "menu": menu, "caller": caller}
    if outcome in reports.QUEUE_OUTCOMES:
        r["queue"] = "support"
    if wait is not None:
        r["wait"] = str(wait)
    if talk is not None:
        r["talk"] = str(talk)
    if survey is not None:
        r["survey"] = str(survey)
    r.update({k: str(v) for k, v in extra.items()})
    return r


def test_hourly_figures_are_computed_from_the_records() -> None:
    records = [
        rec(T0 + 100, "answered", caller="1", wait=10, talk=100, survey=5),
        rec(T0 + 200, "answered", caller="2", wait=30, talk=200, survey=3),
        rec(T0 + 300, "abandoned", caller="3", wait=50),
        rec(T0 + 400, "self_service", caller="4"),
        rec(T0 + 500, "callback_requested", caller="5"),
        rec(T0 + 600, "ivr_hangup"),
        rec(T0 + 3700, "answered", caller="6", wait=5, talk=60),        # 09:01
    ]
    rows = reports.build(records, [], start=T0, end=T0 + 7200, by="hour")
    assert [r["period"] for r in rows] == ["2026-11-25 08:00", "2026-11-25 09:00"]
    h8 = rows[0]
    assert (h8["calls"], h8["offered"], h8["answered"], h8["abandoned"]) == (6, 3, 2, 1)
    assert (h8["self_service"], h8["callbacks_requested"]) == (1, 1)
    assert h8["asa_s"] == 20.0                      # (10 + 30) / 2
    assert h8["service_level"] == round(1 / 3, 3)   # only the 10 s answer is within 20 s, of 3 offered
    assert h8["abandon_rate"] == round(1 / 3, 3)
    assert h8["aht_s"] == 150.0
    assert (h8["surveys"], h8["satisfaction"]) == (2, 4.0)
    assert h8["fcr"] == 1.0                         # five callers with a number, none called again
    total = reports.totals(rows)
    assert (total["calls"], total["offered"], total["answered"]) == (7, 4, 3)
    assert total["asa_s"] == 15.0                   # weighted by answered calls: (10 + 30 + 5) / 3
    assert total["service_level"] == 0.5            # (1/3 * 3 + 1 * 1) / 4 offered


def test_repeat_callers_within_24_hours_lower_first_contact_resolution() -> None:
    records = [
        rec(T0 + 100, "answered", caller="555", wait=1, talk=10),
        rec(T0 + 4000, "answered", caller="555", wait=1, talk=10),     # called back in: the first was not resolved
        rec(T0 + 200, "answered", caller="777", wait=1, talk=10),
        rec(T0 + 200 + 25 * 3600, "answered", caller="777", wait=1, talk=10),   # more than 24 h later: resolved
    ]
    rows = reports.build(records, [], start=T0, end=T0 + 86400, by="day")
    assert len(rows) == 1 and rows[0]["calls"] == 3
    assert rows[0]["fcr"] == round(2 / 3, 3)


def test_outbound_notices_and_callbacks_are_not_inbound_calls() -> None:
    records = [
        rec(T0 + 10, "answered", caller="1", wait=2, talk=5),
        rec(T0 + 20, "notice_refund", caller="2", menu="notice:flights"),
        rec(T0 + 30, "answered", caller="1", wait=3, talk=5, menu="callback", kind="callback"),
    ]
    attempts = [{"at": str(T0 + 15), "outcome": "refund"}, {"at": str(T0 + 16), "outcome": "busy"},
                {"at": str(T0 + 17), "outcome": "busy"}, {"at": str(T0 - 5), "outcome": "busy"}]
    rows = reports.build(records, attempts, start=T0, end=T0 + 3600)
    r = rows[0]
    assert r["calls"] == 1                      # only the first one came in
    assert r["callbacks_dialled"] == 1 and r["offered"] == 2   # the callback was queue work
    assert r["fcr"] == 1.0                      # being called back is not calling again
    assert r["outbound_attempts"] == 3 and r["outbound.busy"] == 2 and r["outbound.refund"] == 1


def test_callbacks_kept_within_their_promise() -> None:
    cb = dict(menu="callback", kind="callback", wait=3, talk=5)
    records = [rec(T0 + 10, "answered", caller="1", callback_kept="yes", **cb),
               rec(T0 + 20, "answered", caller="2", callback_kept="yes", **cb),
               rec(T0 + 30, "answered", caller="3", callback_kept="no", **cb),
               rec(T0 + 40, "answered", caller="4", callback_kept="none", **cb),   # booked without a promise
               rec(T0 + 50, "answered", caller="5", **cb)]                         # before promises were kept
    rows = reports.build(records, [], start=T0, end=T0 + 3600, by="day")
    r = rows[0]
    assert (r["callbacks_dialled"], r["callbacks_kept"], r["callbacks_late"]) == (5, 2, 1)
    t = reports.totals(rows)
    assert (t["callbacks_kept"], t["callbacks_late"]) == (2, 1)
    assert "callbacks_kept" in reports.to_csv(rows).splitlines()[0] and "cb kept" in reports.to_table(rows)


def test_damaged_records_are_skipped_not_fatal() -> None:
    records = [{"outcome": "answered"}, {"ended_at": "soon"}, rec(T0 + 1, "answered", wait="x", talk=None),
               rec(T0 + 2, "answered", caller="9", wait=4, talk=8, survey=9)]
    rows = reports.build(records, [{"at": "never"}], start=T0, end=T0 + 60)
    assert rows[0]["calls"] == 2 and rows[0]["answered"] == 2 and rows[0]["surveys"] == 0


def test_periods_follow_the_time_zone() -> None:
    late = datetime(2026, 11, 25, 23, 30, tzinfo=timezone.utc).timestamp()
    records = [rec(late, "self_service")]
    utc = reports.build(records, [], start=late - 10, end=late + 10, by="day")
    tokyo = reports.build(records, [], start=late - 10, end=late + 10, by="day", tz=reports.parse_tz("Asia/Tokyo"))
    assert utc[0]["period"] == "2026-11-25" and tokyo[0]["period"] == "2026-11-26"


def test_csv_and_table_output() -> None:
    rows = reports.build([rec(T0 + 1, "answered", caller="1", wait=4, talk=8)],
                         [{"at": str(T0 + 2), "outcome": "no_answer"}], start=T0, end=T0 + 60)
    data = list(csv.DictReader(io.StringIO(reports.to_csv(rows + [reports.totals(rows)]))))
    assert data[0]["answered"] == "1" and data[0]["outbound.no_answer"] == "1" and data[1]["period"] == "total"
    assert data[0]["abandon_rate"] == "0.0"
    table = reports.to_table(rows)
    assert "2026-11-25 08:00" in table and "100.0%" in table


@pytest.mark.parametrize("query,message", [
    ({"since": "yesterday"}, "since: expected an ISO date"),
    ({"hours": "many"}, "hours: expected a number"),
    ({"hours": "0"}, "hours: must be at least 0.01"),
])
def test_bad_options_name_what_is_wrong(query: dict, message: str) -> None:
    with pytest.raises(reports.ReportError, match=message):
        reports.window_from(query, timezone.utc, "hour")


def test_unknown_time_zone_and_period() -> None:
    with pytest.raises(reports.ReportError, match="tz: unknown time zone 'Mars/Base'"):
        reports.parse_tz("Mars/Base")
    with pytest.raises(reports.ReportError, match="by: expected hour or day"):
        reports.build([], [], start=0, end=1, by="week")


def test_naive_times_are_read_in_the_report_time_zone() -> None:
    paris = reports.parse_tz("Europe/Paris")
    assert reports.parse_time("since", "2026-11-25T09:00", paris) == T0   # 09:00 in Paris is 08:00 UTC
    assert reports.parse_time("since", str(T0), paris) == T0
