"""Recorded Asterisk conversations replayed against the real menu engine.

Each ``tests/fixtures/agi/<name>.txt`` is one FastAGI connection as it went over
the wire between Asterisk 16 and the controller running ``dialplans/main.yaml``
(cut out of a DEBUG log of the real stack, ``AGI >>`` / ``AGI <<`` lines):

    agi_network: yes            <- the environment block Asterisk sends, then a blank line
    ...
    agi_threadid: 140236417435392

    >> STREAM FILE "{PROMPTS}/en/lang-en" "0123456789*#"     <- what the controller must send
    << 200 result=49 endpos=3200                              <- what Asterisk answered

``{PROMPTS}`` stands for the prompt root the recording was made with; the test
puts the current ``PromptLibrary`` root there, so the fixtures do not depend on
where the repository lives. The fake Asterisk below connects to a real
``AgiServer`` (router with ``menu`` and ``survey``), sends the environment,
checks every command the engine sends against the recording, in order, answers
with the recorded reply, and then expects the controller to close the
connection: the conversation ends where the recording ended. The side effects
(call record saved through the CallSink, refund look-ups, callbacks, surveys,
wait estimates asked, live banner asked) are compared with what the recorded
call implies.

The fakes here (refund backend, callback/survey stores, call sink, prompt
tree) are shared with ``test_menu_engine.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Mapping

import pytest

from ivr.core.agi import quote_arg
from ivr.asterisk.agi_server import AgiRouter, AgiServer
from ivr.balance.forecast import Promise, offer_callback
from ivr.app.config import PROJECT_ROOT, Config
from ivr.menu.engine import EngineServices, MenuEngine
from ivr.menu.schema import MenuSet
from ivr.menu.services import LookupFailed
from ivr.campaigns.outbound import Verdict
from ivr.prompts.library import PromptLibrary

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agi"
PROMPT_ROOT_MARK = "{PROMPTS}"
IO_TIMEOUT = 5.0
LANGUAGES = ("en", "fa", "zh")
QUEUES = frozenset(Config().queue_names())          # support, refunds, rebooking


# ============================================================== shared fakes
class FakeRefunds:
    """RefundsBackend stand-in: same ``operations`` and ``lookup`` contract, in memory.

    ``status`` answers the newest refund of a booking (or None); ``create`` makes
    one with the next reference and the fields RefundStore.create returns.
    """

    operations = frozenset({"status", "create"})

    def __init__(self, records: Mapping[str, dict[str, Any]] | None = None, *, next_reference: int = 1000001,
                 now: float = 1795614309.14) -> None:
        self.by_booking = dict(records or {})
        self.next_reference = next_reference
        self.now = now
        self.calls: list[tuple[str, dict[str, str]]] = []

    async def lookup(self, operation: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        self.calls.append((operation, dict(params)))
        booking = params.get("booking", "")
        if operation == "status":
            return self.by_booking.get(booking)
        if operation == "create":
            ref = str(self.next_reference)
            self.next_reference += 1
            record = {"reference": ref, "booking": booking, "status": "received", "caller": params.get("caller", ""),
                      "lang": params.get("lang", "en"), "source": "ivr", "call_uid": params.get("uid", ""),
                      "amount": "", "created": self.now, "updated": self.now,
                      "history": json.dumps([{"at": self.now, "status": "received", "by": "ivr"}])}
            self.by_booking[booking] = record
            return record
        raise LookupFailed(f"refunds: unknown operation {operation!r}")


class FakeCallbacks:
    """CallbackStore stand-in with the same ``request`` signature."""

    def __init__(self, next_id: int = 1) -> None:
        self.next_id = next_id
        self.requests: list[dict[str, Any]] = []

    async def request(self, number: str, *, queue: str, lang: str = "en", call_uid: str = "",
                      joined_at: float | None = None, caller: str = "",
                      promise_s: float | None = None) -> dict[str, Any]:
        record = {"id": str(self.next_id), "number": number, "queue": queue, "lang": lang, "call_uid": call_uid,
                  "caller": caller, "place": joined_at, "status": "pending", "attempts": 0}
        if promise_s is not None:
            record["promise_s"] = promise_s
        self.next_id += 1
        self.requests.append(record)
        return record


class FakePromises:
    """PromiseService stand-in: the same promise for every queue (None seconds: no promise can be made), the
    real offer rule (ivr/balance/forecast.py offer_callback); remembers what it was asked and told."""

    def __init__(self, seconds: float | None = None) -> None:
        self.promise = Promise(seconds, None if seconds is None else seconds / 1.2, "fake")
        self.asked: list[str] = []
        self.told: list[tuple[str, float]] = []

    async def callback_promise(self, queue: str) -> Promise:
        self.asked.append(queue)
        return self.promise

    def offer(self, estimate: float | None, promise: Promise, over: float | str | None) -> bool:
        return offer_callback(estimate, promise, over)

    def might_offer(self, estimate: float | None, over: float | str | None) -> bool:
        return over is not None and estimate is not None and estimate > (60.0 if over == "auto" else float(over))

    def promised(self, queue: str, seconds: float) -> None:
        self.told.append((queue, seconds))


class FakeOutbound:
    """OutboundGuard stand-in: allows every number but those in ``refuse``; remembers what it was asked."""

    def __init__(self, refuse: Iterable[str] = ()) -> None:
        self.refuse = set(refuse)
        self.checks: list[tuple[str, str, bool]] = []

    async def check(self, number: str, purpose: str, *, count: bool = True, **kw: Any) -> Verdict:
        self.checks.append((number, purpose, count))
        if number in self.refuse:
            return Verdict(False, "+" + number, "type_premium_rate", "premium_rate")
        return Verdict(True, "+" + number, "", "mobile")


class FakeSurveys:
    """SurveyStore stand-in with the same ``record`` signature."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def record(self, call_uid: str, score: int, *, menu: str = "", lang: str = "", queue: str = "",
                     agent: str = "") -> None:
        self.records.append({"uid": call_uid, "score": score, "menu": menu, "lang": lang, "queue": queue,
                             "agent": agent})


