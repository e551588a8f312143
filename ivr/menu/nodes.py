"""The standard node kinds, registered into the engine by ``default_registry()`` (the only place they are
listed). Each kind is one coroutine ``(engine, session, ctx, node) -> next node id | None``, in a module per
family: what the caller hears and keys, and routing (``node_input.py``), self-service look-ups
(``node_lookup.py``), queue and caller recognition (``node_queue.py``), callbacks (``node_callback.py``), survey
and feedback (``node_survey.py``). The engine is seen through ``context.Engine``: none of them imports
``engine.py``, and the engine imports only this module.
"""

from __future__ import annotations

from .node_callback import callback_node, fallback_offer
from .node_input import (banner_node, collect_node, goto_node, hangup_node, hours_node, language_node, menu_node,
                         play_node, set_node)
from .node_lookup import lookup_node
from .node_queue import continuity_node, queue_node
from .node_survey import feedback_node, survey_node
from .registry import NodeRegistry


def default_registry() -> NodeRegistry:
    """The standard node kinds (one for each kind the schema knows, ``schema.NODE_FIELDS``) and the callback
    offer after the fallback queue's timeout; a new registry at each call."""
    registry = NodeRegistry()
    for kind, handler in (
        ("play", play_node),
        ("banner", banner_node),
        ("menu", menu_node),
        ("language", language_node),
        ("collect", collect_node),
        ("lookup", lookup_node),
        ("queue", queue_node),
        ("callback", callback_node),
        ("hours", hours_node),
        ("goto", goto_node),
        ("set", set_node),
        ("hangup", hangup_node),
        ("survey", survey_node),
        ("continuity", continuity_node),
        ("feedback", feedback_node),
    ):
        registry.register(kind, handler)
    registry.register_fallback(fallback_offer)
    return registry


__all__ = ["default_registry"]
