"""Campaign contacts in the store: CSV import (rows read and validated by ``contacts_parse.py``, deduplicated
and stored here, batch by batch), export, status counters, do-not-call list.

Redis layout (``{p}`` is the prefix, ``{cid}`` the campaign id, ``n`` = 1, 2, 3... in import order):

| key                              | type   | what                                                         |
|----------------------------------|--------|--------------------------------------------------------------|
| {p}:campaign:{cid}:contact:{n}   | hash   | number (E.164), name, lang, tz, status, attempts, line,      |
|                                  |        | booking, kept extra columns; the dialer adds last_outcome,   |
|                                  |        | keypress, updated, attempt_id, dialled_at, key_action, ...   |
| {p}:campaign:{cid}:due           | zset   | n -> earliest dial time (unix s); import adds pending at 0   |
| {p}:campaign:{cid}:numbers       | hash   | E.164 -> n (dedupe index: a repeated number is merged)       |
| {p}:campaign:{cid}:seq           | string | last n given out (an integer, INCR-compatible)               |
| {p}:campaign:{cid}:count:{st}    | string | contacts in status st (kept by import and ``set_status``)    |
| {p}:campaign:{cid}:import        | hash   | the last import's summary (state, rows, imported, ...)       |
| {p}:dnc                          | set    | do-not-call numbers (E.164), shared by all campaigns         |

Statuses: ``pending``, ``dnc`` (on the do-not-call list at import: kept so the export shows why it was
not called, never put in ``due``), the dialer's ``in_progress``, ``done``, ``failed``, ``optout``, and
``reached`` (the contact called in before being dialled: see ivr/continuity/service.py).
A report's rows = imported (new, pending) + dnc (new, status dnc) + merged + rejected.
"""

# Design: reading and validating the file is contacts_parse.py's (streamed, in a worker thread); this module
# stores the batches it yields. Dedupe needs every row already imported, so it lives in Redis: a batch is
# one Lua call (one round trip; HMGET on the ``numbers`` index, SMISMEMBER on the DNC set, so Redis >= 6.2)
# that merges a repeat into the first contact (fills only its empty fields) or creates the contact with its
# index entry, ``due`` entry and status counter. Being atomic, two imports into one campaign cannot create a
# number twice and the counters never drift from the hashes. Redis serves no one else during the call, hence
# ``batch`` stays modest; the next batch is parsed while Redis writes this one.

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping, Sequence

import phonenumbers
from phonenumbers import PhoneNumberFormat

from ..core import csvsafe
from ..store.campaigns import CampaignStore
from .contacts_parse import LANGUAGES, Contact, ContactsError, open_lines, validated_batches

STATUSES = ("pending", "dnc", "in_progress", "done", "failed", "optout", "reached")
EXPORT_COLUMNS = ("n", "number", "name", "lang", "tz", "status", "attempts", "last_outcome", "keypress", "updated")
MAX_ERRORS = 1000
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_PREFIX_RE = re.compile(r"^\+[1-9][0-9]{0,14}$")


@dataclass
class ImportReport:
    """What an import did; rows = imported + dnc + merged + rejected."""
    rows: int = 0           # data rows read (blank lines not counted)
    imported: int = 0       # new contacts, status pending
    merged: int = 0         # repeats of a number already in the campaign
    dnc: int = 0            # new contacts on the do-not-call list (status dnc)
    rejected: int = 0       # bad rows (also the total error count)
    errors: list[tuple[int, str]] = field(default_factory=list)   # the first MAX_ERRORS (line, reason)
    columns: dict[str, str] = field(default_factory=dict)        # field -> the header column read as it
    error_count: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------- import / export
