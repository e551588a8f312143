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


def test_a_reload_mid_call_leaves_that_call_on_the_version_it_started_with(stack: TestStack) -> None:
    """On the real stack: a caller is inside the `short` menu when its file changes (key 2 now leads to
    rebooking instead of refunds) and the menus reload; that caller's 2 still takes the old way, a caller
    who starts after the reload takes the new one."""
    source = stack.stack.workdir / "dialplans" / "short.yaml"
    before = source.read_text(encoding="utf-8")
    log = stack.stack.logs / "controller.log"
    first, second = "5553310", "5553311"
    # the key comes 3.5 s into the call, well inside the menu's 4 s wait for a key
    script = CallerScript(steps=[("pause", 3500), ("dtmf", "2"), ("pause", 1500)], end="hangup")
    try:
        proc = stack.sipp.start_calls(script, extension=stack.extension, caller=first, timeout_s=30)
        wait_for(lambda: f"menu short starts (caller {first}" in log.read_text(), timeout=10,
                 what="the first caller inside the menu")
        assert "q_refunds" in before
        source.write_text(before.replace('"2": q_refunds', '"2": q_rebooking'), encoding="utf-8")
        out = stack.api.post("/api/v1/menus/reload")
        assert out["errors"] == [] and "short" in out["loaded"]
        res = stack.sipp.finish(proc, timeout=60)
        assert res.ok, res.errors
        after = stack.sipp.call(script, extension=stack.extension, caller=second, timeout_s=30)
        assert after.ok, after.errors

        def path_of(number: str) -> list[str] | None:
            recs = [c for c in stack.api.get("/api/v1/calls?count=100")["calls"] if c.get("caller") == number]
            return recs[0].get("path") if recs else None

        assert wait_for(lambda: path_of(first), timeout=15, what="the first record") == ["main", "q_refunds"]
        assert wait_for(lambda: path_of(second), timeout=15, what="the second record") == ["main", "q_rebooking"]
    finally:
        source.write_text(before, encoding="utf-8")
        stack.api.post("/api/v1/menus/reload")
