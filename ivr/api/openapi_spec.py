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
from zoneinfo import available_timezones

from aiohttp import web

from .. import __version__
from ..banner.service import MAX_TEXT
from .services import CHOICES

STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
OBJ = {"type": "object"}
STRS = {"type": "array", "items": STR}
LANG = {"type": "string", "pattern": "^[a-z]{2,3}$"}
DIGITS = {"type": "string", "pattern": "^[0-9]{1,20}$"}
ONE_LINE = "^[^\\r\\n]*$"


def choice(kind: str, fallback: dict[str, Any], *extra: str) -> dict[str, Any]:
    """A configured name (``kind``: lang, queue, group, team, disposition, webhook): the document a running node serves
    lists them as an enum (``Services.choices``, plus ``extra`` values such as ""); without a config (the
    route table alone) it is ``fallback``."""
    return {**fallback, "x-choices": kind, "x-choices-extra": list(extra)}


# path parameters by name: what the route accepts (anything else is 400; a well-formed name of nothing is 404)
PATH_PARAMS: dict[str, dict[str, Any]] = {
    "uid": {"type": "string", "maxLength": 64},
    "number": {"type": "string", "pattern": "^\\+?[0-9]{6,15}$"},
    "lang": choice("lang", LANG),
    "ref": DIGITS,
    "booking": {"type": "string", "pattern": "^[0-9]{1,12}$"},
    "cb_id": DIGITS,
}
# when a value can be a moment: an ISO date/time (in tz when it has no offset) or a Unix time; "" is the default
WHEN = {"anyOf": [{"type": "string", "pattern": "^([0-9]{1,10}(\\.[0-9]{1,6})?)?$"},
                  {"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]}

AGENT_FIELDS = {
    "name": {"type": "string", "maxLength": 40}, "skill": {"enum": ["experienced", "novice"]},
    "team": {"type": "string", "maxLength": 40}, "tier": {"enum": ["core", "volunteer"]},
    "queues": {"type": "array", "items": choice("queue", STR)},
    "languages": {"type": "array", "items": LANG},
    "penalty": {"type": "integer", "minimum": 0, "maximum": 100},
    "mobile": {"type": "string", "pattern": "^([0-9]{3,20})?$",
               "description": "reached through the trunk while the SIP phone is unreachable (press 1 to accept); "
                              "a number the outbound guard refuses is answered with 400 naming the reason"},
}


HOURS = {"type": "number", "minimum": 0.01, "maximum": 2208}
TZ = {"enum": sorted(available_timezones() | {"UTC"})}
# the crisis banner: not blank, no control characters, at most MAX_TEXT characters once spaces are collapsed
BANNER_TEXT = {"type": "string", "maxLength": MAX_TEXT,
               "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"}
# one server-sent event of GET /api/v1/stream: `data:` is the live picture (GET /api/v1/live) as JSON
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"event": {"const": "message"}, "id": STR, "retry": INT,
                            "data": {"type": "string", "contentMediaType": "application/json",
                                     "contentSchema": {"type": "object", "required": ["time", "node", "queues"],
                                                       "properties": {"time": NUM, "node": STR, "queues": OBJ}}}}}
PROMPT = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,60}$"}
CAMPAIGN_ACTIONS = ["refund", "callback", "agent", "optout", "repeat"]
CAMPAIGN_OUTCOMES = ["busy", "no_answer", "failed", "machine", "unknown", "no_key"]
HHMM = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):([0-5][0-9])$"}


def rng(lo: float, hi: float, kind: str = "number") -> dict[str, Any]:
    return {"type": kind, "minimum": lo, "maximum": hi}


