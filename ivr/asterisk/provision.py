"""SIP accounts of agents added at run time: ``pjsip_volunteers.conf`` plus a res_pjsip reload.

``pjsip.conf`` ends with ``#tryinclude pjsip_volunteers.conf``. When a supervisor
adds or removes an agent, the controller rewrites that file (atomically, 0640,
from the same template as the config agents' accounts) and has Asterisk reload
res_pjsip, which applies it without a restart and without touching calls in
progress. At start-up the file is brought in line with the roster in Redis, so a
restarted controller (or a re-rendered config) never forgets an account, and
never keeps one that was removed.

The reload goes through Asterisk's local control socket (``asterisk -C
<asterisk.conf> -rx 'module reload res_pjsip.so'``), not AMI: AMI's ``Reload``
needs the ``config`` write class, which also allows ``UpdateConfig`` of any
file, manager.conf included, to whoever holds the AMI secret. The control
socket is guarded by file permissions (``astctlpermissions`` / ``astctlgroup``
in asterisk.conf), and the command is one fixed argv, never a shell.
``asterisk.conf_dir`` names the directory (``ivr up`` sets it); without it,
adding agents at run time is refused with a clear error.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from .conf import render_accounts
from ..app.config import Config

log = logging.getLogger(__name__)

FILE_NAME = "pjsip_volunteers.conf"
RELOAD_COMMAND = "module reload res_pjsip.so"
RELOAD_OK = "reloaded successfully"
_BUSY = ("already in progress", "cannot reload a module yet")   # Asterisk busy: try again shortly


class ProvisionError(RuntimeError):
    """The SIP account could not be applied; the message says why."""


class AsteriskCtl:
    """One Asterisk CLI command over the local control socket: ``BINARY -C CONF -rx COMMAND``.

    The command runs as a fixed argument list (no shell) with a timeout; its output is returned for
    the caller to check (``asterisk -rx`` exits 0 for most failures and says so in words).
    """

    def __init__(self, binary: str, conf: str, timeout: float = 10.0) -> None:
        self.binary = binary
        self.conf = conf
        self.timeout = timeout

    def argv(self, command: str) -> list[str]:
        return [self.binary, "-C", self.conf, "-rx", command]

    async def run(self, command: str) -> str:
        """Run ``command``; raises ProvisionError if it cannot start, times out or exits non-zero."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(command), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            raise ProvisionError(f"cannot run {self.binary}: {exc.strerror or exc}") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise ProvisionError(f"{self.binary} -rx {command!r} did not answer within {self.timeout:.0f} s") from None
        text = out.decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            raise ProvisionError(f"{self.binary} -rx {command!r} failed (exit {proc.returncode}): {text[-300:]}")
        return text


def ctl_for(cfg: Config) -> AsteriskCtl | None:
    """The control-socket command of this config: ``asterisk.ctl_config`` (a system install's
    /etc/asterisk/asterisk.conf) or ``<asterisk.conf_dir>/asterisk.conf``; None without either."""
    a = cfg.asterisk
    conf = a.ctl_config or (str(Path(a.conf_dir) / "asterisk.conf") if a.conf_dir else "")
    return AsteriskCtl(a.binary, conf) if conf else None


class SipProvisioner:
    def __init__(self, cfg: Config, ctl: AsteriskCtl | None = None, retry_s: float = 0.5) -> None:
        self.cfg = cfg
        self.ctl = ctl or ctl_for(cfg)
        self.path = Path(cfg.asterisk.conf_dir) / FILE_NAME if cfg.asterisk.conf_dir else None
        self.reloads = 0
        self.retry_s = retry_s
        self._lock = asyncio.Lock()   # one write + reload at a time: the last roster wins, never a mix

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def check(self) -> None:
        if self.path is None:
            raise ProvisionError("asterisk.conf_dir is not set: agents can only be added in the config file")
        if not self.path.parent.is_dir():
            raise ProvisionError(f"asterisk.conf_dir {self.path.parent} does not exist")

    async def apply(self, accounts: list[dict[str, Any]], *, force: bool = True) -> bool:
        """Write the accounts file; reload res_pjsip if it changed (or ``force``). Returns whether it reloaded."""
        self.check()
        assert self.path is not None
        text = render_accounts(accounts)
        async with self._lock:
            try:
                current = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                current = None
            if current == text and not force:
                return False
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self.path)
            await self.reload()
        self.reloads += 1
        log.info("provision: %s written (%d accounts), res_pjsip reloaded", self.path, len(accounts))
        return True

    async def reload(self, attempts: int = 3) -> None:
        """``module reload res_pjsip.so`` over the control socket; raises ProvisionError unless Asterisk
        says it reloaded (a reload already running is waited out, a few times)."""
        if self.ctl is None:
            raise ProvisionError("no Asterisk control socket configured (asterisk.conf_dir or asterisk.ctl_config)")
        out = ""
        for attempt in range(attempts):
            try:
                out = await self.ctl.run(RELOAD_COMMAND)
            except ProvisionError as exc:
                raise ProvisionError(f"the accounts file is written but res_pjsip did not reload: {exc}") from None
            if RELOAD_OK in out:
                return
            if not any(b in out.lower() for b in _BUSY) or attempt == attempts - 1:
                break
            await asyncio.sleep(self.retry_s)
        raise ProvisionError(f"the accounts file is written but res_pjsip did not reload: {out[-300:] or 'no answer'}")


def phone_configs(server: str, port: int, user: str, password: str, display: str) -> dict[str, str]:
    """Ready-to-use account settings for a softphone (Linphone's linphonerc) and a Yealink desk phone
    (a ``<MAC>.cfg`` provisioning file). Built when the account is made: the password is not kept."""
    host = f"[{server}]" if ":" in server else server
    display = display.replace('"', "").replace("\n", " ")[:40] or user
    linphone = "\n".join([
        "[proxy_0]", f"reg_proxy=<sip:{host}:{port};transport=udp>", f'reg_identity="{display}" <sip:{user}@{host}>',
        "reg_expires=300", "reg_sendregister=1", "publish=0", "",
        "[auth_info_0]", f"username={user}", f"userid={user}", f"passwd={password}", "realm=asterisk", ""])
    yealink = "\n".join([
        "#!version:1.0.0.1", "account.1.enable = 1", f"account.1.label = {display}",
        f"account.1.display_name = {display}", f"account.1.auth_name = {user}", f"account.1.user_name = {user}",
        f"account.1.password = {password}", f"account.1.sip_server.1.address = {server}",
        f"account.1.sip_server.1.port = {port}", "account.1.sip_server.1.transport_type = 0",
        "account.1.sip_server.1.expires = 300", "account.1.nat.rport = 1", "account.1.codec.pcmu.enable = 1",
        "account.1.codec.pcma.enable = 1", "account.1.dtmf.type = 1", ""])
    return {"linphonerc": linphone, "yealink_cfg": yealink}
