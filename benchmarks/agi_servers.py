"""Compare three FastAGI servers under the same synthetic load, in one run.

Servers (each in its own subprocess, on 127.0.0.1 and a free port):

* ``ivr``        this project: ``ivr.asterisk.agi_server.AgiServer`` + ``AgiRouter``
* ``panoramisk`` ``panoramisk.fast_agi.Application`` on ``asyncio.start_server``
* ``pyst2``      ``asterisk.agi.AGI`` over ``socket.makefile`` text streams, served by
                 ``socketserver.ForkingTCPServer`` (one forked process per call; pyst2's
                 own ``asterisk.fastagi`` is Python-2 only)

All three run the same 10-command "IVR script" (see ``SCRIPT`` below). The load
generator is a separate asyncio process playing "fake Asterisk": it keeps C
connections busy; per call it sends an AGI environment block, answers each command,
and checks that the call carried exactly the expected 10 commands (two of them depend
on the call's ``agi_uniqueid`` and on the digit "pressed" in GET DATA, so a server has
to really parse the environment and the replies). A call with any other command, a
command sent before the previous reply, a missing command, a timeout or a reset counts
as failed. The run stops after N calls or T seconds, whichever comes first.

Timing: *turnaround* is the time from the generator writing a reply to it reading the
next command (9 samples per call); *setup* is the time from starting the TCP connect
to reading the first command (accept + environment parsing + handler start, and for
pyst2 the fork). Both include the generator's own scheduling delay, so read them
together with the generator's CPU column: at ~100 % the generator, not the server,
is the limit (use ``--generators 2``).

Usage::

    python benchmarks/agi_servers.py                      # 5000 calls, 50 concurrent, 60 s cap
    python benchmarks/agi_servers.py --servers ivr,pyst2 --calls 1000 --json

Internal modes (used by the orchestrator): ``--serve NAME`` and ``--generate``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

HOST = "127.0.0.1"
SERVERS = ("ivr", "panoramisk", "pyst2")
BASELINE = "ivr"
SCRIPT_NAME = "bench"
CALLERID = "5550000"
COMMANDS_PER_CALL = 10

# --------------------------------------------------------------------------------------
# The IVR script. The generator checks each command as Asterisk would parse it
# (res_agi.c parse_args: whitespace-separated words, double quotes group, backslash
# escapes), so quoting style does not matter, only the words do.
# ``{uid}`` is the call's agi_uniqueid, ``{digit}`` the digit returned by GET DATA.


def expected_commands(uid: str, digit: str) -> list[list[str]]:
    return [
        ["ANSWER"],
        ["STREAM", "FILE", "prompt", "0123456789"],
        ["GET", "DATA", "menu", "5000", "1"],
        ["SET", "VARIABLE", "X", "y"],
        ["GET", "VARIABLE", "CALLERID(num)"],
        ["SAY", "DIGITS", "12345", "#"],
        ["WAIT", "FOR", "DIGIT", "2000"],
        ["VERBOSE", f"bench call {uid}", "3"],
        ["EXEC", "Playback", "beep"],
        ["SET", "VARIABLE", "IVR_NEXT", f"menu-{digit}"],
    ]


def replies(digit: str) -> list[bytes]:
    """What a live Asterisk channel answers to each command of the script."""
    return [
        b"200 result=0\n",                     # ANSWER
        b"200 result=0 endpos=16000\n",        # STREAM FILE, played to the end
        f"200 result={digit}\n".encode(),      # GET DATA: one digit pressed (max_digits=1)
        b"200 result=1\n",                     # SET VARIABLE
        f"200 result=1 ({CALLERID})\n".encode(),  # GET VARIABLE
        b"200 result=0\n",                     # SAY DIGITS, not interrupted
        b"200 result=0\n",                     # WAIT FOR DIGIT, timed out
        b"200 result=1\n",                     # VERBOSE
        b"200 result=0\n",                     # EXEC Playback
        b"200 result=1\n",                     # SET VARIABLE
    ]


# --------------------------------------------------------------------------------------
# Servers


async def _ivr_handler(s) -> None:
    await s.answer()
    await s.stream_file("prompt", "0123456789")
    digits, _timed_out = await s.get_data("menu", 5000, 1)
    await s.set_variable("X", "y")
    await s.get_variable("CALLERID(num)")
    await s.say_digits("12345", "#")
    await s.wait_for_digit(2000)
    await s.verbose(f"bench call {s.uniqueid}", 3)
    await s.exec("Playback", "beep")
    await s.set_variable("IVR_NEXT", f"menu-{digits}")


async def _panoramisk_handler(request) -> None:
    async def cmd(line: str) -> dict:
        result = await request.send_command(line)
        if "error" in result:
            raise RuntimeError(f"{line!r}: {result}")
        return result

    uid = request.headers["agi_uniqueid"]
    await cmd("ANSWER")
    await cmd('STREAM FILE prompt "0123456789"')
    digits = (await cmd("GET DATA menu 5000 1"))["result"][0]
    await cmd("SET VARIABLE X y")
    await cmd("GET VARIABLE CALLERID(num)")
    await cmd('SAY DIGITS 12345 "#"')
    await cmd("WAIT FOR DIGIT 2000")
    await cmd(f'VERBOSE "bench call {uid}" 3')
    await cmd("EXEC Playback beep")
    await cmd(f"SET VARIABLE IVR_NEXT menu-{digits}")


def _pyst2_script(agi) -> None:
    agi.answer()
    agi.stream_file("prompt", "0123456789")   # sends the sample offset too: ... "0123456789" 0
    digits = agi.get_data("menu", 5000, 1)
    agi.set_variable("X", "y")
    agi.get_variable("CALLERID(num)")
    agi.say_digits("12345", "#")
    agi.wait_for_digit(2000)
    agi.verbose(f"bench call {agi.env['agi_uniqueid']}", 3)
    agi.appexec("Playback", "beep")
    agi.set_variable("IVR_NEXT", f"menu-{digits}")


class _NullWriter:
    """pyst2 writes a debug line to ``stderr`` for every command and reply: drop them."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def _announce_port(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


