"""SIPp drivers for the demo, the tests and the benchmarks (loopback only).

``CallerScript`` writes a UAC scenario that dials the inbound extension, sends
RFC 2833 DTMF from the pcaps SIPp ships, then either hangs up or waits for the
far end's BYE. ``agent_scenario`` writes a UAS that answers, talks for N ms and
hangs up (or takes the caller's BYE). Every SIPp run is bounded (``-timeout``)
and bound to 127.0.0.1; a target that is not a loopback address is refused.
"""

from __future__ import annotations

import ipaddress
import itertools
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
from typing import Sequence

from .stack import port_bindable

_DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}

_SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
"""
# the 200 OK a SIPp scenario sends to the request it just received (a BYE, a CANCEL)
_OK_LAST = """SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

"""


# Ports for SIPp (its SIP port and its media block) come from a range of their own, below the kernel's
# ephemeral range (32768-60999 on Debian), Asterisk's default RTP range (20000-20999) and the port bases
# tests and benchmarks put private stacks on (20000 and up), handed out
# in turn: a port the kernel picked for "any free port" could be picked again by the next SIPp started a
# moment later, before the first one bound it (27 callers started at once lost that race now and then).
SIPP_PORTS = (12000, 20000)
if os.environ.get("IVR_SIPP_PORTS"):   # "first-last", a slice of it: test workers running side by side get one each
    SIPP_PORTS = tuple(int(p) // 4 * 4 for p in os.environ["IVR_SIPP_PORTS"].split("-", 1))  # type: ignore[assignment]
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
class RtpClock:
    """RTP sequence number and timestamp carried across the DTMF pcaps of one call.

    SIPp replays a pcap's RTP packets as they are, and the pcaps SIPp ships all
    have fixed sequence numbers and timestamps: Asterisk drops a digit whose
    packets look older than the last event (the same digit twice, or a digit
    whose pcap happens to have lower numbers). Pcaps written here continue one
    stream, so every digit of a call is new to Asterisk.
    """

    seq: int = 1000
    ts: int = 8000
    ssrc: int = 0x1E55_0001


_PCAP_SEQ = itertools.count(1)


def _write_pcap(path: Path, packets: Sequence[tuple[float, bytes]]) -> None:
    """RTP payloads at their send times (seconds from the start) as an Ethernet/IPv4/UDP pcap for SIPp's
    play_pcap_audio (SIPp rewrites the addresses and ports)."""
    import struct

    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for when, rtp in packets:
        udp = struct.pack(">HHHH", 40000, 40002, 8 + len(rtp), 0) + rtp
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        out += struct.pack("<IIII", int(when), int((when % 1) * 1e6), len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


def write_ulaw_pcap(path: Path, ulaw: bytes) -> float:
    """G.711 mu-law speech (payload type 0, 20 ms packets) as an Ethernet/IPv4/UDP pcap; returns seconds."""
    import struct

    packets = []
    for i, off in enumerate(range(0, len(ulaw) - 159, 160)):
        rtp = struct.pack(">BBHII", 0x80, 0, i & 0xFFFF, (i * 160) & 0xFFFFFFFF, 0x5EED) + ulaw[off:off + 160]
        packets.append((i * 0.020, rtp))
    _write_pcap(path, packets)
    return len(ulaw) / 8000.0


def write_audio_prelude(path: Path, clock: RtpClock, ms: int = 60) -> None:
    """The first packets of a phone's media stream (G.711 mu-law silence, marker bit on the first), on the
    call's RTP clock so the DTMF that follows continues the same stream.

    A real phone sends audio from the moment the call is answered. A stream whose very first packet is an
    RFC 4733 event makes Asterisk 16 hold the digit on the channel's read queue and busy-poll the RTP socket
    for ~45 ms (about 40 ms of CPU per call, measured: docs/benchmarks.md), which no real caller causes."""
    import struct

    packets = []
    for i in range(max(1, ms // 20)):
        rtp = struct.pack(">BBHII", 0x80, (0x80 if i == 0 else 0), clock.seq & 0xFFFF, clock.ts & 0xFFFFFFFF,
                          clock.ssrc) + b"\xff" * 160
        packets.append((i * 0.020, rtp))
        clock.seq += 1
        clock.ts += 160
    _write_pcap(path, packets)


def write_dtmf_pcap(path: Path, digits: str, clock: RtpClock, *, tone_ms: int = 120, gap_ms: int = 120) -> None:
    """RFC 4733 telephone-events (payload type 101) for ``digits`` as an Ethernet/IPv4/UDP pcap."""
    import struct

    packets: list[tuple[float, bytes]] = []
    t = 0.0
    for ch in digits:
        if ch not in _DTMF_EVENTS:
            raise ValueError(f"not a DTMF key: {ch!r}")
        event = _DTMF_EVENTS[ch]
        steps = max(1, tone_ms // 20)
        for i in range(steps + 3):                      # the last 3 packets repeat the end of event
            end = i >= steps
            duration = 160 * min(i + 1, steps)
            marker = 0x80 if i == 0 else 0
            rtp = struct.pack(">BBHII", 0x80, marker | 101, clock.seq & 0xFFFF, clock.ts & 0xFFFFFFFF, clock.ssrc)
            rtp += struct.pack(">BBH", event, (0x80 if end else 0) | 10, duration)
            packets.append((t, rtp))
            clock.seq += 1
            t += 0.020 if not end else 0.005
        clock.ts += 160 * (steps + (gap_ms // 20))
        t += gap_ms / 1000
    _write_pcap(path, packets)


@dataclass
class CallerScript:
    """What one simulated caller does after the call is answered."""

    steps: Sequence[tuple[str, str | int]] = ()   # ("pause", ms) | ("dtmf", "123#") | ("speech", .ulaw file)
    end: str = "wait_bye"                          # "wait_bye" (far end hangs up) | "hangup"
    wait_bye_ms: int = 120_000                     # how long to wait for the far end's BYE
    patience_ms: int = 0                           # with wait_bye: hang up after this long instead of failing
    prelude_ms: int = 60                           # audio the phone sends as the call is answered (0: none)

    def xml(self, pcap_dir: Path | None = None) -> str:
        """The scenario; DTMF pcaps are written into ``pcap_dir`` (a temporary folder by default)."""
        body = []
        clock = RtpClock()
        pcap_dir = Path(pcap_dir or tempfile.mkdtemp(prefix="sipp-dtmf-"))
        pcap_dir.mkdir(parents=True, exist_ok=True)
        if self.prelude_ms:
            pcap = pcap_dir / f"prelude-{os.getpid()}-{next(_PCAP_SEQ)}.pcap"
            write_audio_prelude(pcap, clock, self.prelude_ms)
            body.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
            body.append(f'  <pause milliseconds="{int(self.prelude_ms)}"/>')
        for n, (kind, value) in enumerate(self.steps):
            if kind == "pause":
                body.append(f'  <pause milliseconds="{int(value)}"/>')
            elif kind == "dtmf":
                digits = str(value)
                # a fresh name per scenario: a SIPp already running may still be reading an earlier one
                pcap = pcap_dir / f"dtmf-{os.getpid()}-{next(_PCAP_SEQ)}-{n}.pcap"
                write_dtmf_pcap(pcap, digits, clock)
                body.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
                body.append(f'  <pause milliseconds="{len(digits) * 240 + 150}"/>')
            elif kind == "speech":  # the caller talks: raw 8 kHz mu-law (e.g. a built prompt's .ulaw)
                pcap = pcap_dir / f"speech-{os.getpid()}-{next(_PCAP_SEQ)}-{n}.pcap"
                seconds = write_ulaw_pcap(pcap, Path(str(value)).read_bytes())
                body.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
                body.append(f'  <pause milliseconds="{int(seconds * 1000) + 100}"/>')
            else:
                raise ValueError(f"unknown caller step {kind!r}")
        bye = """  <send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
