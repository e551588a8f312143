"""SIPp drivers for the demo, the tests and the benchmarks (loopback only).

``CallerScript`` writes a UAC scenario that dials the inbound extension, sends
RFC 2833 DTMF from the pcaps SIPp ships, then either hangs up or waits for the
far end's BYE. ``agent_scenario`` writes a UAS that answers, talks for N ms and
hangs up (or takes the caller's BYE). Every SIPp run is bounded (``-timeout``)
and bound to 127.0.0.1; a target that is not a loopback address is refused.
"""

from __future__ import annotations

import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .stack import port_bindable

from .sipp_media import PCAP_SEQ, RtpClock, write_audio_prelude, write_dtmf_pcap
from .sipp_scenarios import (CallerScript, agent_scenario, callee_scenario, dial_as_scenario, register_scenario,
                             registrar_scenario)



# Ports for SIPp (its SIP port and its media block) come from a range of their own, below the kernel's
# ephemeral range (32768-60999 on Debian), Asterisk's default RTP range (20000-20999) and the port bases
# tests and benchmarks put private stacks on (20000 and up), handed out
# in turn: a port the kernel picked for "any free port" could be picked again by the next SIPp started a
# moment later, before the first one bound it (27 callers started at once lost that race now and then).
SIPP_PORTS: tuple[int, ...] = (12000, 20000)
if os.environ.get("IVR_SIPP_PORTS"):   # "first-last", a slice of it: test workers running side by side get one each
    SIPP_PORTS = tuple(int(p) // 4 * 4 for p in os.environ["IVR_SIPP_PORTS"].split("-", 1))
_next_block = random.randrange(SIPP_PORTS[0], SIPP_PORTS[1], 4)
_blocks_lock = threading.Lock()


def _next_free_block(size: int, kinds: tuple[int, ...]) -> int:
    """The next block of four ports (a multiple of 4) in SIPP_PORTS whose first ``size`` ports bind."""
    global _next_block
    span = (SIPP_PORTS[1] - SIPP_PORTS[0]) // 4
    with _blocks_lock:
        for _ in range(span):
            p = _next_block
            _next_block += 4
            if _next_block >= SIPP_PORTS[1]:
                _next_block = SIPP_PORTS[0]
            if all(port_bindable(p + i, kinds) for i in range(size)):
                return p
    raise RuntimeError(f"no free ports left between {SIPP_PORTS[0]} and {SIPP_PORTS[1]} on 127.0.0.1")


def free_port(udp: bool = True) -> int:
    """A port for a SIPp process to listen on (UDP and TCP both free)."""
    return _next_free_block(1, (socket.SOCK_DGRAM, socket.SOCK_STREAM))


def free_port_pair() -> int:
    """A UDP port for SIPp's media: SIPp binds it and the next three (audio RTP + RTCP, video RTP + RTCP),
    so all four must be free (a multiple of 4)."""
    return _next_free_block(4, (socket.SOCK_DGRAM,))


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"SIPp target {host} is not a loopback address: refused")


@dataclass


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    stdout: str
    errors: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0


_STAT_RE = re.compile(r"(Successful call|Failed call)\s+\|\s+\d+\s+\|\s+(\d+)")


def _parse_counts(text: str) -> tuple[int, int]:
    ok = failed = 0
    for kind, total in _STAT_RE.findall(text):
        if kind.startswith("Successful"):
            ok = int(total)
        else:
            failed = int(total)
    return ok, failed


