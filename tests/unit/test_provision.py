"""SipProvisioner: pjsip_volunteers.conf plus `module reload res_pjsip.so` over the control socket, driven
against a stand-in for the asterisk binary (a script that records its argv and answers as Asterisk does)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from ivr.app.config import ConfigError

from ivr.app.config_load import from_mapping
from ivr.asterisk.provision import AsteriskCtl, ProvisionError, SipProvisioner, ctl_for

ACCOUNT = {"id": "7001", "display": "Vol", "contact": "", "md5_cred": "0" * 32, "realm": "asterisk", "password": ""}


def fake_asterisk(tmp_path: Path, body: str) -> Path:
    """A script standing in for `asterisk`: appends its argv to argv.log, then runs ``body``."""
    path = tmp_path / "asterisk"
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{tmp_path}/argv.log"\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def provisioner(tmp_path: Path, body: str, **asterisk: str) -> SipProvisioner:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    cfg = from_mapping({"asterisk": {"conf_dir": str(etc), "binary": str(fake_asterisk(tmp_path, body)),
                                     **asterisk}}, {})
    return SipProvisioner(cfg, retry_s=0.01)


def test_reload_runs_the_fixed_command_against_the_stack_asterisk_conf(tmp_path: Path) -> None:
    p = provisioner(tmp_path, "echo \"Module 'res_pjsip.so' reloaded successfully.\"")
    assert asyncio.run(p.apply([ACCOUNT])) is True
    argv = (tmp_path / "argv.log").read_text().splitlines()
    assert argv == [f"-C {tmp_path / 'etc' / 'asterisk.conf'} -rx module reload res_pjsip.so"]
    assert "[7001-auth]" in (tmp_path / "etc" / "pjsip_volunteers.conf").read_text()
    # unchanged and not forced: no reload
    assert asyncio.run(p.apply([ACCOUNT], force=False)) is False
    assert len((tmp_path / "argv.log").read_text().splitlines()) == 1


def test_a_system_install_names_its_own_asterisk_conf(tmp_path: Path) -> None:
    p = provisioner(tmp_path, "echo \"Module 'res_pjsip.so' reloaded successfully.\"",
                    ctl_config="/etc/asterisk/asterisk.conf")
    asyncio.run(p.apply([ACCOUNT]))
    assert (tmp_path / "argv.log").read_text().split()[:2] == ["-C", "/etc/asterisk/asterisk.conf"]
    with pytest.raises(ConfigError, match="asterisk.ctl_config"):
        from_mapping({"asterisk": {"ctl_config": "asterisk.conf"}}, {})
    with pytest.raises(ConfigError, match="asterisk.ctl_group"):
        from_mapping({"asterisk": {"ctl_group": "ivr; rm"}}, {})
    assert ctl_for(from_mapping({}, {})) is None


@pytest.mark.parametrize("body, says", [
    ("echo \"No such module 'res_pjsip.so'\"", "No such module"),
    ("echo \"The module 'res_pjsip.so' reported a reload failure\"", "reload failure"),
    ("echo 'Unable to connect to remote asterisk (does /x/asterisk.ctl exist?)'; exit 1", "exit 1"),
    ("exit 0", "no answer"),
])
def test_anything_but_a_successful_reload_is_an_error(tmp_path: Path, body: str, says: str) -> None:
    p = provisioner(tmp_path, body)
    with pytest.raises(ProvisionError, match=says) as exc:
        asyncio.run(p.apply([ACCOUNT]))
    assert "res_pjsip did not reload" in str(exc.value)
    assert p.reloads == 0


def test_a_reload_already_running_is_waited_out(tmp_path: Path) -> None:
    body = (f'n=$(wc -l < "{tmp_path}/argv.log")\n'
            'if [ "$n" -lt 2 ]; then echo "A module reload request is already in progress; please be patient"; '
            "else echo \"Module 'res_pjsip.so' reloaded successfully.\"; fi")
    p = provisioner(tmp_path, body)
    assert asyncio.run(p.apply([ACCOUNT])) is True
    assert len((tmp_path / "argv.log").read_text().splitlines()) == 2


def test_a_hung_asterisk_times_out_and_is_killed(tmp_path: Path) -> None:
    ctl = AsteriskCtl(str(fake_asterisk(tmp_path, "exec sleep 30")), str(tmp_path / "asterisk.conf"), timeout=0.5)
    with pytest.raises(ProvisionError, match="did not answer"):
        asyncio.run(ctl.run("module reload res_pjsip.so"))


def test_a_missing_binary_is_an_error_not_a_crash(tmp_path: Path) -> None:
    ctl = AsteriskCtl(str(tmp_path / "nope"), str(tmp_path / "asterisk.conf"))
    with pytest.raises(ProvisionError, match="cannot run"):
        asyncio.run(ctl.run("module reload res_pjsip.so"))
