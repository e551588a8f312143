"""Menus as data: load ``dialplans/*.yaml`` into validated ``Menu`` objects.

Every node is checked against the table of node kinds (``NODE_FIELDS``); an
error names the file, the node and the line (``main.yaml: node 'main' (line 12):
option '7' goes to unknown node 'q_x'``). A bad file is reported and skipped:
the valid menus keep working. Loaded menus are immutable, so a reload never
changes a call that is already running: it keeps the version it started with.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Hashable, Mapping

import yaml
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .validators import TEMPLATE_RE, VALIDATORS

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_DIGIT_KEYS = set("0123456789*#")
_OPTION_KEYS = set("0123456789*")   # '#' ends input in GET DATA: it cannot be an option
_PROMPT_RE = re.compile(r"^(sound:)?[A-Za-z0-9_/-]{1,80}$")
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
# what MSet and the dialplan must never see in a value (the engine refuses the same set)
FORBIDDEN_IN_VALUES = "\r\n$\"'{}[],;\\|&"

# kind -> (required fields, optional fields)
NODE_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "play": (frozenset(), frozenset({"prompts", "next", "skip_keys", "escalate"})),
    "banner": (frozenset(), frozenset({"prompts", "next", "skip_keys"})),
    "menu": (frozenset({"options"}), frozenset({"prompts", "timeout", "retries", "invalid_prompt",
                                                "timeout_prompt", "on_fail", "repeat_key"})),
    "language": (frozenset({"options"}), frozenset({"prompts", "timeout", "retries", "default", "next"})),
    "collect": (frozenset({"save_as", "next"}),
                frozenset({"prompts", "min", "max", "timeout", "retries", "validate",
                           "invalid_prompt", "timeout_prompt", "on_fail", "escalate"})),
    "lookup": (frozenset({"backend", "operation", "found"}),
               frozenset({"params", "say", "not_found", "error", "save_as", "escalate"})),
    "queue": (frozenset({"queue"}), frozenset({"prompts", "priority", "timeout", "announce_wait",
                                               "callback_over", "callback", "offer_prompt"})),
    "callback": (frozenset(), frozenset({"queue", "prompts", "next"})),
    "hours": (frozenset({"open", "next", "closed"}), frozenset({"timezone", "holidays"})),
    "goto": (frozenset({"next"}), frozenset()),
    "set": (frozenset({"values"}), frozenset({"next"})),
    "hangup": (frozenset(), frozenset({"prompts", "outcome"})),
    "survey": (frozenset(), frozenset({"prompts", "thanks", "timeout", "retries", "feedback"})),
    "continuity": (frozenset({"next"}), frozenset({"notified", "welcome_back", "rejoin"})),
    "feedback": (frozenset(), frozenset({"prompts", "thanks", "max_seconds", "next"})),
}
TARGET_FIELDS = ("next", "on_fail", "found", "not_found", "error", "callback", "closed", "notified", "escalate",
                 "feedback")
ESCALATING_KINDS = ("play", "collect", "lookup")   # self-service steps where 0 reaches a human
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")
COMMON_FIELDS = frozenset({"type", "comment", "reason"})
_REASON_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class MenuError(ValueError):
    """A menu file is invalid; the message names the file, the node and the line."""


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    type: str
    line: int
    fields: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    @property
    def prompts(self) -> tuple[str, ...]:
        return tuple(self.fields.get("prompts", ()))


@dataclass(frozen=True, slots=True)
class Menu:
    name: str
    source: str
    start: str
    nodes: Mapping[str, Node]
    survey: str = ""
    languages: tuple[str, ...] = ("en",)
    escalate: str = ""             # where 0 in a self-service step goes (a queue node); nodes may override
    prompts_used: frozenset[str] = field(default_factory=frozenset)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping (``__line__``)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Hashable, Any]:
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _node_error(source: str, node_id: str, line: int, msg: str) -> MenuError:
    return MenuError(f"{source}: node {node_id!r} (line {line}): {msg}")


def _check_prompts(source: str, nid: str, line: int, value: Any, key: str = "prompts") -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise _node_error(source, nid, line, f"{key} must be a prompt name or a list of names")
    for p in value:
        if not _PROMPT_RE.fullmatch(p):
            raise _node_error(source, nid, line, f"{key}: bad prompt name {p!r} (letters, digits, - _ / only)")
    return tuple(value)


def _check_number(source: str, nid: str, line: int, key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise _node_error(source, nid, line, f"{key} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return value


def _check_say(source: str, nid: str, line: int, value: Any) -> tuple[tuple[str, str], ...]:
    """``say``: a list of {prompt: name-template} | {digits: template} | {number: template}."""
    if not isinstance(value, list):
        raise _node_error(source, nid, line, "say must be a list like [{prompt: refund-status-intro}, {digits: '{reference}'}]")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise _node_error(source, nid, line, f"say: each item is a one-key mapping, got {item!r}")
        item = {k: v for k, v in item.items() if k != "__line__"}
        if len(item) != 1:
            raise _node_error(source, nid, line, f"say: each item is a one-key mapping, got {item!r}")
        (kind, template), = item.items()
        if kind not in ("prompt", "digits", "number") or not isinstance(template, str):
            raise _node_error(source, nid, line, f"say: use prompt, digits or number, got {kind!r}")
        out.append((kind, template))
    return tuple(out)


def _check_hours(source: str, nid: str, line: int, value: Any) -> Mapping[int, tuple[tuple[int, int], ...]]:
    """``open``: {"mon-fri": "08:00-20:00", "sat": ["09:00-12:00", "13:00-17:00"]} -> weekday -> minute ranges."""
    if not isinstance(value, dict) or not value:
        raise _node_error(source, nid, line, "open must map days (mon-fri, sat, ...) to HH:MM-HH:MM ranges")
    table: dict[int, list[tuple[int, int]]] = {}
    for spec, ranges in value.items():
        if spec == "__line__":
            continue
        first, _, last = str(spec).lower().partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise _node_error(source, nid, line, f"open: bad day range {spec!r} (use mon, tue, ... or mon-fri)")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        days = list(range(a, b + 1)) if a <= b else list(range(a, 7)) + list(range(0, b + 1))
        for r in [ranges] if isinstance(ranges, str) else ranges:
            m = _RANGE_RE.fullmatch(str(r))
            if not m:
                raise _node_error(source, nid, line, f"open: bad time range {r!r} (use HH:MM-HH:MM)")
            start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
            if end <= start:
                raise _node_error(source, nid, line, f"open: {r!r} ends before it starts")
            for d in days:
                table.setdefault(d, []).append((start, end))
    return MappingProxyType({d: tuple(sorted(rs)) for d, rs in table.items()})


def _validate_node(source: str, nid: str, raw: Any, queues: frozenset[str] | None,
                   backends: frozenset[str] | None = None) -> Node:
    if not isinstance(raw, dict):
        raise MenuError(f"{source}: node {nid!r}: expected a mapping, got {type(raw).__name__}")
    line = int(raw.pop("__line__", 0))
    if not _ID_RE.fullmatch(nid):
        raise _node_error(source, nid, line, "node ids are letters, digits, _ and - (starting with a letter)")
    kind = raw.get("type")
    if kind not in NODE_FIELDS:
        raise _node_error(source, nid, line, f"type must be one of {', '.join(sorted(NODE_FIELDS))}, got {kind!r}")
    required, optional = NODE_FIELDS[kind]
    missing = required - set(raw)
    if missing:
        raise _node_error(source, nid, line, f"missing field {sorted(missing)[0]!r} for a {kind} node")
    unknown = set(raw) - required - optional - COMMON_FIELDS
    if unknown:
        raise _node_error(source, nid, line, f"unknown field {sorted(unknown)[0]!r} for a {kind} node")
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("type", "comment"):
            continue
        if key in ("prompts",):
            value = _check_prompts(source, nid, line, value)
        elif key in ("invalid_prompt", "timeout_prompt"):
            value = _check_prompts(source, nid, line, value, key)
        elif key == "timeout":
            value = _check_number(source, nid, line, key, value, 0.5, 3600 if kind == "queue" else 60)
        elif key == "retries":
            value = int(_check_number(source, nid, line, key, value, 0, 10))
        elif key == "priority":
            value = int(_check_number(source, nid, line, key, value, 0, 100))
        elif key == "options":
            if isinstance(value, dict):
                value = {str(k): v for k, v in value.items() if k != "__line__"}
            if not isinstance(value, dict) or not value:
                raise _node_error(source, nid, line, "options must be a mapping of keys to targets")
            for k, target in value.items():
                if k not in _OPTION_KEYS:
                    raise _node_error(source, nid, line, f"option key {k!r} is not a single keypad key (0-9 or *; # ends input)")
                if not isinstance(target, str):
                    raise _node_error(source, nid, line, f"option {k!r}: target must be a name, got {target!r}")
            value = MappingProxyType(value)
        elif key == "reason":
            if not isinstance(value, str) or not _REASON_RE.fullmatch(value):
                raise _node_error(source, nid, line, f"reason must be a lower-case name like refund_status, got {value!r}")
        elif key == "repeat_key":
            if str(value) not in _OPTION_KEYS:
                raise _node_error(source, nid, line, f"repeat_key {value!r} is not a keypad key")
            value = str(value)
        elif key == "queue":
            if not isinstance(value, str) or (queues is not None and value not in queues):
                known = ", ".join(sorted(queues or ()))
                raise _node_error(source, nid, line, f"unknown queue {value!r} (configured: {known})")
        elif key == "values":
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != "__line__"}
            if not isinstance(value, dict) or not value:
                raise _node_error(source, nid, line, "values must be a mapping of NAME: value")
            for k, v in value.items():
                if not _VAR_RE.fullmatch(str(k)) or not isinstance(v, (str, int, float)):
                    raise _node_error(source, nid, line, f"values: bad entry {k!r}: {v!r}")
                if isinstance(v, str) and any(c in v for c in FORBIDDEN_IN_VALUES):
                    raise _node_error(source, nid, line, f"values: {k!r} has characters not allowed in a value")
            value = MappingProxyType(value)
        elif key in TARGET_FIELDS or key in ("default", "outcome", "operation", "backend"):
            if not isinstance(value, str) or not value:
                raise _node_error(source, nid, line, f"{key} must be a name, got {value!r}")
            if key == "backend" and backends is not None and value not in backends:
                raise _node_error(source, nid, line, f"unknown backend {value!r} (known: {', '.join(sorted(backends))})")
        elif key in ("thanks", "offer_prompt", "welcome_back"):
            value = _check_prompts(source, nid, line, value, key)
        elif key == "skip_keys":
            if not isinstance(value, str) or not set(value) <= _DIGIT_KEYS:
                raise _node_error(source, nid, line, f"skip_keys must be keypad keys, got {value!r}")
        elif key in ("min", "max"):
            value = int(_check_number(source, nid, line, key, value, 1, 20))
        elif key == "validate":
            if value not in VALIDATORS:
                raise _node_error(source, nid, line, f"unknown validator {value!r} (known: {', '.join(sorted(VALIDATORS))})")
        elif key == "save_as":
            if not isinstance(value, str) or not _VAR_RE.fullmatch(value):
                raise _node_error(source, nid, line, f"save_as must be a variable name, got {value!r}")
        elif key == "params":
            if not isinstance(value, dict) or not all(isinstance(v, str) and TEMPLATE_RE.fullmatch(v)
                                                      for k, v in value.items() if k != "__line__"):
                raise _node_error(source, nid, line, "params must map names to text templates like '{booking}'")
            value = MappingProxyType({k: v for k, v in value.items() if k != "__line__"})
        elif key == "say":
            value = _check_say(source, nid, line, value)
            for _, template in value:
                if not TEMPLATE_RE.fullmatch(template):
                    raise _node_error(source, nid, line, f"say: {template!r} may only use {{name}} placeholders")
        elif key in ("announce_wait", "rejoin"):
            if not isinstance(value, bool):
                raise _node_error(source, nid, line, f"{key} must be true or false, got {value!r}")
        elif key == "max_seconds":
            value = int(_check_number(source, nid, line, key, value, 5, 300))
        elif key == "callback_over":
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or not 0 <= value <= 7200):
                raise _node_error(source, nid, line, f'callback_over must be "auto" or a number of seconds from 0 '
                                                     f'to 7200, got {value!r}')
        elif key == "timezone":
            try:
                ZoneInfo(str(value))
            except (ZoneInfoNotFoundError, ValueError):
                raise _node_error(source, nid, line, f"unknown timezone {value!r}") from None
        elif key == "open":
            value = _check_hours(source, nid, line, value)
        elif key == "holidays":
            if not isinstance(value, list) or not all(isinstance(d, (str, datetime.date)) for d in value):
                raise _node_error(source, nid, line, "holidays must be a list of dates (YYYY-MM-DD)")
            try:
                value = frozenset(d if isinstance(d, datetime.date) else datetime.date.fromisoformat(d) for d in value)
            except ValueError as exc:
                raise _node_error(source, nid, line, f"holidays: {exc}") from None
        fields[key] = value
    return Node(nid, kind, line, MappingProxyType(fields))


def _targets(node: Node) -> list[tuple[str, str]]:
    """(field, node id) pairs that must name existing nodes."""
    out = [(k, node.fields[k]) for k in TARGET_FIELDS if k in node.fields]
    if node.type == "menu":
        out += [(f"option {k!r}", v) for k, v in node.fields["options"].items()]
    return out


def parse_menu(text: str, source: str, queues: frozenset[str] | None = None,
               languages: tuple[str, ...] = ("en", "fa", "zh"),
               backends: frozenset[str] | None = None) -> Menu:
    """Parse and validate one menu file's text; raise MenuError naming what is wrong."""
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise MenuError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise MenuError(f"{source}: expected a mapping with name, start and nodes")
    data.pop("__line__", None)
    unknown = set(data) - {"name", "start", "nodes", "survey", "description", "languages", "escalate"}
    if unknown:
        raise MenuError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}")
    name = data.get("name") or Path(source).stem
    if not isinstance(name, str) or not _ID_RE.fullmatch(name):
        raise MenuError(f"{source}: name must be an identifier, got {name!r}")
    nodes_raw = data.get("nodes")
    if not isinstance(nodes_raw, dict) or len(nodes_raw) <= 1:
        raise MenuError(f"{source}: 'nodes' must be a mapping of node id to node")
    nodes_raw.pop("__line__", None)
    nodes = {str(nid): _validate_node(source, str(nid), raw, queues, backends) for nid, raw in nodes_raw.items()}
    start = data.get("start")
    if start not in nodes:
        raise MenuError(f"{source}: start node {start!r} is not defined")
    for node in nodes.values():
        for what, target in _targets(node):
            if target not in nodes:
                raise _node_error(source, node.id, node.line, f"{what} goes to unknown node {target!r}")
        if node.type == "language":
            for k, lang in node.fields["options"].items():
                if lang not in languages:
                    raise _node_error(source, node.id, node.line, f"option {k!r}: unknown language {lang!r}")
            if "default" in node.fields and node.fields["default"] not in languages:
                raise _node_error(source, node.id, node.line,
                                  f"default: unknown language {node.fields['default']!r} (configured: {', '.join(languages)})")
        if node.type == "collect" and node.fields.get("min", 1) > node.fields.get("max", 20):
            raise _node_error(source, node.id, node.line, "min is above max")
        if node.type == "queue" and "callback_over" in node.fields and "callback" not in node.fields:
            raise _node_error(source, node.id, node.line, "callback_over needs a callback node to offer")
    _check_reachable_end(source, nodes, start)
    prompts: set[str] = set()
    for node in nodes.values():
        for key in ("prompts", "invalid_prompt", "timeout_prompt", "thanks", "offer_prompt", "welcome_back"):
            prompts.update(node.fields.get(key, ()))
    for n in nodes.values():
        if "feedback" in n.fields and nodes[n.fields["feedback"]].type != "feedback":
            raise _node_error(source, n.id, n.line, f"feedback must name a feedback node, got {n.fields['feedback']!r}")
    escalate = str(data.get("escalate", "") or "")
    for where, target in [("escalate", escalate)] + [(f"node {n.id!r}: escalate", n.fields["escalate"])
                                                       for n in nodes.values() if "escalate" in n.fields]:
        if target and (target not in nodes or nodes[target].type != "queue"):
            raise MenuError(f"{source}: {where} must name a queue node, got {target!r}")
    survey = str(data.get("survey", ""))
    if survey and (survey not in nodes or nodes[survey].type != "survey"):
        raise MenuError(f"{source}: survey {survey!r} must name a node of type survey")
    langs = data.get("languages", list(languages))
    if not isinstance(langs, list) or not langs or not all(isinstance(x, str) for x in langs):
        raise MenuError(f"{source}: languages must be a list like [en, fa, zh]")
    unknown_langs = [x for x in langs if x not in languages]
    if unknown_langs:
        raise MenuError(f"{source}: languages: {unknown_langs[0]!r} is not configured ({', '.join(languages)})")
    return Menu(name=name, source=source, start=start, nodes=MappingProxyType(nodes),
                survey=survey, languages=tuple(langs), prompts_used=frozenset(prompts), escalate=escalate)


