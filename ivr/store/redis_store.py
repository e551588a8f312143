"""Redis storage: call records, API tokens, settings.

Redis runs with AOF persistence (``appendfsync everysec``): at most one second
of writes can be lost on a crash of the Redis host itself. With ``redis.sentinels``
the store talks to whichever node the Sentinels name as primary and follows a
failover by itself (ivr/store/connection.py; docs/cluster.md has what one costs).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from .agents import AgentStore
from .callrecord import stage_call_fields
from .cluster import ClusterAgentStore
from .campaigns import CampaignStore
from .campaign_work import CampaignWorkStore
from .connection import HAVE_HIREDIS as HAVE_HIREDIS   # re-exported: where tests and tools look for them
from .connection import HiredisPackedConnection as HiredisPackedConnection
from .connection import close_sentinel, sentinel_client, url_client
from .cluster_nodes import ClusterStore
from .continuity import ContinuityStore
from .errors import Translating
from .keys import Keys
from .leader import LeaderStore
from .scripting import script_sha, scripted_pipeline
from .tokens import ROLES, hash_token, put_token
from .outcomes import DISPOSITIONS_MAXLEN, OutcomeStore
from .outbound import OutboundStore
from .reports import ReportStore
from .selfservice import CallbackStore, RefundStore, SurveyStore
from .webhooks import WebhookStore

if TYPE_CHECKING:
    from ..app.config import RedisConfig

CALL_TTL = 30 * 86400
CALLS_STREAM_MAXLEN = 2_000_000
# KEYS: the call's hash, the calls stream. ARGV: TTL, stream MAXLEN, uniqueid, then field, value, ...
FINISH_LUA = """
if redis.call('HGET', KEYS[1], 'finished') == '1' then
  return {0, redis.call('HGETALL', KEYS[1])}
