"""Call records, dispositions, surveys and the teams' feedback, as the HTTP layer asks for them.

``OutcomesDesk`` is what the routes call; ``Outcomes`` (service.py) keeps dispositions and feedback, the store
keeps call records and surveys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..core.service_errors import Invalid, NotFound
from .service import Outcomes


class SurveyLog(Protocol):
    async def recent(self, count: int = 100, /) -> list[dict[str, Any]]: ...


class CallLog(Protocol):
    """The store's call records (``ivr.store.redis_store.Store``)."""
    async def recent_calls(self, count: int = 100, /) -> list[dict[str, Any]]: ...

    async def call_get(self, uid: str) -> dict[str, Any]: ...


class OutcomesDesk:
    """Calls, dispositions, surveys and feedback items for supervisors."""

    def __init__(self, outcomes: Outcomes, calls: CallLog, surveys: SurveyLog,
                 dispositions: tuple[tuple[str, str], ...]) -> None:
        self._outcomes = outcomes
        self._calls = calls
        self._surveys = surveys
        self._dispositions = dispositions

    # -------------------------------------------------------------------- calls
    async def recent_calls(self, count: int) -> list[dict[str, Any]]:
        if not 1 <= count <= 10_000:
            raise Invalid("count: must be 1-10000")
        return await self._calls.recent_calls(count)

    async def call(self, uid: str) -> dict[str, Any]:
        record = await self._calls.call_get(uid)
        if not record:
            raise NotFound(f"no call {uid}")
        return record

    def dispositions(self) -> dict[str, str]:
        return dict(self._dispositions)

    async def set_disposition(self, uid: str, value: str, *, by: str, note: str) -> dict[str, Any]:
        try:
            return await self._outcomes.set_disposition(uid, value, by=by, source="api", note=note)
        except KeyError:
            raise NotFound(f"no call {uid}") from None
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    async def surveys(self, count: int = 500) -> list[dict[str, Any]]:
        return await self._surveys.recent(count)

    # ----------------------------------------------------------------- feedback
    async def feedback_counts(self) -> dict[str, int]:
        return await self._outcomes.feedback_counts()

    async def feedback_items(self, team: str) -> list[dict[str, Any]]:
        known = self._outcomes.teams_known()
        if team not in known:
            raise Invalid(f"team: expected one of {', '.join(known)}, got {team[:40]!r}")
        return await self._outcomes.feedback_items(team)

    async def feedback_audio(self, item_id: str) -> Path:
        """The file of a feedback item's recorded message."""
        item = await self._outcomes.feedback_get(item_id)
        if not item or not item.get("file"):
            raise NotFound("no recording for this item")
        folder = self._outcomes.feedback_dir
        path = folder / Path(item["file"]).name
        if not path.is_file():
            raise NotFound(f"recording {item['file']} is missing from {folder}")
        return path

    async def feedback_done(self, item_id: str, by: str, note: str) -> dict[str, Any]:
        try:
            return await self._outcomes.feedback_done(item_id, by, note)
        except KeyError:
            raise NotFound(f"no feedback item {item_id}") from None