def _check_reachable_end(source: str, nodes: Mapping[str, Node], start: str) -> None:
    """Reject loops that no caller input can leave (goto/play/set chains that cycle)."""
    for nid in nodes:
        seen: list[str] = []
        cur: str | None = nid
        while cur is not None and nodes[cur].type in ("goto", "play", "set"):
            if cur in seen:
                n = nodes[nid]
                raise _node_error(source, nid, n.line, f"endless loop without caller input: {' -> '.join(seen + [cur])}")
            seen.append(cur)
            cur = nodes[cur].fields.get("next")


class MenuSet:
    """All menus of a directory. ``load()`` returns the errors; valid files load regardless."""

    def __init__(self, directory: str | Path, queues: frozenset[str] | None = None,
                 languages: tuple[str, ...] = ("en", "fa", "zh"), backends: frozenset[str] | None = None) -> None:
        self.directory = Path(directory)
        self.queues = queues
        self.backends = backends
        self.languages = languages
        self.menus: Mapping[str, Menu] = MappingProxyType({})
        self.errors: list[str] = []
        self.version = 0

    def load(self) -> list[str]:
        """(Re)load every ``*.yaml``; a bad file keeps its last good version if it had one."""
        menus: dict[str, Menu] = {}
        errors: list[str] = []
        for path in sorted(self.directory.glob("*.yaml")):
            try:
                menu = parse_menu(path.read_text(encoding="utf-8"), path.name, self.queues, self.languages,
                                  self.backends)
            except (MenuError, OSError, UnicodeDecodeError) as exc:
                errors.append(str(exc))
                log.error("menu not loaded: %s", exc)
                old = next((m for m in self.menus.values() if m.source == path.name), None)
                if old is not None:
                    menus[old.name] = old
                continue
            if menu.name in menus:
                errors.append(f"{path.name}: menu name {menu.name!r} already used by {menus[menu.name].source}")
                continue
            menus[menu.name] = menu
        self.menus = MappingProxyType(menus)
        self.errors = errors
        self.version += 1
        log.info("menus loaded: %s (%d errors)", ", ".join(sorted(menus)) or "none", len(errors))
        return errors

    def get(self, name: str) -> Menu | None:
        return self.menus.get(name)
