"""Redis only behind ivr/store/: no module outside it imports redis or builds a Redis key.

Walks every module of ``ivr/`` with ``ast`` (so imports inside functions and under ``if TYPE_CHECKING``
count too). ``ALLOWED_*`` name the files outside ivr/store/ that still do, each with why; the lists only
shrink: a file that no longer needs its entry fails the test until the entry is removed.
"""

from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ivr"
STORE = PACKAGE / "store"
KEY_PREFIX = "ivr:"

# Files outside ivr/store/ allowed to import redis, or to hold an f-string that starts like a Redis key
# (f"ivr:...") or to pass a raw Redis client on (store.redis): none. An entry needs a comment saying why.
ALLOWED_REDIS_IMPORTS: frozenset[str] = frozenset()
ALLOWED_RAW_CLIENT: frozenset[str] = frozenset()


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if STORE not in p.parents)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _is_redis(name: object) -> bool:
    return isinstance(name, str) and (name == "redis" or name.startswith("redis."))


def _imports_redis(tree: ast.AST) -> list[int]:
    """Lines that import redis: ``import redis...``, ``from redis... import``, ``__import__("redis")``,
    ``importlib.import_module("redis...")``."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = any(_is_redis(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found = node.level == 0 and _is_redis(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            found = called in ("__import__", "import_module") and _is_redis(node.args[0].value)
        else:
            found = False
        if found:
            lines.append(node.lineno)
    return lines


def _key_fstrings(tree: ast.AST) -> list[int]:
    """f-strings that start with the key prefix (f"ivr:...") or with a prefix variable followed by ':'
    (f"{prefix}:...", f"{self.store.keys.prefix}:..."): a Redis key built outside the key module."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.JoinedStr) or not node.values:
            continue
        first = node.values[0]
        if isinstance(first, ast.Constant) and str(first.value).startswith(KEY_PREFIX):
            if str(first.value).startswith(f"{KEY_PREFIX} "):   # "ivr: message" on stderr, not a key
                continue
            lines.append(node.lineno)
        elif isinstance(first, ast.FormattedValue) and len(node.values) > 1:
            nxt = node.values[1]
            name = ast.unparse(first.value)
            if name.split(".")[-1] == "prefix" and isinstance(nxt, ast.Constant) and str(nxt.value).startswith(":"):
                lines.append(node.lineno)
    return lines


def _raw_client(tree: ast.AST) -> list[int]:
    """``<something>.store.redis`` or ``store.redis``: a raw Redis client taken out of the store."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "redis":
            owner = node.value
            if (isinstance(owner, ast.Name) and owner.id in ("store", "_store")) or \
                    (isinstance(owner, ast.Attribute) and owner.attr in ("store", "_store")):
                lines.append(node.lineno)
    return lines


def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_no_module_outside_the_store_imports_redis() -> None:
    offenders = {}
    for path in _modules():
        lines = _imports_redis(_parse(path))
        if lines and _rel(path) not in ALLOWED_REDIS_IMPORTS:
            offenders[_rel(path)] = lines
    assert not offenders, f"redis imported outside ivr/store/ (file: lines): {offenders}"


def test_no_redis_key_is_built_outside_the_store() -> None:
    offenders = {}
    for path in _modules():
        lines = _key_fstrings(_parse(path))
        if lines and _rel(path) not in ALLOWED_RAW_CLIENT:
            offenders[_rel(path)] = lines
    assert not offenders, f"Redis keys built outside ivr/store/keys.py (file: lines): {offenders}"


def test_no_raw_redis_client_is_taken_out_of_the_store() -> None:
    offenders = {}
    for path in _modules():
        lines = _raw_client(_parse(path))
        if lines and _rel(path) not in ALLOWED_RAW_CLIENT:
            offenders[_rel(path)] = lines
    assert not offenders, f"store.redis used outside ivr/store/ (file: lines): {offenders}"


def test_every_allowance_is_still_needed() -> None:
    stale = [e for e in sorted(ALLOWED_REDIS_IMPORTS) if not _imports_redis(_parse(ROOT / e))]
    stale += [e for e in sorted(ALLOWED_RAW_CLIENT) if not (_raw_client(t := _parse(ROOT / e)) or _key_fstrings(t))]
    assert not stale, f"no longer needed: take {stale} off the allow-lists"


def test_the_checks_see_what_they_are_meant_to() -> None:
    tree = ast.parse(
        "import redis\n"
        "def f():\n"
        "    from redis.exceptions import RedisError\n"
        "    import redis.asyncio as r\n"
        "    key = f'ivr:call:{uid}'\n"
        "    other = f'{self.store.keys.prefix}:agents:seq'\n"
        "    msg = f'ivr: {exc}'\n"
        "    return self.store.redis, self._store.redis\n")
    assert _imports_redis(tree) == [1, 3, 4]
    assert _key_fstrings(tree) == [5, 6]
    assert _raw_client(tree) == [8, 8]
    assert not _imports_redis(ast.parse("from .store import redis_store\nfrom ..store.errors import StoreError\n"))


def test_every_key_family_has_one_builder() -> None:
    """The keys module is the one place keys are spelled: each family's text appears in one builder."""
    from ivr.store.keys import Keys

    k = Keys("p")
    built = [k.call("u"), k.calls, k.tokens, k.stream_ticket("s"), k.auth_failures("a"), k.banner("en"), k.audit,
             k.refund_seq, k.refund("1"), k.refund_by_booking("b"), k.refunds, k.refunds_in("paid"),
             k.callback_seq, k.callback("1"), k.callbacks_pending, k.callbacks_leases, k.surveys, k.dnc,
             k.outbound_hour("h"), k.outbound_number("h", "n"), k.agent("1"), k.agent_pin_fails("1"),
             k.agents_added, k.agents_seq, k.agents_last_call, k.dispositions, k.feedback_seq, k.feedback("1"),
             k.feedback_team("t"), k.caller("n"), k.caller_calls("n"), k.caller_live("n"), k.dropped,
             k.dropped_due, k.campaigns, k.campaign("c"), k.campaign_due("c"), k.campaign_leases("c"),
             k.campaign_numbers("c"), k.campaign_seq("c"), k.campaign_import("c"), k.campaign_attempts("c"),
             k.campaign_hour("c", "h"), k.campaign_contact("c", 1), k.campaign_count("c", "pending"),
             k.leader, k.leader_seq, k.cluster_nodes, k.cluster_waiting("n"), k.cluster_waiting_callers("n"),
             k.cluster_waiting_queue("n", "q"), k.cluster_moved("u")]
    assert len(set(built)) == len(built) and all(key.startswith("p:") for key in built)
    source = (STORE / "keys.py").read_text(encoding="utf-8")
    assert source.count('f"{self.prefix}:dnc"') == 1
    for path in STORE.glob("*.py"):
        if path.name != "keys.py":
            tree = _parse(path)
            assert not _key_fstrings(tree), f"{_rel(path)} builds a key itself: use ivr/store/keys.py"
