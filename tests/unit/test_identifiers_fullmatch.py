"""Identifiers are checked against the whole string: a trailing newline (which ``re.match(r"^...$")``
lets through, as ``$`` matches before a final newline) is refused at every entry point that writes
it into an Asterisk config file, a Redis key or a dialplan variable."""

from __future__ import annotations

from typing import Any

import pytest

from ivr.campaigns.model import CampaignError, parse_campaign
from ivr.app.config import ConfigError
from ivr.app.config_load import from_mapping
from ivr.menu.schema import MenuError, parse_menu
from ivr.agents.roster import RosterError, check_profile
from ivr.store.selfservice import _check_digits

NL = "\n"


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        from_mapping(data, {})
    return str(info.value)


@pytest.mark.parametrize("data, key", [
    ({"agents": [{"id": "7001" + NL, "name": "A", "queues": ["support"]}]}, "agents[0].id"),
    ({"agents": [{"id": "7001", "name": "A", "queues": ["support"], "mobile": "15550001" + NL}]}, "mobile"),
    ({"queues": [{"name": "support" + NL}]}, "queues[0].name"),
    ({"asterisk": {"inbound_extension": "500" + NL}}, "inbound_extension"),
    ({"asterisk": {"ami_username": "ivr" + NL}}, "ami_username"),
    ({"asterisk": {"trunk_uri": "sip:192.0.2.10" + NL}}, "trunk_uri"),
    ({"asterisk": {"outbound_callerid": "5550100" + NL}}, "outbound_callerid"),
    ({"default_menu": "main" + NL}, "default_menu"),
])
def test_config_refuses_a_trailing_newline(data: dict[str, Any], key: str) -> None:
    assert key in config_error(data)


def test_config_accepts_the_same_values_without_it() -> None:
    cfg = from_mapping({"agents": [{"id": "7001", "name": "A", "queues": ["support"], "mobile": "15550001"}]}, {})
    assert cfg.agents[0].id == "7001"


def test_roster_profile_refuses_a_trailing_newline(tmp_path: Any) -> None:
    cfg = from_mapping({}, {})
    with pytest.raises(RosterError, match="mobile"):
        check_profile(cfg, {"mobile": "15550001" + NL}, partial=True)
    with pytest.raises(RosterError, match="languages"):
        check_profile(cfg, {"languages": ["en" + NL]}, partial=True)
    assert check_profile(cfg, {"mobile": "15550001"}, partial=True) == {"mobile": "15550001"}


@pytest.mark.parametrize("field, value", [
    ("id", "notice-1" + NL), ("queue", None), ("allowed_prefixes", ["+44" + NL]),
    ("window", {"start": "09:00" + NL, "end": "20:00"}),
])
def test_campaign_model_refuses_a_trailing_newline(field: str, value: Any) -> None:
    base: dict[str, Any] = {"id": "notice-1", "name": "n", "message": "notice-cancelled"}
    if field == "queue":
        base["message"] = "notice-cancelled" + NL
        field = "message"
    else:
        base[field] = value
    with pytest.raises(CampaignError, match=field):
        parse_campaign(base)
    ok = {"id": "notice-1", "name": "n", "message": "notice-cancelled", "allowed_prefixes": ["+44"]}
    assert parse_campaign(ok).id == "notice-1"


def test_selfservice_digits_refuse_a_trailing_newline() -> None:
    with pytest.raises(ValueError, match="booking"):
        _check_digits("booking", "123456" + NL, 4, 12)
    assert _check_digits("booking", "123456", 4, 12) == "123456"


def test_menu_node_id_refuses_a_trailing_newline() -> None:
    text = "menu: m\nstart: 'a" + "\\n'\nnodes:\n  'a\\n': {type: hangup}\n"
    with pytest.raises(MenuError):
        parse_menu(text, "m.yaml")
