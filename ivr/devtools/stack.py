"""``ivr up / down / status``: a private Asterisk, Redis and controller in one workdir.

Everything runs as background processes on loopback and high ports, with pid
files, logs and data under the workdir, so two stacks in two workdirs can run
side by side (``--port-base``). ``up`` waits for each part to be healthy and
fails with the tail of the failing part's log, never a hang; ``down`` stops
all of them and checks that nothing is left listening.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..asterisk import conf as asterisk_conf
from ..app.config import Config, ConfigError
from ..app.config_load import load, load_secrets, write_secrets
from .procs import (_pid_alive as _pid_alive, _port_in_use as _port_in_use, read_pidfile as read_pidfile,
                    redis_ping as redis_ping, remove_pidfile as remove_pidfile, write_pidfile as write_pidfile,
                    write_redis_conf as write_redis_conf)

# What a private stack may dial out: its "carrier" is SIPp on loopback, and the test and demo customers are
# +1 202 numbers (the 555-01xx fictional range, and the benchmarks' 2XX exchanges). A real deployment lists
# its own destinations in ``outbound:`` (no section: nothing is dialled out).
STACK_OUTBOUND = {"allowed_prefixes": ["+1202"], "per_number_hourly": 20, "global_hourly": 100_000}
PORT_OFFSETS = {"sip": 60, "ami": 38, "agi": 73, "api": 80, "redis": 1379, "rtp_start": 5000, "rtp_end": 5999}
SERVICES = ("redis", "asterisk", "controller")


class StackError(RuntimeError):
    """A part of the stack did not start or stop; the message says which and why."""


TOOLS = ("asterisk", "redis-server", "sipp")   # what a private stack with simulated phones needs


def missing_tools(tools: tuple[str, ...] = TOOLS) -> list[str]:
    """The programs of ``tools`` that are not on the PATH (scripts/install.sh installs them)."""
    return [t for t in tools if shutil.which(t) is None]


def ports_for(base: int) -> dict[str, int]:
    return {name: base + off for name, off in PORT_OFFSETS.items()}


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:]) or f"({path} is empty)"


def ports_free(base: int, rtp_pairs: int = 1) -> bool:
    """Whether a stack at ``base`` can bind all its ports on 127.0.0.1 (TCP and UDP): SIP, AMI, AGI, API,
    Redis, and the RTP range up to ``rtp_pairs`` calls (its first and last port)."""
    wanted = [p for n, p in ports_for(base).items() if n != "rtp_end"]
    wanted.append(base + PORT_OFFSETS["rtp_start"] + 2 * rtp_pairs - 1)
    return all(port_bindable(port) for port in wanted)


def port_bindable(port: int, kinds: tuple[int, ...] = (socket.SOCK_STREAM, socket.SOCK_DGRAM)) -> bool:
    """Whether ``port`` on 127.0.0.1 can be bound now, for each socket kind in ``kinds``."""
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def pick_port_base(start: int, stop: int, step: int = 2000, rtp_pairs: int = 1) -> int:
    """The first base in range(start, stop, step) whose ports are all free (for tests and benchmarks)."""
    for base in range(start, stop, step):
        if base + max(PORT_OFFSETS.values()) < 65000 and ports_free(base, rtp_pairs):
            return base
    raise StackError(f"no free port range between {start} and {stop}: pass --port-base")


def start_scratch_redis(workdir: Path, attempts: int = 5) -> tuple[subprocess.Popen[bytes], int]:
    """A bare redis-server on a free loopback port, without persistence, for tests and benchmarks.

    It has no password: it is only for store tests and import benchmarks that fill it with generated
    data and stop it; no controller is ever pointed at it (a stack's Redis is started by ``Stack.up``
    with the password from secrets.yaml).

    Returns the process (the caller terminates it) and its port; raises StackError if none starts.
    """
    from ..store.sync import Pinger
    for _ in range(attempts):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--daemonize", "no", "--dir", str(workdir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with Pinger(port, connect_timeout=0.5) as pinger:
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                if pinger.answers():
                    return proc, port
                time.sleep(0.05)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
    raise StackError("could not start redis-server (is it installed? run scripts/install.sh)")


def http_url(host: str, port: int) -> str:
    """The URL this machine reaches a server bound to ``host`` at: a wildcard bind (0.0.0.0, ::) is reached on
    loopback, an IPv6 address in brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Stack:
    """One workdir holding config, secrets, logs, pids and data of a private stack.

    ``services`` are the parts it starts: all three alone; Asterisk and the controller for a node of a
    cluster (ivr/devtools/cluster.py), whose Redis is the cluster's.
    """

    def __init__(self, workdir: str | os.PathLike[str], services: tuple[str, ...] = SERVICES) -> None:
        self.workdir = Path(workdir).resolve()
        self.services = services
        self.config_path = self.workdir / "ivr.yaml"
        self.secrets_path = self.workdir / "secrets.yaml"
        self.logs = self.workdir / "logs"
        self.pids = self.workdir / "pids"
        self.asterisk_state = self.workdir / "asterisk"
        self.asterisk_etc = self.asterisk_state / "etc"
        self.redis_dir = self.workdir / "redis"

    # ------------------------------------------------------------------ setup
    def init(self, port_base: int | None = None, extra: Mapping[str, Any] | None = None) -> Config:
        """Create the workdir, its config (if absent) and secrets (if absent); return the config."""
        for d in (self.workdir, self.logs, self.pids, self.redis_dir):
            d.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists() or port_base is not None or extra:
            data: dict[str, Any] = {}
            if self.config_path.exists():
                data = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
            else:
                data["outbound"] = dict(STACK_OUTBOUND)
            if port_base is not None or set(data) <= {"outbound"}:
                p = ports_for(port_base or 15000)
                data.setdefault("asterisk", {}).update(
                    sip_port=p["sip"], ami_port=p["ami"], rtp_start=p["rtp_start"], rtp_end=p["rtp_end"])
                data.setdefault("agi", {})["port"] = p["agi"]
                data.setdefault("api", {})["port"] = p["api"]
                data.setdefault("redis", {})["url"] = f"redis://127.0.0.1:{p['redis']}/0"
            for key, value in (extra or {}).items():
                if isinstance(value, dict) and isinstance(data.get(key), dict):
                    data[key].update(value)
                else:
                    data[key] = value
            data["workdir"] = str(self.workdir)
            if isinstance(data.get("asterisk"), dict):   # agents added at run time get their SIP account here
                data["asterisk"].setdefault("conf_dir", str(self.asterisk_etc))
            self.config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        secrets = load_secrets(self.secrets_path) if self.secrets_path.exists() else {}
        changed = False
        for key in ("ami_secret", "api_token", "redis_password"):
            if not secrets.get(key):
                secrets[key] = asterisk_conf.new_secret(32)
                changed = True
        if changed:
            write_secrets(self.secrets_path, secrets)
        return self.config()

    def config(self) -> Config:
        return load(self.config_path, secrets_path=self.secrets_path)

    def secrets(self) -> dict[str, str]:
        return load_secrets(self.secrets_path)

    def _redis_port(self, cfg: Config) -> int:
        return int(cfg.redis.url.rsplit(":", 1)[1].split("/")[0])

    # ------------------------------------------------------------- processes
    def _pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def _read_pid(self, name: str) -> int | None:
        return read_pidfile(self._pidfile(name))

    def _spawn(self, name: str, argv: list[str], log_name: str, env: Mapping[str, str] | None = None) -> int:
        log_fh = open(self.logs / log_name, "ab")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                                cwd=self.workdir, start_new_session=True, env={**os.environ, **(env or {})})
        log_fh.close()
        write_pidfile(self._pidfile(name), proc.pid)
        return proc.pid

    def _asterisk_cli(self, command: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["asterisk", "-C", str(self.asterisk_etc / "asterisk.conf"), "-rx", command],
                              capture_output=True, text=True, timeout=timeout)

    def _check_ports(self, cfg: Config) -> None:
        checks = [("sip", cfg.asterisk.sip_host, cfg.asterisk.sip_port, True),
                  ("ami", cfg.asterisk.ami_host, cfg.asterisk.ami_port, False),
                  ("agi", cfg.agi.host, cfg.agi.port, False), ("api", cfg.api.host, cfg.api.port, False)]
        if "redis" in self.services:
            checks.append(("redis", "127.0.0.1", self._redis_port(cfg), False))
        for name, host, port, udp in checks:
            if _port_in_use(host, port, udp):
                raise StackError(f"port {port} ({name}) on {host} is already in use: is another stack running? "
                                 "Stop it with `ivr down`, or pick other ports with --port-base")

    def up(self, timeout: float = 60.0) -> dict[str, Any]:
        """Start Redis, Asterisk and the controller; wait until each is healthy."""
        cfg = self.config()
        if any(self._read_pid(s) for s in SERVICES):
            raise StackError(f"a stack is already running in {self.workdir}; run `ivr down --workdir {self.workdir}` first")
        for tool in ("asterisk", "redis-server"):
            if shutil.which(tool) is None:
                raise StackError(f"{tool} is not installed: run scripts/install.sh first")
        self._check_ports(cfg)
        secrets = self.secrets()
        dirs = asterisk_conf.AsteriskDirs.under(self.asterisk_etc, self.asterisk_state)
        asterisk_conf.render(cfg, dirs, {"ami_secret": secrets["ami_secret"], **secrets})
        deadline = time.monotonic() + timeout
        try:
            if "redis" in self.services:
                self._start_redis(cfg, deadline)
            self._start_asterisk(cfg, deadline)
            self._start_controller(cfg, deadline)
        except BaseException:
            self.down()
            raise
        return self.describe(cfg)

    def restart_controller(self, timeout: float = 30.0) -> None:
        """Start the controller again (after a crash or a kill) and wait until it is healthy."""
        pid = self._read_pid("controller")
        if pid is not None:
            raise StackError(f"the controller is still running (pid {pid})")
        self._start_controller(self.config(), time.monotonic() + timeout)

    def restart_asterisk(self, timeout: float = 30.0) -> None:
        """Start Asterisk again (after a crash or a kill) with the rendered configuration."""
        pid = self._read_pid("asterisk")
        if pid is not None:
            raise StackError(f"Asterisk is still running (pid {pid})")
        self._start_asterisk(self.config(), time.monotonic() + timeout)

    def restart_redis(self, timeout: float = 30.0) -> None:
        """Start Redis again (after a crash or a kill) on its data directory (the AOF is replayed)."""
        pid = self._read_pid("redis")
        if pid is not None:
            raise StackError(f"Redis is still running (pid {pid})")
        self._start_redis(self.config(), time.monotonic() + timeout)

    def describe(self, cfg: Config | None = None) -> dict[str, Any]:
        cfg = cfg or self.config()
        return {
            "sip": f"{cfg.asterisk.sip_host}:{cfg.asterisk.sip_port}",
            "ami": f"{cfg.asterisk.ami_host}:{cfg.asterisk.ami_port}",
            "agi": f"{cfg.agi.host}:{cfg.agi.port}",
            "api": http_url(cfg.api.host, cfg.api.port),
            "redis": cfg.redis.url,
            "inbound_extension": cfg.asterisk.inbound_extension,
            "token": self.secrets().get("api_token", ""),
            "workdir": str(self.workdir),
        }

    def _redis_conf(self, port: int, password: str) -> Path:
        return write_redis_conf(self.redis_dir, port, password)

    def _start_redis(self, cfg: Config, deadline: float) -> None:
        port = self._redis_port(cfg)
        password = cfg.redis.password
        if not password:
            raise StackError(f"no Redis password: {self.secrets_path} has no redis_password (run `ivr up` "
                             "with a fresh workdir, or add one)")
        self._spawn("redis", ["redis-server", str(self._redis_conf(port, password))], "redis.log")
        while not self._redis_ping(port, password):
            if self._read_pid("redis") is None:
                raise StackError(f"Redis did not start on port {port}:\n{_tail(self.logs / 'redis.log')}")
            if time.monotonic() > deadline:
                raise StackError(f"Redis did not answer on port {port} in time:\n{_tail(self.logs / 'redis.log')}")
            time.sleep(0.05)
        from ..store.tokens import register_token_sync  # registered here so the token works before the controller is up

        register_token_sync(port, password, cfg.redis.prefix, self.secrets()["api_token"], name="admin", role="admin")

    _redis_ping = staticmethod(redis_ping)

    def _start_asterisk(self, cfg: Config, deadline: float) -> None:
        conf = str(self.asterisk_etc / "asterisk.conf")
        self._spawn("asterisk", [cfg.asterisk.binary, "-C", conf, "-f", "-n", "-q"], "asterisk.console.log")
        messages = self.asterisk_state / "log" / "messages"
        while True:
            if self._read_pid("asterisk") is None:
                raise StackError("Asterisk exited during start-up:\n"
                                 f"{_tail(self.logs / 'asterisk.console.log')}\n{_tail(messages)}")
            if time.monotonic() > deadline:
                raise StackError(f"Asterisk did not finish booting in time:\n{_tail(messages)}")
            try:
                res = self._asterisk_cli("core waitfullybooted", timeout=max(1.0, deadline - time.monotonic()))
                if res.returncode == 0 and "fully booted" in res.stdout.lower():
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.1)

    def _start_controller(self, cfg: Config, deadline: float) -> None:
        argv = [sys.executable, "-m", "ivr", "serve", "--config", str(self.config_path),
                "--log-file", str(self.logs / "controller.log")]
        self._spawn("controller", argv, "controller.stdout.log")
        url = http_url(cfg.api.host, cfg.api.port) + "/health"
        last = ""
        while True:
            if self._read_pid("controller") is None:
                raise StackError("the controller exited during start-up:\n"
                                 f"{_tail(self.logs / 'controller.stdout.log')}\n{_tail(self.logs / 'controller.log')}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = exc.read().decode(errors="replace")[:500]
            except OSError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise StackError(f"the controller did not become healthy in time ({last}):\n"
                                 f"{_tail(self.logs / 'controller.log')}")
            time.sleep(0.1)

    # ------------------------------------------------------------------- stop
    def down(self, timeout: float = 15.0) -> list[str]:
        """Stop controller, Asterisk and Redis (in that order); return what was stopped."""
        stopped = []
        for name in reversed(SERVICES):
            pid = self._read_pid(name)
            if pid is None:
                remove_pidfile(self._pidfile(name))
                continue
            if name == "asterisk":
                try:
                    self._asterisk_cli("core stop now", timeout=5)
                except (subprocess.TimeoutExpired, OSError):
                    pass
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            end = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if _pid_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                while _pid_alive(pid) and time.monotonic() < end + 5:
                    time.sleep(0.05)
            remove_pidfile(self._pidfile(name))
            stopped.append(name)
        return stopped

    def status(self) -> dict[str, Any]:
        """Which parts run, and the controller's health if it answers."""
        out: dict[str, Any] = {"workdir": str(self.workdir)}
        for name in self.services:
            out[name] = {"running": self._read_pid(name) is not None, "pid": self._read_pid(name)}
        try:
            cfg = self.config()
        except ConfigError as exc:
            out["config_error"] = str(exc)
            return out
        url = http_url(cfg.api.host, cfg.api.port) + "/health"
        token = self.secrets().get("api_token", "") if self.secrets_path.exists() else ""
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:   # with the stack's token /health answers the detail (AMI, AGI, records), without it only up/down
            with urllib.request.urlopen(req, timeout=2) as resp:
                out["health"] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            out["health"] = json.loads(exc.read() or b"{}")
        except OSError as exc:
            out["health"] = {"status": "down", "error": str(exc)}
        out["healthy"] = all(out[s]["running"] for s in self.services) and out["health"].get("status") == "ok"
        return out


def seed_refund(cfg: Any, booking: str) -> None:
    """A refund request for the booking the status callers ask about, so they hear a status and hang up."""
    import asyncio

    from ..store.redis_store import Store

    async def seed() -> None:
        store = Store.from_config(cfg.redis)
        try:
            if not await store.refunds.by_booking(booking):
                await store.refunds.create(booking, source="demo")
        finally:
            await store.close()
    asyncio.run(seed())
