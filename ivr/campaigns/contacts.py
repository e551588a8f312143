"""Campaign contacts: CSV import (validated, deduplicated, streamed), export, status counters, do-not-call list.

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

# Design: the file is streamed (csv.reader over a UTF-8 wrapper that counts raw bytes), one batch of rows
# at a time, parsed and validated in a worker thread so the controller's event loop keeps serving calls;
# the only per-row state is the current batch. Dedupe needs every row already imported, so it lives in
# Redis: a batch is one Lua call (one round trip; HMGET on the ``numbers`` index, SMISMEMBER on the DNC
# set, so Redis >= 6.2) that merges a repeat into the first contact (fills only its empty fields) or
# creates the contact with its index entry, ``due`` entry and status counter. Being atomic, two imports
# into one campaign cannot create a number twice and the counters never drift from the hashes. Redis
# serves no one else during the call, hence ``batch`` stays modest. csv.reader, not DictReader: errors
# must carry the exact line a row starts on (a quoted field may span lines; DictReader hides that and
# skips blank lines silently). Values may reach Asterisk (channel variables, dialplan), so anything that
# could break out of a field or be expanded there is rejected, never repaired.

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import itertools
import os
import re
import sys
import time
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from phonenumbers.timezone import time_zones_for_geographical_number, time_zones_for_number

from ..core import csvsafe
from ..store.campaigns import CampaignStore

STATUSES = ("pending", "dnc", "in_progress", "done", "failed", "optout", "reached")
LANGUAGES = ("en", "fa", "zh")
EXPORT_COLUMNS = ("n", "number", "name", "lang", "tz", "status", "attempts", "last_outcome", "keypress", "updated")
ALIASES = {"number": ("number", "phone", "msisdn"), "name": ("name",), "lang": ("lang",),
           "tz": ("tz", "timezone"), "booking": ("booking",)}
RESERVED = {a for names in ALIASES.values() for a in names} | {
    "n", "status", "attempts", "line", "last_outcome", "keypress", "updated", "attempt_id", "dialled_at",
    "key_attempt", "key_action", "added"}
MAX_FIELD = 200
MAX_ERRORS = 1000
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_PREFIX_RE = re.compile(r"^\+[1-9][0-9]{0,14}$")
_HOSTILE = re.compile(r"[\r\n\x00\ufffd]|\$[{\[]")   # $[ is Asterisk's expression syntax, as dangerous as ${
_HOSTILE_WHY = {"\r": "contains a line break", "\n": "contains a line break", "\x00": "contains a NUL character",
                "\ufffd": "is not valid UTF-8", "${": "contains '${'", "$[": "contains '$['"}
_CTRL = re.compile(r"[\x00-\x1f\x7f-\x9f]")



class ContactsError(ValueError):
    """The file as a whole cannot be imported (no header, no phone column, bad options)."""


@dataclass(frozen=True, slots=True)
class Contact:
    """One valid row, ready to store."""
    number: str
    lang: str
    tz: str
    line: int
    name: str = ""
    booking: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RowError:
    """One rejected row: the line where it starts, why, and its raw number (for the errors file)."""
    line: int
    reason: str
    number: str = ""


@dataclass
class ImportReport:
    """What an import did; rows = imported + dnc + merged + rejected."""
    rows: int = 0           # data rows read (blank lines not counted)
    imported: int = 0       # new contacts, status pending
    merged: int = 0         # repeats of a number already in the campaign
    dnc: int = 0            # new contacts on the do-not-call list (status dnc)
    rejected: int = 0       # bad rows (also the total error count)
    errors: list[tuple[int, str]] = field(default_factory=list)   # the first MAX_ERRORS (line, reason)
    error_count: int = 0
    seconds: float = 0.0


# ---------------------------------------------------------------- validation (pure)
MULTI_ZONE = "*"   # tz of a number that spans several zones (mobiles in Russia, Australia; +1 800...)


def number_zones(e164: str) -> tuple[str, ...]:
    """Every IANA zone a number may be in (for a contact whose tz is ``*``)."""
    try:
        num = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ("Etc/UTC",)
    zones = tuple(z for z in dict.fromkeys(time_zones_for_number(num)) if z != "Etc/Unknown")
    return zones or ("Etc/UTC",)


@functools.cache
def _zones() -> dict[str, str]:
    """Known IANA zones by lower-case name (so ``europe/london`` is accepted as ``Europe/London``)."""
    return {z.lower(): z for z in zoneinfo.available_timezones()}


@functools.lru_cache(maxsize=64)
def _columns(header: tuple[str, ...], keep: tuple[str, ...]) -> dict[str, str]:
    """Canonical field name -> the header's own spelling, for the columns that are stored."""
    lower: dict[str, str] = {}
    for h in header:
        lower.setdefault(h.strip().lower(), h)
    out = {canon: next(lower[a] for a in names if a in lower)
           for canon, names in ALIASES.items() if any(a in lower for a in names)}
    out.update({k.strip().lower(): lower[k.strip().lower()] for k in keep if k.strip().lower() in lower})
    return out


