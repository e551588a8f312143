"""Caller input and template checks shared by the menu schema and the node kinds; pure (no I/O library).

``VALIDATORS`` is the table of input validators a ``collect`` node names (``validate:``), checked by the
schema; ``TEMPLATE_RE`` is what a look-up's ``{name}`` template may be; ``format_part`` and
``safe_prompt_name`` keep what is spoken back to digits and plain prompt names.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping


# ------------------------------------------------------------------ validators
def _booking(value: str) -> bool:
    """Six-digit booking number whose last digit is not a repeated run (e.g. 000000 is refused)."""
    return len(value) == 6 and is_digits(value) and len(set(value)) > 1


def _phone(value: str) -> bool:
    return is_digits(value) and 6 <= len(value) <= 15


def _luhn(value: str) -> bool:
    if not is_digits(value) or len(value) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(value)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


VALIDATORS: dict[str, Callable[[str], bool]] = {
    "digits": lambda v: is_digits(v),
    "booking": _booking,
    "phone": _phone,
    "luhn": _luhn,
}


_SAFE_PROMPT_PART = re.compile(r"^[a-z0-9_-]{1,40}$")
# templates: literal text with {name} placeholders only (no attribute or index access)
TEMPLATE_RE = re.compile(r"(?:[^{}]|\{[A-Za-z_][A-Za-z0-9_]{0,40}\})*")


def is_digits(value: str) -> bool:
    """ASCII digits only (str.isdigit also accepts other scripts' digits and superscripts)."""
    return bool(value) and value.isascii() and value.isdigit()


def format_part(template: str, values: Mapping[str, Any]) -> str:
    """Fill ``{field}`` from a look-up result; the result must stay a safe name or digits."""
    if not TEMPLATE_RE.fullmatch(template):
        return ""
    try:
        return template.format_map({k: str(v) for k, v in values.items()})
    except (KeyError, ValueError, IndexError, AttributeError, TypeError):
        return ""


def safe_prompt_name(name: str) -> str | None:
    """A prompt name built from outside data is used only if it is a plain lower-case name."""
    return name if _SAFE_PROMPT_PART.fullmatch(name) else None
