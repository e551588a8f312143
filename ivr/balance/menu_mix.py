"""Where each choice of a menu leads: the caller mix of the surge simulator walks the real menu.

``branch_routes(menu)`` follows every option of the menu a caller first chooses from (the first
``menu`` node reached from ``start``) through the nodes a caller who keys valid input passes
(collect -> lookup -> its ``found`` branch, play -> next, ...) and says where it ends:

* ``self_service``: a ``hangup`` node whose outcome is ``self_service`` (refund status read out,
  refund request created); the caller who still wants a human presses 0 (the node's or the menu's
  ``escalate``) and reaches that queue instead;
* ``queue``: a ``queue`` node, with its ``callback_over`` (the callback offer) if any;
* ``callback``: a ``callback`` node (a caller who asks to be called back), with its queue.

Pure: it reads a parsed ``ivr.menu.schema.Menu``; the profile gives the share of callers per
branch and the share of self-service callers who finish there (docs/crisis-day.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

SELF_SERVICE, QUEUE, CALLBACK = "self_service", "queue", "callback"
_PASS = {"collect": "next", "play": "next", "banner": "next", "language": "next", "continuity": "next",
         "goto": "next", "set": "next", "hours": "next", "lookup": "found"}


@dataclass(frozen=True, slots=True)
class Route:
    branch: str                   # the node the option leads to (the profile's key), e.g. "refund_status"
    key: str                      # the key that chooses it in the first menu
    kind: str                     # self_service | queue | callback
    queue: str                    # the queue a caller of this branch reaches (for self-service: after 0)
    callback_over: Any = None     # the queue node's callback offer threshold (seconds, "auto" or None)
    path: tuple[str, ...] = ()    # the nodes walked


def _first_menu(menu: Any) -> Any:
    node, seen = menu.nodes[menu.start], set()
    while node.type != "menu":
        if node.id in seen or node.type not in _PASS or not node.get(_PASS[node.type]):
            raise ValueError(f"menu {menu.name!r}: no choice menu reachable from {menu.start!r} by 'next'")
        seen.add(node.id)
        node = menu.nodes[node.get(_PASS[node.type])]
    return node


def _queue_of(menu: Any, node_id: str) -> tuple[str, Any]:
    """The queue (and callback offer) a queue node, or a chain of passing nodes, leads to."""
    node, seen = menu.nodes[node_id], set()
    while node.type != "queue":
        if node.id in seen or node.type not in _PASS or not node.get(_PASS[node.type]):
            raise ValueError(f"menu {menu.name!r}: {node_id!r} does not lead to a queue")
        seen.add(node.id)
        node = menu.nodes[node.get(_PASS[node.type])]
    return str(node.get("queue")), node.get("callback_over")


def branch_routes(menu: Any) -> dict[str, Route]:
    """Every option of the first choice menu and where a caller who keys valid input ends up."""
    first, out = _first_menu(menu), {}
    for key, target in sorted(first.get("options", {}).items()):
        if target in out:
            continue
        node, path = menu.nodes[target], [target]
        escalate = node.get("escalate") or menu.escalate
        while True:
            escalate = node.get("escalate") or escalate
            if node.type == "queue":
                out[target] = Route(target, key, QUEUE, str(node.get("queue")), node.get("callback_over"), tuple(path))
                break
            if node.type == "callback":
                queue = node.get("queue") or ""
                out[target] = Route(target, key, CALLBACK, str(queue), None, tuple(path))
                break
            if node.type == "hangup" and node.get("outcome") == "self_service":
                if not escalate:
                    raise ValueError(f"menu {menu.name!r}: self-service branch {target!r} has no escalate queue (0)")
                queue, over = _queue_of(menu, escalate)
                out[target] = Route(target, key, SELF_SERVICE, queue, over, tuple(path))
                break
            nxt = node.get(_PASS.get(node.type, ""), None)
            if not nxt or nxt in path:
                raise ValueError(f"menu {menu.name!r}: branch {target!r} stops at {node.id!r} ({node.type}): "
                                 "not a queue, callback or self-service end")
            node = menu.nodes[nxt]
            path.append(nxt)
    return out


def load_routes(path: str | Path) -> dict[str, Route]:
    """Parse a menu file (validated as the controller does) and walk its branches."""
    from ivr.menu.schema import parse_menu   # the controller's own parser: the same rules as live
    p = Path(path)
    return branch_routes(parse_menu(p.read_text(encoding="utf-8"), str(p)))


def check_shares(routes: Mapping[str, Route], shares: Mapping[str, float]) -> None:
    """The profile's branch shares name real branches and sum to 1."""
    unknown = sorted(set(shares) - set(routes))
    if unknown:
        raise ValueError(f"menu.branches: {unknown} are not options of the menu (options: {sorted(routes)})")
    bad = [k for k, v in shares.items() if not 0 <= float(v) <= 1]
    if bad:
        raise ValueError(f"menu.branches: shares must be between 0 and 1: {bad}")
    total = sum(float(v) for v in shares.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"menu.branches: shares sum to {total:.3f}, not 1")