# a campaign definition (ivr/campaigns/model.py parse_campaign; docs/campaigns.md)
CAMPAIGN = {
    "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,39}$"},
    "name": {"type": "string"},
    "message": {"anyOf": [PROMPT, {"type": "object", "minProperties": 1,
                                   "propertyNames": choice("lang", LANG), "additionalProperties": PROMPT}],
                "description": "a prompt name, or one per language"},
    "machine_message": PROMPT,
    "options": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": "^[0-9*]$"},
                "additionalProperties": {"enum": CAMPAIGN_ACTIONS}},
    "window": {"type": "object", "properties": {"start": HHMM, "end": HHMM}, "additionalProperties": False,
               "description": "in the callee's local time (default 09:00-20:00); start and end differ"},
    "max_attempts": rng(1, 10),
    "retry": {"type": "object", "propertyNames": {"enum": CAMPAIGN_OUTCOMES},
              "additionalProperties": rng(0, 7 * 86400)},
    "pacing": {"type": "object", "additionalProperties": False,
               "properties": {"cps": rng(0.1, 50), "max_channels": rng(1, 500), "max_transfers": rng(0, 500)}},
    "priority": rng(0, 100),
    "allowed_prefixes": {"type": "array", "items": {"type": "string", "pattern": "^\\+[1-9][0-9]{0,5}$"}},
    "hourly_cap": rng(1, 10_000),
    "queue": choice("queue", STR),
    "default_lang": choice("lang", LANG),
    "ring_timeout": rng(5, 120),
    "amd": BOOL,
}


