"""Tests for ivr.menu.schema: menu files, validation errors (file, node, line), MenuSet reloads."""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from pathlib import Path

import pytest

from ivr.app.config import PROJECT_ROOT, Config
from ivr.menu.schema import Menu, MenuError, MenuSet, Node, parse_menu

QUEUES = frozenset(Config().queue_names())          # support, refunds, rebooking
SHIPPED = PROJECT_ROOT / "dialplans" / "main.yaml"

GOOD = """\
name: demo
start: main
nodes:
  main:
    type: menu
    prompts: [main-menu]
    options:
      "1": q_support
      "2": bye
  q_support:
    type: queue
    queue: support
  bye:
    type: hangup
"""


def parse(text: str, source: str = "t.yaml") -> Menu:
    return parse_menu(textwrap.dedent(text), source, QUEUES)


def menu_error(text: str, source: str = "t.yaml") -> str:
    with pytest.raises(MenuError) as info:
        parse(text, source)
    return str(info.value)


def line_of(text: str, needle: str) -> int:
    """1-based line number of the first line containing `needle`."""
    for i, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


# ---------------------------------------------------------------- shipped menus

MENU_DIRS = [PROJECT_ROOT / "dialplans", PROJECT_ROOT / "tests" / "fixtures" / "dialplans"]
SHIPPED_FILES = sorted(p for d in MENU_DIRS for p in d.glob("*.yaml"))


def test_shipped_menu_files_exist() -> None:
    assert SHIPPED in SHIPPED_FILES
    assert any(p.parent == MENU_DIRS[1] for p in SHIPPED_FILES)


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}/{p.name}")
def test_shipped_menus_load_against_default_queues(path: Path) -> None:
    menu = parse_menu(path.read_text(encoding="utf-8"), path.name, QUEUES, Config().languages)
    assert menu.start in menu.nodes
    queues_used = {n.get("queue") for n in menu.nodes.values() if n.type == "queue"}
    assert queues_used and queues_used <= QUEUES
    assert set(menu.languages) <= set(Config().languages)


@pytest.mark.parametrize("directory", MENU_DIRS, ids=["dialplans", "fixtures"])
def test_shipped_menu_directories_load_without_errors(directory: Path) -> None:
    ms = MenuSet(directory, QUEUES, Config().languages)
    assert ms.load() == []
    assert len(ms.menus) == len(list(directory.glob("*.yaml")))


def test_shipped_main_menu_is_the_default_menu() -> None:
    ms = MenuSet(SHIPPED.parent, QUEUES, Config().languages)
    ms.load()
    menu = ms.get(Config().default_menu)
    assert menu is not None and menu.source == "main.yaml"
    main = menu.nodes["main"]
    assert main.type == "menu" and main.get("on_fail") in menu.nodes
    assert all(target in menu.nodes for target in main.get("options").values())
    assert main.line == line_of(SHIPPED.read_text(encoding="utf-8"), "  main:") + 1


def test_flow_style_node_line_is_its_own_line() -> None:
    text = GOOD.replace("  bye:\n    type: hangup\n", "  bye: {type: hangup, outcome: done}\n")
    assert parse(text).nodes["bye"].line == line_of(text, "  bye:")


def test_good_menu_parses_with_lines_and_types() -> None:
    menu = parse(GOOD)
    assert menu.name == "demo" and menu.start == "main"
    assert set(menu.nodes) == {"main", "q_support", "bye"}
    assert menu.nodes["main"].line == line_of(GOOD, "  main:") + 1
    assert menu.nodes["bye"].line == line_of(GOOD, "  bye:") + 1
    assert menu.nodes["main"].prompts == ("main-menu",)
    assert "__line__" not in menu.nodes["main"].fields
    assert "__line__" not in menu.nodes["main"].get("options")


def test_name_defaults_to_file_stem() -> None:
    menu = parse(GOOD.replace("name: demo\n", ""), "support_line.yaml")
    assert menu.name == "support_line"


