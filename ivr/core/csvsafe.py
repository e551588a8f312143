"""CSV cells a spreadsheet will not run as formulas.

A contact's name, a caller's number or an import error's raw text comes from outside; opened in Excel or
LibreOffice, a cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return before one) is a
formula, which can run commands or send the sheet's data elsewhere. Every CSV the API and the CLI write goes
through here: such text cells get a leading ``'`` (the spreadsheet's "this is text" mark), as OWASP's CSV
injection advice says. Numbers the controller computed (counts, seconds, ratios) are written as they are;
a phone number ``+442079460000`` is written ``'+442079460000`` (``ivr campaign import`` reads it back as
it was).
"""

from __future__ import annotations

import csv
from typing import IO, TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    _DictWriterBase = csv.DictWriter[str]
else:   # generic in the stubs only: csv.DictWriter[str] is a TypeError at run time on Python 3.11
    _DictWriterBase = csv.DictWriter

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """``value``, with a ``'`` in front if it is text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def row(values: Iterable[Any]) -> list[Any]:
    return [cell(v) for v in values]


class Writer:
    """``csv.writer`` whose every row goes through ``cell``."""

    def __init__(self, out: IO[str], **fmt: Any) -> None:
        self._w = csv.writer(out, **fmt)

    def writerow(self, values: Iterable[Any]) -> Any:
        return self._w.writerow(row(values))


class DictWriter(_DictWriterBase):
    """``csv.DictWriter`` whose every value goes through ``cell`` (the header is ours: written as it is)."""

    def __init__(self, out: IO[str], fieldnames: Sequence[str], **kw: Any) -> None:
        super().__init__(out, fieldnames, **kw)

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({k: cell(v) for k, v in rowdict.items()})
