"""Reports as the API and the CLI ask for them: by hour or day, and by reason with dispositions.

``ReportService`` holds the store and the dispositions; it reads the query parameters (``since``, ``until``,
``hours``, ``tz``, ``by``, ``sl_target``) and refuses bad ones with ``Invalid``. The figures themselves are
``ivr.reports.service``'s.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any, Mapping

from ..core.service_errors import Invalid
from ..store.redis_store import Store
from . import service as reports

REPORT_PARAMS = ("by", "since", "until", "hours", "tz", "sl_target", "format")
REASON_PARAMS = ("since", "until", "hours", "tz")


class ReportService:
    """Call-centre reports from the call records and campaign attempts in the store."""

    def __init__(self, store: Store, dispositions: tuple[tuple[str, str], ...]) -> None:
        self._store = store
        self._dispositions = dispositions

    async def report(self, *, start: float, end: float, by: str, tz: tzinfo, sl_target: float) -> dict[str, Any]:
        try:
            return await reports.report(self._store.reports, None, start=start, end=end, by=by,
                                        tz=tz, sl_target=sl_target)
        except reports.ReportError as exc:
            raise Invalid(str(exc)) from None

    @staticmethod
    def check_report_query(query: Mapping[str, str]) -> None:
        """``Invalid`` naming the first parameter a report does not know."""
        _check_params(query, REPORT_PARAMS)

    async def report_for(self, query: Mapping[str, str]) -> dict[str, Any]:
        """The report a query string asks for (``?by=&since=&until=&hours=&tz=&sl_target=``)."""
        _check_params(query, REPORT_PARAMS)
        by = query.get("by", "hour")
        try:
            if by not in reports.PERIODS:
                raise reports.ReportError(f"by: expected hour or day, got {by!r}")
            tz = reports.parse_tz(query.get("tz", "UTC"))
            start, end = reports.window_from(query, tz, by)
            try:
                sl_target = float(query.get("sl_target", "20"))
            except ValueError:
                raise reports.ReportError(f"sl_target: expected seconds, got {query.get('sl_target')!r}") from None
            if not 0 < sl_target <= 3600:
                raise reports.ReportError("sl_target: must be above 0 and at most 3600 seconds")
        except reports.ReportError as exc:
            raise Invalid(str(exc)) from None
        return await self.report(start=start, end=end, by=by, tz=tz, sl_target=sl_target)

    async def reasons_for(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Calls by reason with their outcomes, escalations and dispositions (``?since=&until=&hours=&tz=``)."""
        _check_params(query, REASON_PARAMS)
        try:
            tz = reports.parse_tz(query.get("tz", "UTC"))
            start, end = reports.window_from(query, tz, "hour")
            data = await reports.reasons_report(self._store.reports, None, start=start, end=end)
        except reports.ReportError as exc:
            raise Invalid(str(exc)) from None
        data["dispositions"] = dict(self._dispositions)
        return data


def _check_params(query: Mapping[str, str], known: tuple[str, ...]) -> None:
    unknown = set(query) - set(known)
    if unknown:
        raise Invalid(f"unknown parameter {sorted(unknown)[0]!r} (expected: {', '.join(known)})")


to_csv = reports.to_csv
to_table = reports.to_table
