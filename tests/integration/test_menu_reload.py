"""Menus reload on file change and through the API; a bad file never takes down the good ones."""

from __future__ import annotations

import shutil

from ivr.devtools.sipp import CallerScript

from .harness import FIXTURES, TestStack, wait_for


def loaded(stack: TestStack) -> tuple[list[str], list[str]]:
    h = stack.api.get("/health")["menus"]
    return h["loaded"], h["errors"]


def test_file_changes_reload_menus_and_bad_files_are_reported(stack: TestStack) -> None:
    dialplans = stack.stack.workdir / "dialplans"
    extra = dialplans / "extra.yaml"
    broken = dialplans / "broken.yaml"
    try:
        shutil.copy(FIXTURES / "dialplans" / "short.yaml", extra)
        extra.write_text(extra.read_text().replace("name: short", "name: extra"))
        wait_for(lambda: "extra" in loaded(stack)[0], timeout=10, what="extra.yaml to be loaded")

        broken.write_text("name: broken\nstart: a\nnodes:\n  a:\n    type: menu\n    options: {'1': nowhere}\n"
                          "  b:\n    type: goto\n    next: a\n")
        errors = wait_for(lambda: loaded(stack)[1], timeout=10, what="the broken menu to be reported")
        assert any("broken.yaml" in e and "'a'" in e and "nowhere" in e for e in errors), errors
        names, _ = loaded(stack)
        assert {"main", "short", "extra"} <= set(names) and "broken" not in names

        # calls keep working on the valid menus while the bad file is there
        res = stack.sipp.call(CallerScript(steps=[("pause", 600), ("dtmf", "9")], end="wait_bye", wait_bye_ms=20_000),
                              extension=stack.extension, caller="5553300", timeout_s=30)
        assert res.ok, res.errors
    finally:
        extra.unlink(missing_ok=True)
        broken.unlink(missing_ok=True)
    out = stack.api.post("/api/v1/menus/reload")
    assert out["errors"] == [] and "extra" not in out["loaded"] and "main" in out["loaded"]


def test_reload_needs_the_supervisor_role(stack: TestStack) -> None:
    status, body = stack.api.request("POST", "/api/v1/menus/reload", token="not-a-token")
    assert status == 401 and "unknown token" in body["error"]
    status, body = stack.api.request("POST", "/api/v1/menus/reload", token="")
    assert status == 401


def test_live_crisis_banner_is_heard_in_its_language(stack: TestStack) -> None:
    text = "پروازهای امروز به دلیل بسته شدن حریم هوایی لغو شده است."
    data = stack.api.request("PUT", "/api/v1/banner/fa", {"text": text})[1]
    assert data["text"] == text and len(data["version"]) == 16
    status, body = stack.api.request("PUT", "/api/v1/banner/xx", {"text": "hello"})
    assert status == 400 and "lang" in body["error"]
    status, body = stack.api.request("PUT", "/api/v1/banner/en", {"text": "", "extra": 1})
    assert status == 400 and "extra" in body["error"]
    try:
        res = stack.sipp.call(CallerScript(steps=[("pause", 800), ("dtmf", "2"), ("pause", 1500)], end="hangup"),
                              extension=stack.main_extension, caller="5553301", timeout_s=30)
        assert res.ok, res.errors
        rec = wait_for(lambda: [c for c in stack.api.get("/api/v1/calls?count=50")["calls"]
                                if c.get("caller") == "5553301"], timeout=10, what="the record")[0]
        assert rec["language"] == "fa"
        log = (stack.stack.logs / "controller.log").read_text()
        assert f"call {rec['uniqueid']}: live banner banner-{data['version']}" in log
        assert (stack.stack.config().prompts_dir and
                any(a["action"] == "banner.set" and a["target"] == "fa" and a["new"]["text"] == text
                    for a in stack.api.get("/api/v1/audit")["audit"]))
    finally:
        stack.api.request("DELETE", "/api/v1/banner/fa")
    assert stack.api.get("/api/v1/banner")["fa"] is None
