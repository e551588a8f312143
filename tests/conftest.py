"""Shared pytest set-up: tests under tests/integration are marked `integration`. Under pytest-xdist (``-n N``,
set in pyproject.toml) each worker gets ports of its own, and each integration file runs on one worker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Property tests check what holds, not how fast: the suite's workers share 2 cores with Asterisk, SIPp and Redis,
# so one example may take longer than hypothesis's 200 ms deadline. Speed is the benchmarks' (benchmarks/).
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

# pytest-xdist runs the suite in N worker processes side by side, each with its own test stack and SIPp phones.
# Ports are probed free before use, but two workers probing the same port at the same moment would both get it:
# each worker gets a slice of its own of SIPp's port range (ivr.devtools.sipp reads IVR_SIPP_PORTS when imported, and
# the benchmarks and demos the tests start inherit it) and of the stacks' port bases (tests/integration/harness.py).
# Set here, before any test module imports ivr.devtools.sipp.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")                    # "gw0", "gw1", ... ("" without xdist)
WORKER_INDEX = int(WORKER[2:]) if WORKER.startswith("gw") else 0
WORKER_COUNT = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)) if WORKER else 1
SIPP_RANGE = (12000, 20000)    # ivr.devtools.sipp.SIPP_PORTS
if WORKER_COUNT > 1:
    _span = (SIPP_RANGE[1] - SIPP_RANGE[0]) // WORKER_COUNT // 4 * 4
    _first = SIPP_RANGE[0] + WORKER_INDEX * _span
    os.environ["IVR_SIPP_PORTS"] = f"{_first}-{_first + _span}"

# A stack's listening TCP ports (AMI, AGI, API, Redis, SIP) lie inside the kernel's range of ephemeral ports
# (32768-60999): a long-lived client connection of another worker's stack (Redis, AMI) can be given one of them
# as its local port between the probe and the bind, and the stack then fails to start (seen once in four runs).
# As root, the run reserves those ports from the ephemeral range while it lasts (ip_local_reserved_ports) and
# puts the previous setting back at the end; without the right to, it goes on as before.
RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")
STACK_TCP_OFFSETS = (38, 60, 73, 80, 1379,     # ivr.devtools.stack.PORT_OFFSETS: ami, sip, agi, api, redis
                     1380, 1381, 1382, 1383)   # a Redis set from the redis port: its replica, three Sentinels
_RESERVED_BEFORE = pytest.StashKey[str]()


def _stack_ports() -> list[int]:
    try:
        lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    return sorted({base + off for base in range(20000, 64001, 1000) for off in STACK_TCP_OFFSETS
                   if lo <= base + off <= hi})


def pytest_sessionstart(session: pytest.Session) -> None:
    if WORKER:        # the run's main process does it once for all its workers
        return
    try:
        before = RESERVED_PORTS.read_text().strip()
        RESERVED_PORTS.write_text(",".join(filter(None, [before, ",".join(map(str, _stack_ports()))])))
    except OSError:
        return
    session.config.stash[_RESERVED_BEFORE] = before


def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.config.stash.get(_RESERVED_BEFORE, None)
    if before is not None:
        try:
            RESERVED_PORTS.write_text(before or "\n")
        except OSError:
            pass


# How the tests are shared out (--dist loadgroup, see IntegrationFileScheduling): an integration file is one unit,
# run on one worker in its order and on that worker's session stack, as in a run in one process. Except:
# - the benchmarks at smoke size measure rates, CPU and pacing: they are one unit, one after the other on one
#   worker, and sent out first (the longest unit);
# - tests that start a private stack of their own and use nothing else of their file each are a unit of their own.
BENCH_UNIT = "benchmarks"
BENCH_FILES = {"test_bench_smoke.py", "test_load_bench_smoke.py", "test_campaign_bench_smoke.py",
               "test_crisis_hour_smoke.py", "test_cluster_bench_smoke.py"}
OWN_UNIT_FILES = {"test_faults.py", "test_trunk.py"}   # every test of these on a private stack of its own
OWN_UNIT_TESTS = {
    "test_fallback.py::test_asterisk_restarted_while_the_controller_is_down_answers_or_tells_every_caller",
    "test_callbacks.py::test_a_caller_facing_a_long_wait_is_promised_a_callback_and_the_promise_is_kept",
}


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: whole units go to one worker. Unit tests each are one."""
    path, _, name = nodeid.partition("::")
    parts = path.split("/")
    if "integration" not in parts[:-1]:
        return nodeid
    filename = parts[-1]
    if filename in BENCH_FILES:
        return BENCH_UNIT
    if filename in OWN_UNIT_FILES or f"{filename}::{name}" in OWN_UNIT_TESTS:
        return nodeid
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """--dist loadgroup with the units of work_unit() (the xdist_group marks are not used: pytest 9.2's node
    ids do not carry pytest-xdist's group suffix any more, pytest-dev/pytest-xdist#1386)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class IntegrationFileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            # the longest units first, so that none of them starts last: the benchmarks, then the tests on
            # private stacks of their own (30-80 s each); then the files, most tests first (xdist's order)
            if not getattr(self, "_long_first", False):
                self._long_first = True
                long_units = [s for s in self.workqueue if s == BENCH_UNIT or ("/integration/" in s and "::" in s)]
                for scope in reversed(long_units):
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return IntegrationFileScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)
