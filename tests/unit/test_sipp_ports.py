"""SIPp's ports come from their own range, handed out in turn, never from the kernel's ephemeral range."""
from __future__ import annotations

import socket

from ivr import sipp


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
