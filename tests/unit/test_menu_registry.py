"""The node kinds are registered into the engine: ``NodeRegistry`` (a duplicate name is an error),
``nodes.default_registry()`` (the standard kinds, one for each kind the schema knows) and an engine run
with a registry it is given."""

from __future__ import annotations

from typing import Any

import pytest

from ivr.asterisk.agi_server import AgiSession
from ivr.menu import nodes
from ivr.menu.node_callback import fallback_offer
from ivr.menu.context import CallContext, Engine
from ivr.menu.engine import MenuEngine
from ivr.menu.registry import DuplicateNodeKind, NodeRegistry
from ivr.menu.schema import NODE_FIELDS, Node
from ivr.prompts.library import PromptLibrary

from .test_menu_engine import ScriptedAsterisk, make_session, menu, record_of, run_call
from .test_menu_transcripts import World, prompt_root


async def _next(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    return node.get("next")


async def _no_offer(engine: Engine, s: AgiSession, ctx: CallContext, queue: str) -> bool:
    return False


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> PromptLibrary:
    return PromptLibrary(prompt_root(tmp_path_factory))


def test_a_node_kind_registered_twice_is_an_error() -> None:
    registry = NodeRegistry()
    registry.register("goto", _next)
    with pytest.raises(DuplicateNodeKind, match="'goto' is already registered"):
        registry.register("goto", _next)
    assert isinstance(DuplicateNodeKind("x"), ValueError)
    registry.register_fallback(_no_offer)
    with pytest.raises(DuplicateNodeKind, match="fallback offer"):
        registry.register_fallback(_no_offer)
    assert registry["goto"] is _next and "goto" in registry and len(registry) == 1 and list(registry) == ["goto"]
    with pytest.raises(KeyError, match="'play' is not registered"):
        registry["play"]
    with pytest.raises(ValueError):
        registry.register("", _next)
    with pytest.raises(LookupError, match="no fallback offer"):
        _ = NodeRegistry().fallback


def test_the_default_registry_has_a_kind_for_each_kind_the_schema_knows() -> None:
    registry = nodes.default_registry()
    assert registry.kinds == frozenset(NODE_FIELDS)
    assert registry.fallback is fallback_offer
    assert nodes.default_registry() is not registry        # a new one each time: registering into it is local
    with pytest.raises(DuplicateNodeKind):
        registry.register("queue", _next)


def test_an_engine_given_no_registry_runs_the_standard_kinds(prompts: PromptLibrary) -> None:
    world = World()
    engine = MenuEngine({}, prompts, world.sink)  # type: ignore[arg-type]
    assert engine.registry.kinds == frozenset(NODE_FIELDS)


async def test_an_engine_runs_the_kinds_it_is_given(prompts: PromptLibrary) -> None:
    m = menu("""\
        name: t
        start: first
        nodes:
          first: {type: goto, next: last}
          last: {type: hangup, outcome: custom}
        """)
    seen: list[str] = []

    async def hangup(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
        seen.append(node.id)
        ctx.outcome = node.get("outcome")
        return None

    registry = NodeRegistry()
    registry.register("goto", _next)
    registry.register("hangup", hangup)
    world = World()
    engine = MenuEngine({m.name: m}, prompts, world.sink, "en", world.services(), registry=registry)  # type: ignore[arg-type]
    fake = ScriptedAsterisk()
    await run_call(engine, fake)
    assert fake.commands == [] and seen == ["last"]      # no AGI command: the standard hangup was not run
    record = record_of(world)
    assert record["path"] == ["first", "last"] and record["ivr_outcome"] == "custom"

    engine = MenuEngine({m.name: m}, prompts, world.sink, "en", world.services(),  # type: ignore[arg-type]
                        registry=NodeRegistry())
    with pytest.raises(KeyError, match="'goto' is not registered"):
        await engine.run(make_session(ScriptedAsterisk()))


async def test_the_fallback_offer_comes_from_the_registry(prompts: PromptLibrary) -> None:
    m = menu("""\
        name: t
        start: bye
        nodes:
          bye: {type: hangup}
        """)
    asked: list[Any] = []

    async def offer(engine: Engine, s: AgiSession, ctx: CallContext, queue: str) -> bool:
        asked.append((queue, ctx.path[:]))
        return False

    registry = NodeRegistry()
    registry.register_fallback(offer)
    world = World()
    engine = MenuEngine({m.name: m}, prompts, world.sink, "en",  # type: ignore[arg-type]
                        world.services(fallback_queue="support"), registry=registry)
    fake = ScriptedAsterisk([('GET VARIABLE "IVR_FALLBACK_SINCE"', "200 result=1 (1795700000.5)")])
    await engine.run_fallback(make_session(fake, "fallback/t"))
    assert asked == [("support", ["fallback-timeout"])]
    (_, fields), = world.sink.saved
    assert fields["ivr_outcome"] == "fallback_timeout"