@dataclass
class Sipp:
    """Runs SIPp processes against one Asterisk on loopback."""

    target_host: str = "127.0.0.1"
    target_port: int = 15060
    binary: str = "sipp"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sipp-")))

    def __post_init__(self) -> None:
        _check_loopback(self.target_host)
        if shutil.which(self.binary) is None:
            raise RuntimeError("sipp is not installed (Debian package sip-tester): run scripts/install.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._n = 0

    def _write(self, prefix: str, xml: str) -> Path:
        self._n += 1
        path = self.workdir / f"{prefix}-{os.getpid()}-{self._n}.xml"
        path.write_text(xml, encoding="ascii")
        return path

    def _common(self, port: int, media_port: int, source: str = "127.0.0.1") -> list[str]:
        _check_loopback(source)
        return ["-i", source, "-p", str(port), "-mi", "127.0.0.1", "-mp", str(media_port),
                "-nostdin", "-trace_err", "-max_socket", "4096"]

    def call_args(self, script: CallerScript, *, extension: str, caller: str | None = None, calls: int = 1,
                  rate: float = 1.0, concurrent: int | None = None, timeout_s: int = 120,
                  rate_period_ms: int = 1000, caller_prefix: str | None = None,
                  source: str = "127.0.0.1") -> list[str]:
        """SIPp arguments for ``calls`` callers. With a ``caller`` number every call comes from it; without,
        each call has its own number (``caller_prefix``, random by default, + SIPp's call number), as in a
        real surge: the controller recognises repeat and returning callers by number (ivr/continuity/service.py).
        ``source`` is the loopback address the calls come from (127.0.0.2 is not the test trunk's)."""
        xml = script.xml(self.workdir / "pcap")
        if caller is None:
            caller = caller_prefix or f"55{random.randint(10_000, 99_999)}"
            if not caller.isdigit():
                raise ValueError(f"caller_prefix: digits only, got {caller!r}")
            xml = xml.replace("sip:[caller]@", "sip:[caller][call_number]@")
        scenario = self._write("caller", xml)
        port, mport = free_port(), free_port_pair()
        argv = [self.binary, f"{self.target_host}:{self.target_port}", "-sf", str(scenario), "-s", extension,
                "-key", "caller", caller, "-m", str(calls), "-r", str(rate), "-rp", str(rate_period_ms),
                "-timeout", f"{timeout_s}s", "-timeout_error", "-recv_timeout", f"{timeout_s * 1000}",
                "-error_file", str(self.workdir / f"err-{port}.log"),
                "-trace_stat", "-stf", str(self.workdir / f"stat-{port}.csv"), "-fd", "1",
                *self._common(port, mport, source)]
        if concurrent:
            argv += ["-l", str(concurrent)]
        return argv

    def call(self, script: CallerScript, **kwargs: Any) -> SippResult:
        """Run callers to completion (blocking) and return the counts (``kwargs``: :meth:`call_args`'s)."""
        timeout_s = int(kwargs.get("timeout_s", 120))
        for _attempt in range(3):
            argv = self.call_args(script, **kwargs)
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30, cwd=self.workdir)
            result = self._result(argv, proc.returncode, proc.stdout + proc.stderr)
            # a media port taken between picking it and SIPp binding it: nothing was sent, run it again
            if not (result.successful == 0 and result.failed == 0 and "Unable to bind" in result.errors):
                break
        return result

    def start_calls(self, script: CallerScript, **kwargs: Any) -> subprocess.Popen[str]:
        argv = self.call_args(script, **kwargs)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.workdir)
        proc.argv = argv  # type: ignore[attr-defined]  # kept with the process for its result
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = 180) -> SippResult:
        out, _ = proc.communicate(timeout=timeout)
        return self._result(proc.argv, proc.returncode, out or "")  # type: ignore[attr-defined]  # set by start_calls

    def _result(self, argv: list[str], rc: int, text: str) -> SippResult:
        errfile = Path(argv[argv.index("-error_file") + 1])
        errors = errfile.read_text(errors="replace")[-4000:] if errfile.exists() else ""
        ok, failed = _parse_counts(text)
        stat = Path(argv[argv.index("-stf") + 1])
        if stat.exists() and not (ok or failed):
            ok, failed = _stat_counts(stat)
        return SippResult(rc, ok, failed, text[-4000:], errors)

    def start_agent(self, port: int, talk_ms: int = 3000, ring_ms: int = 100, max_calls: int = 100_000,
                    timeout_s: int = 3600, sends_audio: bool = False,
                    trace_msg: bool = False, via_proxy: bool = False) -> subprocess.Popen[bytes]:
        """Start an agent phone (UAS) listening on 127.0.0.1:port; stop it with ``stop()``. With
        ``sends_audio`` it streams audio (G.711 silence) for the whole of each call, as a real phone does;
        with ``trace_msg`` it logs the SIP messages, for ``invites_received(port, phone="agent")``; with
        ``via_proxy`` it is reached through Kamailio (a cluster) and keeps it in each call's route."""
        pcap = None
        if sends_audio:
            pcap = self.workdir / "pcap" / f"agent-audio-{port}-{next(PCAP_SEQ)}.pcap"
            pcap.parent.mkdir(parents=True, exist_ok=True)
            write_audio_prelude(pcap, RtpClock(), ms=talk_ms)
        scenario = self._write("agent", agent_scenario(talk_ms, ring_ms, pcap, via_proxy))
        # -aa: answer qualify OPTIONS (and INFO/NOTIFY) outside calls, as a registered phone does
        err = self.workdir / f"agent-err-{port}.log"
        argv = [self.binary, "-sf", str(scenario), "-m", str(max_calls), "-timeout", f"{timeout_s}s", "-aa",
                "-error_file", str(err)]
        if trace_msg:
            argv += ["-trace_msg", "-message_file", str(self.workdir / f"agent-msg-{port}.log")]
        return self._start_uas(argv, port, err)

    def dial_as(self, user: str, password: str, exten: str, *, digits: str = "", after_ms: int = 2500,
                hold_ms: int = 30_000, timeout_s: int = 40, via_proxy: bool = False) -> SippResult:
        """An agent's phone dials ``exten`` (a feature code such as *72 or *81), answering the digest
        challenge, keys in ``digits`` (e.g. a PIN and #) ``after_ms`` after the answer, and stays until
        Asterisk hangs up (or ``hold_ms``); ``via_proxy``: through Kamailio (a cluster)."""
        dtmf = ""
        if digits:
            pcap = self.workdir / "pcap" / f"dial-{os.getpid()}-{next(PCAP_SEQ)}.pcap"
            pcap.parent.mkdir(parents=True, exist_ok=True)
            write_dtmf_pcap(pcap, digits, RtpClock())
            dtmf = (f'  <pause milliseconds="{int(after_ms)}"/>\n'
                    f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n')
        scenario = self._write("dial", dial_as_scenario(hold_ms, dtmf, via_proxy))
        port = free_port()
        argv = [self.binary, f"{self.target_host}:{self.target_port}", "-sf", str(scenario), "-s", exten,
                "-au", user, "-ap", password, "-key", "user", user, "-m", "1", "-timeout", f"{timeout_s}s",
                "-timeout_error", "-error_file", str(self.workdir / f"dial-err-{port}.log"), "-trace_stat",
                "-stf", str(self.workdir / f"stat-{port}.csv"), "-fd", "1",
                *self._common(port, free_port_pair())]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30, cwd=self.workdir)
        return self._result(argv, proc.returncode, proc.stdout + proc.stderr)

    def register(self, user: str, password: str, port: int, expires: int = 300, timeout_s: int = 15) -> SippResult:
        """REGISTER ``user`` from 127.0.0.1:port with digest auth; ``ok`` is 1 when Asterisk answered 200.

        An agent phone started afterwards on the same port then receives the queue calls.
        """
        scenario = self._write("register", register_scenario(expires))
        argv = [self.binary, f"{self.target_host}:{self.target_port}", "-sf", str(scenario), "-s", user,
                "-au", user, "-ap", password, "-m", "1", "-timeout", f"{timeout_s}s", "-timeout_error",
                "-recv_timeout", f"{timeout_s * 1000}", "-error_file", str(self.workdir / f"reg-err-{port}.log"),
                "-trace_stat", "-stf", str(self.workdir / f"reg-stat-{port}.csv"), "-fd", "1",
                *self._common(port, free_port_pair())]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30, cwd=self.workdir)
        return self._result(argv, proc.returncode, proc.stdout + proc.stderr)

    def start_registered_phone(self, user: str, password: str, port: int, up_s: int = 600,
                               expires: int = 300) -> subprocess.Popen[bytes]:
        """A phone that registers ``user`` from 127.0.0.1:port and then stays up for ``up_s`` seconds,
        answering Asterisk's qualify OPTIONS (SIPp -aa). ``stop()`` it and the phone goes dark."""
        scenario = self._write("phone", register_scenario(expires, stay_ms=up_s * 1000))
        err = self.workdir / f"phone-err-{port}.log"
        argv = [self.binary, f"{self.target_host}:{self.target_port}", "-sf", str(scenario), "-s", user,
                "-au", user, "-ap", password, "-m", "1", "-aa", "-timeout", f"{up_s + 30}s", "-error_file", str(err)]
        return self._start_uas(argv, port, err)

    def start_registrar(self, port: int, user: str, password: str, timeout_s: int = 60) -> subprocess.Popen[bytes]:
        """A carrier registrar on 127.0.0.1:port for one registration; exit code 0 when it was right."""
        scenario = self._write("registrar", registrar_scenario(user, password))
        err = self.workdir / f"registrar-err-{port}.log"
        argv = [self.binary, "-sf", str(scenario), "-m", "1", "-timeout", f"{timeout_s}s", "-timeout_error",
                "-error_file", str(err), "-trace_msg", "-message_file", str(self.workdir / f"registrar-msg-{port}.log")]
        return self._start_uas(argv, port, err)

    def start_callees(self, port: int, talk_ms: int = 20_000, timeout_s: int = 3600) -> subprocess.Popen[bytes]:
        """Customers' phones behind the trunk at 127.0.0.1:port (behaviour by the number's last digit)."""
        scenario = self._write("callees", callee_scenario(self.workdir / "pcap", talk_ms))
        err = self.workdir / f"callee-err-{port}.log"
        argv = [self.binary, "-sf", str(scenario), "-m", "1000000", "-timeout", f"{timeout_s}s",
                "-error_file", str(err), "-trace_msg", "-message_file", str(self.workdir / f"callee-msg-{port}.log")]
        return self._start_uas(argv, port, err)

    def _start_uas(self, argv: list[str], port: int, err: Path, attempts: int = 5) -> subprocess.Popen[bytes]:
        """Start a long-running SIPp that listens on ``port``. Its media ports are picked free, but another
        process can take one before SIPp binds it ("Unable to bind ... RTP socket"): then SIPp exits at once
        and is started again with other media ports."""
        for attempt in range(attempts):
            proc = subprocess.Popen(argv + self._common(port, free_port_pair()), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True)
            try:
                proc.wait(0.3)
            except subprocess.TimeoutExpired:
                return proc            # still up: listening
            text = err.read_text(errors="replace") if err.exists() else ""
            if "Unable to bind" not in text or attempt == attempts - 1:
                return proc
            err.unlink(missing_ok=True)
        return proc

    def invites_received(self, port: int, phone: str = "callee") -> dict[str, int]:
        """How many INVITEs each number got at the callee phones on ``port`` (from SIPp's message log), or
        with ``phone="agent"`` at the agent phone started there with ``start_agent(..., trace_msg=True)``."""
        if phone not in ("callee", "agent"):
            raise ValueError(f"phone: callee or agent, got {phone!r}")
        log = self.workdir / f"{phone}-msg-{port}.log"
        counts: dict[str, int] = {}
        if log.exists():
            for m in re.finditer(r"^INVITE sip:([0-9]+)@", log.read_text(errors="replace"), re.M):
                counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return counts

    def invite_callers(self, port: int) -> dict[str, set[str]]:
        """The caller numbers (From user) of the INVITEs each number got at the callee phones on ``port``."""
        log = self.workdir / f"callee-msg-{port}.log"
        out: dict[str, set[str]] = {}
        if log.exists():
            for block in re.split(r"\n(?=INVITE sip:)", log.read_text(errors="replace")):
                to = re.match(r"INVITE sip:([0-9]+)@", block)
                frm = re.search(r"^From:[^<\n]*<sip:([^@>]+)@", block, re.M)
                if to and frm:
                    out.setdefault(to.group(1), set()).add(frm.group(1))
        return out

    @staticmethod
    def stop(proc: subprocess.Popen[Any]) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _stat_counts(path: Path) -> tuple[int, int]:
    """Last row of a SIPp -trace_stat CSV: (SuccessfulCall(C), FailedCall(C))."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return 0, 0
    head = lines[0].split(";")
    last = lines[-1].split(";")
    try:
        return int(last[head.index("SuccessfulCall(C)")]), int(last[head.index("FailedCall(C)")])
    except (ValueError, IndexError):
        return 0, 0
