"""Processes and small servers of a private stack: pid files that name one process (pid + start time), port
probes, and the Redis config and ping the stacks and the cluster use (ivr/devtools/stack.py, cluster*.py)."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from pathlib import Path

SOCKET_PATH_MAX = 100   # a Unix socket's path holds at most 107 bytes (sun_path, 108 with its NUL)


def short_socket_path(path: Path) -> Path:
    """``path`` for a Unix socket, or, when it is too long to bind, a path under /tmp named after it (the same
    ``path`` always gives the same one)."""
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ivr-{digest}-{path.name}"[:60]


def _port_in_use(host: str, port: int, udp: bool = False) -> bool:
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        if not udp:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _start_ticks(pid: int) -> str:
    """When the process started (clock ticks since boot, /proc/<pid>/stat field 22): with the pid, it names
    one process, where a pid alone may have been reused by another since (pid_max is often 32768)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _stamp_path(path: Path) -> Path:
    return path.parent / (path.name + ".start")


def write_pidfile(path: Path, pid: int) -> None:
    """The pid in ``path`` (as always: other tools read it), its start time beside it (``<path>.start``):
    ``read_pidfile`` then never takes a reused pid for the process."""
    path.write_text(str(pid), encoding="ascii")
    _stamp_path(path).write_text(_start_ticks(pid), encoding="ascii")


def remove_pidfile(path: Path) -> None:
    """The pid file and its start time, gone (the process stopped)."""
    path.unlink(missing_ok=True)
    _stamp_path(path).unlink(missing_ok=True)


def read_pidfile(path: Path) -> int | None:
    """The pid in ``path`` while that very process runs (same start time), else None: a stale file whose pid
    now belongs to another process must never lead to signalling that process (or its group)."""
    try:
        pid = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    try:
        stamp = _stamp_path(path).read_text(encoding="ascii").strip()
    except OSError:
        stamp = ""
    if stamp and stamp != _start_ticks(pid):
        return None
    return pid


def write_redis_conf(redis_dir: Path, port: int, password: str) -> Path:
    """A Redis config file (0600, in the 0700 data folder ``redis_dir``): the password is in it, never on a
    command line that every local user can read in /proc."""
    def quoted(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    redis_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(redis_dir, 0o700)
    path = redis_dir / "redis.conf"
    text = "\n".join([
        "# written by `ivr up` from secrets.yaml (redis_password); rewritten on every start",
        f"port {port}", "bind 127.0.0.1", "protected-mode yes", f"dir {quoted(str(redis_dir))}",
        "appendonly yes", "appendfsync everysec", 'save ""', "daemonize no", 'logfile ""',
        f"requirepass {quoted(password)}", ""])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def redis_ping(port: int, password: str) -> bool:
    """Whether the Redis on 127.0.0.1:``port`` answers PING with that password (no client library)."""
    def resp(*args: str) -> bytes:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(parts)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(resp("AUTH", password) + resp("PING"))
            got = b""
            while got.count(b"\r\n") < 2:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            return got == b"+OK\r\n+PONG\r\n"
    except OSError:
        return False