def _hostile(value: str) -> str | None:
    if len(value) > MAX_FIELD:
        return f"longer than {MAX_FIELD} characters"
    m = _HOSTILE.search(value)
    return _HOSTILE_WHY[m.group()] if m else None


def validate_row(row: dict[str, str], line: int, *, default_region: str = "US", default_lang: str = "en",
                 allowed_prefixes: Sequence[str] = (), keep_columns: Sequence[str] = (),
                 languages: Sequence[str] = LANGUAGES) -> Contact | RowError:
    """Check one CSV row (column name -> value; names matched case-insensitively, aliases allowed).

    Only the columns that are stored are checked; a reason names the column as the header spells it.
    """
    cols = _columns(tuple(row), tuple(keep_columns))
    num_col = cols.get("number", "number")
    raw = row.get(num_col) or ""
    v: dict[str, str] = {}
    for canon, col in cols.items():
        value = row.get(col) or ""
        if value and (why := _hostile(value)):
            return RowError(line, f"{col}: {why}", raw)
        v[canon] = value.strip()
    if not v.get("number"):
        return RowError(line, f"{num_col}: empty", raw)
    try:
        num = phonenumbers.parse(v["number"], default_region)
    except phonenumbers.NumberParseException:
        return RowError(line, f"{num_col}: not a phone number", raw)
    e164 = phonenumbers.format_number(num, PhoneNumberFormat.E164)
    kind = phonenumbers.number_type(num)   # is_valid_number is exactly "type known"; typing once is 3x faster
    if kind == PhoneNumberType.UNKNOWN:
        return RowError(line, f"{num_col}: {e164} is not a valid number", raw)
    if allowed_prefixes and not e164.startswith(tuple(allowed_prefixes)):
        return RowError(line, f"destination +{num.country_code} not allowed", raw)
    if kind == PhoneNumberType.PREMIUM_RATE:
        return RowError(line, f"{num_col}: {e164} is a premium-rate number", raw)
    lang = v.get("lang", "").lower() or default_lang
    if lang not in languages:
        return RowError(line, f"{cols['lang']}: {lang[:20]!r} is not one of {', '.join(languages)}", raw)
    if v.get("tz"):
        tz = _zones().get(v["tz"].lower())
        if tz is None:
            return RowError(line, f"{cols['tz']}: unknown time zone {v['tz'][:40]!r}", raw)
    else:   # from the number: its zone, or "*" when it spans several (the dialler then needs all of them)
        geo = phonenumbers.is_number_type_geographical(kind, num.country_code or 0)   # set: the number parsed
        zones = time_zones_for_geographical_number(num) if geo else time_zones_for_number(num)
        tz = MULTI_ZONE if len(set(zones)) > 1 else ("Etc/UTC" if zones[0] == "Etc/Unknown" else zones[0])
    extra = {k.strip().lower(): _CTRL.sub("", v.get(k.strip().lower(), "")).strip() for k in keep_columns}
    return Contact(number=e164, lang=lang, tz=tz, line=line, name=_CTRL.sub("", v.get("name", "")).strip(),
                   booking=_CTRL.sub("", v.get("booking", "")).strip(), extra=extra)