def q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def body(properties: dict[str, Any], required: list[str] | None = None, *, extra: bool = False,
         min_properties: int = 0, one_of_required: list[list[str]] | None = None) -> dict[str, Any]:
    """A JSON object body; ``extra``: fields beyond ``properties`` are accepted (the route refuses them
    otherwise, with 400)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = required
    if min_properties:
        schema["minProperties"] = min_properties
    if one_of_required:
        schema["oneOf"] = [{"required": names} for names in one_of_required]
    return {"required": True, "content": {"application/json": {"schema": schema}}}


# (method, path) -> summary, tag, and optionally query parameters, a request body, extra responses
OPS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/health"): {"tag": "system", "summary": "Up or down: 200 {\"status\": \"ok\"} or 503 "
                         "{\"status\": \"degraded\"}; with a viewer token (or higher), the detail: Redis, AMI "
                         "(last error), AGI, menus (errors), records, balancing",
                         "statuses": ["401", "403", "429", "503"]},
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
                                "query": [q("ticket", STR, "a stream ticket (used once, within 30 s), instead of the "
                                            "Authorization header")],
                                "content": "text/event-stream", "schema": SSE_EVENT},
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
                                               "body": body({"group": choice("group", {"type": "string", "maxLength": 32}),
                                                             "note": {"type": "string", "maxLength": 200,
                                                                      "pattern": ONE_LINE},
                                                             "hours": {"type": ["number", "null"],
                                                                       "exclusiveMinimum": 0, "maximum": 8760,
                                                                       "description": "null: flag_hours"}},
                                                            ["group"])},
    ("DELETE", "/api/v1/callers/{number}/flag"): {"tag": "calls", "summary": "Remove a caller's priority flag; "
                                                  "audited"},
    ("GET", "/api/v1/reports"): {"tag": "reports", "summary": "Calls, ASA, service level, abandonment, handle "
                                 "time, first-contact resolution, satisfaction and outbound outcomes by hour or day",
                                 "query": [q("by", {"enum": ["hour", "day"]}, "period (default hour)"),
                                           q("since", WHEN, "ISO date/time or Unix time (default: 24 h ago by "
                                             "hour, 7 days ago by day)"),
                                           q("until", WHEN, "ISO date/time or Unix time (default: now)"),
                                           q("hours", HOURS, "the last N hours up to until (instead of since)"),
                                           q("tz", TZ, "time zone of the periods, e.g. Europe/Paris (default UTC)"),
                                           q("sl_target", {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
                                             "service-level target in seconds (default 20)"),
                                           q("format", {"enum": ["json", "csv"]}, "json (default) or csv")],
                                 "content_alt": "text/csv"},
    ("GET", "/api/v1/agents"): {"tag": "agents", "summary": "The roster: skill, team, tier, queues, languages, "
                                "base penalty, logged in"},
    ("POST", "/api/v1/agents"): {"tag": "agents", "summary": "Add an agent (default: a novice volunteer serving "
                                 "every queue) with a new SIP account; the password is returned once",
                                 "body": body({"id": {"type": "string", "pattern": "^[0-9]{2,20}$",
                                                      "description": "leave it out for the next free id"},
                                               **AGENT_FIELDS}), "created": True},
    ("PATCH", "/api/v1/agents/{agent_id}"): {"tag": "agents", "summary": "Change name, skill, team, tier, queues, "
                                             "languages, base penalty or mobile", "body": body(AGENT_FIELDS, min_properties=1)},
    ("DELETE", "/api/v1/agents/{agent_id}"): {"tag": "agents", "summary": "Remove an agent added through the API, "
                                              "with its SIP account and queue memberships"},
    ("POST", "/api/v1/agents/{agent_id}/coach"): {"tag": "agents", "summary": "Ring a coach's phone into the agent's "
                                                  "call (ChanSpy): whisper (only the agent hears the coach), "
                                                  "listen or barge; 409 when the agent is not on a call or the "
                                                  "coach is on one (the dashboard's Coach button)",
                                                  "body": body({"coach": {"type": "string", "description": "another "
                                                                         "agent's id (404 when there is none)"},
                                                               "mode": {"enum": ["whisper", "listen", "barge"]}},
                                                               ["coach"])},
    ("PUT", "/api/v1/agents/{agent_id}/pin"): {"tag": "agents", "summary": "Set the PIN the agent keys in to log in "
                                               "or out from their phone (*81 / *82); stored hashed",
                                               "body": body({"pin": {"type": "string", "pattern": "^[0-9]{4,8}$"}},
                                                            ["pin"])},
    ("POST", "/api/v1/agents/{agent_id}/login"): {"tag": "agents", "summary": "Log an agent in: the balancing "
                                                  "loop adds them to their queues within a second"},
    ("POST", "/api/v1/agents/{agent_id}/logout"): {"tag": "agents", "summary": "Log an agent out of every queue"},
    ("POST", "/api/v1/agents/{agent_id}/pause"): {"tag": "agents", "summary": "Pause an agent in Asterisk",
                                                  "body": {**body({"reason": {"type": "string", "maxLength": 60,
                                                                            "pattern": ONE_LINE}}),
                                                           "required": False}},
    ("POST", "/api/v1/agents/{agent_id}/unpause"): {"tag": "agents", "summary": "Unpause an agent"},
    ("POST", "/api/v1/menus/reload"): {"tag": "menus", "summary": "Reload dialplans/*.yaml (calls in progress "
                                       "finish on their version); returns loaded menus and errors"},
    ("GET", "/api/v1/banner"): {"tag": "menus", "summary": "The crisis banner text per language"},
    ("PUT", "/api/v1/banner/{lang}"): {"tag": "menus", "summary": "Set the crisis banner callers hear first "
                                       "(spoken by TTS; live on the next call)",
                                       "body": body({"text": BANNER_TEXT}, ["text"])},
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
                                             "default received"),
                                           q("count", {"type": "integer", "minimum": 1, "maximum": 1000},
                                             "default 100"),
                                           q("offset", {"type": "integer", "minimum": 0, "maximum": 1_000_000_000},
                                             "skip this many"),
                                           q("group", {"type": "string", "pattern": "^([a-z0-9_-]{1,32})?$"},
                                             "only this group")]},
    ("POST", "/api/v1/refunds"): {"tag": "refunds", "summary": "Record a refund request for a customer (the approval "
                                  "policy applies)", "created": True,
                                  "body": body({"booking": {"type": "string", "pattern": "^[0-9]{4,12}$"},
                                                "number": {"type": "string", "pattern": "^(\\+*[0-9]{3,20})?$"},
                                                "lang": choice("lang", LANG, ""),
                                                "amount": {"type": "string",
                                                           "pattern": "^([0-9]{1,9}(\\.[0-9]{1,2})?)?$"},
                                                "group": {"type": "string", "pattern": "^([a-z0-9_-]{1,32})?$"}},
                                               ["booking"])},
    ("POST", "/api/v1/refunds/decisions"): {"tag": "refunds", "summary": "Bulk decisions (up to 1000), each taken and "
                                            "reported on its own",
                                            "body": body({"decisions": {"type": "array", "maxItems": 1000,
                                                                      "items": {"type": "object"},
                                                                      "description": "[{reference, status, note}]: "
                                                                                     "each reported on its own"},
                                                        "references": {"type": "array", "maxItems": 1000,
                                                                       "items": {}},
                                                        "status": {}, "note": {}},
                                                       one_of_required=[["decisions"], ["references"]])},
    ("GET", "/api/v1/reports/reasons"): {"tag": "reports", "summary": "Calls by reason (the menu path's reason): "
                                         "outcomes, escalations to a human, agents' dispositions",
                                         "query": [q("since", WHEN, "ISO date/time or Unix time (default 24 h ago)"),
                                                   q("until", WHEN, "default now"),
                                                   q("hours", HOURS, "the last N hours"),
                                                   q("tz", TZ, "time zone of since/until")]},
    ("GET", "/api/v1/dispositions"): {"tag": "calls", "summary": "The wrap-up codes agents set (code -> name)"},
    ("POST", "/api/v1/calls/{uid}/disposition"): {"tag": "calls", "summary": "Set a call's disposition (code or name; "
                                                  "agents can also dial *7<code>)",
                                                  "body": body({"disposition": choice("disposition", STR),
                                                                "note": {"type": "string", "maxLength": 500,
                                                                         "pattern": "^[^\\r\\n\\x00]*$"}},
                                                               ["disposition"])},
    ("GET", "/api/v1/feedback"): {"tag": "feedback", "summary": "A team's open feedback items (recorded messages, "
                                  "poor surveys), routed by call reason; without team: open items per team",
                                  "query": [q("team", choice("team", STR, ""),
                                              "e.g. refunds; left out or empty: the counts")]},
    ("GET", "/api/v1/feedback/{item}/audio"): {"tag": "feedback", "summary": "The recorded message (audio/wav)"},
    ("POST", "/api/v1/feedback/{item}/done"): {"tag": "feedback", "summary": "Mark an item handled (audited)",
                                               "body": {**body({"note": {"type": "string", "maxLength": 500}}),
                                                        "required": False}},
    ("GET", "/api/v1/callbacks"): {"tag": "callbacks", "summary": "Callbacks waiting, in the callers' original "
                                   "order, each with its promise (promise_s) and when it is due"},
    ("GET", "/api/v1/callbacks/{cb_id}"): {"tag": "callbacks", "summary": "One callback request and its attempts; "
                                           "once made, made_at and whether it kept its promise (kept)"},
    ("GET", "/api/v1/surveys"): {"tag": "reports", "summary": "Latest post-call survey answers (1-5)"},
    ("GET", "/api/v1/audit"): {"tag": "system", "summary": "Who changed what, when, old and new value (newest "
                               "first)"},
    ("GET", "/api/v1/campaigns"): {"tag": "campaigns", "summary": "Campaigns with state and progress"},
    ("POST", "/api/v1/campaigns"): {"tag": "campaigns", "summary": "Create a campaign (draft) from its definition "
                                    "(see docs/campaigns.md)", "body": body(CAMPAIGN, ["id"]), "created": True},
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
                                             "statuses": ["404"],   # a webhook of that name is not configured
                                             "query": [q("webhook", choice("webhook", STR, ""),
                                                         "one webhook by name (default: all)"),
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


# the answers every operation may give besides its own, by when (components/responses, each an Error body)
RESPONSES = {
    "BadRequest": "the request is wrong (a parameter or field the route refuses); the message names it",
    "Unauthorized": "missing or unknown token",
    "Forbidden": "the token's role is below the one the route needs",
    "NotFound": "no such object",
    "Conflict": "the object's state (or an object of that id) does not allow it now",
    "PayloadTooLarge": "the body is larger than the route accepts",
    "TooManyRequests": "too many failed logins from this address (Retry-After); a valid token is still accepted",
    "Unavailable": "a back end (Redis, Asterisk) cannot answer now: try again",
}
STATUS_REF = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound",
              "409": "Conflict", "413": "PayloadTooLarge", "429": "TooManyRequests", "503": "Unavailable"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _choices(node: Any, choices: dict[str, tuple[str, ...]]) -> Any:
    """``node`` with each ``choice()`` placeholder resolved: the configured names as an enum, else the fallback."""
    if isinstance(node, list):
        return [_choices(x, choices) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _choices(v, choices) for k, v in node.items()}
    if "x-choices" not in node:
        return node
    kind, extra = node.pop("x-choices"), node.pop("x-choices-extra")
    if kind in choices:
        names = [*choices[kind], *extra]
        if names:
            return {"enum": names}
        # none configured: the fallback, and the route answers 409 (the configuration does not allow it)
    return {"anyOf": [node, {"enum": extra}]} if extra else node


def spec(app: web.Application, public: set[str]) -> dict[str, Any]:
    """The document; names a request may use come from the app's configuration when it has one
    (``Services.choices``: the document a node serves), else patterns (``python -m ivr.api.openapi``)."""
    choices = app.get(CHOICES) or {}
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler in routes(app):
        doc = OPS.get((method, path))
        if doc is None:
            raise KeyError(f"{method} {path}: no entry in ivr/api/openapi_spec.py OPS")
        paths.setdefault(path, {})[method.lower()] = _choices(operation(method, path, handler, doc, public), choices)
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
            "responses": {name: _error(text) for name, text in RESPONSES.items()},
        },
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
    }


def operation(method: str, path: str, handler: Any, doc: dict[str, Any], public: set[str]) -> dict[str, Any]:
    """One operation: what ``OPS`` says of it, and every status it can answer.

    A route's entry needs: ``tag`` and ``summary``; ``query`` (``q(...)``) for each query parameter with the
    schema of what it accepts; ``body`` (``body(...)``) when it reads one, with ``additionalProperties`` as the
    route treats unknown fields; ``content`` when it answers other than JSON (``schema`` for an event stream's
    events); ``created`` when it answers 201; ``statuses`` for any other it can answer. Path parameters take their schema from ``PATH_PARAMS`` (a string
    otherwise). The statuses follow: 400 with parameters or a body, 404 with path parameters, 409 on methods
    that change something, 413 with a body, 401/403/429/503 behind a token.
    """
    role = None if path in public else getattr(handler, "required_role", "admin")
    content = doc.get("content", "application/json")
    ok = _response("OK", content)
    if "schema" in doc:
        ok["content"][content]["schema"] = doc["schema"]
    if doc.get("content_alt"):
        ok["content"][doc["content_alt"]] = {"schema": STR}
    op: dict[str, Any] = {
        "summary": doc["summary"], "tags": [doc["tag"]],
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}{path}").strip("_") or "root",
        "responses": {("201" if doc.get("created") else "200"): ok},
    }
    params = [{"name": p, "in": "path", "required": True, "schema": PATH_PARAMS.get(p, STR)}
              for p in re.findall(r"{(\w+)}", path)]
    params += doc.get("query", [])
    if params:
        op["parameters"] = params
    responses = op["responses"]
    if "body" in doc:
        op["requestBody"] = doc["body"]
    if params or "body" in doc:
        responses["400"] = _ref("BadRequest")
    if any(p["in"] == "path" for p in params):
        responses["404"] = _ref("NotFound")
    if method in MUTATING:
        responses["409"] = _ref("Conflict")
    if "body" in doc:
        responses["413"] = _ref("PayloadTooLarge")
    for status in doc.get("statuses", ()):
        responses[status] = _ref(STATUS_REF[status])
    if role is None:
        op["security"] = []
    else:
        op["x-required-role"] = role
        op["description"] = f"Needs the **{role}** role (or higher)."
        responses["401"] = _ref("Unauthorized")
        responses["403"] = _ref("Forbidden")
        responses["429"] = _ref("TooManyRequests")
        responses["503"] = _ref("Unavailable")
    return op


def markdown(app: web.Application, public: set[str]) -> str:
    """The route table for docs/api.md."""
    doc = spec(app, public)
    lines = ["| Method | Path | Role | What it does |", "|---|---|---|---|"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            lines.append(f"| {method.upper()} | `{path}` | {op.get('x-required-role', 'public')} | {op['summary']} |")
    return "\n".join(lines) + "\n"
