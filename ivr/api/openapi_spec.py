"""The OpenAPI 3.1 document of the supervisor API, built from the live route table.

Paths, methods, path parameters and the role each route needs come from the
application itself (``app.router`` and the handlers' ``@requires``), so the
document cannot drift from the code; what a route is for, its query
parameters and request body are described in ``OPS`` below. A unit test fails
when a route has no entry here (or an entry has no route).

Served at ``GET /api/v1/openapi.json`` (public: it holds no data). ``python -m
ivr.api.openapi --markdown`` (``openapi.py``) prints the route table kept in docs/api.md.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from .. import __version__

STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
OBJ = {"type": "object"}
STRS = {"type": "array", "items": STR}
LANG = {"type": "string", "pattern": "^[a-z]{2,3}$"}

AGENT_FIELDS = {
    "name": {"type": "string", "maxLength": 40}, "skill": {"enum": ["experienced", "novice"]},
    "team": {"type": "string", "maxLength": 40}, "tier": {"enum": ["core", "volunteer"]},
    "queues": STRS, "languages": {"type": "array", "items": LANG},
    "penalty": {"type": "integer", "minimum": 0, "maximum": 100},
    "mobile": {"type": "string", "pattern": "^([0-9]{3,20})?$",
               "description": "reached through the trunk while the SIP phone is unreachable (press 1 to accept); "
                              "a number the outbound guard refuses is answered with 400 naming the reason"},
}


def q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def body(properties: dict[str, Any], required: list[str] | None = None, *, extra: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = required
    return {"required": True, "content": {"application/json": {"schema": schema}}}


# (method, path) -> summary, tag, and optionally query parameters, a request body, extra responses
OPS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/health"): {"tag": "system", "summary": "Up or down: 200 {\"status\": \"ok\"} or 503 "
                         "{\"status\": \"degraded\"}; with a viewer token (or higher), the detail: Redis, AMI "
                         "(last error), AGI, menus (errors), records, balancing"},
    ("GET", "/"): {"tag": "dashboard", "summary": "The live dashboard page (holds no data: sign in with a token)",
                   "content": "text/html"},
    ("GET", "/dashboard"): {"tag": "dashboard", "summary": "The live dashboard page (same as /)", "content": "text/html"},
    ("GET", "/static/dashboard.js"): {"tag": "dashboard", "summary": "Dashboard script", "content": "text/javascript"},
    ("GET", "/static/dashboard.css"): {"tag": "dashboard", "summary": "Dashboard style", "content": "text/css"},
    ("GET", "/api/v1/openapi.json"): {"tag": "system", "summary": "This document"},
    ("GET", "/metrics"): {"tag": "system", "summary": "Prometheus metrics (scrape with a viewer token)",
                          "content": "text/plain"},
    ("GET", "/api/v1/live"): {"tag": "live", "summary": "Everything the dashboard shows: queues with estimates, "
                              "agents, tiers, campaigns, callbacks pending, hourly history"},
    ("GET", "/api/v1/stream"): {"tag": "live", "summary": "The live picture as server-sent events, once a second; "
                                "EventSource clients (no headers) pass a ticket from POST /api/v1/stream/ticket, "
                                "a token in the URL is refused",
                                "query": [q("ticket", STR, "a stream ticket (used once, within 30 s), instead of "
                                            "the Authorization header")], "content": "text/event-stream"},
    ("POST", "/api/v1/stream/ticket"): {"tag": "live", "summary": "A ticket that opens one event stream within "
                                        "30 s (stored hashed, used once): {ticket, expires_in, stream}; changes "
                                        "nothing else", "created": True},
    ("GET", "/api/v1/queues"): {"tag": "live", "summary": "Queues from AMI: members (state, paused, penalty, "
                                "in call) and waiting callers (position, wait)"},
    ("GET", "/api/v1/balance"): {"tag": "live", "summary": "The balancing loop: overflow tiers, wait estimates, "
                                 "desired membership, actions taken, policy"},
    ("GET", "/api/v1/calls"): {"tag": "calls", "summary": "Finished call records, newest first",
                               "query": [q("count", {"type": "integer", "minimum": 1, "maximum": 10000},
                                           "how many (default 100)")]},
    ("GET", "/api/v1/calls/{uid}"): {"tag": "calls", "summary": "One call record (in progress or finished)"},
    ("GET", "/api/v1/calls/{uid}/caller"): {"tag": "calls", "summary": "The caller of one call and their history "
                                            "(previous calls, menu paths, last notice, kept place, refunds)"},
    ("GET", "/api/v1/callers/{number}"): {"tag": "calls", "summary": "One caller number: calls in progress, kept "
                                          "place, last notice, recent calls, refund requests, priority flag"},
    ("PUT", "/api/v1/callers/{number}/flag"): {"tag": "calls", "summary": "Flag a caller number into a priority "
                                               "group (continuity.priority_groups): their calls queue ahead with "
                                               "the group's priority until the flag ends; audited",
                                               "body": body({"group": {"type": "string", "maxLength": 32},
                                                             "note": {"type": "string", "maxLength": 200},
                                                             "hours": {"type": "number", "exclusiveMinimum": 0,
                                                                       "maximum": 8760}}, ["group"])},
    ("DELETE", "/api/v1/callers/{number}/flag"): {"tag": "calls", "summary": "Remove a caller's priority flag; "
                                                  "audited"},
    ("GET", "/api/v1/reports"): {"tag": "reports", "summary": "Calls, ASA, service level, abandonment, handle "
                                 "time, first-contact resolution, satisfaction and outbound outcomes by hour or day",
                                 "query": [q("by", {"enum": ["hour", "day"]}, "period (default hour)"),
                                           q("since", STR, "ISO date/time or Unix time (default: 24 h ago by "
                                             "hour, 7 days ago by day)"),
                                           q("until", STR, "ISO date/time or Unix time (default: now)"),
                                           q("hours", NUM, "the last N hours up to until (instead of since)"),
                                           q("tz", STR, "time zone of the periods, e.g. Europe/Paris (default UTC)"),
                                           q("sl_target", NUM, "service-level target in seconds (default 20)"),
                                           q("format", {"enum": ["json", "csv"]}, "json (default) or csv")],
                                 "content_alt": "text/csv"},
    ("GET", "/api/v1/agents"): {"tag": "agents", "summary": "The roster: skill, team, tier, queues, languages, "
                                "base penalty, logged in"},
    ("POST", "/api/v1/agents"): {"tag": "agents", "summary": "Add an agent (default: a novice volunteer serving "
                                 "every queue) with a new SIP account; the password is returned once",
                                 "body": body({"id": {"type": "string", "pattern": "^[0-9]{2,20}$"},
                                               **AGENT_FIELDS}), "created": True},
    ("PATCH", "/api/v1/agents/{agent_id}"): {"tag": "agents", "summary": "Change name, skill, team, tier, queues, "
                                             "languages, base penalty or mobile", "body": body(AGENT_FIELDS)},
    ("DELETE", "/api/v1/agents/{agent_id}"): {"tag": "agents", "summary": "Remove an agent added through the API, "
                                              "with its SIP account and queue memberships"},
    ("POST", "/api/v1/agents/{agent_id}/coach"): {"tag": "agents", "summary": "Ring a coach's phone into the agent's "
                                                  "call (ChanSpy): whisper (only the agent hears the coach), "
                                                  "listen or barge; 409 when the agent is not on a call or the "
                                                  "coach is on one (the dashboard's Coach button)",
                                                  "body": body({"coach": STR, "mode": {"enum": ["whisper", "listen",
                                                                                                "barge"]}},
                                                               ["coach"])},
    ("PUT", "/api/v1/agents/{agent_id}/pin"): {"tag": "agents", "summary": "Set the PIN the agent keys in to log in "
                                               "or out from their phone (*81 / *82); stored hashed",
                                               "body": body({"pin": {"type": "string", "pattern": "^[0-9]{4,8}$"}},
                                                            ["pin"])},
    ("POST", "/api/v1/agents/{agent_id}/login"): {"tag": "agents", "summary": "Log an agent in: the balancing "
                                                  "loop adds them to their queues within a second"},
    ("POST", "/api/v1/agents/{agent_id}/logout"): {"tag": "agents", "summary": "Log an agent out of every queue"},
    ("POST", "/api/v1/agents/{agent_id}/pause"): {"tag": "agents", "summary": "Pause an agent in Asterisk",
                                                  "body": {**body({"reason": {"type": "string", "maxLength": 60}}),
                                                           "required": False}},
    ("POST", "/api/v1/agents/{agent_id}/unpause"): {"tag": "agents", "summary": "Unpause an agent"},
    ("POST", "/api/v1/menus/reload"): {"tag": "menus", "summary": "Reload dialplans/*.yaml (calls in progress "
                                       "finish on their version); returns loaded menus and errors"},
    ("GET", "/api/v1/banner"): {"tag": "menus", "summary": "The crisis banner text per language"},
    ("PUT", "/api/v1/banner/{lang}"): {"tag": "menus", "summary": "Set the crisis banner callers hear first "
                                       "(spoken by TTS; live on the next call)",
                                       "body": body({"text": {"type": "string", "maxLength": 1000}}, ["text"])},
    ("DELETE", "/api/v1/banner/{lang}"): {"tag": "menus", "summary": "Clear the crisis banner of a language"},
    ("GET", "/api/v1/refunds/{ref}"): {"tag": "self-service", "summary": "A refund request by reference"},
    ("GET", "/api/v1/refunds/by-booking/{booking}"): {"tag": "self-service",
                                                      "summary": "The refund request of a booking"},
    ("POST", "/api/v1/refunds/{ref}/status"): {"tag": "refunds", "summary": "Decide a refund request: received -> "
                                               "approved / rejected, approved -> paid / rejected, rejected -> "
                                               "approved; audited; the customer's call is queued (docs/refunds.md)",
                                               "body": body({"status": {"enum": ["approved", "rejected", "paid"]},
                                                             "note": {"type": "string", "maxLength": 500}},
                                                            ["status"])},
    ("GET", "/api/v1/refunds"): {"tag": "refunds", "summary": "Refund requests in one status, oldest first, and the "
                                 "count of each status",
                                 "query": [q("status", {"enum": ["received", "approved", "rejected", "paid"]},
                                             "default received"), q("count", NUM, "1-1000 (default 100)"),
                                           q("offset", NUM, "skip this many"), q("group", STR, "only this group")]},
    ("POST", "/api/v1/refunds"): {"tag": "refunds", "summary": "Record a refund request for a customer (the approval "
                                  "policy applies)", "created": True,
                                  "body": body({"booking": {"type": "string", "pattern": "^[0-9]{4,12}$"},
                                                "number": STR, "lang": STR,
                                                "amount": {"type": "string", "pattern": "^[0-9]{1,9}(\\.[0-9]{1,2})?$"},
                                                "group": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}},
                                               ["booking"])},
    ("POST", "/api/v1/refunds/decisions"): {"tag": "refunds", "summary": "Bulk decisions (up to 1000), each taken and "
                                            "reported on its own",
                                            "body": body({"decisions": {"type": "array", "items": {"type": "object"}},
                                                          "references": {"type": "array", "items": STR},
                                                          "status": STR, "note": STR})},
    ("GET", "/api/v1/reports/reasons"): {"tag": "reports", "summary": "Calls by reason (the menu path's reason): "
                                         "outcomes, escalations to a human, agents' dispositions",
                                         "query": [q("since", STR, "ISO date/time or Unix time (default 24 h ago)"),
                                                   q("until", STR, "default now"), q("hours", NUM, "the last N hours"),
                                                   q("tz", STR, "time zone of since/until")]},
    ("GET", "/api/v1/dispositions"): {"tag": "calls", "summary": "The wrap-up codes agents set (code -> name)"},
    ("POST", "/api/v1/calls/{uid}/disposition"): {"tag": "calls", "summary": "Set a call's disposition (code or name; "
                                                  "agents can also dial *7<code>)",
                                                  "body": body({"disposition": STR,
                                                                "note": {"type": "string", "maxLength": 500}},
                                                               ["disposition"])},
    ("GET", "/api/v1/feedback"): {"tag": "feedback", "summary": "A team's open feedback items (recorded messages, "
                                  "poor surveys), routed by call reason; without team: open items per team",
                                  "query": [q("team", STR, "e.g. refunds")]},
    ("GET", "/api/v1/feedback/{item}/audio"): {"tag": "feedback", "summary": "The recorded message (audio/wav)"},
    ("POST", "/api/v1/feedback/{item}/done"): {"tag": "feedback", "summary": "Mark an item handled (audited)",
                                               "body": body({"note": {"type": "string", "maxLength": 500}})},
    ("GET", "/api/v1/callbacks"): {"tag": "callbacks", "summary": "Callbacks waiting, in the callers' original "
                                   "order, each with its promise (promise_s) and when it is due"},
    ("GET", "/api/v1/callbacks/{cb_id}"): {"tag": "callbacks", "summary": "One callback request and its attempts; "
                                           "once made, made_at and whether it kept its promise (kept)"},
    ("GET", "/api/v1/surveys"): {"tag": "reports", "summary": "Latest post-call survey answers (1-5)"},
    ("GET", "/api/v1/audit"): {"tag": "system", "summary": "Who changed what, when, old and new value (newest "
                               "first)"},
    ("GET", "/api/v1/campaigns"): {"tag": "campaigns", "summary": "Campaigns with state and progress"},
    ("POST", "/api/v1/campaigns"): {"tag": "campaigns", "summary": "Create a campaign (draft) from its definition "
                                    "(see docs/campaigns.md)", "body": body({}, extra=True), "created": True},
    ("GET", "/api/v1/campaigns/{cid}"): {"tag": "campaigns", "summary": "One campaign with progress by status and "
                                         "outcome, and what the dialler does now (`active` calls, `pace`, "
                                         "`transfers` to agents, `held` by max_transfers)"},
    ("POST", "/api/v1/campaigns/{cid}/contacts"): {"tag": "campaigns", "summary": "Import contacts (CSV body, max "
                                                   "50 MiB); bad rows are reported, the rest imported; "
                                                   "`columns` in the answer says which column was read as "
                                                   "which field",
                                                   "query": [q("region", STR, "country of numbers written "
                                                               "without +, default US"),
                                                             q("columns", STR, "field=column pairs for columns "
                                                               "the aliases do not know, e.g. "
                                                               "number=Telefon,lang=Sprache")],
                                                   "body": {"required": True, "content": {"text/csv": {
                                                       "schema": STR}}}},
    ("POST", "/api/v1/campaigns/{cid}/start"): {"tag": "campaigns", "summary": "Start dialling"},
    ("POST", "/api/v1/campaigns/{cid}/resume"): {"tag": "campaigns", "summary": "Resume a paused campaign"},
    ("POST", "/api/v1/campaigns/{cid}/pause"): {"tag": "campaigns", "summary": "Pause (calls in progress finish)"},
    ("POST", "/api/v1/campaigns/{cid}/stop"): {"tag": "campaigns", "summary": "Stop for good"},
    ("GET", "/api/v1/campaigns/{cid}/export"): {"tag": "campaigns", "summary": "Every contact with status, "
                                                "attempts and outcome, as CSV (text cells that would start a "
                                                "spreadsheet formula, numbers like +44... too, begin with ')",
                                                "content": "text/csv"},
    ("GET", "/api/v1/webhooks/deliveries"): {"tag": "webhooks", "summary": "Each webhook's deliveries: events "
                                             "waiting (pending: in flight or being retried; lag: not read yet), "
                                             "the recent tries (status, error, ms) and the dead letters (given up "
                                             "after max_attempts); see docs/integrations.md",
                                             "query": [q("webhook", STR, "one webhook by name (default: all)"),
                                                       q("count", {"type": "integer", "minimum": 1, "maximum": 200},
                                                         "recent tries and dead letters shown, default 50")]},
}

ERROR = {"$ref": "#/components/schemas/Error"}


def _response(description: str, content: str = "application/json") -> dict[str, Any]:
    if content == "application/json":
        return {"description": description, "content": {content: {"schema": OBJ}}}
    return {"description": description, "content": {content: {"schema": STR}}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """(method, path, handler) for every route but HEAD."""
    out = []
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        out.append((route.method, path, route.handler))
    return out


def spec(app: web.Application, public: set[str]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in routes(app):
        doc = OPS.get((method, path))
        if doc is None:
            raise KeyError(f"{method} {path}: no entry in ivr/api/openapi_spec.py OPS")
        role = None if path in public else getattr(handler, "required_role", "admin")
        op: dict[str, Any] = {
            "summary": doc["summary"], "tags": [doc["tag"]],
            "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}{path}").strip("_") or "root",
            "responses": {("201" if doc.get("created") else "200"): _response("OK", doc.get("content", "application/json"))},
        }
        if doc.get("content_alt"):
            op["responses"]["200"]["content"][doc["content_alt"]] = {"schema": STR}
        params = [{"name": p, "in": "path", "required": True, "schema": STR} for p in re.findall(r"{(\w+)}", path)]
        params += doc.get("query", [])
        if params:
            op["parameters"] = params
        if "body" in doc:
            op["requestBody"] = doc["body"]
            op["responses"]["400"] = _error("the request is wrong; the message names the field")
        if params and any(p["in"] == "path" for p in params):
            op["responses"]["404"] = _error("no such object")
        if role is None:
            op["security"] = []
        else:
            op["x-required-role"] = role
            op["description"] = f"Needs the **{role}** role (or higher)."
            op["responses"]["401"] = _error("missing or unknown token")
            op["responses"]["403"] = _error(f"the token's role is below {role}")
            op["responses"]["429"] = _error("too many failed logins from this address (Retry-After)")
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Crisis-surge call centre controller API", "version": __version__,
                 "description": "Supervisor API. Tokens: `ivr token create --role viewer|supervisor|admin`; "
                                "send `Authorization: Bearer <token>`. Roles: viewer < supervisor < admin. "
                                "Errors are JSON: {\"error\": message, \"status\": code}."},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error", "status"],
                                  "properties": {"error": STR, "status": INT}}},
        },
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
    }


def markdown(app: web.Application, public: set[str]) -> str:
    """The route table for docs/api.md."""
    doc = spec(app, public)
    lines = ["| Method | Path | Role | What it does |", "|---|---|---|---|"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            lines.append(f"| {method.upper()} | `{path}` | {op.get('x-required-role', 'public')} | {op['summary']} |")
    return "\n".join(lines) + "\n"
