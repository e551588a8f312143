"""Reports by hour or by day from what the controller already stores in Redis.

Sources: the finished call records (stream ``{p}:calls``, one entry per call,
written when the call ends), and each campaign's attempts stream
(``{p}:campaign:{id}:attempts``). Nothing else is counted, so a report can be
re-run at any time and gives the same figures for closed periods.

Per period (the start of the hour or day, in the chosen time zone):

==================  ===========================================================
calls               inbound calls that ended in the period (outbound notices and
                    callbacks are not inbound calls)
self_service        inbound calls the IVR finished without an agent (a menu
                    node with an ``outcome``, such as a refund status read back)
callbacks_requested callers who asked to be called back instead of waiting
offered             inbound calls that entered a queue (callbacks dialled back
                    into a queue count here too: they are queue work)
answered            offered calls an agent answered
abandoned           offered calls that hung up while waiting
asa_s               average speed of answer: mean wait of the answered calls
service_level       answered within ``sl_target`` seconds / offered (0-1)
abandon_rate        abandoned / offered (0-1)
aht_s               average handle (talk) time of the answered calls
fcr                 first-contact resolution: share of inbound calls with a
                    caller number whose caller did not call again within 24 h
                    (periods less than 24 h old are provisional)
surveys             post-call surveys answered; ``satisfaction``: their mean (1-5)
callbacks_dialled   callbacks that reached the caller and went into a queue
callbacks_kept      of those, made within the promise the caller was told
                    ("within N minutes"); ``callbacks_late``: made after it
                    (callbacks booked without a promise are in neither)
outbound_attempts   campaign attempts, and ``outbound.<outcome>`` per outcome
==================  ===========================================================
"""

from __future__ import annotations

import io
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..core import csvsafe
from ..store.reports import ReportStore

REPEAT_WINDOW_S = 24 * 3600
QUEUE_OUTCOMES = ("answered", "abandoned", "left_queue")
PERIODS = ("hour", "day")
COLUMNS = ("period", "calls", "self_service", "callbacks_requested", "offered", "answered", "abandoned",
           "asa_s", "service_level", "abandon_rate", "aht_s", "fcr", "surveys", "satisfaction",
           "callbacks_dialled", "callbacks_kept", "callbacks_late", "outbound_attempts")


class ReportError(ValueError):
    """A report option is wrong; the message names it."""


def parse_tz(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"tz: unknown time zone {name!r} (expected e.g. UTC or Europe/Paris)") from None