def test_single_prompt_string_becomes_tuple_and_sound_prefix_is_allowed() -> None:
    menu = parse(GOOD.replace("prompts: [main-menu]", "prompts: 'sound:beep'"))
    assert menu.nodes["main"].prompts == ("sound:beep",)


def test_unquoted_numeric_option_keys_are_accepted() -> None:
    menu = parse(GOOD.replace('"1": q_support', "1: q_support"))
    assert menu.nodes["main"].get("options")["1"] == "q_support"


def test_queue_check_is_skipped_without_configured_queues() -> None:
    text = GOOD.replace("queue: support", "queue: anything")
    assert parse_menu(text, "t.yaml", None).nodes["q_support"].get("queue") == "anything"


# ------------------------------------------------------------- node-level errors

def node_error(text: str, node: str, needle: str, detail: str) -> None:
    """The MenuError names the file, the node, the node's line and what is wrong.

    A node's line is where its mapping starts: the line of its first field, just
    below ``<id>:`` (as in docs/menus.md: ``main.yaml: node 'main' (line 21)``).
    """
    text = textwrap.dedent(text)
    msg = menu_error(text, "bad.yaml")
    line = line_of(text, needle) + 1
    assert msg.startswith(f"bad.yaml: node {node!r} (line {line}): "), msg
    assert re.search(detail, msg), msg


BAD_NODES = {
    "unknown_type": (GOOD.replace("type: hangup", "type: dance"), "bye", "  bye:",
                     r"type must be one of .*got 'dance'"),
    "missing_field": (GOOD.replace("queue: support", "prompts: [please-hold]"), "q_support", "  q_support:",
                      r"missing field 'queue' for a queue node"),
    "unknown_field": (GOOD.replace("type: hangup", "type: hangup\n    colour: red"), "bye", "  bye:",
                      r"unknown field 'colour' for a hangup node"),
    "field_of_other_kind": (GOOD.replace("type: hangup", "type: hangup\n    next: main"), "bye", "  bye:",
                            r"unknown field 'next' for a hangup node"),
    "option_key_two_digits": (GOOD.replace('"2": bye', '"12": bye'), "main", "  main:",
                              r"option key '12' is not a single keypad key"),
    "option_key_letter": (GOOD.replace('"2": bye', '"a": bye'), "main", "  main:",
                          r"option key 'a' is not a single keypad key"),
    "option_unknown_node": (GOOD.replace('"2": bye', '"7": q_x'), "main", "  main:",
                            r"option '7' goes to unknown node 'q_x'"),
    "option_target_not_name": (GOOD.replace('"2": bye', '"2": [bye]'), "main", "  main:",
                               r"option '2': target must be a name"),
    "options_not_mapping": (GOOD.replace('options:\n      "1": q_support\n      "2": bye', "options: [q_support]"),
                            "main", "  main:", r"options must be a mapping"),
    "on_fail_unknown": (GOOD.replace("type: menu", "type: menu\n    on_fail: nowhere"), "main", "  main:",
                        r"on_fail goes to unknown node 'nowhere'"),
    "unknown_queue": (GOOD.replace("queue: support", "queue: sales"), "q_support", "  q_support:",
                      r"unknown queue 'sales' \(configured: rebooking, refunds, support\)"),
    "timeout_string": (GOOD.replace("type: menu", "type: menu\n    timeout: '5'"), "main", "  main:",
                       r"timeout must be a number from 0.5 to 60, got '5'"),
    "timeout_too_long": (GOOD.replace("type: menu", "type: menu\n    timeout: 61"), "main", "  main:",
                         r"timeout must be a number from 0.5 to 60"),
    "timeout_bool": (GOOD.replace("type: menu", "type: menu\n    timeout: true"), "main", "  main:",
                     r"timeout must be a number"),
    "retries_99": (GOOD.replace("type: menu", "type: menu\n    retries: 99"), "main", "  main:",
                   r"retries must be a number from 0 to 10, got 99"),
    "priority_negative": (GOOD.replace("queue: support", "queue: support\n    priority: -1"), "q_support",
                          "  q_support:", r"priority must be a number from 0 to 100"),
    "repeat_key_bad": (GOOD.replace("type: menu", "type: menu\n    repeat_key: x"), "main", "  main:",
                       r"repeat_key 'x' is not a keypad key"),
    "prompt_dotdot": (GOOD.replace("prompts: [main-menu]", "prompts: [../../etc/passwd]"), "main", "  main:",
                      r"prompts: bad prompt name '../../etc/passwd'"),
    "prompt_space": (GOOD.replace("prompts: [main-menu]", "prompts: ['main menu']"), "main", "  main:",
                     r"prompts: bad prompt name 'main menu'"),
    "prompt_not_text": (GOOD.replace("prompts: [main-menu]", "prompts: [1, 2]"), "main", "  main:",
                        r"prompts must be a prompt name or a list of names"),
    "invalid_prompt_bad": (GOOD.replace("type: menu", "type: menu\n    invalid_prompt: 'a b'"), "main", "  main:",
                           r"invalid_prompt: bad prompt name 'a b'"),
    "next_not_name": (GOOD.replace("type: hangup", "type: goto\n    next: [main]"), "bye", "  bye:",
                      r"next must be a name"),
    "bad_node_id": (GOOD.replace("  bye:", "  9bye:").replace('"2": bye', '"2": 9bye'), "9bye", "  9bye:",
                    r"node ids are letters"),
}


