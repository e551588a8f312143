"""The OpenAPI document is the API's contract: Schemathesis (a contract tester nobody here wrote) against a
fresh private stack, every check, a fixed seed and a bounded number of examples, must find nothing.

What it checks, per operation of the document the stack serves (``GET /api/v1/openapi.json``): requests
the document allows are accepted (not 400), requests it forbids are refused, every status answered is
documented, bodies match their schemas (the event stream's events too), undeclared methods get 405 with an
``Allow`` header naming exactly the documented ones, a missing or wrong token gets 401, no 5xx.

A new route passes when its ``OPS`` entry (ivr/api/openapi_spec.py) describes exactly what the route accepts:
each query parameter's schema (types, bounds, patterns, enums), the body with ``additionalProperties: false``
when the route refuses unknown fields (``check_fields``), path parameters in ``PATH_PARAMS`` when they have a
format, and ``statuses`` for any status beyond those the builder adds (see ``operation()``).

The stack is private and thrown away (its own workdir and ports on 127.0.0.1); Schemathesis adds, changes and
removes agents, campaigns, refunds and banners in it. Nothing dials out: outbound numbers are held by the
stack's allow-list (``outbound.allowed_prefixes``, checked below), agents' mobiles are refused by it, its
SIP trunk has no contact to reach, and it has no webhooks (checked below).
The failed-login limit is raised for this stack only: Schemathesis sends a wrong token to every operation, and
a locked-out address answers those with 429 where the check expects 401 (the valid token is accepted from a
locked-out address either way: tests/unit/test_api_auth.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .harness import pick_port_base

SEED = 1
MAX_EXAMPLES = 20   # about a minute for the ~60 operations; 30 finds nothing more today and takes 1.5x
CONFIG = Path(__file__).with_name("schemathesis.toml")


def _ivr(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def _schemathesis() -> list[str]:
    st = Path(sys.executable).with_name("st")
    if st.exists():
        return [str(st)]
    found = shutil.which("st")
    if found is None:
        pytest.fail("schemathesis is not installed (pyproject's test extra): run `bash scripts/install.sh` first")
    return [found]


def test_the_api_answers_as_its_openapi_document_says(tmp_path: Path) -> None:
    workdir = tmp_path / "stack"
    base = pick_port_base(start=50000, stop=62000)
    env = {**os.environ, "IVR_API_AUTH_FAIL_LIMIT": "1000000"}
    up = _ivr("up", "--workdir", str(workdir), "--port-base", str(base), env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    info = json.loads(up.stdout.strip().splitlines()[-1])
    try:
        assert info["api"].startswith("http://127.0.0.1:")
        config = yaml.safe_load((workdir / "ivr.yaml").read_text())
        assert config["outbound"]["allowed_prefixes"], "the private stack must keep its outbound allow-list"
        assert not config.get("webhooks"), "no webhook may post the run's events anywhere"
        started = time.monotonic()
        run = subprocess.run(
            [*_schemathesis(), "--no-color", "--config-file", str(CONFIG), "run", f"{info['api']}/api/v1/openapi.json",
             "-H", f"Authorization: Bearer {info['token']}", "--checks", "all", "--seed", str(SEED),
             "--max-examples", str(MAX_EXAMPLES),
             # one worker: Hypothesis parses lambdas' source with ast, which CPython 3.11 cannot do in two
             # threads at once (SystemError: AST constructor recursion depth mismatch)
             "--workers", "1",
             "--report", "junit", "--report-dir", str(tmp_path / "report")],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
        took = time.monotonic() - started
    finally:
        down = _ivr("down", "--workdir", str(workdir))
    out = run.stdout + run.stderr
    summary = out[out.find("SUMMARY"):] if "SUMMARY" in out else out[-3000:]
    failures = re.search(r"(\d+) failures?", summary)
    assert run.returncode == 0 and failures is None, f"schemathesis: exit {run.returncode}\n{out[-12000:]}"
    assert "errors" not in summary.splitlines()[-1], summary
    assert down.returncode == 0, down.stderr
    print(f"schemathesis: {summary.splitlines()[-1].strip('= ')} ({took:.0f} s)")