def parse_time(key: str, value: str, tz: tzinfo) -> float:
    """An ISO date/time (in ``tz`` when it has no offset) or a Unix time; returns a Unix time."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(f"{key}: expected an ISO date/time like 2026-11-25T08:00 or a Unix time, got {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()


def period_start(ts: float, by: str, tz: tzinfo) -> datetime:
    dt = datetime.fromtimestamp(ts, tz)
    if by == "hour":
        return dt.replace(minute=0, second=0, microsecond=0)
    return dt.replace(hour=0, minute=0, second=0, microsecond=0)


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def is_inbound(rec: Mapping[str, Any]) -> bool:
    menu = str(rec.get("menu") or "")
    return rec.get("kind") != "callback" and not menu.startswith("notice:")


@dataclass
class _Acc:
    calls: int = 0
    self_service: int = 0
    callbacks_requested: int = 0
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    in_target: int = 0
    wait_sum: float = 0.0
    talk_sum: float = 0.0
    talk_n: int = 0
    fcr_base: int = 0
    fcr_resolved: int = 0
    surveys: int = 0
    survey_sum: int = 0
    callbacks_dialled: int = 0
    callbacks_kept: int = 0
    callbacks_late: int = 0
    outbound: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def row(self, period: str) -> dict[str, Any]:
        def ratio(a: float, b: float, nd: int = 3) -> float | None:
            return round(a / b, nd) if b else None
        row: dict[str, Any] = {
            "period": period, "calls": self.calls, "self_service": self.self_service,
            "callbacks_requested": self.callbacks_requested, "offered": self.offered,
            "answered": self.answered, "abandoned": self.abandoned,
            "asa_s": ratio(self.wait_sum, self.answered, 1), "service_level": ratio(self.in_target, self.offered),
            "abandon_rate": ratio(self.abandoned, self.offered), "aht_s": ratio(self.talk_sum, self.talk_n, 1),
            "fcr": ratio(self.fcr_resolved, self.fcr_base), "surveys": self.surveys,
            "satisfaction": ratio(self.survey_sum, self.surveys, 2), "callbacks_dialled": self.callbacks_dialled,
            "callbacks_kept": self.callbacks_kept, "callbacks_late": self.callbacks_late,
            "outbound_attempts": sum(self.outbound.values()),
        }
        for outcome in sorted(self.outbound):
            row[f"outbound.{outcome}"] = self.outbound[outcome]
        return row


def build(records: Iterable[Mapping[str, Any]], attempts: Iterable[Mapping[str, Any]], *,
          start: float, end: float, by: str = "hour", tz: tzinfo = timezone.utc,
          sl_target: float = 20.0) -> list[dict[str, Any]]:
    """Rows (one per period with activity, oldest first) for calls that ended in [start, end).

    ``records`` may reach past ``end`` (up to 24 h): later calls are only used
    to find repeat callers for the first-contact-resolution estimate.
    """
    if by not in PERIODS:
        raise ReportError(f"by: expected hour or day, got {by!r}")
    recs = sorted((r for r in records if _num(r.get("ended_at")) is not None), key=lambda r: float(r["ended_at"]))
    # when each caller number called in (start of the call), for the repeat-caller check
    calls_by_number: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        number = str(r.get("caller") or "")
        if number and is_inbound(r):
            calls_by_number[number].append(float(_num(r.get("started_at")) or _num(r.get("joined_at"))
                                                 or float(r["ended_at"])))
    for times in calls_by_number.values():
        times.sort()

    acc: dict[datetime, _Acc] = defaultdict(_Acc)
    for r in recs:
        ended = float(r["ended_at"])
        if not start <= ended < end:
            continue
        a = acc[period_start(ended, by, tz)]
        outcome = str(r.get("outcome") or "")
        if not is_inbound(r):
            if r.get("kind") == "callback":
                a.callbacks_dialled += 1
                kept = r.get("callback_kept")
                a.callbacks_kept += kept == "yes"
                a.callbacks_late += kept == "no"
                _queue_figures(a, r, outcome, sl_target)
            continue
        a.calls += 1
        if outcome in QUEUE_OUTCOMES:
            _queue_figures(a, r, outcome, sl_target)
        elif outcome == "callback_requested":
            a.callbacks_requested += 1
        elif outcome not in ("ivr_hangup", ""):
            a.self_service += 1
        score = _num(r.get("survey"))
        if score is not None and 1 <= score <= 5:
            a.surveys += 1
            a.survey_sum += int(score)
        number = str(r.get("caller") or "")
        if number:
            began = float(_num(r.get("started_at")) or _num(r.get("joined_at")) or ended)
            a.fcr_base += 1
            later = [t for t in calls_by_number[number] if began < t <= began + REPEAT_WINDOW_S]
            if not later:
                a.fcr_resolved += 1
    for at in attempts:
        ts = _num(at.get("at"))
        if ts is None or not start <= ts < end:
            continue
        acc[period_start(ts, by, tz)].outbound[str(at.get("outcome") or "unknown")] += 1
    fmt = "%Y-%m-%d %H:00" if by == "hour" else "%Y-%m-%d"
    return [acc[p].row(p.strftime(fmt)) for p in sorted(acc)]


def _queue_figures(a: _Acc, r: Mapping[str, Any], outcome: str, sl_target: float) -> None:
    a.offered += 1
    wait = _num(r.get("wait"))
    if outcome == "answered":
        a.answered += 1
        a.wait_sum += wait or 0.0
        if (wait or 0.0) <= sl_target:
            a.in_target += 1
        talk = _num(r.get("talk"))
        if talk is not None:
            a.talk_sum += talk
            a.talk_n += 1
    elif outcome == "abandoned":
        a.abandoned += 1


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row over all periods (weighted, not an average of averages)."""
    t: dict[str, Any] = {"period": "total"}
    for k in ("calls", "self_service", "callbacks_requested", "offered", "answered", "abandoned", "surveys",
              "callbacks_dialled", "callbacks_kept", "callbacks_late", "outbound_attempts"):
        t[k] = sum(r[k] for r in rows)

    def weighted(col: str, weight: str, nd: int) -> float | None:
        pairs = [(r[col], r[weight]) for r in rows if r[col] is not None and r[weight]]
        total = sum(w for _, w in pairs)
        return round(sum(v * w for v, w in pairs) / total, nd) if total else None
    t["asa_s"] = weighted("asa_s", "answered", 1)
    t["aht_s"] = weighted("aht_s", "answered", 1)
    t["service_level"] = weighted("service_level", "offered", 3)
    t["abandon_rate"] = round(t["abandoned"] / t["offered"], 3) if t["offered"] else None
    t["fcr"] = weighted("fcr", "calls", 3)
    t["satisfaction"] = weighted("satisfaction", "surveys", 2)
    for r in rows:
        for k, v in r.items():
            if k.startswith("outbound."):
                t[k] = t.get(k, 0) + v
    return t