@pytest.mark.parametrize("case", sorted(BAD_NODES))
def test_bad_node_error_names_file_node_and_line(case: str) -> None:
    node_error(*BAD_NODES[case])


SET_MENU = """\
name: setter
start: s
nodes:
  s:
    type: set
    values: {GREETING: hello}
    next: bye
  bye:
    type: hangup
"""


def test_set_values_are_read_only_mapping() -> None:
    node = parse(SET_MENU).nodes["s"]
    assert dict(node.get("values")) == {"GREETING": "hello"}
    with pytest.raises(TypeError):
        node.get("values")["X"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    ("values", "detail"),
    [
        ("{GREETING: '${SHELL(rm -rf /)}'}", r"values: 'GREETING' has characters not allowed"),
        ("{GREETING: 'a$b'}", r"values: 'GREETING' has characters not allowed"),
        ("{GREETING: 'say \"hi\"'}", r"values: 'GREETING' has characters not allowed"),
        ("{1BAD: x}", r"values: bad entry '1BAD'"),
        ("{GREETING: [a, b]}", r"values: bad entry 'GREETING'"),
        ("{GREETING: null}", r"values: bad entry 'GREETING'"),
        ("[GREETING]", r"values must be a mapping"),
    ],
)
def test_bad_set_values(values: str, detail: str) -> None:
    node_error(SET_MENU.replace("{GREETING: hello}", values), "s", "  s:", detail)


LANG_MENU = """\
name: lang
start: pick
nodes:
  pick:
    type: language
    options: {"1": en, "2": fa}
    default: en
    next: bye
  bye:
    type: hangup
"""


def test_language_node_parses() -> None:
    node = parse(LANG_MENU).nodes["pick"]
    assert dict(node.get("options")) == {"1": "en", "2": "fa"}


def test_language_option_with_unknown_language() -> None:
    node_error(LANG_MENU.replace('"2": fa', '"2": de'), "pick", "  pick:", r"option '2': unknown language 'de'")


def test_language_next_unknown_node() -> None:
    node_error(LANG_MENU.replace("next: bye", "next: nowhere"), "pick", "  pick:",
               r"next goes to unknown node 'nowhere'")


def test_languages_parameter_limits_language_options() -> None:
    with pytest.raises(MenuError, match=r"unknown language 'fa'"):
        parse_menu(LANG_MENU, "lang.yaml", QUEUES, languages=("en",))


# --------------------------------------------------------------- loops

def test_endless_goto_loop_is_rejected() -> None:
    text = """\
    name: loop
    start: a
    nodes:
      a:
        type: goto
        next: b
      b:
        type: play
        prompts: [x]
        next: c
      c:
        type: set
        values: {V: "1"}
        next: a
    """
    msg = menu_error(text, "loop.yaml")
    assert msg.startswith(f"loop.yaml: node 'a' (line {line_of(text, '  a:') + 1}): ")
    assert "endless loop without caller input: a -> b -> c -> a" in msg


