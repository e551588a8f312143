"""Prometheus /metrics on the real stack: scraped with a token and parsed."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .harness import TestStack


def scrape(stack: TestStack, token: str | None) -> tuple[int, str]:
    req = urllib.request.Request(f"{stack.api.base}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_need_a_token_and_parse(stack: TestStack) -> None:
    assert scrape(stack, None)[0] == 401
    status, text = scrape(stack, stack.api.token)
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("ivr_calls", "ivr_queue_wait_seconds", "ivr_agi_call_seconds", "ivr_ami_connected",
                 "ivr_queue_waiting", "ivr_queue_agents", "ivr_campaign_attempts", "ivr_balance_actions"):
        assert name in families, sorted(families)
    connected = [s.value for s in families["ivr_ami_connected"].samples]
    assert connected == [1.0]
    waiting = {s.labels["queue"] for s in families["ivr_queue_waiting"].samples}
    assert {"support", "refunds", "rebooking"} <= waiting