def columns(rows: list[dict[str, Any]]) -> list[str]:
    extra = sorted({k for r in rows for k in r if k.startswith("outbound.")})
    return list(COLUMNS) + extra


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    w = csvsafe.DictWriter(out, fieldnames=columns(rows), restval=0, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return out.getvalue()


def to_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for the terminal (percentages for the ratios)."""
    cols = [("period", "period"), ("calls", "calls"), ("self_service", "self"), ("offered", "offered"),
            ("answered", "answered"), ("abandoned", "aband"), ("asa_s", "ASA s"), ("service_level", "SL"),
            ("abandon_rate", "aband%"), ("aht_s", "AHT s"), ("fcr", "FCR"), ("satisfaction", "CSAT"),
            ("callbacks_requested", "cb req"), ("callbacks_kept", "cb kept"), ("outbound_attempts", "outbound")]

    def cell(k: str, v: Any) -> str:
        if v is None:
            return "-"
        if k in ("service_level", "abandon_rate", "fcr"):
            return f"{v * 100:.1f}%"
        return str(v)
    table = [[h for _, h in cols]] + [[cell(k, r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(row)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------ loading from Redis

async def load(db: Any, prefix: str | None, start: float, end: float) -> tuple[list[dict], list[dict]]:
    """Call records that ended in [start, end + 24 h] and campaign attempts in [start, end].

    Stream entry ids are the time the entry was written, which for call records
    is when the call ended (to within the recorder's finalise delay): a margin of
    a minute each side catches the stragglers, and ``build`` filters exactly.
    """
    store = ReportStore.wrap(db, prefix)
    records = await store.calls(start - 60, min(end + REPEAT_WINDOW_S, time.time()) + 60)
    attempts: list[dict[str, Any]] = []
    for cid in await store.campaign_ids():
        for at in await store.attempts(cid, start - 60, end + 60):
            at["campaign"] = cid
            attempts.append(at)
    return records, attempts


async def report(db: Any, prefix: str | None = None, *, start: float, end: float, by: str = "hour",
                 tz: tzinfo = timezone.utc, sl_target: float = 20.0) -> dict[str, Any]:
    if end <= start:
        raise ReportError("until: must be after since")
    if end - start > 92 * 86400:
        raise ReportError("since: a report covers at most 92 days")
    records, attempts = await load(db, prefix, start, end)
    rows = build(records, attempts, start=start, end=end, by=by, tz=tz, sl_target=sl_target)
    return {"by": by, "tz": str(tz), "since": start, "until": end, "sl_target_s": sl_target,
            "rows": rows, "total": totals(rows), "columns": columns(rows)}


def default_window(by: str, now: float | None = None) -> tuple[float, float]:
    """The last 24 hours by hour, the last 7 days by day."""
    now = time.time() if now is None else now
    return now - (86400 if by == "hour" else 7 * 86400), now + 1


def window_from(query: Mapping[str, str], tz: tzinfo, by: str) -> tuple[float, float]:
    start, end = default_window(by)
    if query.get("since"):
        start = parse_time("since", query["since"], tz)
    if query.get("until"):
        end = parse_time("until", query["until"], tz)
    if query.get("hours"):
        try:
            hours = float(query["hours"])
        except ValueError:
            raise ReportError(f"hours: expected a number, got {query['hours']!r}") from None
        if not 0.01 <= hours <= 92 * 24:   # at least 36 s: a shorter window is empty, or none at all
            raise ReportError("hours: must be at least 0.01 and at most 2208 (92 days)")
        start = end - hours * 3600
    return start, end




# ----------------------------------------------------------------- by reason and disposition
def build_reasons(records: Iterable[Mapping[str, Any]], dispositions: Iterable[Mapping[str, Any]], *,
                  start: float, end: float) -> list[dict[str, Any]]:
    """One row per call reason (the menu path's ``reason``): inbound calls that ended in [start, end), how
    they ended (self-service, answered, abandoned, callback asked), how many left self-service for a human
    (0), and the agents' dispositions of those calls (the last one set for each call)."""
    last: dict[str, str] = {}
    for d in dispositions:
        last[str(d.get("uid", ""))] = str(d.get("name", ""))
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        ended = _num(r.get("ended_at"))
        if ended is None or not start <= ended < end or not is_inbound(r):
            continue
        reason = str(r.get("reason") or "none")
        row = rows.setdefault(reason, {"reason": reason, "calls": 0, "self_service": 0, "answered": 0,
                                       "abandoned": 0, "callbacks_requested": 0, "escalated": 0,
                                       "dispositions": {}})
        row["calls"] += 1
        outcome = r.get("outcome", "")
        if outcome == "self_service":
            row["self_service"] += 1
        elif outcome == "answered":
            row["answered"] += 1
        elif outcome == "abandoned":
            row["abandoned"] += 1
        elif outcome == "callback_requested":
            row["callbacks_requested"] += 1
        if r.get("escalated_from"):
            row["escalated"] += 1
        name = last.get(str(r.get("uniqueid", "")))
        if name:
            row["dispositions"][name] = row["dispositions"].get(name, 0) + 1
    return sorted(rows.values(), key=lambda x: (-x["calls"], x["reason"]))


async def reasons_report(db: Any, prefix: str | None = None, *, start: float, end: float) -> dict[str, Any]:
    if end <= start:
        raise ReportError("until: must be after since")
    if end - start > 92 * 86400:
        raise ReportError("since: a report covers at most 92 days")
    store = ReportStore.wrap(db, prefix)
    records = await store.calls(start - 60, end + 60)
    dispositions = await store.dispositions(start - 60, time.time() + 60)
    rows = build_reasons(records, dispositions, start=start, end=end)
    return {"since": start, "until": end, "rows": rows}
