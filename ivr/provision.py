"""SIP accounts of agents added at run time: ``pjsip_volunteers.conf`` plus a res_pjsip reload.

``pjsip.conf`` ends with ``#tryinclude pjsip_volunteers.conf``. When a supervisor
adds or removes an agent, the controller rewrites that file (atomically, 0640,
from the same template as the config agents' accounts) and asks Asterisk over
AMI to reload res_pjsip, which applies it without a restart and without
touching calls in progress. At start-up the file is brought in line with the
roster in Redis, so a restarted controller (or a re-rendered config) never
forgets an account, and never keeps one that was removed.

The AMI ``Reload`` action needs the ``config`` write class; that is why the
controller's AMI user has it (see docs/operations.md). ``asterisk.conf_dir``
names the directory (``ivr up`` sets it); without it, adding agents at run time
is refused with a clear error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .ami.client import AmiClient, AmiError
from .asterisk_conf import render_accounts
from .config import Config

log = logging.getLogger(__name__)

FILE_NAME = "pjsip_volunteers.conf"


class ProvisionError(RuntimeError):
    """The SIP account could not be applied; the message says why."""


class SipProvisioner:
    def __init__(self, cfg: Config, ami: AmiClient) -> None:
        self.cfg = cfg
        self.ami = ami
        self.path = Path(cfg.asterisk.conf_dir) / FILE_NAME if cfg.asterisk.conf_dir else None
        self.reloads = 0

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
        try:
            await self.ami.action("Reload", {"Module": "res_pjsip.so"}, timeout=10)
        except AmiError as exc:
            raise ProvisionError(f"the accounts file is written but res_pjsip did not reload: {exc}") from exc
        self.reloads += 1
        log.info("provision: %s written (%d accounts), res_pjsip reloaded", self.path, len(accounts))
        return True


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