def test_self_loop_is_rejected() -> None:
    text = """\
    start: a
    nodes:
      a:
        type: goto
        next: a
      b:
        type: hangup
    """
    assert "endless loop without caller input: a -> a" in menu_error(text)


def test_loop_through_a_menu_node_is_allowed() -> None:
    text = """\
    start: m
    nodes:
      m:
        type: menu
        options: {"1": g}
        on_fail: bye
      g:
        type: goto
        next: m
      bye:
        type: hangup
    """
    assert parse(text).nodes["g"].get("next") == "m"


# -------------------------------------------------------------- file-level errors

@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (GOOD.replace("start: main", "start: nowhere"), r"^t.yaml: start node 'nowhere' is not defined"),
        (GOOD.replace("start: main\n", ""), r"^t.yaml: start node None is not defined"),
        (GOOD + "colour: red\n", r"^t.yaml: unknown top-level key 'colour'"),
        ("- a\n- b\n", r"^t.yaml: expected a mapping"),
        ("name: x\nstart: a\nnodes: {}\n", r"^t.yaml: 'nodes' must be a mapping"),
        ("name: x\nstart: a\nnodes: [a]\n", r"^t.yaml: 'nodes' must be a mapping"),
        (GOOD.replace("name: demo", "name: 'bad name'"), r"^t.yaml: name must be an identifier"),
        ("nodes: {a: [\n", r"^t.yaml: not valid YAML"),
        (GOOD.replace("  bye:\n    type: hangup\n", "  bye: 5\n"), r"^t.yaml: node 'bye': expected a mapping"),
    ],
)
def test_file_level_errors_name_the_file(text: str, detail: str) -> None:
    assert re.search(detail, menu_error(text)), menu_error(text)


# ------------------------------------------------------------------- immutability

