"""Campaigns and their contacts as supervisors manage them (API and CLI): create, import contacts, start,
pause, stop, progress, export.

``CampaignService`` owns these actions; the dialer (``dialer.py``) keeps campaigns and runs them, the contact
functions (``contacts.py``) read and write the contacts in the store. Refusals are ``ivr.core.service_errors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Callable, Mapping, Protocol, Sequence

from ..core.service_errors import Conflict, Invalid, NotFound
from ..store.redis_store import Store
from . import contacts, contacts_parse
from .model import Campaign, CampaignError, parse_campaign

STATES = {"start": "running", "resume": "running", "pause": "paused", "stop": "stopped"}


class Campaigns(Protocol):
    """The dialer's campaign book (``ivr.campaigns.dialer.Dialer``)."""
    async def create(self, campaign: Campaign, by: str = "") -> None: ...

    async def get(self, cid: str) -> tuple[Campaign, str] | None: ...

    async def set_state(self, cid: str, state: str, by: str = "") -> None: ...

    async def list(self) -> list[dict[str, Any]]: ...

    def live(self, cid: str) -> dict[str, Any]: ...


class CampaignService:
    """Campaign management: definitions, contacts, state, progress, export."""

    def __init__(self, dialer: Campaigns, store: Store, queues: Sequence[str], languages: Sequence[str]) -> None:
        self._dialer = dialer
        self._store = store
        self._queues = frozenset(queues)
        self._languages = tuple(languages)

    async def list(self) -> list[dict[str, Any]]:
        return await self._dialer.list()

    async def create(self, definition: Mapping[str, Any], by: str) -> Campaign:
        """Check a definition (``Invalid``) and create the campaign (``Conflict`` when its id is taken)."""
        try:
            campaign = parse_campaign(definition, queues=self._queues, languages=self._languages)
            await self._dialer.create(campaign, by=by)
        except CampaignError as exc:
            raise Invalid(str(exc)) from None
        except ValueError as exc:
            raise Conflict(str(exc)) from None
        return campaign

    async def get(self, cid: str) -> tuple[Campaign, str]:
        """The campaign and its state; ``NotFound`` when there is none."""
        found = await self._dialer.get(cid)
        if found is None:
            raise NotFound(f"no campaign {cid!r}")
        return found

    async def detail(self, cid: str) -> dict[str, Any]:
        """The definition, state, contact counts and live dialling figures of one campaign."""
        campaign, state = await self.get(cid)
        counts = await contacts.counts(self._store.campaigns, None, cid)
        return {**campaign.to_dict(), "state": state, "counts": counts, **self._dialer.live(cid)}

    async def import_contacts(self, cid: str, path: Path, *, region: str, by: str | None = None,
                              progress: Callable[[int, int], None] | None = None,
                              errors_path: Path | None = None, columns: str = "") -> contacts.ImportReport:
        """Import a contacts CSV file into the campaign; audited as ``by`` when given (the API). The ``lang``
        column is checked against the configured languages; ``columns`` (``number=Telefon,lang=Sprache``)
        names columns the aliases do not know."""
        campaign, _ = await self.get(cid)
        try:
            report = await contacts.import_csv(self._store.campaigns, None, cid, path,
                                               default_region=region, default_lang=campaign.default_lang,
                                               allowed_prefixes=campaign.allowed_prefixes, batch=250,
                                               progress=progress, errors_path=errors_path,
                                               languages=self._languages,
                                               columns=contacts_parse.parse_mapping(columns))
        except contacts_parse.ContactsError as exc:
            raise Invalid(str(exc)) from None
        if by is not None:
            await self._store.audit(by, "campaign.import", cid, None,
                                    {"imported": report.imported, "rejected": report.rejected})
        return report

    async def set_state(self, cid: str, state: str, by: str) -> None:
        """``running``, ``paused`` or ``stopped``."""
        try:
            await self._dialer.set_state(cid, state, by=by)
        except KeyError:
            raise NotFound(f"no campaign {cid!r}") from None

    async def export(self, cid: str, out: IO[str]) -> int:
        """Every contact as CSV (cells safe from formulas) into ``out``; how many."""
        return await contacts.export_csv(self._store.campaigns, None, cid, out)