class FakeSink:
    """The CallSink (call recorder) stand-in."""

    def __init__(self) -> None:
        self.tracked: list[str] = []
        self.saved: list[tuple[str, dict[str, Any]]] = []

    def track(self, uid: str) -> None:
        self.tracked.append(uid)

    async def save(self, uid: str, fields: dict[str, Any]) -> None:
        self.saved.append((uid, dict(fields)))


@dataclass
class World:
    """Everything the engine may touch, faked, plus what it asked for."""

    refunds: FakeRefunds = field(default_factory=FakeRefunds)
    callbacks: FakeCallbacks = field(default_factory=FakeCallbacks)
    surveys: FakeSurveys = field(default_factory=FakeSurveys)
    outbound: FakeOutbound = field(default_factory=FakeOutbound)
    promises: FakePromises = field(default_factory=FakePromises)
    sink: FakeSink = field(default_factory=FakeSink)
    estimates: dict[str, float | None] = field(default_factory=dict)
    banner_path: str | None = None
    estimates_asked: list[str] = field(default_factory=list)
    banner_asked: list[str] = field(default_factory=list)

    def estimate_wait(self, queue: str) -> float | None:
        self.estimates_asked.append(queue)
        return self.estimates.get(queue)

    async def banner(self, lang: str) -> str | None:
        self.banner_asked.append(lang)
        return self.banner_path

    def services(self, **overrides: Any) -> EngineServices:
        kw: dict[str, Any] = dict(backends={"refunds": self.refunds}, callbacks=self.callbacks,
                                  surveys=self.surveys, estimate_wait=self.estimate_wait, banner=self.banner,
                                  outbound=self.outbound, promises=self.promises)
        kw.update(overrides)
        return EngineServices(**kw)


def prompt_names() -> dict[str, set[str]]:
    """Prompt names per language from the committed sources (audio_prompts/<lang>/<name>.txt|.wav)."""
    src = PROJECT_ROOT / "audio_prompts"
    return {lang: {p.stem for p in (src / lang).iterdir() if p.suffix in (".txt", ".wav")} for lang in LANGUAGES}