[last_Call-ID:]
CSeq: 2 BYE
Contact: <sip:[caller]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
"""
        if self.end == "hangup":
            tail = bye
        elif self.end == "wait_bye":
            on_timeout = ' ontimeout="give_up"' if self.patience_ms else ""
            limit = self.patience_ms or self.wait_bye_ms
            tail = f"""  <recv request="BYE" timeout="{int(limit)}"{on_timeout}/>
  <send next="done"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[caller]@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <label id="give_up"/>
""" + (bye if self.patience_ms else "") + """  <label id="done"/>
"""
        else:
            raise ValueError(f"unknown caller end {self.end!r}")
        return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ivr caller">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[caller]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{_SDP}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "caller" <sip:[caller]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
[last_Call-ID:]
CSeq: 1 ACK
Contact: <sip:[caller]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
{chr(10).join(body)}
{tail}
  <ResponseTimeRepartition value="100, 500, 1000, 5000"/>
</scenario>
"""


def _uas_hangup(user: str) -> str:
    """The end shared by the UAS scenarios: label ``hangup`` sends our BYE, label ``done`` ends."""
    return f"""  <label id="hangup"/>
  <send retrans="500"><![CDATA[
BYE [$remote_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To:[$remote_from]
[last_Call-ID:]
CSeq: 2 BYE
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
  <label id="done"/>"""


