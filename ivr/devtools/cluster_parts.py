"""The SIP side of a private cluster (ivr/devtools/cluster.py): Kamailio as one object with ``start(deadline)``,
``stop(timeout)``, ``pids()``, ``status()`` and ``describe()``, and the few SIP requests the tools send it.
The cluster's Redis is a primary, a replica and three Sentinels: ``ivr.devtools.redis_ha.RedisSet``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from ..asterisk import kamailio
from .procs import short_socket_path
from .stack import StackError, _pid_alive, _tail, read_pidfile, remove_pidfile, write_pidfile


class Processes:
    """Background processes of one folder: pid files under ``pids/``, logs under ``logs/``."""

    def __init__(self, root: Path) -> None:
        self.logs, self.pid_dir = root / "logs", root / "pids"

    def spawn(self, name: str, argv: list[str], log_name: str) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        with open(self.logs / log_name, "ab") as log_fh:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        write_pidfile(self.pid_dir / f"{name}.pid", proc.pid)
        return proc.pid

    def pid(self, name: str) -> int | None:
        return read_pidfile(self.pid_dir / f"{name}.pid")

    def stop(self, name: str, timeout: float = 15.0) -> bool:
        """SIGTERM to the process group, SIGKILL after ``timeout``; True if something was running."""
        pid = self.pid(name)
        remove_pidfile(self.pid_dir / f"{name}.pid")
        if pid is None:
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return True
            end = time.monotonic() + wait
            while _pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if not _pid_alive(pid):
                return True
        raise StackError(f"{name} (pid {pid}) did not stop, even after SIGKILL")


def _sip_request(method: str, host: str, port: int, user: str = "", *, local_port: int = 0,
                 extra: str = "", timeout: float = 1.0) -> bytes:
    """Send one SIP request over UDP from 127.0.0.1:``local_port`` (0: any) and return the first final
    answer (b"" when none came)."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", local_port))
        sock.settimeout(timeout)
        lport = sock.getsockname()[1]
        who = f"{user}@" if user else ""
        msg = (f"{method} sip:{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{call_id[:16]};rport\r\n"
               f"From: <sip:{user or 'probe'}@{host}:{port}>;tag={call_id[:8]}\r\n"
               f"To: <sip:{who}{host}:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
               f"Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n")
        try:
            sock.sendto(msg.encode(), (host, port))
            while True:
                data, _ = sock.recvfrom(4096)
                if not data.startswith(b"SIP/2.0 1"):
                    return data
        except OSError:
            return b""


def sip_options_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a SIP server on UDP host:port answers an OPTIONS with 200 (Kamailio answers for itself)."""
    return _sip_request("OPTIONS", host, port, timeout=timeout).startswith(b"SIP/2.0 200")


def register_phone(host: str, port: int, user: str, phone_port: int, expires: int = 600) -> None:
    """Register ``user``'s phone at 127.0.0.1:``phone_port`` with Kamailio (the private cluster's registrar,
    which checks the source address, not a password: see docs/cluster.md). Start the phone on that port
    afterwards."""
    answer = _sip_request("REGISTER", host, port, user, local_port=phone_port, timeout=3.0,
                          extra=f"Contact: <sip:{user}@127.0.0.1:{phone_port}>\r\nExpires: {expires}\r\n")
    if not answer.startswith(b"SIP/2.0 200"):
        raise StackError(f"Kamailio did not register {user}: {answer[:200]!r}")


class KamailioProcess:
    """Kamailio in front of the nodes: its rendered files under ``root``, run in the foreground (``-DD -E``)."""

    def __init__(self, root: Path, listen: str, nodes: Sequence[str], allowed: Sequence[str] = ("127.0.0.1",),
                 binary: str = "kamailio") -> None:
        self.root, self.listen, self.binary = root, listen, binary
        self.host, self.port = kamailio.split_hostport(listen, "kamailio")
        self.cfg_path, self.list_path = root / "kamailio.cfg", root / "dispatcher.list"
        self.ctl = short_socket_path(root / "kamailio_ctl")
        self.settings = kamailio.KamailioSettings(listen=listen, nodes=tuple(nodes), allowed=tuple(allowed),
                                                  dispatcher_file=str(self.list_path), ctl_socket=str(self.ctl))
        self.procs = Processes(root)

    def render(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.cfg_path.write_text(kamailio.render_cfg(self.settings), encoding="utf-8")
        self.list_path.write_text(kamailio.render_dispatcher(self.settings.nodes), encoding="utf-8")
        check = subprocess.run([self.binary, "-c", "-f", str(self.cfg_path)], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            raise StackError(f"Kamailio refuses {self.cfg_path}:\n{(check.stdout + check.stderr)[-3000:]}")

    def start(self, deadline: float) -> None:
        self.render()
        self.ctl.unlink(missing_ok=True)
        self.procs.spawn("kamailio", [self.binary, "-f", str(self.cfg_path), "-DD", "-E", "-m", "64", "-M", "8"],
                         "kamailio.log")
        while not sip_options_ok(self.host, self.port, timeout=0.3):
            if self.procs.pid("kamailio") is None:
                raise StackError(f"Kamailio exited during start-up:\n{_tail(self.procs.logs / 'kamailio.log')}")
            if time.monotonic() > deadline:
                raise StackError(f"Kamailio did not answer OPTIONS on {self.listen} in time:\n"
                                 f"{_tail(self.procs.logs / 'kamailio.log')}")
            time.sleep(0.1)

    def wait_probed(self, deadline: float) -> None:
        """Wait until Kamailio's OPTIONS probes found every node alive (flags ``AP``)."""
        want = {f"sip:{n}" for n in self.settings.nodes}
        seen: dict[str, str] = {}
        while True:
            seen = self.destinations()
            if want <= {uri for uri, flags in seen.items() if flags == "AP"}:
                return
            if self.procs.pid("kamailio") is None or time.monotonic() > deadline:
                raise StackError(f"Kamailio's probes did not find every node alive ({seen or 'no answer'} from "
                                 f"kamcmd):\n{_tail(self.procs.logs / 'kamailio.log')}")
            time.sleep(0.2)

    def stop(self, timeout: float = 15.0) -> list[str]:
        return ["kamailio"] if self.procs.stop("kamailio", timeout) else []

    def pids(self) -> dict[str, int | None]:
        return {"kamailio": self.procs.pid("kamailio")}

    def destinations(self) -> dict[str, str]:
        """The dispatcher's view of the nodes, ``sip:host:port`` -> flags (``AP`` active and probed, ``IP``
        inactive, ``TP`` trying), from ``kamcmd dispatcher.list``; empty when Kamailio does not answer."""
        try:
            out = subprocess.run(["kamcmd", "-s", f"unix:{self.ctl}", "dispatcher.list"], capture_output=True,
                                 text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        found: dict[str, str] = {}
        uri = ""
        for line in out.stdout.splitlines():
            key, _, value = line.strip().partition(":")
            if key == "URI":
                uri = value.strip()
            elif key == "FLAGS" and uri:
                found[uri] = value.strip()
                uri = ""
        return found

    def status(self) -> dict[str, Any]:
        pid = self.procs.pid("kamailio")
        return {"running": pid is not None, "pid": pid, "sip": self.listen,
                "answers": pid is not None and sip_options_ok(self.host, self.port),
                "nodes": self.destinations() if pid is not None else {}}

    def describe(self) -> dict[str, Any]:
        return {"sip": self.listen, "pid": self.procs.pid("kamailio")}
