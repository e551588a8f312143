"""Reading and checking a contacts CSV, with no I/O but the file itself: the file opened as UTF-8 lines with
a byte counter (``open_lines``), its rows with the line each starts on (``read_rows``), each row validated into
a ``Contact`` or a ``RowError`` (``validate_row``, also used for single contacts such as refund notices), and
the rows in validated batches (``validated_batches``, run in a worker thread by ``contacts.import_csv``, which
stores them). Also the time zones of a number (``number_zones``), which the dialer uses for a ``*`` contact.
"""

# Design: the file is streamed (csv.reader over a UTF-8 wrapper that counts raw bytes), one batch of rows
# at a time, parsed and validated in a worker thread so the controller's event loop keeps serving calls;
# the only per-row state is the current batch (dedupe against rows already imported is the store's job:
# contacts.py). csv.reader, not DictReader: errors must carry the exact line a row starts on (a quoted field
# may span lines; DictReader hides that and skips blank lines silently). Values may reach Asterisk (channel
# variables, dialplan), so anything that could break out of a field or be expanded there is rejected, never
# repaired.

from __future__ import annotations

import csv
import functools
import io
import os
import re
import zoneinfo
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Sequence

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from phonenumbers.timezone import time_zones_for_geographical_number, time_zones_for_number

LANGUAGES = ("en", "fa", "zh")
# the names real systems give each column (case-insensitive; the first one present is read), and what a
# `columns` mapping may name
ALIASES = {"number": ("number", "phone", "msisdn", "phone_number", "mobile", "telephone"),
           "name": ("name", "full_name", "customer_name"), "lang": ("lang", "language", "locale"),
           "tz": ("tz", "timezone", "time_zone"), "booking": ("booking", "booking_ref", "booking_reference", "pnr")}
RESERVED = {a for names in ALIASES.values() for a in names} | {
    "n", "status", "attempts", "line", "last_outcome", "keypress", "updated", "attempt_id", "dialled_at",
    "key_attempt", "key_action", "added"}
MAX_FIELD = 200
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
def _columns(header: tuple[str, ...], keep: tuple[str, ...],
             mapping: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """Canonical field name -> the header's own spelling, for the columns that are stored: the ``mapping``
    first (field -> column), then the aliases."""
    lower: dict[str, str] = {}
    for h in header:
        lower.setdefault(h.strip().lower(), h)
    named = dict(mapping)
    taken = {c.strip().lower() for c in named.values()}
    out = {canon: lower[named[canon].strip().lower()] for canon in ALIASES if canon in named
           and named[canon].strip().lower() in lower}
    for canon, names in ALIASES.items():
        if canon not in out and canon not in named:
            found = next((lower[a] for a in names if a in lower and a not in taken), None)
            if found is not None:
                out[canon] = found
    out.update({k.strip().lower(): lower[k.strip().lower()] for k in keep if k.strip().lower() in lower})
    return out


def parse_mapping(text: str) -> dict[str, str]:
    """``number=Telefon,lang=Sprache`` (or ``:``) -> {field: column}; a ``ContactsError`` names what is wrong."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, col = part.replace(":", "=", 1).partition("=")
        key, col = key.strip().lower(), col.strip()
        if not sep or not col:
            raise ContactsError(f"columns: {part[:40]!r} is not field=column")
        if key not in ALIASES:
            raise ContactsError(f"columns: {key[:20]!r} is not a field ({', '.join(ALIASES)})")
        if key in out:
            raise ContactsError(f"columns: {key} is named twice")
        if len(col) > 64 or _hostile(col):
            raise ContactsError(f"columns: {key}: not a column name")
        out[key] = col
    return out


def resolve_columns(header: Sequence[str], mapping: Mapping[str, str], keep: Sequence[str] = ()) -> dict[str, str]:
    """Which header column is read as which field (for the report), checking a ``mapping``: each named
    column is in the header exactly once. Raises ``ContactsError``."""
    lower = [h.strip().lower() for h in header]
    for field_name, col in mapping.items():
        if lower.count(col.strip().lower()) != 1:
            raise ContactsError(f"columns: {field_name}={col!r}: no single column {col!r} in the header "
                                f"({', '.join(header)[:200]})")
    return {k: v for k, v in _columns(tuple(header), tuple(keep), tuple(sorted(mapping.items()))).items()
            if k in ALIASES}


def _hostile(value: str) -> str | None:
    if len(value) > MAX_FIELD:
        return f"longer than {MAX_FIELD} characters"
    m = _HOSTILE.search(value)
    return _HOSTILE_WHY[m.group()] if m else None


def validate_row(row: dict[str, str], line: int, *, default_region: str = "US", default_lang: str = "en",
                 allowed_prefixes: Sequence[str] = (), keep_columns: Sequence[str] = (),
                 languages: Sequence[str] = LANGUAGES, columns: tuple[tuple[str, str], ...] = ()
                 ) -> Contact | RowError:
    """Check one CSV row (column name -> value; names matched case-insensitively, aliases allowed, or the
    ``columns`` mapping: (field, column) pairs).

    Only the columns that are stored are checked; a reason names the column as the header spells it.
    """
    cols = _columns(tuple(row), tuple(keep_columns), columns)
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


def open_lines(src: str | os.PathLike[str] | IO[Any]) -> tuple[Iterable[str], Callable[[], int], IO[bytes] | None]:
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


def read_rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str] | None, str]]:
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


def validated_batches(lines: Iterable[str], size: int, opts: dict[str, Any]) -> Iterator[tuple[list[Contact], list[RowError], int]]:
    """Validated batches of ``size`` rows: (contacts, errors, rows). Runs in a worker thread."""
    rows = read_rows(lines)
    header = next((f for _, f, _ in rows if f is not None), None)
    if header is None:
        raise ContactsError("empty file: a header line (number,name,...) is required")
    header = [h.strip().lstrip("\ufeff") for h in header]
    lower = [h.lower() for h in header]
    mapping = dict(opts.get("columns") or ())
    opts["resolved"] = resolve_columns(header, mapping, opts["keep_columns"])   # read back by the importer
    if "number" in mapping:
        phones = [h for h in header if h.lower() == mapping["number"].strip().lower()]
    else:
        phones = [h for h in header if h.lower() in ALIASES["number"]
                  and h.lower() not in {c.strip().lower() for c in mapping.values()}]
    if len(phones) != 1:
        raise ContactsError("the first line must be a header with one phone column ("
                            + ", ".join(ALIASES["number"]) + ", or name it: columns number=<column>)"
                            + (f"; found {', '.join(phones)}" if phones else ""))
    row_opts = {k: v for k, v in opts.items() if k != "resolved"}
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
            result = validate_row(dict(zip(header, fields)), line, **row_opts)
            (contacts if isinstance(result, Contact) else errors).append(result)  # type: ignore[arg-type]
        if count == size:
            yield contacts, errors, count
            contacts, errors, count = [], [], 0
    yield contacts, errors, count