async def _serve_asyncio(name: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if name == "ivr":
        from ivr.asterisk.agi_server import AgiRouter, AgiServer

        router = AgiRouter()
        router.register(SCRIPT_NAME, _ivr_handler)
        server = AgiServer(router, HOST, port)
        await server.start()
        _announce_port(server.port)
        await stop.wait()
        await server.stop(grace=2.0)
    else:
        from panoramisk.fast_agi import Application

        app = Application(loop=loop)
        app.add_route(SCRIPT_NAME, _panoramisk_handler)
        server = await asyncio.start_server(app.handler, HOST, port, backlog=1024,
                                            reuse_address=True)
        _announce_port(server.sockets[0].getsockname()[1])
        await stop.wait()
        server.close()
        await server.wait_closed()


def _serve_pyst2(port: int) -> None:
    import socketserver

    from asterisk.agi import AGI

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            rfile = self.request.makefile("r", encoding="utf-8")
            wfile = self.request.makefile("w", encoding="utf-8")
            try:
                _pyst2_script(AGI(stdin=rfile, stdout=wfile, stderr=_NullWriter()))
            finally:
                try:
                    wfile.close()
                finally:
                    rfile.close()

    class Server(socketserver.ForkingTCPServer):
        allow_reuse_address = True
        request_queue_size = 1024   # listen backlog, as for the asyncio servers (default: 5)
        max_children = 1024         # default 40 would cap concurrency below the load's 50

    def _term(_sig, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _term)
    server = Server((HOST, port), Handler)
    _announce_port(server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.2)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()


def serve(name: str, port: int) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if name == "pyst2":
        _serve_pyst2(port)
    else:
        asyncio.run(_serve_asyncio(name, port))


# --------------------------------------------------------------------------------------
# Load generator ("fake Asterisk")


def parse_agi_words(line: str) -> list[str]:
    """Split a command line into words like Asterisk's res_agi.c parse_args()."""
    if '"' not in line and "\\" not in line:
        return line.split()
    words: list[str] = []
    cur: list[str] = []
    in_word = quoted = escaped = False
    for ch in line:
        if escaped:
            cur.append(ch)
            in_word, escaped = True, False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            in_word = True
        elif ch in " \t" and not quoted:
            if in_word:
                words.append("".join(cur))
                cur, in_word = [], False
        else:
            cur.append(ch)
            in_word = True
    if in_word:
        words.append("".join(cur))
    return words


def environment(port: int, uid: str, n: int) -> bytes:
    lines = [
        "agi_network: yes",
        f"agi_network_script: {SCRIPT_NAME}",
        f"agi_request: agi://{HOST}:{port}/{SCRIPT_NAME}",
        f"agi_channel: PJSIP/x-{n:08x}",
        "agi_language: en",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uid}",
        "agi_version: 20.5.0",
        f"agi_callerid: {CALLERID}",
        "agi_calleridname: Bench Caller",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: 100",
        "agi_rdnis: unknown",
        "agi_context: ivr-inbound",
        "agi_extension: s",
        "agi_priority: 1",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140000000000",
    ]
    return ("\n".join(lines) + "\n\n").encode()


