"""``python -m ivr.api.openapi [--markdown]``: the OpenAPI document of the supervisor API (or its route table
for docs/api.md), built from the app's route table. The document itself is built in ``openapi_spec.py``, which
the app serves at ``GET /api/v1/openapi.json``; this entry point imports the app, nothing imports it.
"""

from __future__ import annotations

import json
import sys

from .app import PUBLIC, build_app
from .openapi_spec import OPS, markdown, routes, spec

__all__ = ["OPS", "markdown", "routes", "spec", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    app = build_app(None)   # the route table only: nothing is started
    if "--markdown" in argv:
        print(markdown(app, PUBLIC), end="")
    else:
        print(json.dumps(spec(app, PUBLIC), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
