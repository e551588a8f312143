"""Every Redis key the controller uses, in one place.

All keys start with the configured prefix (default ``ivr``) so several
deployments can share one Redis. ``{uid}`` is the Asterisk Uniqueid of the
caller's channel.

| key                       | type   | what                                                      |
|---------------------------|--------|-----------------------------------------------------------|
| {p}:call:{uid}            | hash   | call record being built (caller, menu, queue, wait, ...)  |
| {p}:calls                 | stream | finished call records (one entry per call), capped        |
| {p}:tokens                | hash   | sha256(token) -> JSON {name, role, created}               |
| {p}:streamticket:{sha}    | string | sha256(stream ticket) -> JSON {name, role}; 30 s, used once |
| {p}:banner:{lang}         | string | live crisis banner text or prompt for one language       |
| {p}:audit                 | stream | who changed what, when, old and new value                 |
| {p}:refund:seq            | string | last refund reference number (INCR)                       |
| {p}:refund:{ref}          | hash   | refund request: booking, status, caller, created, history |
| {p}:refund:booking:{b}    | string | newest refund reference for booking number b              |
| {p}:refunds               | stream | refund request events (created, decided)                  |
| {p}:refunds:in:{status}   | zset   | refund references in that status -> created time           |
| {p}:callback:seq          | string | last callback id (INCR)                                   |
| {p}:callback:{id}         | hash   | callback request: number, queue, lang, status, attempts,  |
|                           |        | promise_s, due (epoch s), made_at, kept (yes/no/none)     |
| {p}:callbacks:pending     | zset   | callback id -> the time the caller first joined (their place) |
| {p}:callbacks:leases      | zset   | callback id claimed for dialling -> when its lease runs out   |
| {p}:surveys               | stream | post-call survey answers (uid, menu, queue, agent, score) |
| {p}:dnc                   | set    | do-not-call numbers (E.164), for every call out           |
| {p}:outbound:{hour}       | string | calls out counted in that UTC hour (YYYYMMDDHH), all nodes |
| {p}:outbound:{hour}:{n}   | string | calls out to E.164 number n counted in that hour          |
| {p}:authfail:{address}    | string | failed token checks from one address in the current window |
| {p}:agent:{id}            | hash   | one agent: logged_in, updated, by, pin (PBKDF2), profile   |
| {p}:agent:{id}:pin_fails  | string | wrong PINs in a row (locks the PIN for a while)            |
| {p}:agents:added          | hash   | agent id -> JSON of an agent added at run time             |
| {p}:agents:seq            | string | last generated agent number (INCR)                         |
| {p}:agents:last_call      | hash   | queue member interface -> Uniqueid of the last caller bridged |
| {p}:dispositions          | stream | uid, code, name, by, source, reason, agent, at              |
| {p}:feedback:seq          | string | last feedback item id (INCR)                               |
| {p}:feedback:{id}         | hash   | one feedback item (recording / survey)                     |
| {p}:feedback:team:{team}  | zset   | open feedback items of a team -> time                      |
| {p}:caller:{n}            | hash   | last_in, last_uid, last_answered, notice (JSON)            |
| {p}:cluster:leader        | string | the balancing leader's lease "<token>:<node>", with a TTL  |
| {p}:cluster:leader:seq    | string | fencing token counter (INCR at each grant of the lease)    |
| {p}:cluster:balance       | hash   | the leader's overflow tiers (JSON), node, token, at: fenced |
| {p}:cluster:busy          | hash   | agent id -> "<node>:<uid>:<since_ms>:<seen_ms>": the node that has |
|                           |        | the agent on a queue call (ivr/store/cluster.py)            |
| {p}:cluster:agent-events  | pub/sub| JSON {kind: busy/free, agent, entry}: each change of the busy hash |
| {p}:cluster:nodes         | hash   | node -> JSON {at, api, started, ami, ami_down_since}: its heartbeat |
| {p}:cluster:waiting:{node} | zset  | uid of a caller waiting on that node -> their place (first join, s) |
| {p}:cluster:waiting:{node}:callers | hash | uid -> JSON {number, queue, lang, joined_at}        |
| {p}:cluster:waiting:{node}:queue:{q} | zset | the same callers, one queue's (oldest first)       |
| {p}:cluster:moved:{uid}   | string | the callback a lost node's waiting caller became (7 days)  |
| {p}:caller:{n}:calls      | list   | newest first: JSON summaries of the caller's calls (capped)|
| {p}:caller:{n}:live       | set    | Uniqueids of the caller's calls in progress                |
| {p}:dropped               | hash   | n -> JSON of a dropped caller's place                      |
| {p}:dropped:due           | zset   | n -> the end of their window (unix s)                      |
| {p}:campaigns             | set    | campaign ids                                               |
| {p}:campaign:{cid}        | hash   | the campaign (definition, state)                           |
| {p}:campaign:{cid}:contact:{n} | hash | one contact: number, name, lang, tz, status, attempts, ... |
| {p}:campaign:{cid}:due    | zset   | n -> earliest dial time (unix s)                           |
| {p}:campaign:{cid}:leases | zset   | n claimed for dialling -> when its lease runs out          |
| {p}:campaign:{cid}:numbers| hash   | E.164 -> n (dedupe index)                                  |
| {p}:campaign:{cid}:seq    | string | last n given out (INCR)                                    |
| {p}:campaign:{cid}:count:{st} | string | contacts in status st                                  |
| {p}:campaign:{cid}:import | hash   | the last import's summary                                  |
| {p}:campaign:{cid}:attempts | stream | dial attempts and their outcomes                         |
| {p}:campaign:{cid}:hour:{YYYYMMDDHH} | string | the campaign's dials in that UTC hour           |
| {p}:campaign:{cid}:work   | stream | claimed contacts to dial (n, attempt): consumer group ``dialers``, |
|                           |        | one consumer per node; an entry is deleted once handled    |
| {p}:campaign:{cid}:attempt:{n}:{a} | string | the node that took claim a of contact n (SET NX, 7 days) |
| {p}:events                | stream | outbound events (id, type, created, data); a consumer group per webhook |
| {p}:webhook:{name}:lock   | string | the node delivering that webhook's events (a lease)            |
| {p}:webhook:{name}:log    | list   | newest first: JSON of its recent delivery attempts (capped)    |
| {p}:webhook:{name}:dead   | list   | newest first: JSON of events given up after N tries (capped)   |

Lua scripts get their keys in KEYS, built here, except the contact scripts of ivr/store/campaigns.py
(import, set status, add one), which get ``{p}:campaign:{cid}`` in ARGV and append ``:contact:{n}`` and
``:count:{status}`` to it, as ``campaign_contact`` and ``campaign_count`` spell them; and the dead-node
sweep of ivr/store/cluster.py, which gets ``callback("")`` and ``cluster_waiting_queue(node, "")`` in ARGV
and appends the callback id it takes (INCR) and each caller's queue.

No other module builds a key: code outside ``ivr/store/`` never sees one (tests/unit/test_layering.py).
"""

