"""Menus as data: load ``dialplans/*.yaml`` into validated ``Menu`` objects.

Every node is checked against the table of node kinds (``NODE_FIELDS``); an
error names the file, the node and the line (``main.yaml: node 'main' (line 12):
option '7' goes to unknown node 'q_x'``). A bad file is reported and skipped:
the valid menus keep working. Loaded menus are immutable, so a reload never
changes a call that is already running: it keeps the version it started with.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
_DIGIT_KEYS = set("0123456789*#")
_PROMPT_RE = re.compile(r"^(sound:)?[A-Za-z0-9_/-]{1,80}$")
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")

# kind -> (required fields, optional fields); "next" names a node
NODE_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "play": (frozenset(), frozenset({"prompts", "next"})),
    "menu": (frozenset({"options"}), frozenset({"prompts", "timeout", "retries", "invalid_prompt",
                                                "timeout_prompt", "on_fail", "repeat_key"})),
    "language": (frozenset({"options"}), frozenset({"prompts", "timeout", "retries", "default", "next"})),
    "queue": (frozenset({"queue"}), frozenset({"prompts", "priority", "timeout"})),
    "goto": (frozenset({"next"}), frozenset()),
    "set": (frozenset({"values"}), frozenset({"next"})),
    "hangup": (frozenset(), frozenset({"prompts", "outcome"})),
}
COMMON_FIELDS = frozenset({"type", "comment"})


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
    prompts_used: frozenset[str] = field(default_factory=frozenset)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping (``__line__``)."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
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
        if not _PROMPT_RE.match(p):
            raise _node_error(source, nid, line, f"{key}: bad prompt name {p!r} (letters, digits, - _ / only)")
    return tuple(value)


def _check_number(source: str, nid: str, line: int, key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise _node_error(source, nid, line, f"{key} must be a number from {lo:g} to {hi:g}, got {value!r}")
    return value


def _validate_node(source: str, nid: str, raw: Any, queues: frozenset[str] | None) -> Node:
    if not isinstance(raw, dict):
        raise MenuError(f"{source}: node {nid!r}: expected a mapping, got {type(raw).__name__}")
    line = int(raw.pop("__line__", 0))
    if not _ID_RE.match(nid):
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
            if not isinstance(value, dict) or not value:
                raise _node_error(source, nid, line, "options must be a mapping of keys to targets")
            value = {str(k): v for k, v in value.items() if k != "__line__"}
            for k, target in value.items():
                if k not in _DIGIT_KEYS:
                    raise _node_error(source, nid, line, f"option key {k!r} is not a single keypad key (0-9 * #)")
                if not isinstance(target, str):
                    raise _node_error(source, nid, line, f"option {k!r}: target must be a name, got {target!r}")
            value = MappingProxyType(value)
        elif key == "repeat_key":
            if str(value) not in _DIGIT_KEYS:
                raise _node_error(source, nid, line, f"repeat_key {value!r} is not a keypad key")
            value = str(value)
        elif key == "queue":
            if not isinstance(value, str) or (queues is not None and value not in queues):
                known = ", ".join(sorted(queues or ()))
                raise _node_error(source, nid, line, f"unknown queue {value!r} (configured: {known})")
        elif key == "values":
            if not isinstance(value, dict) or not value:
                raise _node_error(source, nid, line, "values must be a mapping of NAME: value")
            value = {k: v for k, v in value.items() if k != "__line__"}
            for k, v in value.items():
                if not _VAR_RE.match(str(k)) or not isinstance(v, (str, int, float)):
                    raise _node_error(source, nid, line, f"values: bad entry {k!r}: {v!r}")
                if isinstance(v, str) and any(c in v for c in "\r\n$\"{}"):
                    raise _node_error(source, nid, line, f"values: {k!r} has characters not allowed in a value")
            value = MappingProxyType(value)
        elif key in ("next", "on_fail", "default", "outcome"):
            if not isinstance(value, str):
                raise _node_error(source, nid, line, f"{key} must be a name, got {value!r}")
        fields[key] = value
    return Node(nid, kind, line, MappingProxyType(fields))


def _targets(node: Node) -> list[tuple[str, str]]:
    """(field, node id) pairs that must name existing nodes."""
    out = [(k, node.fields[k]) for k in ("next", "on_fail") if k in node.fields]
    if node.type == "menu":
        out += [(f"option {k!r}", v) for k, v in node.fields["options"].items()]
    return out


def parse_menu(text: str, source: str, queues: frozenset[str] | None = None,
               languages: tuple[str, ...] = ("en", "fa", "zh")) -> Menu:
    """Parse and validate one menu file's text; raise MenuError naming what is wrong."""
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise MenuError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise MenuError(f"{source}: expected a mapping with name, start and nodes")
    data.pop("__line__", None)
    unknown = set(data) - {"name", "start", "nodes", "survey", "description", "languages"}
    if unknown:
        raise MenuError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}")
    name = data.get("name") or Path(source).stem
    if not isinstance(name, str) or not _ID_RE.match(name):
        raise MenuError(f"{source}: name must be an identifier, got {name!r}")
    nodes_raw = data.get("nodes")
    if not isinstance(nodes_raw, dict) or len(nodes_raw) <= 1:
        raise MenuError(f"{source}: 'nodes' must be a mapping of node id to node")
    nodes_raw.pop("__line__", None)
    nodes = {str(nid): _validate_node(source, str(nid), raw, queues) for nid, raw in nodes_raw.items()}
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
            if "next" in node.fields and node.fields["next"] not in nodes:
                raise _node_error(source, node.id, node.line, f"next goes to unknown node {node.fields['next']!r}")
    _check_reachable_end(source, nodes, start)
    prompts: set[str] = set()
    for node in nodes.values():
        for key in ("prompts", "invalid_prompt", "timeout_prompt"):
            prompts.update(node.fields.get(key, ()))
    langs = data.get("languages", list(languages))
    return Menu(name=name, source=source, start=start, nodes=MappingProxyType(nodes),
                survey=str(data.get("survey", "")), languages=tuple(langs), prompts_used=frozenset(prompts))


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
                 languages: tuple[str, ...] = ("en", "fa", "zh")) -> None:
        self.directory = Path(directory)
        self.queues = queues
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
                menu = parse_menu(path.read_text(encoding="utf-8"), path.name, self.queues, self.languages)
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