async def import_csv(db: Any, keys_prefix: str | None, cid: str,
                     path_or_file: str | os.PathLike[str] | IO[Any], *, default_region: str = "US",
                     default_lang: str = "en", allowed_prefixes: Sequence[str] = (), keep_columns: Sequence[str] = (),
                     batch: int = 1000, progress: Callable[[int, int], None] | None = None,
                     errors_path: Path | None = None, languages: Sequence[str] = LANGUAGES,
                     columns: Mapping[str, str] | None = None) -> ImportReport:
    """Import a contacts CSV into campaign ``cid``; bad rows are reported and skipped (see the module doc).

    ``languages``: the languages the line speaks (the configuration's); ``columns``: field -> column for a
    file whose columns have other names than the aliases know (``report.columns`` says what was read as what).

    ``progress(rows_done, bytes_done)`` is called after every batch; ``errors_path`` gets every rejected
    row as CSV (line, reason, number). Raises ContactsError if the file as a whole is unusable.
    ``db``: the campaign store (or a ``Store``; or, as before, a Redis client with ``keys_prefix``).
    """
    store = CampaignStore.wrap(db, keys_prefix)
    store.contact_keys(cid)   # checks the id
    bad = [p for p in allowed_prefixes if not _PREFIX_RE.fullmatch(p)]
    if bad:
        raise ContactsError(f"allowed_prefixes: {bad[0]!r} is not an E.164 prefix like +44")
    if default_lang not in languages:
        raise ContactsError(f"default_lang: {default_lang!r} is not one of {', '.join(languages)}")
    if not 1 <= batch <= 20_000:
        raise ContactsError("batch: 1-20000 rows")
    opts: dict[str, Any] = {"default_region": default_region, "default_lang": default_lang,
            "allowed_prefixes": tuple(allowed_prefixes),
            "keep_columns": tuple(keep_columns), "languages": tuple(languages),
            "columns": tuple(sorted((columns or {}).items()))}
    names = ["number", "name", "lang", "tz", "booking", "line", *(c.strip().lower() for c in keep_columns)]
    report, started = ImportReport(), time.monotonic()
    await store.import_started(cid)
    nxt: asyncio.Future[Any] | None = None
    owned = err_fh = None
    try:
        lines, bytes_read, owned = open_lines(path_or_file)
        batches = validated_batches(lines, batch, opts)
        err_fh = open(errors_path, "w", newline="", encoding="utf-8") if errors_path else None
        err_csv = csvsafe.Writer(err_fh) if err_fh else None
        if err_csv:
            err_csv.writerow(["line", "reason", "number"])
        nxt = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
        while True:
            got = await nxt
            nxt = None
            if got is None:
                break
            done_bytes = bytes_read()
            nxt = asyncio.ensure_future(asyncio.to_thread(next, batches, None))  # parse while Redis writes
            contacts, errors, rows = got
            report.columns = dict(opts.get("resolved") or {})
            report.rows += rows
            for e in errors:
                if len(report.errors) < MAX_ERRORS:
                    report.errors.append((e.line, e.reason))
                if err_csv:
                    err_csv.writerow([e.line, e.reason, e.number])
            report.rejected += len(errors)
            if contacts:   # one round trip
                new, dnc, merged = await store.import_batch(cid, names, (
                    [c.number, c.name, c.lang, c.tz, c.booking, str(c.line), *c.extra.values()] for c in contacts))
                report.imported += int(new)
                report.dnc += int(dnc)
                report.merged += int(merged)
            if progress:
                progress(report.rows, done_bytes)
    except BaseException as exc:
        with contextlib.suppress(Exception):   # best effort: Redis may be what failed
            await asyncio.shield(store.import_summary(cid, {"state": "failed", "error": str(exc)[:300]}))
        raise
    finally:
        if nxt is not None:
            await asyncio.wait([nxt])   # the worker thread must be done with the file before it is closed
        if owned is not None:
            owned.close()
        if err_fh:
            err_fh.close()
    report.error_count = report.rejected
    report.seconds = round(time.monotonic() - started, 3)
    summary = {"state": "done", "finished": str(time.time()), "rows": report.rows, "imported": report.imported,
               "merged": report.merged, "dnc": report.dnc, "rejected": report.rejected, "seconds": report.seconds,
               "source": str(path_or_file) if isinstance(path_or_file, (str, os.PathLike)) else ""}
    await store.import_summary(cid, summary)
    return report


async def export_csv(db: Any, keys_prefix: str | None, cid: str, out_file: IO[str], *,
                     batch: int = 1000) -> int:
    """Write every contact (n = 1..seq, ``batch`` per round trip) as CSV to a text file; returns how many."""
    store = CampaignStore.wrap(db, keys_prefix)
    last = await store.last_n(cid)
    w = csvsafe.Writer(out_file)     # names, numbers: text from outside, never a spreadsheet formula
    w.writerow(EXPORT_COLUMNS)
    written = 0
    for first in range(1, last + 1, batch):
        ns = range(first, min(first + batch, last + 1))
        for n, rec in zip(ns, await store.contacts(cid, list(ns))):
            if rec:
                w.writerow([n, *(rec.get(c, "") for c in EXPORT_COLUMNS[1:])])
                written += 1
    return written