end
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'finished', '1')
redis.call('EXPIRE', KEYS[1], ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local entry = {}
for i = 1, #all, 2 do
  if all[i] ~= 'uniqueid' then
    entry[#entry + 1] = all[i]
    entry[#entry + 1] = all[i + 1]
  end
end
entry[#entry + 1] = 'uniqueid'
entry[#entry + 1] = ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(entry))
return {1, all}
"""
# KEYS: the call's hash. ARGV: TTL, "1" to set only the fields not set yet (first writer wins), then
# field, value, ... One command for what would be a HSET (or a HSETNX per field) and an EXPIRE.
WRITE_LUA = """
if ARGV[2] == '1' then
  for i = 3, #ARGV, 2 do
    redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  end
elseif #ARGV > 2 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 0
"""


FINISH_SHA = script_sha(FINISH_LUA)
WRITE_SHA = script_sha(WRITE_LUA)
SCRIPTS = {FINISH_SHA: FINISH_LUA, WRITE_SHA: WRITE_LUA}
STREAM_TICKET_TTL = 30   # seconds a stream ticket stays good (it is used within a second by the dashboard)


_hash_token = hash_token   # the name ivr/devtools once imported


def _path(raw: str | None) -> list[str]:
    """The menu path is stored as a JSON list; tolerate a missing or damaged one."""
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return [raw]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _flat(mapping: Mapping[str, Any]) -> dict[str, str]:
    return {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in mapping.items() if v is not None}


def _pairs(mapping: Mapping[str, Any]) -> list[str]:
    """field, value, field, value, ... as a script's ARGV takes them (values flattened as in hashes)."""
    return [x for kv in _flat(mapping).items() for x in kv]


class Store(Translating):
    """Thin async facade over Redis; one instance per process, passed in where needed."""

    def __init__(self, client: aioredis.Redis, prefix: str = "ivr", *, sentinel: Sentinel | None = None) -> None:
        self.redis = client
        self._sentinel = sentinel   # the Sentinel manager behind ``client`` (closed with it), if any
        self.keys = Keys(prefix)
        self.refunds = RefundStore(client, self.keys)
        self.callbacks = CallbackStore(client, self.keys)
        self.surveys = SurveyStore(client, self.keys)
        self.outbound = OutboundStore(client, self.keys)
        self.campaigns = CampaignStore(client, self.keys)
        self.agents = AgentStore(client, self.keys)
        self.outcomes = OutcomeStore(client, self.keys)
        self.continuity = ContinuityStore(client, self.keys)
        self.reports = ReportStore(client, self.keys)
        self.webhooks = WebhookStore(client, self.keys)
        self.leader = LeaderStore(client, self.keys)
        self.campaign_work = CampaignWorkStore(client, self.keys)
        self.cluster_agents = ClusterAgentStore(client, self.keys)
        self.cluster = ClusterStore(client, self.keys, self.leader)

    @classmethod
    def from_url(cls, url: str, prefix: str = "ivr", password: str = "") -> "Store":
        """A store on the Redis at ``url``; ``password`` (if any) is sent with AUTH on every connection."""
        return cls(url_client(url, password), prefix)

    @classmethod
    def from_sentinels(cls, sentinels: Sequence[str], master_name: str = "ivr", prefix: str = "ivr",
                       password: str = "", url: str = "redis://") -> "Store":
        """A store on the primary the Sentinels ("host:port") name for ``master_name``; it follows a failover
        by itself (a command cut by one raises ``StoreUnavailable``, the next ones reach the new primary).
        ``password`` is sent to the Sentinels and the data nodes alike; ``url`` gives the database number."""
        client, manager = sentinel_client(sentinels, master_name, password=password, url=url)
        return cls(client, prefix, sentinel=manager)

    @classmethod
    def from_config(cls, rc: "RedisConfig") -> "Store":
        """A store for the ``redis`` section of the config: through ``sentinels`` when set (the database
        number from ``url``), else on ``url``; with the key prefix and password."""
        if rc.sentinels:
            return cls.from_sentinels(rc.sentinels, rc.master_name, rc.prefix, rc.password, rc.url)
        return cls.from_url(rc.url, rc.prefix, rc.password)

    async def close(self) -> None:
        await self.redis.aclose()
        if self._sentinel is not None:
            await close_sentinel(self._sentinel)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # ------------------------------------------------------------ call records
    async def call_update(self, uid: str, fields: Mapping[str, Any]) -> None:
        self._raise_first(await self.call_batch([("set", uid, fields)]))

    async def call_update_if_new(self, uid: str, fields: Mapping[str, Any]) -> None:
        """Set fields that are not set yet (first writer wins)."""
        self._raise_first(await self.call_batch([("setnx", uid, fields)]))

    async def call_get(self, uid: str) -> dict[str, Any]:
        raw = await self.redis.hgetall(self.keys.call(uid))
        return self._record(uid, raw) if raw else {}

    async def call_batch(self, ops: Sequence[tuple[str, str, Mapping[str, Any] | None]]) -> list[Any]:
        """Call-record operations of many calls, in order, in one round trip (a pipeline, not a transaction).

        ``("set", uid, fields)`` sets fields, ``("setnx", uid, fields)`` sets those not set yet (first writer
        wins), ``("get", uid, None)`` reads the record as the operations before it left it. Returns one item
        per operation: the record (``{}`` if there is none) for a get, None for a write, or the error Redis
        answered for that operation (the others are applied all the same). A lost connection raises: every
        operation is safe to apply again. Each write is one command (a Lua script that also renews the TTL).
        """
        def stage(p: Any) -> None:
            for kind, uid, fields in ops:
                key = self.keys.call(uid)
                if kind == "get":
                    p.hgetall(key)
                elif kind in ("set", "setnx"):
                    p.evalsha(WRITE_SHA, 1, key, CALL_TTL, "1" if kind == "setnx" else "0", *_pairs(fields or {}))
                else:
                    raise ValueError(f"call_batch: unknown operation {kind!r}")

        replies = await scripted_pipeline(self.redis, stage, SCRIPTS.values()) if ops else []
        out: list[Any] = []
        for (kind, uid, _), reply in zip(ops, replies):
            if isinstance(reply, Exception):
                out.append(reply)
            elif kind == "get":
                out.append(self._record(uid, reply) if reply else {})
            else:
                out.append(None)
        return out

    async def call_finish(self, uid: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Write the final fields and append the whole record to the calls stream, once (see call_finish_many)."""
        (done,) = await self.call_finish_many([(uid, fields)])
        self._raise_first([done])
        return done  # type: ignore[no-any-return]  # call_finish_many's rows are records or exceptions; _raise_first raised those

    async def call_finish_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Finish call records: write each one's final fields and append the whole record to the calls
        stream, once. One Lua call per record (atomic), all in one round trip: if a record is already
        finished it is returned as it is (a duplicate Hangup, or a retry after a reply was lost); otherwise
        the fields and ``finished`` are written and the merged record is appended to the stream. A retry can
        neither lose the stream entry nor add it twice. Returns, per item, the merged record or the error
        Redis answered for it.
        """
        def stage(p: Any) -> None:
            for uid, fields in items:
                p.evalsha(FINISH_SHA, 2, self.keys.call(uid), self.keys.calls, CALL_TTL, CALLS_STREAM_MAXLEN, uid,
                          *_pairs(fields))

        replies = await scripted_pipeline(self.redis, stage, SCRIPTS.values()) if items else []
        out: list[Any] = []
        for (uid, _), reply in zip(items, replies):
            if isinstance(reply, Exception):
                out.append(reply)
            else:
                raw = reply[1]
                out.append(self._record(uid, dict(zip(raw[::2], raw[1::2]))))
        return out

    async def call_disposition(self, uid: str, fields: Mapping[str, Any], entry: Mapping[str, Any]) -> None:
        """Set a call's disposition fields and append ``entry`` to the dispositions stream (one transaction)."""
        async with self.redis.pipeline(transaction=True) as p:
            stage_call_fields(p, self.keys, uid, fields)
            p.xadd(self.keys.dispositions, dict(entry), maxlen=DISPOSITIONS_MAXLEN, approximate=True)
            await p.execute()

    @staticmethod
    def _raise_first(results: Sequence[Any]) -> None:
        for r in results:
            if isinstance(r, Exception):
                raise r

    @staticmethod
    def _record(uid: str, raw: Mapping[str, str]) -> dict[str, Any]:
        record: dict[str, Any] = dict(raw)
        record["path"] = _path(record.get("path"))
        record["uniqueid"] = uid
        return record

    async def recent_calls(self, count: int = 100) -> list[dict[str, Any]]:
        entries = await self.redis.xrevrange(self.keys.calls, count=count)
        out = []
        for entry_id, fields in entries:
            rec = dict(fields)
            rec["id"] = entry_id
            rec["path"] = _path(rec.get("path"))
            out.append(rec)
        return out

    # ------------------------------------------------------------------ tokens
    async def create_token(self, name: str, role: str) -> str:
        """Create an API token; only its hash is stored. Returns the token (shown once)."""
        if role not in ROLES:
            raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
        token = secrets.token_urlsafe(32)
        await put_token(self.redis, self.keys, token, name, role)
        return token

    async def add_token_hash(self, token: str, name: str, role: str) -> None:
        """Register an existing token (the one generated into the secrets file at install)."""
        await put_token(self.redis, self.keys, token, name, role)

    async def list_tokens(self) -> list[dict[str, Any]]:
        """Token names, roles and creation times (never the tokens; the id is a prefix of the hash)."""
        out = []
        for digest, raw in (await self.redis.hgetall(self.keys.tokens)).items():
            info = json.loads(raw)
            out.append({"id": digest[:12], "name": info.get("name"), "role": info.get("role"),
                        "created": info.get("created")})
        return sorted(out, key=lambda t: t["created"] or 0)

    async def revoke_token(self, name_or_id: str) -> int:
        """Revoke every token with that name (or hash prefix id); returns how many."""
        gone = 0
        for digest, raw in (await self.redis.hgetall(self.keys.tokens)).items():
            if json.loads(raw).get("name") == name_or_id or digest[:12] == name_or_id:
                gone += await self.redis.hdel(self.keys.tokens, digest)
        return gone

    async def verify_token(self, token: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.tokens, _hash_token(token))
        return json.loads(raw) if raw else None

    async def create_stream_ticket(self, info: Mapping[str, Any], ttl: int = STREAM_TICKET_TTL) -> str:
        """A ticket that opens one event stream within ``ttl`` seconds as the token ``info`` describes (its name
        and role); only its hash is stored. The token itself never has to go into a URL."""
        ticket = secrets.token_urlsafe(32)
        await self.redis.set(self.keys.stream_ticket(_hash_token(ticket)),
                             json.dumps({"name": info.get("name"), "role": info.get("role")}), ex=ttl)
        return ticket

    async def take_stream_ticket(self, ticket: str) -> dict[str, Any] | None:
        """The name and role a stream ticket was issued for, or None (unknown, used or expired); it is spent
        by this call (GETDEL: two connections can never share one)."""
        raw = await self.redis.getdel(self.keys.stream_ticket(_hash_token(ticket)))
        return json.loads(raw) if raw else None

    async def auth_failures(self, address: str) -> tuple[int, int]:
        """Failed token checks from ``address`` in the current window, and the seconds the window has left."""
        async with self.redis.pipeline(transaction=False) as p:
            p.get(self.keys.auth_failures(address))
            p.ttl(self.keys.auth_failures(address))
            count, ttl = await p.execute()
        return int(count or 0), max(int(ttl or 0), 0)

    async def auth_failed(self, address: str, window: int) -> int:
        """Count one failed token check; the window starts at the first failure. Returns the count."""
        key = self.keys.auth_failures(address)
        async with self.redis.pipeline(transaction=True) as p:
            p.incr(key)
            p.expire(key, window, nx=True)
            count, _ = await p.execute()
        return int(count)

    # ------------------------------------------------------------------ audit
    async def audit(self, who: str, action: str, target: str, old: Any, new: Any) -> None:
        """Append who changed what, when, with the old and new value."""
        await self.redis.xadd(self.keys.audit, {
            "at": str(time.time()), "who": who, "action": action, "target": target,
            "old": json.dumps(old), "new": json.dumps(new)}, maxlen=1_000_000, approximate=True)

    async def audit_log(self, count: int = 100) -> list[dict[str, Any]]:
        out = []
        for entry_id, f in await self.redis.xrevrange(self.keys.audit, count=count):
            rec: dict[str, Any] = dict(f, id=entry_id)
            for k in ("old", "new"):
                try:
                    rec[k] = json.loads(rec.get(k, "null"))
                except ValueError:
                    pass
            out.append(rec)
        return out

    # ----------------------------------------------------------------- banner
    async def get_banner(self, lang: str) -> str | None:
        return await self.redis.get(self.keys.banner(lang))

    async def set_banner(self, lang: str, text: str | None) -> None:
        if text:
            await self.redis.set(self.keys.banner(lang), text)
        else:
            await self.redis.delete(self.keys.banner(lang))
