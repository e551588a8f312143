"""The response mapping of a look-up backend: the backend's JSON -> the flat fields a ``lookup`` node speaks
(``lookups.<name>.map`` in ivr.yaml). Pure: the config check and the HTTP backend both use it."""

from __future__ import annotations

import re
from typing import Any, Mapping

# a mapping path: dot-separated keys of the JSON object; a number segment indexes a list (items.0.status)
PATH_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,9}$")
FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


def map_response(body: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """The fields ``mapping`` (field -> path in ``body``) names; no mapping: ``body`` itself.

    A path that leads nowhere (a missing key, an index past the end, a value that is an object or a list) leaves
    its field out: a ``say`` part naming it says nothing, the rest of the answer is still spoken.
    """
    if not mapping:
        return dict(body)
    out: dict[str, Any] = {}
    for name, path in mapping.items():
        value: Any = body
        for part in path.split("."):
            if isinstance(value, Mapping):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                value = None
            if value is None:
                break
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out[name] = value
        elif isinstance(value, bool):
            out[name] = "yes" if value else "no"
    return out