class FakeAsterisk(asyncio.Protocol):
    """One call as Asterisk's res_agi sees it: environment out, then command in / reply out."""

    def __init__(self, gen: "Generator", uid: str, digit: str, t_connect: float) -> None:
        self.gen = gen
        self.uid = uid
        self.expected = expected_commands(uid, digit)
        self.replies = replies(digit)
        self.env = environment(gen.port, uid, gen.calls_started)
        self.idx = 0
        self.buf = b""
        self.t_connect = t_connect
        self.t_sent = 0.0
        self.last_activity = time.monotonic()
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[str | None] = gen.loop.create_future()
        self.setup = 0.0
        self.turnarounds: list[float] = []

    def finish(self, error: str | None) -> None:
        if not self.done.done():
            self.done.set_result(error)
        if error is not None and self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.env)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.last_activity = time.monotonic()
        buf = self.buf + data if self.buf else data
        nl = buf.find(b"\n")
        if nl < 0:
            self.buf = buf
            return
        if nl != len(buf) - 1:
            # A second line in the same read: sent before our reply could have arrived.
            self.finish(f"cmd{self.idx + 1}: data after the command, before our reply")
            return
        self.buf = b""
        if self.idx == 0:
            self.setup = now - self.t_connect
        else:
            self.turnarounds.append(now - self.t_sent)
        if self.idx >= COMMANDS_PER_CALL:
            self.finish(f"extra command after {COMMANDS_PER_CALL}: {buf[:60]!r}")
            return
        words = parse_agi_words(buf.rstrip(b"\r\n").decode("utf-8", "replace"))
        if self.idx == 1 and len(words) == 5 and words[4] == "0":
            del words[4]  # STREAM FILE's optional sample offset; 0 is Asterisk's default
        if words != self.expected[self.idx]:
            self.finish(f"cmd{self.idx + 1}: expected {self.expected[self.idx][:2]}..., "
                        f"got {buf[:60]!r}")
            return
        self.transport.write(self.replies[self.idx])
        self.t_sent = time.perf_counter()
        self.idx += 1

    def eof_received(self) -> bool:
        if self.buf:
            self.finish("partial line at EOF")
        elif self.idx == COMMANDS_PER_CALL:
            self.finish(None)
        else:
            self.finish(f"closed after {self.idx} of {COMMANDS_PER_CALL} commands")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.finish(f"connection lost: {type(exc).__name__}")
        elif self.idx == COMMANDS_PER_CALL and not self.buf:
            self.finish(None)
        else:
            self.finish(f"connection lost after {self.idx} of {COMMANDS_PER_CALL} commands")


class Generator:
    def __init__(self, port: int, gen_id: int, call_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.gen_id = gen_id
        self.call_timeout = call_timeout
        self.calls_started = 0
        self.active: set[FakeAsterisk] = set()
        self.reset()

    def reset(self) -> None:
        self.ok = 0
        self.failed = 0
        self.reasons: Counter[str] = Counter()
        self.setups: list[float] = []
        self.turnarounds: list[float] = []

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            limit = time.monotonic() - self.call_timeout
            for call in list(self.active):
                if call.last_activity < limit:
                    call.finish(f"timeout: no data for {self.call_timeout:g} s "
                                f"after {call.idx} commands")

    async def _one_call(self) -> None:
        self.calls_started += 1
        n = self.calls_started
        uid = f"17000{self.gen_id:02d}.{n}"
        digit = str(1 + n % 9)
        t0 = time.perf_counter()
        call = FakeAsterisk(self, uid, digit, t0)
        self.active.add(call)
        try:
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: call, HOST, self.port),
                    self.call_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                call.finish(f"connect: {type(exc).__name__}")
            error = await call.done
        finally:
            self.active.discard(call)
            if call.transport is not None:
                call.transport.close()
        if error is None:
            self.ok += 1
            self.setups.append(call.setup)
            self.turnarounds.extend(call.turnarounds)
        else:
            self.failed += 1
            self.reasons[error] += 1

    async def run(self, calls: int, concurrency: int, seconds: float) -> float:
        """Run until ``calls`` calls ended or ``seconds`` passed (in-flight calls finish)."""
        deadline = time.monotonic() + seconds
        target = self.calls_started + calls

        async def worker() -> None:
            while self.calls_started < target and time.monotonic() < deadline:
                await self._one_call()

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        return t0