async def contact(db: Any, prefix: str | None, cid: str, n: int) -> dict[str, str] | None:
    """One contact's fields (plus ``n``), or None."""
    return await CampaignStore.wrap(db, prefix).contact(cid, n)


async def counts(db: Any, prefix: str | None, cid: str) -> dict[str, int]:
    """Contacts by status (every status, zeros included): one MGET of the counters."""
    return await CampaignStore.wrap(db, prefix).counts(cid, STATUSES)


async def set_status(db: Any, prefix: str | None, cid: str, n: int, new_status: str,
                     **fields: str) -> str | None:
    """Set a contact's status (and other fields) and move the status counters, atomically (Lua).

    Returns the previous status, or None (nothing written) if there is no such contact.
    """
    if new_status not in STATUSES:
        raise ValueError(f"status: expected one of {', '.join(STATUSES)}, got {new_status!r}")
    if "status" in fields:
        raise ValueError("status: pass it as new_status")
    return await CampaignStore.wrap(db, prefix).set_status(cid, n, new_status, fields)


# ---------------------------------------------------------------- do-not-call list


async def add_contact(db: Any, prefix: str | None, cid: str, contact: Contact) -> tuple[int, str]:
    """Append one validated contact (one Lua call) and return (n, status). Unlike an import it never merges
    into an earlier contact of the same number: each call is its own message (e.g. one per refund decision);
    the number index points at the newest."""
    fields = {"number": contact.number, "lang": contact.lang, "tz": contact.tz, "name": contact.name,
              "booking": contact.booking, **contact.extra, "added": f"{time.time():.3f}"}
    return await CampaignStore.wrap(db, prefix).add_contact(cid, contact.number, fields)


def _dnc_numbers(numbers: Iterable[str], default_region: str) -> list[str]:
    # an opt-out is never refused for being outside the metadata's known ranges: parsed, not validated
    try:
        return [phonenumbers.format_number(phonenumbers.parse(x, default_region), PhoneNumberFormat.E164)
                for x in numbers]
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"do-not-call: not a phone number ({exc})") from None


async def add_dnc(db: Any, prefix: str | None, numbers: Iterable[str], *, default_region: str = "US") -> int:
    """Put numbers on the do-not-call list (normalised to E.164); returns how many were new."""
    store, added, it = CampaignStore.wrap(db, prefix), 0, iter(numbers)
    while chunk := _dnc_numbers(itertools.islice(it, 1000), default_region):
        added += await store.dnc_add(chunk)
    return added


async def is_dnc(db: Any, prefix: str | None, number: str, *, default_region: str = "US") -> bool:
    """Is the number (any format; not a number at all: False) on the do-not-call list?"""
    with contextlib.suppress(ValueError):
        return await CampaignStore.wrap(db, prefix).dnc_has(_dnc_numbers([number], default_region)[0])
    return False


async def remove_dnc(db: Any, prefix: str | None, numbers: Iterable[str], *, default_region: str = "US") -> int:
    """Take numbers off the do-not-call list; returns how many were on it."""
    store, removed, it = CampaignStore.wrap(db, prefix), 0, iter(numbers)
    while chunk := _dnc_numbers(itertools.islice(it, 1000), default_region):
        removed += await store.dnc_remove(chunk)
    return removed


# ---------------------------------------------------------------- progress
def progress_bar(total_bytes: int, *, stream: IO[str] | None = None, width: int = 30) -> Callable[[int, int], None]:
    """A ``progress`` callback: a one-line bar on stderr (redrawn with \\r on a tty, a line per 10% otherwise)."""
    out = stream or sys.stderr
    tty = out.isatty()
    started, decile, ended = time.monotonic(), -1, False

    def update(rows: int, done: int) -> None:
        nonlocal decile, ended
        frac = min(1.0, done / total_bytes) if total_bytes > 0 else 1.0
        rate = rows / max(time.monotonic() - started, 1e-6)
        bar = "#" * int(frac * width)
        text = f"[{bar:.<{width}}] {frac * 100:3.0f}%  {rows:,} rows  {rate:,.0f} rows/s"
        if tty and not ended:
            out.write("\r" + text + ("\n" if frac >= 1.0 else ""))
            ended = frac >= 1.0
        elif not tty and int(frac * 10) > decile:
            decile = int(frac * 10)
            out.write(text + "\n")
        out.flush()

    return update