def prompt_root(tmp_factory: pytest.TempPathFactory) -> Path:
    """The built prompts when they are all there; otherwise a stand-in tree with the same names.

    ``audio_prompts/build`` is generated (git-ignored); on a checkout where it was
    not built, empty ``.wav`` files with the source names give the PromptLibrary
    the same index, so the engine picks the same files.
    """
    built = Path(Config().prompts_dir)
    names = prompt_names()
    if all((built / lang / f"{n}.wav").exists() for lang, ns in names.items() for n in ns):
        return built
    root = tmp_factory.mktemp("prompts") / "build"
    for lang, ns in names.items():
        (root / lang).mkdir(parents=True)
        for n in ns:
            (root / lang / f"{n}.wav").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> PromptLibrary:
    return PromptLibrary(prompt_root(tmp_path_factory))


def shipped_menus() -> MenuSet:
    menus = MenuSet(PROJECT_ROOT / "dialplans", QUEUES, LANGUAGES, frozenset({"refunds"}))
    assert menus.load() == []
    assert menus.get("main") is not None
    return menus


# ================================================================ transcripts
@dataclass
class Transcript:
    name: str
    env: bytes
    steps: list[tuple[str, list[str]]]        # (command line, reply lines)

    @property
    def commands(self) -> list[str]:
        return [cmd for cmd, _ in self.steps]


def load_transcript(name: str, prompt_root: Path) -> Transcript:
    """Read a fixture; ``{PROMPTS}`` becomes ``prompt_root`` as the controller quotes it."""
    text = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8")
    head, sep, body = text.partition("\n\n")
    assert sep, f"{name}: no blank line after the environment block"
    for line in head.split("\n"):
        assert line.startswith("agi_") and ": " in line, (
            f"{name}: bad environment line {line!r} (an empty value keeps the space: 'agi_accountcode: ')")
    root = quote_arg(str(prompt_root))[1:-1]
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith(">> "):
            steps.append((line[3:].replace(PROMPT_ROOT_MARK, root), []))
        elif line.startswith("<< "):
            assert steps, f"{name}: a reply before any command"
            steps[-1][1].append(line[3:])
        else:
            raise AssertionError(f"{name}: line is neither '>> ' nor '<< ': {line!r}")
    return Transcript(name, (head + "\n\n").encode(), steps)


def env_value(t: Transcript, key: str) -> str:
    for line in t.env.decode().splitlines():
        k, _, v = line.partition(": ")
        if k == f"agi_{key}":
            return v
    raise KeyError(key)


