"""RTP media for SIPp callers: an RTP clock and the pcap files SIPp plays (audio, RFC 2833 DTMF)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence



DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


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


PCAP_SEQ = itertools.count(1)


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
        if ch not in DTMF_EVENTS:
            raise ValueError(f"not a DTMF key: {ch!r}")
        event = DTMF_EVENTS[ch]
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
