"""`ivr up / status / down` as a user runs them, beside the session's test stack."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ivr.devtools.stack import Stack, _pid_alive, _port_in_use

from .harness import TestStack, pick_port_base


def ivr(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True, text=True, timeout=timeout)


def test_up_status_call_down_leaves_nothing_behind(tmp_path: Path, stack: TestStack) -> None:
    base = pick_port_base(start=50000, stop=62000)
    up = ivr("up", "--workdir", str(tmp_path), "--port-base", str(base))
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout.strip().splitlines()[-1])
    assert set(info) >= {"sip", "ami", "agi", "api", "redis", "inbound_extension", "token"}
    assert info["sip"] == f"127.0.0.1:{base + 60}"
    assert info["api"] == f"http://127.0.0.1:{base + 80}"
    pids = {name: int((tmp_path / "pids" / f"{name}.pid").read_text()) for name in ("redis", "asterisk", "controller")}
    try:
        status = ivr("status", "--workdir", str(tmp_path))
        assert status.returncode == 0, status.stdout
        assert json.loads(status.stdout)["health"]["ami"]["connected"] is True
        # the session stack keeps running beside this one
        assert stack.api.get("/health")["status"] == "ok"

        # SIPp's own built-in UAC scenario (not ours) to the printed address and extension
        host, port = info["sip"].rsplit(":", 1)
        uac = subprocess.run(["sipp", f"{host}:{port}", "-sn", "uac", "-s", info["inbound_extension"], "-m", "1",
                              "-d", "2000", "-i", "127.0.0.1", "-p", "0", "-timeout", "30s", "-nostdin",
                              "-mi", "127.0.0.1"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert uac.returncode == 0, uac.stdout[-2000:]
        log = (tmp_path / "logs" / "controller.log").read_text()
        assert "menu main starts" in log
    finally:
        down = ivr("down", "--workdir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert sorted(json.loads(down.stdout)["stopped"]) == ["asterisk", "controller", "redis"]
    for name, pid in pids.items():
        assert not _pid_alive(pid), f"{name} (pid {pid}) is still running"
    for port in (base + 38, base + 73, base + 80, base + 1379):
        assert not _port_in_use("127.0.0.1", port), f"port {port} still in use"
    assert not _port_in_use("127.0.0.1", base + 60, udp=True)
    assert list((tmp_path / "pids").iterdir()) == []


def test_bad_config_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    Stack(tmp_path).init(port_base=pick_port_base(start=52000, stop=62000))
    cfg = yaml.safe_load((tmp_path / "ivr.yaml").read_text())
    cfg["asterisk"]["sip_port"] = "not-a-port"
    (tmp_path / "ivr.yaml").write_text(yaml.safe_dump(cfg))
    up = ivr("up", "--workdir", str(tmp_path))
    assert up.returncode == 2
    assert "asterisk.sip_port" in up.stderr
    assert "expected an integer" in up.stderr
    assert not (tmp_path / "pids" / "redis.pid").exists()


def test_asterisk_that_fails_to_start_is_reported_with_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "broken-asterisk"
    fake.write_text("#!/bin/sh\necho 'boom: cannot load pjsip.conf' >&2\nexit 1\n")
    fake.chmod(0o755)
    Stack(tmp_path).init(port_base=pick_port_base(start=52000, stop=62000),
                         extra={"asterisk": {"binary": str(fake)}})
    up = ivr("up", "--workdir", str(tmp_path), "--timeout", "20")
    assert up.returncode == 1
    assert "Asterisk exited during start-up" in up.stderr
    assert "boom: cannot load pjsip.conf" in up.stderr
    # what had started (Redis) was stopped again
    assert not any((tmp_path / "pids").iterdir())


def test_secrets_are_private_and_not_in_the_config(stack: TestStack) -> None:
    wd = stack.stack.workdir
    assert os.stat(wd / "secrets.yaml").st_mode & 0o077 == 0
    assert os.stat(wd / "asterisk" / "etc" / "manager.conf").st_mode & 0o077 == 0
    secrets = yaml.safe_load((wd / "secrets.yaml").read_text())
    assert secrets["ami_secret"] not in (wd / "ivr.yaml").read_text()
    assert secrets["ami_secret"] not in (wd / "logs" / "controller.log").read_text()
    manager = (wd / "asterisk" / "etc" / "manager.conf").read_text()
    assert "bindaddr = 127.0.0.1" in manager
    perms = {line.split("=")[0].strip(): {p.strip() for p in line.split("=")[1].split(",")}
             for line in manager.splitlines() if line.startswith(("read =", "write ="))}
    forbidden = {"system", "command", "all", "dialplan"}
    assert not (perms["read"] | perms["write"]) & forbidden
    # no config either (UpdateConfig could rewrite manager.conf itself): volunteers' accounts are
    # reloaded over the control socket
    assert "config" not in perms["read"] | perms["write"]


def test_the_stack_redis_refuses_clients_without_the_password(stack: TestStack) -> None:
    import redis as redis_sync

    wd = stack.stack.workdir
    cfg = stack.stack.config()
    port = int(cfg.redis.url.rsplit(":", 1)[1].split("/")[0])
    password = yaml.safe_load((wd / "secrets.yaml").read_text())["redis_password"]
    assert len(password) >= 32 and cfg.redis.password == password
    # no password: every command is refused (as a local user with redis-cli would see it)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for command in (b"PING", f"HGETALL {cfg.redis.prefix}:tokens".encode(), b"CONFIG GET requirepass"):
            sock.sendall(command + b"\r\n")
            assert sock.recv(256).startswith(b"-NOAUTH Authentication required"), command
    anonymous = redis_sync.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        with pytest.raises(redis_sync.AuthenticationError):
            anonymous.hgetall(f"{cfg.redis.prefix}:tokens")
    finally:
        anonymous.close()
    # a wrong password is refused too; the right one works
    with pytest.raises(redis_sync.AuthenticationError):
        redis_sync.Redis(host="127.0.0.1", port=port, password="guess", socket_timeout=5).ping()
    assert redis_sync.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5).ping()
    # the password is in no command line, log or config file, only in 0600 files
    pid = int((wd / "pids" / "redis.pid").read_text())
    assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    for name in ("ivr.yaml", "logs/controller.log", "logs/redis.log"):
        assert password not in (wd / name).read_text(errors="replace"), name
    assert os.stat(wd / "redis" / "redis.conf").st_mode & 0o077 == 0
    assert os.stat(wd / "redis").st_mode & 0o077 == 0
    # the CLI reads the password from secrets.yaml beside the config: a token it makes works on the API
    made = ivr("token", "create", "--config", str(wd / "ivr.yaml"), "--name", "redis-pw-cli", "--role", "viewer")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert stack.api.request("GET", "/api/v1/queues", token=token)[0] == 200


def test_live_ami_user_has_no_config_right_and_the_control_socket_is_private(stack: TestStack) -> None:
    cfg = stack.stack.config()
    out = stack.stack._asterisk_cli(f"manager show user {cfg.asterisk.ami_username}")
    assert out.returncode == 0, out.stderr
    rights = {k.strip(): {p.strip() for p in v.split(",")} for k, _, v in
              (ln.partition(":") for ln in out.stdout.splitlines()) if k.strip() in ("read perm", "write perm")}
    assert rights["write perm"] == {"call", "agent", "originate", "reporting"}, out.stdout
    assert "config" not in rights["read perm"] | rights["write perm"]
    ctl = stack.stack.asterisk_state / "run" / "asterisk.ctl"
    assert os.stat(ctl).st_mode & 0o777 == 0o600


def test_ami_user_has_no_command_or_system_rights(stack: TestStack) -> None:
    import asyncio

    from ivr.asterisk.ami_client import AmiClient, AmiError

    cfg = stack.stack.config()

    async def probe() -> tuple[str, int]:
        client = AmiClient(cfg.asterisk.ami_host, cfg.asterisk.ami_port, cfg.asterisk.ami_username,
                           cfg.asterisk.ami_secret, on_event=lambda e: None)
        await client.start()
        try:
            await asyncio.wait_for(client.ready.wait(), 10)
            denied = ""
            try:
                await client.action("Command", {"Command": "core show version"})
            except AmiError as exc:
                denied = str(exc)
            members = await client.list_action("QueueStatus")
            return denied, len(members)
        finally:
            await client.stop()

    denied, n = asyncio.run(probe())
    assert "Permission denied" in denied
    assert n > 0  # what the controller needs still works


def test_api_host_option_binds_the_api_there_and_only_there(tmp_path: Path) -> None:
    """`ivr up --api-host` (what a VM whose port is forwarded needs, vagrant/README.md), proven on ::1 so
    the test itself still listens on loopback only: the API answers on [::1], not on 127.0.0.1, and the
    choice is kept in the workdir's ivr.yaml for the next `up`."""
    base = pick_port_base(start=50000, stop=62000)
    up = ivr("up", "--workdir", str(tmp_path), "--port-base", str(base), "--api-host", "::1")
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout.strip().splitlines()[-1])
        assert info["api"] == f"http://[::1]:{base + 80}"
        assert yaml.safe_load((tmp_path / "ivr.yaml").read_text())["api"]["host"] == "::1"
        import urllib.request
        with urllib.request.urlopen(f"{info['api']}/health", timeout=10) as resp:
            assert json.loads(resp.read())["status"] in ("ok", "degraded")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", base + 80), timeout=2).close()
        status = ivr("status", "--workdir", str(tmp_path))
        assert status.returncode == 0, status.stdout
    finally:
        down = ivr("down", "--workdir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert not _port_in_use("::1", base + 80)