def agent_scenario(talk_ms: int = 3000, ring_ms: int = 100, audio_pcap: Path | None = None) -> str:
    """UAS for an agent phone: answer after ``ring_ms``, talk ``talk_ms``, hang up (or take the caller's BYE).
    With ``audio_pcap`` the phone sends that audio from the answer, as a real phone sends RTP all through a
    call (Asterisk features that act on the call's frames, such as ChanSpy, need a stream to act on)."""
    media = f'  <nop><action><exec play_pcap_audio="{audio_pcap}"/></action></nop>\n' if audio_pcap else ""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent phone">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" check_it="true" assign_to="remote_contact"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <pause milliseconds="{int(ring_ms)}"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:agent@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{_SDP}
]]></send>
  <recv request="ACK" crlf="true"/>
{media}  <recv request="BYE" timeout="{int(talk_ms)}" ontimeout="hangup"/>
  <send next="done"><![CDATA[
{_OK_LAST}]]></send>
{_uas_hangup('agent')}
</scenario>
"""


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
        real surge: the controller recognises repeat and returning callers by number (ivr/continuity.py).
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

    def call(self, script: CallerScript, **kwargs: object) -> SippResult:
        """Run callers to completion (blocking) and return the counts."""
        timeout_s = int(kwargs.get("timeout_s", 120))  # type: ignore[arg-type]
        for attempt in range(3):
            argv = self.call_args(script, **kwargs)  # type: ignore[arg-type]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30, cwd=self.workdir)
            result = self._result(argv, proc.returncode, proc.stdout + proc.stderr)
            # a media port taken between picking it and SIPp binding it: nothing was sent, run it again
            if not (result.successful == 0 and result.failed == 0 and "Unable to bind" in result.errors):
                break
        return result

    def start_calls(self, script: CallerScript, **kwargs: object) -> subprocess.Popen[str]:
        argv = self.call_args(script, **kwargs)  # type: ignore[arg-type]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.workdir)
        proc.argv = argv  # type: ignore[attr-defined]
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = 180) -> SippResult:
        out, _ = proc.communicate(timeout=timeout)
        return self._result(proc.argv, proc.returncode, out or "")  # type: ignore[attr-defined]

    def _result(self, argv: list[str], rc: int, text: str) -> SippResult:
        errfile = Path(argv[argv.index("-error_file") + 1])
        errors = errfile.read_text(errors="replace")[-4000:] if errfile.exists() else ""
        ok, failed = _parse_counts(text)
        stat = Path(argv[argv.index("-stf") + 1])
        if stat.exists() and not (ok or failed):
            ok, failed = _stat_counts(stat)
        return SippResult(rc, ok, failed, text[-4000:], errors)

    def start_agent(self, port: int, talk_ms: int = 3000, ring_ms: int = 100, max_calls: int = 100_000,
                    timeout_s: int = 3600, sends_audio: bool = False) -> subprocess.Popen[bytes]:
        """Start an agent phone (UAS) listening on 127.0.0.1:port; stop it with ``stop()``. With
        ``sends_audio`` it streams audio (G.711 silence) for the whole of each call, as a real phone does."""
        pcap = None
        if sends_audio:
            pcap = self.workdir / "pcap" / f"agent-audio-{port}-{next(_PCAP_SEQ)}.pcap"
            pcap.parent.mkdir(parents=True, exist_ok=True)
            write_audio_prelude(pcap, RtpClock(), ms=talk_ms)
        scenario = self._write("agent", agent_scenario(talk_ms, ring_ms, pcap))
        # -aa: answer qualify OPTIONS (and INFO/NOTIFY) outside calls, as a registered phone does
        err = self.workdir / f"agent-err-{port}.log"
        argv = [self.binary, "-sf", str(scenario), "-m", str(max_calls), "-timeout", f"{timeout_s}s", "-aa",
                "-error_file", str(err)]
        return self._start_uas(argv, port, err)

    def dial_as(self, user: str, password: str, exten: str, *, digits: str = "", after_ms: int = 2500,
                hold_ms: int = 30_000, timeout_s: int = 40) -> SippResult:
        """An agent's phone dials ``exten`` (a feature code such as *72 or *81), answering the digest
        challenge, keys in ``digits`` (e.g. a PIN and #) ``after_ms`` after the answer, and stays until
        Asterisk hangs up (or ``hold_ms``)."""
        dtmf = ""
        if digits:
            pcap = self.workdir / "pcap" / f"dial-{os.getpid()}-{next(_PCAP_SEQ)}.pcap"
            pcap.parent.mkdir(parents=True, exist_ok=True)
            write_dtmf_pcap(pcap, digits, RtpClock())
            dtmf = (f'  <pause milliseconds="{int(after_ms)}"/>\n'
                    f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n')
        scenario = self._write("dial", dial_as_scenario(hold_ms, dtmf))
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

    def invites_received(self, port: int) -> dict[str, int]:
        """How many INVITEs each number got at the callee phones on ``port`` (from SIPp's message log)."""
        log = self.workdir / f"callee-msg-{port}.log"
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
    def stop(proc: subprocess.Popen[bytes]) -> None:
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


CALLEE_BEHAVIOURS = {
    "0": "key 1", "1": "key 1", "2": "key 1", "3": "key 1", "4": "key 2", "5": "key 9",
    "6": "busy", "7": "no answer", "8": "machine greeting", "9": "answer, no key",
}


def registrar_scenario(user: str, password: str) -> str:
    """A carrier's registrar: challenge one REGISTER, check the digest (SIPp verifyauth); 200 if right,
    403 and a failed call if wrong."""
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", user) or not re.fullmatch(r"[A-Za-z0-9_.~+=@%^!#*-]+", password):
        raise ValueError("registrar: plain user and password only")
    reply = """  <send{extra}><![CDATA[
SIP/2.0 {status}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
{headers}Content-Length: 0

]]></send>
"""
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<scenario name="registrar">\n'
            '  <recv request="REGISTER"/>\n'
            + reply.format(extra="", status="401 Unauthorized",
                           headers='WWW-Authenticate: Digest realm="carrier.test", nonce="[pid]n[call_number]", '
                                   'algorithm=MD5\n')
            + f'  <recv request="REGISTER">\n    <action>\n'
              f'      <verifyauth assign_to="authvalid" username="{user}" password="{password}"/>\n'
              f'    </action>\n  </recv>\n'
            + '  <nop hide="true" test="authvalid" next="good"/>\n'
            + reply.format(extra=' next="bad"', status="403 Forbidden", headers="")
            + '  <label id="good"/>\n'
            + reply.format(extra=' next="done"', status="200 OK", headers="Contact: [last_Contact:];expires=600\n"
                           .replace("Contact: [last_Contact:]", "[last_Contact:]"))
            + '  <label id="bad"/>\n  <recv request="NEVER" timeout="200"/>\n  <label id="done"/>\n</scenario>\n')


def dial_as_scenario(hold_ms: int = 30_000, after_answer: str = "") -> str:
    """UAC: INVITE, answer the 401 digest challenge, wait for Asterisk's BYE (``hold_ms`` at most)."""
    def invite(cseq: int, auth: str) -> str:
        return f"""  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[user]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:[user]@[local_ip]:[local_port]>
{auth}Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{_SDP}
]]></send>
"""

    def ack(cseq: int) -> str:
        return f"""  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[user]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
"""
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<scenario name="agent dials">\n'
            + invite(1, "") + '  <recv response="100" optional="true"/>\n  <recv response="401" auth="true"/>\n'
            + """  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
""" + invite(2, "[authentication]\n")
            + '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n'
            + '  <recv response="183" optional="true"/>\n  <recv response="200" rtd="true"/>\n' + ack(2)
            + after_answer + f'  <recv request="BYE" timeout="{int(hold_ms)}"/>\n'
            + "  <send><![CDATA[\n" + _OK_LAST + "]]></send>\n</scenario>\n")


def register_scenario(expires: int = 300, stay_ms: int = 0) -> str:
    """REGISTER, answer the digest challenge, expect 200 (anything else fails the run)."""
    def register(cseq: int, auth: str) -> str:
        return f"""  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[service]@[remote_ip]>;tag=[call_number]
To: <sip:[service]@[remote_ip]>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:[service]@[local_ip]:[local_port]>
{auth}Max-Forwards: 70
Expires: {expires}
User-Agent: sipp-agent
Content-Length: 0

]]></send>
"""
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<scenario name="register">\n'
            + register(1, "") + '  <recv response="401" auth="true"/>\n'
            + register(2, "[authentication]\n") + '  <recv response="200"/>\n'
            + (f'  <pause milliseconds="{stay_ms}"/>\n' if stay_ms else "") + '</scenario>\n')


