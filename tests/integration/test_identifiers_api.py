"""Identifiers with a trailing newline are refused by the running API before anything is written:
an agent id "7001\\n" would otherwise put a broken section into pjsip_volunteers.conf, and the next
Asterisk restart would lose every SIP endpoint."""

from __future__ import annotations

from .harness import TestStack


def test_agent_id_with_a_trailing_newline_is_refused_and_nothing_is_written(stack: TestStack) -> None:
    conf = stack.stack.asterisk_etc / "pjsip_volunteers.conf"
    before = conf.read_text() if conf.exists() else ""
    status, err = stack.api.request("POST", "/api/v1/agents", {"id": "7091\n", "name": "Nl", "queues": ["support"]})
    assert status == 400 and "id" in err["error"], err
    status, err = stack.api.request("POST", "/api/v1/agents", {"name": "Nl", "queues": ["support"],
                                                               "mobile": "15550001\n"})
    assert status == 400 and "mobile" in err["error"], err
    after = conf.read_text() if conf.exists() else ""
    assert after == before and "7091" not in after
    status, body = stack.api.request("GET", "/api/v1/agents")
    assert status == 200 and not any(a["id"].startswith("7091") for a in body["agents"]), body


def test_campaign_id_with_a_trailing_newline_is_refused(stack: TestStack) -> None:
    status, err = stack.api.request("POST", "/api/v1/campaigns", {"id": "nl-test\n", "name": "n",
                                                                  "message": "notice-cancelled"})
    assert status == 400 and "id" in err["error"], err