async def generate(args: argparse.Namespace) -> None:
    gen = Generator(args.port, args.gen_id, args.call_timeout)
    watchdog = asyncio.create_task(gen._watchdog())
    if args.warmup_calls > 0:
        await gen.run(args.warmup_calls, min(args.concurrency, args.warmup_calls), args.warmup_seconds)
    warm = {"ok": gen.ok, "failed": gen.failed, "reasons": dict(gen.reasons)}
    gen.reset()
    print("READY", json.dumps(warm), flush=True)
    go = await gen.loop.run_in_executor(None, sys.stdin.readline)
    if go.strip() != "GO":
        watchdog.cancel()
        return
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = await gen.run(args.calls, args.concurrency, args.seconds)
    t_end = time.monotonic()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    watchdog.cancel()
    result = {
        "ok": gen.ok,
        "failed": gen.failed,
        "reasons": dict(gen.reasons),
        "t_start": t_start,
        "t_end": t_end,
        "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        # microseconds, as ints: compact on the pipe
        "setups_us": [round(x * 1e6) for x in gen.setups],
        "turnarounds_us": [round(x * 1e6) for x in gen.turnarounds],
    }
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------
# Orchestrator


def _proc_cpu_s(pid: int) -> float:
    """User+system CPU of ``pid`` plus its reaped children (pyst2's forked calls)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    # fields[0] is state (field 3): utime..cstime are fields 14-17
    return sum(int(x) for x in fields[11:15]) / ticks


def _read_line(proc: subprocess.Popen, timeout: float, prefix: str) -> str:
    """Read stdout lines of ``proc`` until one starts with ``prefix``; return the rest."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"no {prefix!r} line from pid {proc.pid} in {timeout:g} s")
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"pid {proc.pid} exited (rc={proc.wait()}) before {prefix!r}")
            if line.startswith(prefix):
                return line[len(prefix):].strip()
    finally:
        sel.close()


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pct(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of microsecond samples, in ms."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k] / 1000.0


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_one(name: str, args: argparse.Namespace) -> dict:
    me = os.path.abspath(__file__)
    py = sys.executable
    errlog = tempfile.TemporaryFile(mode="w+")
    server = subprocess.Popen([py, me, "--serve", name, "--port", "0"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=errlog, text=True)
    gens: list[subprocess.Popen] = []
    try:
        port = int(_read_line(server, 30, "PORT "))
        k = max(1, args.generators)
        calls = _split(args.calls, k)
        conc = _split(args.concurrency, k)
        warm = _split(args.warmup_calls, k)
        for i in range(k):
            gens.append(subprocess.Popen(
                [py, me, "--generate", "--port", str(port), "--gen-id", str(i),
                 "--calls", str(calls[i]), "--concurrency", str(max(1, conc[i])),
                 "--seconds", str(args.seconds), "--warmup-calls", str(warm[i]),
                 "--warmup-seconds", str(args.warmup_seconds),
                 "--call-timeout", str(args.call_timeout)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        warm_failed = 0
        for g in gens:
            warm_failed += json.loads(_read_line(g, args.warmup_seconds + args.call_timeout + 30,
                                                 "READY "))["failed"]
        cpu0 = _proc_cpu_s(server.pid)
        for g in gens:
            g.stdin.write("GO\n")
            g.stdin.flush()
        results = [json.loads(_read_line(g, args.seconds + args.call_timeout + 60, "RESULT "))
                   for g in gens]
        cpu1 = _proc_cpu_s(server.pid)
        for g in gens:
            g.wait(10)
    finally:
        for g in gens:
            if g.poll() is None:
                g.kill()
                g.wait()
        _stop(server)
        errlog.seek(0)
        server_err = errlog.read()
        errlog.close()

    ok = sum(r["ok"] for r in results)
    failed = sum(r["failed"] for r in results)
    reasons: Counter[str] = Counter()
    for r in results:
        reasons.update(r["reasons"])
    elapsed = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    turn = sorted(x for r in results for x in r["turnarounds_us"])
    setup = sorted(x for r in results for x in r["setups_us"])
    gen_cpu = sum(r["cpu_s"] for r in results)
    return {
        "server": name,
        "calls_ok": ok,
        "calls_failed": failed,
        "calls_attempted": ok + failed,
        "commands": ok * COMMANDS_PER_CALL,
        "elapsed_s": elapsed,
        "calls_per_s": ok / elapsed if elapsed > 0 else 0.0,
        "commands_per_s": ok * COMMANDS_PER_CALL / elapsed if elapsed > 0 else 0.0,
        "turnaround_p50_ms": _pct(turn, 50),
        "turnaround_p99_ms": _pct(turn, 99),
        "setup_p50_ms": _pct(setup, 50),
        "setup_p99_ms": _pct(setup, 99),
        "server_cpu_pct": 100 * (cpu1 - cpu0) / elapsed if elapsed > 0 else float("nan"),
        "generator_cpu_pct": 100 * gen_cpu / elapsed if elapsed > 0 else float("nan"),
        "generators": len(results),
        "warmup_failed": warm_failed,
        "failure_reasons": dict(reasons.most_common(10)),
        "server_stderr_tail": server_err.strip().splitlines()[-5:],
    }


RATIO_KEYS = ("calls_per_s", "commands_per_s", "turnaround_p50_ms", "turnaround_p99_ms",
              "setup_p50_ms")


def add_ratios(results: dict[str, dict]) -> str | None:
    base_name = BASELINE if BASELINE in results else None
    for res in results.values():
        if base_name is None:
            res["ratio_to_" + BASELINE] = None
            continue
        base = results[base_name]
        res["ratio_to_" + BASELINE] = {
            key: (res[key] / base[key] if base[key] else None) for key in RATIO_KEYS}
    return base_name


def format_table(results: dict[str, dict], base_name: str | None) -> str:
    def cell(res: dict, key: str, fmt: str) -> str:
        text = format(res[key], fmt)
        ratio = (res.get("ratio_to_" + BASELINE) or {}).get(key)
        return f"{text} ({ratio:.2f}x)" if ratio is not None else text

    header = ["server", "calls/s", "commands/s", "p50 ms", "p99 ms", "failed",
              "setup p50 ms", "srv CPU%", "gen CPU%"]
    rows = [header]
    for name, res in results.items():
        rows.append([
            name,
            cell(res, "calls_per_s", ".1f"),
            cell(res, "commands_per_s", ".0f"),
            cell(res, "turnaround_p50_ms", ".3f"),
            cell(res, "turnaround_p99_ms", ".3f"),
            f"{res['calls_failed']}/{res['calls_attempted']}",
            cell(res, "setup_p50_ms", ".3f"),
            f"{res['server_cpu_pct']:.0f}",
            f"{res['generator_cpu_pct']:.0f}",
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    note = (f"(x) = ratio to {base_name}; p50/p99 = command turnaround (reply sent -> next "
            "command read); setup = connect -> first command; CPU% of one core "
            f"({os.cpu_count()} cores)") if base_name else "(no ivr run: no ratios)"
    return "\n".join(lines) + "\n" + note


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=5000, help="calls per server (default 5000)")
    p.add_argument("--concurrency", type=int, default=50, help="concurrent calls (default 50)")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="time limit per server; calls in flight then finish (default 60)")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help=f"comma-separated subset of {','.join(SERVERS)}")
    p.add_argument("--generators", type=int, default=1,
                   help="load-generator processes; calls and concurrency are split (default 1)")
    p.add_argument("--warmup-calls", type=int, default=200, help="unmeasured calls first (default 200)")
    p.add_argument("--warmup-seconds", type=float, default=5.0)
    p.add_argument("--call-timeout", type=float, default=10.0,
                   help="a call fails after this long without data from the server")
    p.add_argument("--json", action="store_true", help="print machine-readable results")
    # internal modes
    p.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    p.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--gen-id", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve:
        serve(args.serve, args.port)
        return 0
    if args.generate:
        asyncio.run(generate(args))
        return 0

    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown or not names:
        p.error(f"--servers: unknown {unknown}; choose from {', '.join(SERVERS)}")
    if args.calls < 1 or args.concurrency < 1 or args.seconds <= 0 or args.generators < 1:
        p.error("--calls, --concurrency, --generators must be >= 1 and --seconds > 0")

    results: dict[str, dict] = {}
    for name in names:
        if not args.json:
            print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_one(name, args)
        res = results[name]
        if res["calls_failed"] or res["warmup_failed"]:
            print(f"{name}: {res['calls_failed']} failed calls ({res['warmup_failed']} in warm-up): "
                  f"{res['failure_reasons']}", file=sys.stderr)
            for line in res["server_stderr_tail"]:
                print(f"  {name} stderr: {line}", file=sys.stderr)
    base_name = add_ratios(results)
    if args.json:
        out = {
            "config": {"calls": args.calls, "concurrency": args.concurrency,
                       "seconds": args.seconds, "generators": args.generators,
                       "warmup_calls": args.warmup_calls, "commands_per_call": COMMANDS_PER_CALL,
                       "cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "baseline": base_name,
            "results": results,
        }
        print(json.dumps(out, indent=2))
    else:
        print(format_table(results, base_name))
    return 0 if all(r["calls_failed"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
