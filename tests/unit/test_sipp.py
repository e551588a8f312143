"""ivr.devtools.sipp: ports from their own range handed out in turn, and the media a simulated caller sends."""
from __future__ import annotations

import socket

from ivr.devtools import sipp


def test_ports_are_handed_out_in_turn_outside_the_ephemeral_range() -> None:
    got = [sipp.free_port_pair() for _ in range(50)] + [sipp.free_port() for _ in range(50)]
    assert len(set(got)) == 100, "a port handed out twice in a row"
    assert all(sipp.SIPP_PORTS[0] <= p < sipp.SIPP_PORTS[1] and p % 4 == 0 for p in got)


def test_a_taken_port_is_skipped(monkeypatch) -> None:
    start = sipp.SIPP_PORTS[0] + 400
    monkeypatch.setattr(sipp, "_next_block", start)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        try:
            held.bind(("127.0.0.1", start + 2))
        except OSError:      # something on this machine already has it: skipped all the same
            pass
        got = sipp.free_port_pair()
        # the held block is skipped (the next free one is normally start + 4, unless something else on the
        # machine holds that one too)
        assert got != start and start < got < sipp.SIPP_PORTS[1] and got % 4 == 0


def test_the_range_wraps_around(monkeypatch) -> None:
    monkeypatch.setattr(sipp, "_next_block", sipp.SIPP_PORTS[1] - 4)
    first, second = sipp.free_port(), sipp.free_port()
    assert first == sipp.SIPP_PORTS[1] - 4 or first < second
    assert sipp.SIPP_PORTS[0] <= second < sipp.SIPP_PORTS[0] + 4 * 50


def _rtp_headers(path) -> list[tuple[int, int, int, int]]:
    """(marker, payload type, seq, ssrc) of each packet of a pcap written by ivr.devtools.sipp."""
    import struct
    data, out = path.read_bytes()[24:], []
    while data:
        length = struct.unpack("<IIII", data[:16])[2]
        rtp = data[16 + 42:16 + length]
        b1, seq, _ts, ssrc = rtp[1], *struct.unpack(">HII", rtp[2:12])
        out.append((b1 >> 7, b1 & 0x7F, seq, ssrc))
        data = data[16 + length:]
    return out


def test_a_caller_starts_its_media_with_audio_before_any_key(tmp_path) -> None:
    """Like a real phone: audio from the answer, then the key on the same RTP stream (a stream that starts
    with an RFC 4733 event costs Asterisk ~40 ms of CPU per call, which no real caller causes)."""
    import re
    from pathlib import Path
    xml = sipp.CallerScript(steps=[("pause", 300), ("dtmf", "1")]).xml(tmp_path)
    pcaps = [Path(p) for p in re.findall(r'play_pcap_audio="([^"]+)"', xml)]
    assert [p.name.split("-")[0] for p in pcaps] == ["prelude", "dtmf"]
    prelude, dtmf = _rtp_headers(pcaps[0]), _rtp_headers(pcaps[1])
    assert prelude[0][:2] == (1, 0) and all(h[1] == 0 for h in prelude) and len(prelude) == 3
    assert dtmf[0][:2] == (1, 101)
    assert dtmf[0][2] == prelude[-1][2] + 1 and dtmf[0][3] == prelude[0][3]    # one stream
    assert "prelude" not in sipp.CallerScript(steps=[("dtmf", "1")], prelude_ms=0).xml(tmp_path)


def test_phones_behind_a_proxy_follow_its_record_route() -> None:
    from ivr.devtools.sipp_scenarios import CallerScript, agent_scenario

    direct = CallerScript(steps=[("pause", 100)], end="hangup", prelude_ms=0).xml()
    proxied = CallerScript(steps=[("pause", 100)], end="hangup", prelude_ms=0, via_proxy=True).xml()
    assert 'rrs="true"' not in direct and "ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0" in direct
    assert '<recv response="200" rtd="true" rrs="true"/>' in proxied
    assert "ACK [next_url] SIP/2.0\n[routes]\n" in proxied and "BYE [next_url] SIP/2.0\n[routes]\n" in proxied
    agent = agent_scenario(via_proxy=True)
    assert '<recv request="INVITE" crlf="true" rrs="true">' in agent
    assert "SIP/2.0 200 OK\n[last_Record-Route:]\n" in agent and "BYE [next_url] SIP/2.0\n[routes]\n" in agent
    assert "remote_contact" not in agent      # SIPp refuses a variable set but never used
    plain = agent_scenario()
    assert "Record-Route" not in plain and "BYE [$remote_contact] SIP/2.0" in plain
