"""``webhooks:`` in ivr.yaml: checked at start-up, errors naming the key; the secret only from secrets.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ivr.app.config import ConfigError
from ivr.app.config_load import from_mapping, load

GOOD = {"name": "crm", "url": "https://crm.example.com/hooks/ivr", "events": ["refund.requested", "call.finished"]}
SECRET = "0123456789abcdef0123"



def test_a_webhook_with_its_secret_loads(tmp_path: Path) -> None:
    (tmp_path / "ivr.yaml").write_text(yaml.safe_dump({"webhooks": [GOOD, {**GOOD, "name": "ops_2",
                                                                          "url": "http://127.0.0.1:8099/x",
                                                                          "max_attempts": 3, "timeout": 2.5}]}))
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump({"webhook_crm": SECRET, "webhook_ops_2": SECRET + "x"}))
    cfg = load(tmp_path / "ivr.yaml", env={})
    crm, ops = cfg.webhooks
    assert (crm.name, crm.url, crm.events, crm.secret, crm.max_attempts) == (
        "crm", GOOD["url"], ("refund.requested", "call.finished"), SECRET, 10)
    assert (ops.secret, ops.max_attempts, ops.timeout) == (SECRET + "x", 3, 2.5)
    assert SECRET not in repr(cfg)                      # never in a log line of the config
    assert load(None, env={}).webhooks == ()


def test_the_secret_is_refused_in_ivr_yaml(tmp_path: Path) -> None:
    (tmp_path / "ivr.yaml").write_text(yaml.safe_dump({"webhooks": [{**GOOD, "secret": SECRET}]}))
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.secret: not in ivr.yaml; .*webhook_crm"):
        load(tmp_path / "ivr.yaml", env={})


def test_a_missing_or_short_secret_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "ivr.yaml").write_text(yaml.safe_dump({"webhooks": [GOOD]}))
    with pytest.raises(ConfigError, match=r"webhooks\[0\]: its secret webhook_crm .* missing"):
        load(tmp_path / "ivr.yaml", env={})
    (tmp_path / "secrets.yaml").write_text(yaml.safe_dump({"webhook_crm": "short"}))
    with pytest.raises(ConfigError, match="too short"):
        load(tmp_path / "ivr.yaml", env={})


@pytest.mark.parametrize("hook, message", [
    ({**GOOD, "url": "ftp://crm.example.com/x"}, r"webhooks\[0\]\.url: expected http:// or https://"),
    ({**GOOD, "url": "crm.example.com/x"}, r"webhooks\[0\]\.url: expected http:// or https://"),
    ({**GOOD, "url": "https:///x"}, r"webhooks\[0\]\.url: expected http:// or https:// with a host"),
    ({**GOOD, "url": "https://crm.example.com:99999/x"}, r"webhooks\[0\]\.url: not a URL"),
    ({**GOOD, "url": "https://user:pw@crm.example.com/x"}, r"webhooks\[0\]\.url: no user or password"),
    ({**GOOD, "name": "CRM"}, r"webhooks\[0\]\.name: lower-case letters"),
    ({**GOOD, "name": "crm/../x"}, r"webhooks\[0\]\.name: lower-case letters"),
    ({**GOOD, "name": ""}, r"webhooks\[0\]\.name: lower-case letters"),
    ({**GOOD, "events": []}, r"webhooks\[0\]\.events: expected some of"),
    ({**GOOD, "events": ["call.finished", "call.started"]}, r"webhooks\[0\]\.events\[1\]: expected one of"),
    ({**GOOD, "max_attempts": 0}, r"webhooks\[0\]\.max_attempts: expected 1 to 100"),
    ({**GOOD, "timeout": 0}, r"webhooks\[0\]\.timeout: expected 0\.1 to 120"),
    ({**GOOD, "retries": 3}, r"webhooks\[0\]\.retries: unknown key"),
    ({"url": GOOD["url"], "events": GOOD["events"]}, r"webhooks\[0\]"),
])
def test_bad_webhooks_name_the_key(hook: dict[str, Any], message: str) -> None:
    assert pytest.raises(ConfigError, from_mapping, {"webhooks": [{**hook, "_secret": SECRET}]}, {}).match(message)


def test_names_are_unique_and_the_section_is_a_list() -> None:
    with pytest.raises(ConfigError, match=r"webhooks\[1\]\.name: duplicate webhook 'crm'"):
        from_mapping({"webhooks": [{**GOOD, "_secret": SECRET}, {**GOOD, "_secret": SECRET}]}, {})
    with pytest.raises(ConfigError, match="webhooks: expected a list"):
        from_mapping({"webhooks": {"crm": GOOD}}, {})
    assert from_mapping({"webhooks": None}, {}).webhooks == ()
