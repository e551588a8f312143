"""A carrier trunk that wants registration: Asterisk registers with digest auth to the carrier's
registrar (a SIPp UAS that checks the credentials), with the password from secrets.yaml only."""

from __future__ import annotations

from pathlib import Path

import yaml

from ivr.app.config_load import load_secrets, write_secrets
from ivr.devtools.sipp import Sipp, free_port
from ivr.devtools.stack import Stack

from .harness import pick_port_base, require_tools


def registered(tmp_path: Path, password_in_secrets: str, expected: str) -> tuple[int, Path]:
    require_tools()
    registrar_port = free_port()
    stack = Stack(tmp_path / "trunk")
    stack.workdir.mkdir(parents=True)
    # the operator puts the carrier's password in the 0600 secrets file; ivr up adds its own secrets beside it
    write_secrets(stack.secrets_path, {"trunk_password": password_in_secrets})
    stack.init(port_base=pick_port_base(start=30000, stop=40000), extra={
        "asterisk": {"trunk_uri": f"sip:127.0.0.1:{registrar_port}", "trunk_username": "acme-line",
                     "trunk_register": True}})
    assert {"ami_secret", "api_token", "trunk_password"} <= set(load_secrets(stack.secrets_path))
    sipp = Sipp(workdir=tmp_path / "sipp")
    registrar = sipp.start_registrar(registrar_port, "acme-line", expected, timeout_s=40)
    try:
        stack.up(timeout=60)
        rc = registrar.wait(timeout=60)
    finally:
        if registrar.poll() is None:
            sipp.stop(registrar)
        stack.down()
    return rc, stack.workdir


def test_asterisk_registers_to_the_carrier_with_the_secret_password(tmp_path: Path) -> None:
    rc, workdir = registered(tmp_path, "Tr0nk-pass", "Tr0nk-pass")
    assert rc == 0, (tmp_path / "sipp").glob("registrar-err-*.log")
    assert "Tr0nk-pass" not in (workdir / "ivr.yaml").read_text()
    assert "trunk_username: acme-line" in (workdir / "ivr.yaml").read_text()
    assert yaml.safe_load((workdir / "secrets.yaml").read_text())["trunk_password"] == "Tr0nk-pass"
    assert "Tr0nk-pass" not in (workdir / "logs" / "controller.log").read_text()


def test_a_wrong_trunk_password_is_refused_by_the_carrier(tmp_path: Path) -> None:
    rc, _ = registered(tmp_path, "wrong-pass", "Tr0nk-pass")
    assert rc != 0
    log = next((tmp_path / "sipp").glob("registrar-msg-*.log")).read_text(errors="replace")
    assert "SIP/2.0 403 Forbidden" in log and "Authorization: Digest" in log