from __future__ import annotations

import re

_CAMPAIGN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class Keys:
    """Key builder bound to one prefix."""

    def __init__(self, prefix: str = "ivr") -> None:
        self.prefix = prefix

    def call(self, uid: str) -> str:
        return f"{self.prefix}:call:{uid}"

    @property
    def calls(self) -> str:
        return f"{self.prefix}:calls"

    @property
    def tokens(self) -> str:
        return f"{self.prefix}:tokens"

    def stream_ticket(self, digest: str) -> str:
        return f"{self.prefix}:streamticket:{digest}"

    def auth_failures(self, address: str) -> str:
        return f"{self.prefix}:authfail:{address}"

    def banner(self, lang: str) -> str:
        return f"{self.prefix}:banner:{lang}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    @property
    def refund_seq(self) -> str:
        return f"{self.prefix}:refund:seq"

    def refund(self, ref: str) -> str:
        return f"{self.prefix}:refund:{ref}"

    def refund_by_booking(self, booking: str) -> str:
        return f"{self.prefix}:refund:booking:{booking}"

    @property
    def refunds(self) -> str:
        return f"{self.prefix}:refunds"

    def refunds_in(self, status: str) -> str:
        return f"{self.prefix}:refunds:in:{status}"

    @property
    def callback_seq(self) -> str:
        return f"{self.prefix}:callback:seq"

    def callback(self, cb_id: str) -> str:
        return f"{self.prefix}:callback:{cb_id}"

    @property
    def callbacks_pending(self) -> str:
        return f"{self.prefix}:callbacks:pending"

    @property
    def callbacks_leases(self) -> str:
        return f"{self.prefix}:callbacks:leases"

    @property
    def surveys(self) -> str:
        return f"{self.prefix}:surveys"

    @property
    def dnc(self) -> str:
        return f"{self.prefix}:dnc"

    def outbound_hour(self, hour: str) -> str:
        return f"{self.prefix}:outbound:{hour}"

    def outbound_number(self, hour: str, number: str) -> str:
        return f"{self.prefix}:outbound:{hour}:{number}"

    # ---------------------------------------------------------------- agents
    def agent(self, agent_id: str) -> str:
        return f"{self.prefix}:agent:{agent_id}"

    def agent_pin_fails(self, agent_id: str) -> str:
        return f"{self.agent(agent_id)}:pin_fails"

    @property
    def agents_added(self) -> str:
        return f"{self.prefix}:agents:added"

    @property
    def agents_seq(self) -> str:
        return f"{self.prefix}:agents:seq"

    @property
    def agents_last_call(self) -> str:
        return f"{self.prefix}:agents:last_call"

    # -------------------------------------------------------------- outcomes
    @property
    def dispositions(self) -> str:
        return f"{self.prefix}:dispositions"

    @property
    def feedback_seq(self) -> str:
        return f"{self.prefix}:feedback:seq"

    def feedback(self, item_id: str) -> str:
        return f"{self.prefix}:feedback:{item_id}"

    def feedback_team(self, team: str) -> str:
        return f"{self.prefix}:feedback:team:{team}"

    # ------------------------------------------------------------ continuity
    def caller(self, number: str) -> str:
        return f"{self.prefix}:caller:{number}"

    def caller_calls(self, number: str) -> str:
        return f"{self.caller(number)}:calls"

    def caller_live(self, number: str) -> str:
        return f"{self.caller(number)}:live"

    @property
    def dropped(self) -> str:
        return f"{self.prefix}:dropped"

    @property
    def dropped_due(self) -> str:
        return f"{self.prefix}:dropped:due"

    # ------------------------------------------------------------- campaigns
    @property
    def campaigns(self) -> str:
        return f"{self.prefix}:campaigns"

    def campaign(self, cid: str) -> str:
        return f"{self.prefix}:campaign:{cid}"

    def campaign_due(self, cid: str) -> str:
        return f"{self.campaign(cid)}:due"

    def campaign_leases(self, cid: str) -> str:
        return f"{self.campaign(cid)}:leases"

    def campaign_numbers(self, cid: str) -> str:
        return f"{self.campaign(cid)}:numbers"

    def campaign_seq(self, cid: str) -> str:
        return f"{self.campaign(cid)}:seq"

    def campaign_import(self, cid: str) -> str:
        return f"{self.campaign(cid)}:import"

    def campaign_attempts(self, cid: str) -> str:
        return f"{self.campaign(cid)}:attempts"

    def campaign_hour(self, cid: str, hour: str) -> str:
        return f"{self.campaign(cid)}:hour:{hour}"

    def campaign_work(self, cid: str) -> str:
        """The stream of claimed contacts the nodes dial from (a consumer group, ivr/store/campaign_work.py)."""
        return f"{self.campaign(cid)}:work"

    def campaign_attempt(self, cid: str, n: int | str, attempt: int | str) -> str:
        """Which node took claim ``attempt`` of contact ``n`` (taken once: SET NX)."""
        return f"{self.campaign(cid)}:attempt:{n}:{attempt}"

    def campaign_contact(self, cid: str, n: int | str) -> str:
        return f"{self.campaign(cid)}:contact:{n}"

    def campaign_count(self, cid: str, status: str) -> str:
        return f"{self.campaign(cid)}:count:{status}"

    # -------------------------------------------------------------- webhooks
    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def webhook(self, name: str) -> str:
        return f"{self.prefix}:webhook:{name}"

    def webhook_lock(self, name: str) -> str:
        return f"{self.webhook(name)}:lock"

    def webhook_log(self, name: str) -> str:
        return f"{self.webhook(name)}:log"

    def webhook_dead(self, name: str) -> str:
        return f"{self.webhook(name)}:dead"

    # --------------------------------------------------------------- cluster
    @property
    def leader(self) -> str:
        """The leader's lease: "<token>:<node>" with a TTL (ivr/store/leader.py)."""
        return f"{self.prefix}:cluster:leader"

    @property
    def leader_seq(self) -> str:
        """The fencing token counter: grows at each grant of the lease."""
        return f"{self.prefix}:cluster:leader:seq"

    @property
    def cluster_balance(self) -> str:
        """The balancing leader's last decision (overflow tiers), written fenced, read by the followers."""
        return f"{self.prefix}:cluster:balance"

    @property
    def cluster_busy(self) -> str:
        """Agent id -> the node that has them on a call: "<node>:<uid>:<since_ms>:<seen_ms>"."""
        return f"{self.prefix}:cluster:busy"

    @property
    def cluster_agent_events(self) -> str:
        """The pub/sub channel announcing each change of ``cluster_busy``."""
        return f"{self.prefix}:cluster:agent-events"

    @property
    def cluster_nodes(self) -> str:
        """Every node's heartbeat: node -> JSON (ivr/store/cluster_nodes.py)."""
        return f"{self.prefix}:cluster:nodes"

    def cluster_waiting(self, node: str) -> str:
        """The callers waiting on ``node``: uid -> their place (when they first joined)."""
        return f"{self.prefix}:cluster:waiting:{node}"

    def cluster_waiting_callers(self, node: str) -> str:
        """What a lost node's waiting caller needs to be called back: uid -> JSON."""
        return f"{self.cluster_waiting(node)}:callers"

    def cluster_waiting_queue(self, node: str, queue: str) -> str:
        """One queue's callers on ``node`` (its oldest place, for the order across nodes)."""
        return f"{self.cluster_waiting(node)}:queue:{queue}"

    def cluster_moved(self, uid: str) -> str:
        """The callback a lost node's waiting caller became (set once: no caller is moved twice)."""
        return f"{self.prefix}:cluster:moved:{uid}"

    def campaign_keys(self, cid: str) -> "CampaignKeys":
        return CampaignKeys(self, cid)


class CampaignKeys:
    """The keys of one campaign's contacts (built by ``Keys``; the campaign id is checked)."""

    def __init__(self, keys: "Keys | str", cid: str) -> None:
        if isinstance(keys, str):      # CampaignKeys(prefix, cid), as ivr.campaigns.contacts had it
            keys = Keys(keys)
        if not _CAMPAIGN_ID_RE.fullmatch(cid):
            raise ValueError(f"campaign id: lower-case letters, digits and -, got {cid!r}")
        self.keys, self.cid = keys, cid
        self.base = keys.campaign(cid)
        self.due, self.numbers = keys.campaign_due(cid), keys.campaign_numbers(cid)
        self.seq, self.summary = keys.campaign_seq(cid), keys.campaign_import(cid)
        self.dnc = keys.dnc

    def contact(self, n: int | str) -> str:
        return self.keys.campaign_contact(self.cid, n)

    def count(self, status: str) -> str:
        return self.keys.campaign_count(self.cid, status)