# ---------------------------------------------------------------- reading the file
class _CountingReader(io.RawIOBase):
    """Counts the bytes read from a binary file (progress); closing it leaves the file open."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.raw.read(len(b))
        b[:len(data)] = data
        self.count += len(data)
        return len(data)


def _open(src: str | os.PathLike[str] | IO[Any]) -> tuple[Iterable[str], Callable[[], int], IO[bytes] | None]:
    """Lines to give csv.reader (newline='' semantics), a bytes-read counter, and the file we opened (to close).

    A path or binary file is decoded as UTF-8 (a BOM is dropped; undecodable bytes become U+FFFD, which
    rejects the row); for a text file the counter counts characters.
    """
    owned = None
    if isinstance(src, (str, os.PathLike)):
        owned = src = open(src, "rb")
    if isinstance(src, (io.RawIOBase, io.BufferedIOBase)) or "b" in getattr(src, "mode", ""):
        counter = _CountingReader(src)
        text = io.TextIOWrapper(io.BufferedReader(counter, 1 << 16), encoding="utf-8-sig", errors="replace",
                                newline="")
        return text, lambda: counter.count, owned
    chars = [0]

    def lines() -> Iterator[str]:
        for line in src:
            chars[0] += len(line)
            yield line
    return lines(), lambda: chars[0], None


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str] | None, str]]:
    """(line the row starts on, fields or None, CSV error); lines of only blanks and commas are skipped."""
    reader = csv.reader(lines)
    prev = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:   # e.g. a stray quote ran a field past the size limit: skip it, go on
            yield prev + 1, None, f"CSV: {exc}"
            prev = reader.line_num
            continue
        start, prev = prev + 1, reader.line_num
        if any(f.strip() for f in fields):
            yield start, fields, ""


def _batches(lines: Iterable[str], size: int, opts: dict[str, Any]) -> Iterator[tuple[list[Contact], list[RowError], int]]:
    """Validated batches of ``size`` rows: (contacts, errors, rows). Runs in a worker thread."""
    rows = _rows(lines)
    header = next((f for _, f, _ in rows if f is not None), None)
    if header is None:
        raise ContactsError("empty file: a header line (number,name,...) is required")
    header = [h.strip().lstrip("\ufeff") for h in header]
    lower = [h.lower() for h in header]
    phones = [h for h in header if h.lower() in ALIASES["number"]]
    if len(phones) != 1:
        raise ContactsError("the first line must be a header with one phone column (number, phone or msisdn)"
                            + (f"; found {', '.join(phones)}" if phones else ""))
    for k in opts["keep_columns"]:
        if k.strip().lower() in RESERVED:
            raise ContactsError(f"keep_columns: {k!r} is a reserved field")
        if lower.count(k.strip().lower()) != 1:
            raise ContactsError(f"keep_columns: no single column {k!r} in the header")
    contacts: list[Contact] = []
    errors: list[RowError] = []
    count = 0
    for line, fields, problem in rows:
        count += 1
        if fields is None:
            errors.append(RowError(line, problem))
        elif len(fields) > len(header) and any(f.strip() for f in fields[len(header):]):
            errors.append(RowError(line, f"{len(fields)} fields, the header has {len(header)}",
                                   fields[lower.index(phones[0].lower())]))
        else:
            result = validate_row(dict(zip(header, fields)), line, **opts)
            (contacts if isinstance(result, Contact) else errors).append(result)  # type: ignore[arg-type]
        if count == size:
            yield contacts, errors, count
            contacts, errors, count = [], [], 0
    yield contacts, errors, count


# ---------------------------------------------------------------- import / export
async def import_csv(db: Any, keys_prefix: str | None, cid: str,
                     path_or_file: str | os.PathLike[str] | IO[Any], *, default_region: str = "US",
                     default_lang: str = "en", allowed_prefixes: Sequence[str] = (), keep_columns: Sequence[str] = (),
                     batch: int = 1000, progress: Callable[[int, int], None] | None = None,
                     errors_path: Path | None = None, languages: Sequence[str] = LANGUAGES) -> ImportReport:
    """Import a contacts CSV into campaign ``cid``; bad rows are reported and skipped (see the module doc).

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
    opts = {"default_region": default_region, "default_lang": default_lang, "allowed_prefixes": tuple(allowed_prefixes),
            "keep_columns": tuple(keep_columns), "languages": tuple(languages)}
    names = ["number", "name", "lang", "tz", "booking", "line", *(c.strip().lower() for c in keep_columns)]
    report, started = ImportReport(), time.monotonic()
    await store.import_started(cid)
    nxt: asyncio.Future[Any] | None = None
    owned = err_fh = None
    try:
        lines, bytes_read, owned = _open(path_or_file)
        batches = _batches(lines, batch, opts)
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