def test_menu_and_nodes_are_immutable() -> None:
    menu = parse(GOOD)
    with pytest.raises(TypeError):
        menu.nodes["extra"] = menu.nodes["bye"]  # type: ignore[index]
    with pytest.raises(TypeError):
        del menu.nodes["bye"]  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        menu.start = "bye"  # type: ignore[misc]
    node = menu.nodes["main"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.type = "hangup"  # type: ignore[misc]
    with pytest.raises(TypeError):
        node.fields["prompts"] = ("x",)  # type: ignore[index]
    with pytest.raises(TypeError):
        node.get("options")["9"] = "bye"
    assert isinstance(node, Node) and menu.nodes["main"].get("options")["1"] == "q_support"


# ------------------------------------------------------------------------ MenuSet

def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_menuset_loads_good_file_and_reports_bad_one(tmp_path: Path) -> None:
    write(tmp_path / "good.yaml", GOOD)
    write(tmp_path / "broken.yaml", GOOD.replace("name: demo", "name: other").replace("queue: support", "queue: sales"))
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    ms = MenuSet(tmp_path, QUEUES)
    errors = ms.load()
    assert list(ms.menus) == ["demo"]
    assert len(errors) == 1 and errors[0].startswith("broken.yaml: node 'q_support'")
    assert "unknown queue 'sales'" in errors[0]
    assert ms.errors == errors and ms.version == 1
    assert ms.get("other") is None


def test_menuset_duplicate_menu_name_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", GOOD)
    write(tmp_path / "b.yaml", GOOD)
    ms = MenuSet(tmp_path, QUEUES)
    errors = ms.load()
    assert ms.get("demo").source == "a.yaml"  # type: ignore[union-attr]
    assert errors == ["b.yaml: menu name 'demo' already used by a.yaml"]


def test_menuset_undecodable_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    write(tmp_path / "good.yaml", GOOD)
    ms = MenuSet(tmp_path, QUEUES)
    errors = ms.load()
    assert list(ms.menus) == ["demo"] and len(errors) == 1


def test_reload_keeps_last_good_version_of_a_file_that_became_bad(tmp_path: Path) -> None:
    path = write(tmp_path / "demo.yaml", GOOD)
    ms = MenuSet(tmp_path, QUEUES)
    assert ms.load() == []
    first = ms.get("demo")
    write(path, GOOD.replace('"2": bye', '"2": nowhere'))
    errors = ms.load()
    assert len(errors) == 1 and "goes to unknown node 'nowhere'" in errors[0]
    assert ms.get("demo") is first          # old version still served
    assert ms.version == 2
    # fixed again: the new version replaces it
    write(path, GOOD.replace('"2": bye', '"3": bye'))
    assert ms.load() == []
    assert ms.get("demo") is not first
    assert set(ms.get("demo").nodes["main"].get("options")) == {"1", "3"}  # type: ignore[union-attr]


def test_reload_does_not_change_menu_objects_held_by_running_calls(tmp_path: Path) -> None:
    path = write(tmp_path / "demo.yaml", GOOD)
    ms = MenuSet(tmp_path, QUEUES)
    ms.load()
    running = ms.get("demo")
    assert running is not None
    snapshot = {nid: (n.type, dict(n.fields)) for nid, n in running.nodes.items()}
    write(path, GOOD.replace("queue: support", "queue: refunds").replace('"2": bye', '"2": q_support'))
    assert ms.load() == []
    new = ms.get("demo")
    assert new is not running and new.nodes["q_support"].get("queue") == "refunds"  # type: ignore[union-attr]
    assert {nid: (n.type, dict(n.fields)) for nid, n in running.nodes.items()} == snapshot
    assert running.nodes["q_support"].get("queue") == "support"
    with pytest.raises(TypeError):
        ms.menus["x"] = running  # type: ignore[index]


def test_deleted_file_is_dropped_on_reload(tmp_path: Path) -> None:
    path = write(tmp_path / "demo.yaml", GOOD)
    ms = MenuSet(tmp_path, QUEUES)
    ms.load()
    path.unlink()
    assert ms.load() == []
    assert ms.get("demo") is None


# ------------------------------------------------------- regressions (bugs found and fixed)

ENGINE_REFUSES = ["hello, world", "a\\b", "a;b"]


class _RecordingSession:
    def __init__(self) -> None:
        self.execs: list[tuple[str, str]] = []

    async def exec(self, app: str, options: str = "", **kw: object) -> None:
        self.execs.append((app, options))


@pytest.mark.parametrize("value", ENGINE_REFUSES)
async def test_engine_mset_refuses_these_values(value: str) -> None:
    """Precondition of the bug below: the engine refuses these values at run time."""
    from ivr.menu.engine import MenuEngine

    session = _RecordingSession()
    engine = MenuEngine.__new__(MenuEngine)
    await engine.mset(session, {"OK": "fine"})   # type: ignore[arg-type]
    assert session.execs == [("MSet", "OK=fine")]
    with pytest.raises(ValueError):
        await engine.mset(session, {"GREETING": value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ENGINE_REFUSES)
def test_bug_set_values_the_engine_refuses_pass_validation(value: str) -> None:
    text = SET_MENU.replace("{GREETING: hello}", "{GREETING: %s}" % json.dumps(value))
    with pytest.raises(MenuError):
        parse(text)


@pytest.mark.parametrize("langs", ["en", "[en, de]"])
def test_bug_top_level_languages_not_validated(langs: str) -> None:
    with pytest.raises(MenuError):
        parse(GOOD.replace("start: main", f"start: main\nlanguages: {langs}"))


def test_bug_language_default_not_validated() -> None:
    with pytest.raises(MenuError):
        parse(LANG_MENU.replace("default: en", "default: de"))


@pytest.mark.parametrize("which", ["options", "values"])
def test_bug_empty_options_or_values_are_accepted(which: str) -> None:
    if which == "options":
        text = GOOD.replace('options:\n      "1": q_support\n      "2": bye', "options: {}")
    else:
        text = SET_MENU.replace("{GREETING: hello}", "{}")
    with pytest.raises(MenuError, match=f"{which} must be a mapping"):
        parse(text)

