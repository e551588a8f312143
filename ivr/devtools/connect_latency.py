"""What does not compress in a time-compressed replay: app_queue's latency from "a caller and a free agent"
to "they talk", measured per call from the stack's own AMI events.

app_queue rings a member only when the waiting caller's thread next checks its turn (a caller already
waiting checks once a second: ``RECHECK`` in app_queue.c), and the phone then rings before it answers.
On a real line this is about half a second per call and nobody notices it; in a replay compressed ten
times it is five seconds of the hour on every call, which is a third of the controller's modelled wait.
The replay measures it on every run and the simulator's prediction carries it (``Profile.connect_s``),
so the comparison is between the same line on both sides.

``measure`` is pure: it reads (receipt time, event) pairs. ``AmiTap`` collects them from a stack's AMI on
a thread (a plain socket and the project's own frame parser; the replay itself is synchronous).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from ..core.ami_frames import AmiFrame, AmiFrameParser

EVENTS = frozenset({"QueueCallerJoin", "QueueMemberStatus", "QueueMemberAdded", "QueueMemberRemoved",
                    "QueueMemberPause", "AgentCalled", "AgentConnect"})


@dataclass(frozen=True)
class ConnectLatency:
    """Means over the run's answered queue calls, seconds of the stack's clock."""

    connects: int
    turn_s: float       # from max(caller joined, a member of their queue free) to app_queue ringing a member
    ring_s: float       # from AgentCalled to AgentConnect (the phone's ring and answer)

    @property
    def total_s(self) -> float:
        return self.turn_s + self.ring_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_s": round(self.total_s, 3)}


def _free(ev: Mapping[str, str]) -> bool:
    """A member who can take a call now: not in use (device state 1), not on a call, not paused."""
    return ev.get("Status") == "1" and ev.get("InCall") != "1" and ev.get("Paused") != "1"


def measure(events: Iterable[tuple[float, Mapping[str, str]]]) -> ConnectLatency | None:
    """The latency of each answered call: the turn part (how long the caller and some free member of their
    queue were both there before app_queue rang one) and the ring part; ``None`` when no call connected.
    Calls whose join or ring was not seen (the tap started late) are left out."""
    free_since: dict[str, float | None] = {}
    members: dict[str, set[str]] = {}
    joined: dict[str, tuple[str, float]] = {}
    called: dict[str, tuple[float, dict[str, float | None]]] = {}
    turns: list[float] = []
    rings: list[float] = []
    for t, ev in events:
        name, queue, member = ev.get("Event"), ev.get("Queue", ""), ev.get("MemberName", "")
        if name in ("QueueMemberStatus", "QueueMemberAdded", "QueueMemberPause"):
            members.setdefault(queue, set()).add(member)
            if not _free(ev):
                free_since[member] = None
            elif free_since.get(member) is None:
                free_since[member] = t
        elif name == "QueueMemberRemoved":
            members.get(queue, set()).discard(member)
        elif name == "QueueCallerJoin":
            joined[ev.get("Uniqueid", "")] = (queue, t)
        elif name == "AgentCalled":
            called.setdefault(ev.get("Uniqueid", ""), (t, dict(free_since)))
        elif name == "AgentConnect":
            uid = ev.get("Uniqueid", "")
            if uid not in joined or uid not in called:
                continue
            q, t_join = joined.pop(uid)
            t_call, free_then = called.pop(uid)
            since = [max(f, t_join) for f in (free_then.get(m) for m in members.get(q, ())) if f is not None and f < t_call]
            turns.append(t_call - min(since) if since else 0.0)
            rings.append(max(0.0, t - t_call))
            free_since[member] = None
    if not turns:
        return None
    n = len(turns)
    return ConnectLatency(n, round(sum(turns) / n, 3), round(sum(rings) / n, 3))


def pooled(parts: Iterable[ConnectLatency | None]) -> ConnectLatency | None:
    """Several runs' latencies weighted by their connects."""
    ps = [p for p in parts if p is not None and p.connects]
    n = sum(p.connects for p in ps)
    if not n:
        return None
    return ConnectLatency(n, round(sum(p.turn_s * p.connects for p in ps) / n, 3),
                          round(sum(p.ring_s * p.connects for p in ps) / n, 3))


class AmiTap:
    """A second AMI session on the stack (the controller's user, read only in practice) that keeps the queue
    events above (or ``events``) with their receipt time, on a daemon thread, until ``stop()``."""

    def __init__(self, port: int, username: str, secret: str, host: str = "127.0.0.1",
                 events: frozenset[str] = EVENTS) -> None:
        self.addr, self.username, self.secret = (host, port), username, secret
        self.wanted = events
        self.events: list[tuple[float, dict[str, str]]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ami-tap", daemon=True)

    def start(self, timeout: float = 10.0) -> "AmiTap":
        self._thread.start()
        if not self._ready.wait(timeout):
            self.error = self.error or "no AMI login within the timeout"
        return self

    def stop(self) -> list[tuple[float, dict[str, str]]]:
        self._stop.set()
        self._thread.join(5.0)
        return self.events

    def _run(self) -> None:
        parser = AmiFrameParser()
        try:
            with socket.create_connection(self.addr, timeout=5.0) as s:
                s.sendall((f"Action: Login\r\nUsername: {self.username}\r\nSecret: {self.secret}\r\n"
                           "Events: on\r\n\r\n").encode())
                s.settimeout(0.5)
                while not self._stop.is_set():
                    try:
                        data = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not data:
                        self.error = "AMI closed the connection"
                        break
                    now = time.time()
                    for frame in parser.feed(data):
                        if not isinstance(frame, AmiFrame):
                            continue
                        d = {k: v for k, v in frame.to_dict().items() if isinstance(v, str)}
                        if d.get("Response") == "Success":
                            self._ready.set()
                        elif d.get("Response") == "Error":
                            self.error = f"AMI login refused: {d.get('Message', '')}"
                            self._ready.set()
                            return
                        elif d.get("Event") in self.wanted:
                            self.events.append((now, d))
        except OSError as exc:
            self.error = f"AMI tap: {exc}"
        finally:
            self._ready.set()