def callee_scenario(pcap_dir: Path, talk_ms: int = 20_000, key_after_ms: int = 1500) -> str:
    """UAS for customers' phones behind the test trunk; the number's last digit picks the behaviour.

    0-3 answer and press 1, 4 press 2, 5 press 9, 6 busy (486), 7 ring until cancelled,
    8 answer with a 7-second greeting (a machine for AMD), 9 answer and press nothing.
    """
    pcap_dir.mkdir(parents=True, exist_ok=True)
    for key in "129":
        write_dtmf_pcap(pcap_dir / f"callee-{key}.pcap", key, RtpClock())
    sdp = _SDP.replace("RTP/AVP 0 101", "RTP/AVP 0 8 101").replace(
        "a=rtpmap:101", "a=rtpmap:8 PCMA/8000\na=rtpmap:101")

    def answer(label: str, media: str) -> str:
        return f"""  <label id="{label}"/>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:callee@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv request="ACK" crlf="true"/>
{media}
  <recv request="BYE" timeout="{int(talk_ms)}" ontimeout="hangup"/>
  <send next="done"><![CDATA[
{_OK_LAST}]]></send>
"""

    def key(k: str) -> str:
        return (f'  <pause milliseconds="{int(key_after_ms)}"/>\n'
                f'  <nop><action><exec play_pcap_audio="{pcap_dir / f"callee-{k}.pcap"}"/></action></nop>')

    machine = '  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/g711a.pcap"/></action></nop>'
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="customer phones">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="INVITE sip:[0-9]*([0-9])@" search_in="msg" check_it="true" assign_to="whole,last"/>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" check_it="true" assign_to="remote_contact"/>
      <todouble assign_to="d" variable="last"/>
      <test assign_to="busy" variable="d" compare="equal" value="6"/>
      <test assign_to="noans" variable="d" compare="equal" value="7"/>
      <test assign_to="mach" variable="d" compare="equal" value="8"/>
      <test assign_to="silent" variable="d" compare="equal" value="9"/>
      <test assign_to="k2" variable="d" compare="equal" value="4"/>
      <test assign_to="k9" variable="d" compare="equal" value="5"/>
    </action>
  </recv>
  <nop next="busy" test="busy"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:callee@[local_ip]:[local_port]>
X-Matched: [$whole]
Content-Length: 0

]]></send>
  <nop next="ring" test="noans"/>
  <pause milliseconds="300"/>
  <nop next="a_mach" test="mach"/>
  <nop next="a_silent" test="silent"/>
  <nop next="a_k2" test="k2"/>
  <nop next="a_k9" test="k9"/>
{answer("a_k1", key("1")).replace('ontimeout="hangup"', 'ontimeout="hangup"')}
{answer("a_k2", key("2"))}
{answer("a_k9", key("9"))}
{answer("a_mach", machine)}
{answer("a_silent", "")}
  <label id="busy"/>
  <send next="end_busy"><![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="ring"/>
  <recv request="CANCEL" timeout="120000"/>
  <send><![CDATA[
{_OK_LAST}]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [cseq] INVITE
Content-Length: 0

]]></send>
  <recv request="ACK" next="done"/>
  <label id="end_busy"/>
  <recv request="ACK" next="done"/>
{_uas_hangup('callee')}
</scenario>
"""
