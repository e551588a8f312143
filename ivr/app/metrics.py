"""Prometheus metrics and the rolling hourly history the dashboard charts.

One ``Metrics`` object per controller, holding its own registry (no global
state), fed by the call recorder (finished calls), the AGI server (per-call
latency), the AMI client (reconnects) and the balancing loop (actions).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the API)

WAIT_BUCKETS = (5, 10, 20, 30, 60, 120, 180, 300, 600, 1200, float("inf"))
PROMISE_BUCKETS = (900, 1200, 1800, 2700, 3600, 5400, 7200, 10800, 14400, float("inf"))
OUT_OF_ORDER_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))
HISTORY_HOURS = 24


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter("ivr_calls_total", "Finished calls by queue and outcome", ["queue", "outcome"], registry=r)
        self.wait = Histogram("ivr_queue_wait_seconds", "Wait of answered and abandoned callers", ["queue"],
                              buckets=WAIT_BUCKETS, registry=r)
        self.agi_call = Histogram("ivr_agi_call_seconds", "Time a call spent in one FastAGI session",
                                  buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 120, float("inf")), registry=r)
        self.ami_reconnects = Gauge("ivr_ami_reconnects", "AMI reconnections since start", registry=r)
        self.ami_connected = Gauge("ivr_ami_connected", "1 while AMI is connected and resynced", registry=r)
        self.balance_actions = Gauge("ivr_balance_actions", "Balancing actions applied since start", ["kind"],
                                     registry=r)
        self.waiting = Gauge("ivr_queue_waiting", "Callers waiting now", ["queue"], registry=r)
        self.agents = Gauge("ivr_queue_agents", "Queue members by state", ["queue", "state"], registry=r)
        self.campaign_attempts = Counter("ivr_campaign_attempts_total", "Outbound attempts by outcome",
                                         ["campaign", "outcome"], registry=r)
        self.outbound_refused = Counter("ivr_outbound_refused_total", "Calls out refused by the outbound guard",
                                        ["purpose", "reason"], registry=r)
        self.callback_promise = Histogram("ivr_callback_promise_seconds", "Callback promises told to callers",
                                          buckets=PROMISE_BUCKETS, registry=r)
        self.callbacks_made = Counter("ivr_callbacks_made_total",
                                      "Callbacks made (the customer answered), by whether within their promise "
                                      "(none: no promise was made)", ["kept"], registry=r)
        for kept in ("yes", "no", "none"):
            self.callbacks_made.labels(kept)
        self.surveys = Counter("ivr_survey_answers_total", "Post-call survey answers", ["score"], registry=r)
        self.events_published = Counter("ivr_events_published_total", "Events written to the event stream",
                                        ["type"], registry=r)
        self.events_lost = Counter("ivr_events_lost_total", "Events not written (queue full, Redis down)",
                                   ["type", "reason"], registry=r)
        self.webhook_deliveries = Counter("ivr_webhook_deliveries_total", "Webhook delivery tries by result "
                                          "(delivered, failed: tried again later, dead: given up)",
                                          ["webhook", "result"], registry=r)
        self.webhook_backlog = Gauge("ivr_webhook_backlog", "Events waiting for a webhook (in flight or not read)",
                                     ["webhook"], registry=r)
        self.lookup_seconds = Histogram("ivr_lookup_seconds", "Look-ups answered by a backend (found, not found "
                                        "or failed), by backend", ["backend"],
                                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, float("inf")), registry=r)
        self.lookup_errors = Counter("ivr_lookup_errors_total", "Look-ups that took the error branch, by backend "
                                     "and kind (timeout, connect, http, invalid_json, breaker_open, busy, ...)",
                                     ["backend", "kind"], registry=r)
        self.lookup_breaker_state = Gauge("ivr_lookup_breaker_state", "Circuit breaker of a look-up backend: "
                                          "0 closed, 1 open, 2 half-open (one trial call)", ["backend"], registry=r)
        self.leader = Gauge("ivr_leader", "1 while this node is the balancing leader (a single node: always)",
                            ["node"], registry=r)
        self.leader_changes = Counter("ivr_leader_changes_total", "Times this node started or stopped leading",
                                      registry=r)
        self.node = ""                        # the label of ivr_leader (bind_node)
        self._leading: bool | None = None
        self.agents_busy_elsewhere = Gauge("ivr_agents_busy_elsewhere", "Agents on a call on another node of the "
                                           "cluster (held paused in this node's queues)", registry=r)
        self.cross_node_pauses = Counter("ivr_cross_node_pauses_total", "Queue members paused on this node "
                                         "because their agent is on a call on another node", registry=r)
        self.node_lost_callbacks = Counter("ivr_node_lost_callbacks_total", "Callers waiting on a lost node, by "
                                           "result (callback: made a callback at their place; no_number: "
                                           "withheld caller ID, cannot be called back)", ["result"], registry=r)
        for result in ("callback", "no_number"):
            self.node_lost_callbacks.labels(result)
        self.cross_node_out_of_order = Histogram("ivr_cross_node_out_of_order_seconds", "Answers of a caller while "
                                                 "an older caller waited in the same queue on another node: how "
                                                 "much longer that caller had waited", ["queue"],
                                                 buckets=OUT_OF_ORDER_BUCKETS, registry=r)
        self.cross_node_answers = Counter("ivr_cross_node_answers_total", "Answers measured against the other "
                                          "nodes' waiting callers, by order (in_order, out_of_order)",
                                          ["queue", "order"], registry=r)
        self.history: "OrderedDict[int, dict[str, float]]" = OrderedDict()

    # -------------------------------------------------------------- feeding
    def cross_node_answer(self, queue: str, out_of_order_s: float) -> None:
        """An answer measured against the other nodes: ``out_of_order_s`` > 0 when an older caller waited."""
        if out_of_order_s > 0:
            self.cross_node_out_of_order.labels(queue).observe(out_of_order_s)
        self.cross_node_answers.labels(queue, "out_of_order" if out_of_order_s > 0 else "in_order").inc()

    def call_finished(self, record: Mapping[str, Any]) -> None:
        queue = str(record.get("queue") or "-")
        outcome = str(record.get("outcome") or "unknown")
        self.calls.labels(queue, outcome).inc()
        wait = _num(record.get("wait"))
        if record.get("queue") and wait is not None:
            self.wait.labels(queue).observe(wait)
        hour = int(float(record.get("ended_at") or time.time()) // 3600 * 3600)
        h = self.history.setdefault(hour, {"calls": 0, "answered": 0, "abandoned": 0, "wait_sum": 0.0,
                                           "self_service": 0})
        h["calls"] += 1
        if outcome == "answered":
            h["answered"] += 1
            h["wait_sum"] += wait or 0.0
        elif outcome in ("abandoned", "left_queue"):
            h["abandoned"] += 1
        elif outcome == "self_service":
            h["self_service"] += 1
        while len(self.history) > HISTORY_HOURS:
            self.history.popitem(last=False)

    def bind_node(self, node: str) -> None:
        """The node name the per-node gauges are labelled with."""
        self.node = node

    def leader_changed(self, leading: bool) -> None:
        """Leadership listener: the ``ivr_leader`` gauge follows, each change after the start is counted."""
        if self._leading is not None and self._leading != leading:
            self.leader_changes.inc()
        self._leading = leading
        self.leader.labels(self.node).set(1 if leading else 0)

    def lookup_done(self, backend: str, seconds: float, error: str | None) -> None:
        """A guarded look-up backend (ivr/menu/lookups.py) answered or was refused."""
        if error not in ("breaker_open", "busy"):      # refused before asking: no latency to measure
            self.lookup_seconds.labels(backend).observe(seconds)
        if error is not None:
            self.lookup_errors.labels(backend, error).inc()

    def lookup_breaker(self, backend: str, state: str) -> None:
        self.lookup_breaker_state.labels(backend).set({"closed": 0, "open": 1, "half_open": 2}.get(state, 0))

    def hourly(self) -> list[dict[str, Any]]:
        return [{"hour": hour, "calls": int(h["calls"]), "answered": int(h["answered"]),
                 "abandoned": int(h["abandoned"]), "self_service": int(h["self_service"]),
                 "avg_wait": round(h["wait_sum"] / h["answered"], 1) if h["answered"] else None}
                for hour, h in sorted(self.history.items())]

    def update_live(self, snapshot: Mapping[str, Any], ami_connected: bool, reconnects: int,
                    actions: Mapping[str, int]) -> None:
        self.ami_connected.set(1 if ami_connected else 0)
        self.ami_reconnects.set(reconnects)
        for kind, n in actions.items():
            self.balance_actions.labels(kind).set(n)
        for name, q in snapshot.get("queues", {}).items():
            self.waiting.labels(name).set(q["waiting"])
            self.agents.labels(name, "available").set(q["available"])
            self.agents.labels(name, "busy").set(q["busy"])
            self.agents.labels(name, "paused").set(q["paused"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