async def replay(port: int, t: Transcript) -> list[str]:
    """Play Asterisk's side of ``t``; return every line the controller sent (stops at the first surprise)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent: list[str] = []
    try:
        writer.write(t.env)
        for expected, replies in t.steps:
            line = (await asyncio.wait_for(reader.readline(), IO_TIMEOUT)).decode()
            sent.append(line.rstrip("\n") if line else "<connection closed>")
            if sent[-1] != expected:
                return sent
            writer.write("".join(f"{r}\n" for r in replies).encode())
        # the recording ends here: the controller must close without another command
        extra = (await asyncio.wait_for(reader.readline(), IO_TIMEOUT)).decode()
        if extra:
            sent.append(extra.rstrip("\n"))
        return sent
    finally:
        writer.close()


@pytest.fixture
async def stack(prompts: PromptLibrary) -> AsyncIterator[Any]:
    """Factory: (world) -> running AgiServer with the engine over the shipped menus."""
    servers: list[AgiServer] = []

    async def start(world: World) -> tuple[AgiServer, MenuEngine]:
        engine = MenuEngine(shipped_menus(), prompts, world.sink, "en", world.services())
        router = AgiRouter()
        router.register("menu", engine.run)
        router.register("survey", engine.run_survey)
        server = AgiServer(router, "127.0.0.1", 0, read_timeout=IO_TIMEOUT)
        await server.start()
        servers.append(server)
        return server, engine

    yield start
    for s in servers:
        await s.stop(grace=1.0)


async def until_idle(server: AgiServer) -> None:
    deadline = time.monotonic() + IO_TIMEOUT
    while server.active_calls:
        assert time.monotonic() < deadline, "the AGI call did not finish"
        await asyncio.sleep(0.005)


# --------------------------------------------------- what each recording implies
STATUS_APPROVED = {"reference": "1000001", "booking": "314150", "status": "approved", "source": "agent",
                   "amount": "412.50", "created": "1795600000.5",
                   "history": [{"at": 1795600000.5, "status": "received", "by": "ivr"},
                               {"at": 1795610000.0, "status": "approved", "by": "agent"}]}


def approved(booking: str, reference: str) -> dict[str, Any]:
    return {**STATUS_APPROVED, "booking": booking, "reference": reference}


def status_vars(booking: str, reference: str) -> dict[str, str]:
    """ctx.vars after a found status look-up: the booking plus flat result fields (no history list)."""
    return {"booking": booking, "refund_reference": reference, "refund_booking": booking,
            "refund_status": "approved", "refund_source": "agent", "refund_amount": "412.50",
            "refund_created": "1795600000.5", "said": "refund_status_lookup:approved"}


def created_vars(booking: str, reference: str, caller: str, lang: str, uid: str) -> dict[str, str]:
    """ctx.vars after ``create``: every flat field of the new refund (values up to 64 characters)."""
    return {"booking": booking, "refund_reference": reference, "refund_booking": booking,
            "refund_status": "received", "refund_caller": caller, "refund_lang": lang, "refund_source": "ivr",
            "refund_call_uid": uid, "refund_amount": "", "refund_created": "1795614309.14",
            "refund_updated": "1795614309.14",
            "refund_history": '[{"at": 1795614309.14, "status": "received", "by": "ivr"}]',
            "said": "refund_create:received"}


@dataclass(frozen=True)
class Case:
    """One fixture: the world it was recorded in and what the engine must have done."""

    refunds: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    next_reference: int = 1000001
    next_callback: int = 1
    estimates: Mapping[str, float | None] = field(default_factory=dict)
    # menu calls: the call record; None for survey calls (they write no record)
    path: tuple[str, ...] | None = None
    language: str = "en"
    outcome: str = ""
    queue: str = ""
    vars: Mapping[str, str] | None = None
    lookups: tuple[tuple[str, str], ...] = ()        # (operation, booking)
    callback: str = ""                               # number stored
    survey: int | None = None
    survey_queue: str = ""
    estimates_asked: tuple[str, ...] = ()
    promise_s: float | None = None                   # the callback promise (None: none can be made)


START = ("recognise", "language", "banner", "main")
REASON_OF = {"refund_status": "refund_status", "refund_request": "refund_request", "q_rebooking": "rebooking",
             "q_support": "other", "callback": "callback", "notified": "notice"}

# The recorded call of each fixture is its agi_uniqueid (call <uid> in the DEBUG log).
CASES: dict[str, Case] = {
    # 1 -> booking found, status read back -> goodbye (self-service)
    "en_refund_status_found": Case(
        refunds={"314150": approved("314150", "1000001")},
        path=START + ("refund_status", "refund_status_lookup", "goodbye_self_service"),
        outcome="self_service", vars=status_vars("314150", "1000001"), lookups=(("status", "314150"),)),
    "fa_refund_status_found": Case(
        refunds={"314151": approved("314151", "1000002")}, language="fa",
        path=START + ("refund_status", "refund_status_lookup", "goodbye_self_service"),
        outcome="self_service", vars=status_vars("314151", "1000002"), lookups=(("status", "314151"),)),
    # 2 -> refund request created, reference read back with SAY DIGITS
    "en_refund_request": Case(
        next_reference=1000004, path=START + ("refund_request", "refund_create", "goodbye_self_service"),
        outcome="self_service",
        vars=created_vars("271820", "1000004", "55500050", "en", "1795614303.3"), lookups=(("create", "271820"),)),
    "fa_refund_request": Case(
        next_reference=1000005, language="fa",
        path=START + ("refund_request", "refund_create", "goodbye_self_service"), outcome="self_service",
        vars=created_vars("271821", "1000005", "55501050", "fa", "1795614303.11"), lookups=(("create", "271821"),)),
    # 9 -> the caller's number read back, 1 pressed during it -> callback stored
    "en_callback": Case(
        next_callback=1, path=START + ("callback",), outcome="callback_requested", queue="support",
        vars={"callback_id": "1"}, callback="55500010"),
    "zh_callback": Case(
        next_callback=3, language="zh", path=START + ("callback",), outcome="callback_requested", queue="support",
        vars={"callback_id": "3"}, callback="55502010"),
    # no key three times -> support queue (estimate 0 s: nothing announced)
    "en_timeouts_queued": Case(
        estimates={"support": 0.0}, path=START + ("retries-exhausted", "q_support"), outcome="queued",
        queue="support", estimates_asked=("support",)),
    "fa_timeouts_queued": Case(
        estimates={"support": 0.0}, language="fa", path=START + ("retries-exhausted", "q_support"),
        outcome="queued", queue="support", estimates_asked=("support",)),
    "fa_timeouts_queued_survey": Case(language="fa", survey=None, survey_queue="support"),
    # 7 (invalid) then 4 -> support queue
    "en_invalid_key_then_support": Case(
        estimates={"support": 0.0}, path=START + ("q_support",), outcome="queued", queue="support",
        estimates_asked=("support",)),
    "fa_invalid_key_then_support": Case(
        estimates={"support": 0.0}, language="fa", path=START + ("q_support",), outcome="queued",
        queue="support", estimates_asked=("support",)),
    # hang-up during the main menu (GET DATA answers result=-1)
    "en_hangup_in_menu": Case(path=START),
    "fa_hangup_in_menu": Case(language="fa", path=START),
    # 1 -> booking unknown -> "not found" -> main menu again -> hang-up
    "en_status_not_found_then_hangup": Case(
        path=START + ("refund_status", "refund_status_lookup", "refund_status_none", "main"),
        vars={"booking": "987654", "said": "refund_status_lookup:not_found"}, lookups=(("status", "987654"),)),
    # 3 -> nobody serves rebooking now (infinite estimate) but a callback can be promised within the hour:
    # callback offered, 2 declines -> queued, no estimate said
    "en_rebooking_callback_declined": Case(
        estimates={"rebooking": math.inf}, path=START + ("q_rebooking",), outcome="queued", queue="rebooking",
        estimates_asked=("rebooking",), promise_s=3600.0),
    # 2 -> 000000 three times (refused by the booking validator) -> refunds queue, "about 2 minutes" (90 s)
    "zh_invalid_booking_wait_announced": Case(
        estimates={"refunds": 90.0}, language="zh", path=START + ("refund_request", "retries-exhausted", "q_refunds"),
        outcome="queued", queue="refunds", estimates_asked=("refunds",)),
    # post-call surveys (survey/main, after the agent hung up)
    "en_survey_score": Case(survey=4, survey_queue="support"),
    "zh_survey_score": Case(language="zh", survey=4, survey_queue="support"),
}


def test_every_fixture_has_a_case() -> None:
    on_disk = {p.stem for p in FIXTURES.glob("*.txt")}
    assert on_disk == set(CASES)
    assert len(on_disk) >= 14


@pytest.mark.parametrize("name", sorted(CASES))
async def test_recorded_call_replays(name: str, stack: Any, prompts: PromptLibrary) -> None:
    case = CASES[name]
    t = load_transcript(name, prompts.root)
    uid, caller = env_value(t, "uniqueid"), env_value(t, "callerid")
    is_survey = env_value(t, "network_script").startswith("survey/")
    world = World(refunds=FakeRefunds(case.refunds, next_reference=case.next_reference),
                  callbacks=FakeCallbacks(case.next_callback), estimates=dict(case.estimates),
                  promises=FakePromises(case.promise_s))
    server, engine = await stack(world)

    sent = await replay(server.port, t)

    # every command, in order, and nothing after the last recorded one
    assert sent == t.commands
    await until_idle(server)
    assert server.calls_total == 1
    assert server.calls_failed == 0, "the handler failed: the call would have gone to the fallback queue"

    # side effects
    assert [(op, p["booking"]) for op, p in world.refunds.calls] == list(case.lookups)
    for _, params in world.refunds.calls:
        assert params["uid"] == uid and params["caller"] == caller and params["lang"] == case.language
    assert world.estimates_asked == list(case.estimates_asked)

    if case.callback:
        (cb,) = world.callbacks.requests
        assert cb == {"id": case.vars["callback_id"], "number": case.callback, "queue": "support",
                      "lang": case.language, "call_uid": uid, "caller": caller, "place": cb["place"],
                      "status": "pending", "attempts": 0}
        assert isinstance(cb["place"], float) and cb["place"] <= time.time()
    else:
        assert world.callbacks.requests == []

    if is_survey:
        assert world.sink.tracked == [] and world.sink.saved == []      # the survey writes no call record
        assert world.banner_asked == []
        expected_survey = [] if case.survey is None else [
            {"uid": uid, "score": case.survey, "menu": "main", "lang": case.language, "queue": case.survey_queue,
             "agent": ""}]
        assert world.surveys.records == expected_survey
        return

    assert world.surveys.records == []
    assert world.banner_asked == [case.language]          # the live banner is asked in the chosen language
    assert world.sink.tracked == [uid]
    (saved_uid, record), = world.sink.saved
    assert saved_uid == uid
    assert json.loads(record.pop("path")) == list(case.path or ())
    assert json.loads(record.pop("vars", "{}")) == dict(case.vars or {})
    started, seconds = record.pop("started_at"), record.pop("ivr_seconds")
    # the record keeps the wait estimate the caller met at the queue node (when there was one)
    met = world.estimates.get(case.estimates_asked[-1]) if case.estimates_asked else None
    assert record.pop("estimate", None) == (None if met is None or math.isinf(met) else str(round(met)))
    assert isinstance(started, float) and isinstance(seconds, float) and 0 <= seconds < IO_TIMEOUT
    # the reason: the last node on the path that main.yaml gives one (none: hung up before choosing)
    reason = next((REASON_OF[n] for n in reversed(case.path or ()) if n in REASON_OF), "none")
    assert record == {"caller": caller, "channel": env_value(t, "channel"), "menu": "main",
                      "language": case.language, "ivr_queue": case.queue, "ivr_outcome": case.outcome,
                      "reason": reason}
    hung_up = case.outcome == ""                 # the walk ended with AgiHangup (GET DATA answered -1)
    assert engine.calls_completed == (0 if hung_up else 1)


async def test_a_different_answer_changes_the_conversation(stack: Any, prompts: PromptLibrary) -> None:
    """The replay really checks: the same recording with an unknown booking makes the engine diverge."""
    t = load_transcript("en_refund_status_found", prompts.root)
    world = World()                       # no refund for 314150 this time
    server, _ = await stack(world)
    sent = await replay(server.port, t)
    assert sent[:5] == t.commands[:5]
    assert sent[5] == f'STREAM FILE "{prompts.root}/en/status-not-found" "0"' != t.commands[5]


async def test_a_recording_cut_short_is_noticed(stack: Any, prompts: PromptLibrary) -> None:
    """The replay checks the end too: without the last recorded step the engine's next command is extra."""
    t = load_transcript("en_callback", prompts.root)
    last = t.steps.pop()
    server, _ = await stack(World())
    sent = await replay(server.port, t)
    assert sent == t.commands + [last[0]]


def test_fixture_replies_are_valid_wire_replies(prompts: PromptLibrary) -> None:
    """Every recorded reply parses; the environment blocks parse into what the engine reads."""
    from ivr.core.agi import NEED_DATA, AgiConnection, AgiEnvironment

    for name in sorted(CASES):
        t = load_transcript(name, prompts.root)
        conn = AgiConnection()
        conn.receive_data(t.env)
        env = conn.next_event()
        assert isinstance(env, AgiEnvironment), name
        assert env.uniqueid and env.callerid.isdigit() and env.language in LANGUAGES
        assert env.network_script in ("menu/main", "survey/main")
        for cmd, replies in t.steps:
            conn.send_command("NOOP")
            for r in replies:
                conn.receive_data(f"{r}\n".encode())
                assert conn.next_event() is not NEED_DATA, (name, cmd, r)
        raw = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8")
        assert "audio_prompts" not in raw, f"{name}: a prompt path that is not under {PROMPT_ROOT_MARK}"
