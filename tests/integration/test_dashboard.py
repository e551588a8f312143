"""The supervisor's live dashboard in a real browser (headless Debian Chromium via Selenium) on the real stack.

Needs ``chromium`` and ``chromedriver`` (Debian: chromium, chromium-driver; scripts/install.sh installs
them) and the ``selenium`` package. Screenshots go to ``test-artifacts/`` (git-ignored); the laptop
one is also copied to ``docs/img/dashboard.png`` for the README.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from ivr.app.config import PROJECT_ROOT
from ivr.devtools.sipp import CallerScript, free_port

from .harness import TestStack, create_token, wait_for

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.remote.webdriver import WebDriver
except ImportError:   # reported by the fixture, so the rest of the suite still collects
    webdriver = None  # type: ignore[assignment]
    WebDriver = Any   # type: ignore[assignment,misc]

ARTIFACTS = PROJECT_ROOT / "test-artifacts"
README_IMAGE = PROJECT_ROOT / "docs" / "img" / "dashboard.png"
LAPTOP = (1366, 768)
PHONE = (390, 844)
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run"]
CALLER = "5554242"
AGENT = "1001"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if webdriver is None:
        pytest.fail("the dashboard test needs selenium: .venv/bin/pip install -e '.[test]' (or pip install selenium)")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("the dashboard test needs chromium and chromedriver (Debian: chromium, chromium-driver): "
                    "run `bash scripts/install.sh`")
    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={LAPTOP[0]},{LAPTOP[1]}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # both paths given: Selenium Manager has nothing to look up or download
    service = Service(executable_path=driver, log_output=str(profile.parent / "chromedriver.log"))
    drv = webdriver.Chrome(service=service, options=opts)
    drv.set_page_load_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()


# ---------------------------------------------------------------- helpers
def viewport(drv: WebDriver, size: tuple[int, int], *, mobile: bool = False, scale: float = 1) -> None:
    """Exact CSS viewport (a headless window's size includes no browser UI, but make it certain)."""
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": size[0], "height": size[1], "deviceScaleFactor": scale, "mobile": mobile})


def css(drv: WebDriver, selector: str) -> list[Any]:
    return drv.find_elements(By.CSS_SELECTOR, selector)


def attr(drv: WebDriver, selector: str, name: str) -> str | None:
    found = css(drv, selector)
    return found[0].get_attribute(name) if found else None


def text(drv: WebDriver, selector: str) -> str:
    found = css(drv, selector)
    return found[0].text if found else ""


def open_dashboard(drv: WebDriver, stack: TestStack, token: str) -> None:
    drv.get(stack.info["api"] + "/dashboard")
    wait_for(lambda: css(drv, "#signin-form") and (css(drv, "#token-input")[0].is_displayed()
                                                  or css(drv, "#dashboard")[0].is_displayed()),
             timeout=10, what="the dashboard page")
    if css(drv, "#dashboard")[0].is_displayed():      # a token left in this tab's session storage
        css(drv, "#signout")[0].click()
        wait_for(lambda: css(drv, "#token-input")[0].is_displayed(), timeout=5, what="the sign-in form")
    css(drv, "#token-input")[0].send_keys(token)
    css(drv, "#token-submit")[0].click()


def wait_fresh_render(drv: WebDriver, updates: int = 2) -> None:
    """Wait for ``updates`` more stream messages to be rendered (the 'updated hh:mm:ss' label changes)."""
    for _ in range(updates):
        before = text(drv, "#updated")
        wait_for(lambda before=before: text(drv, "#updated") != before, timeout=5, what="a new stream update")


def paused_in_api(stack: TestStack, agent: str) -> list[bool]:
    queues = stack.api.get("/api/v1/queues")["queues"]
    return [m["paused"] for q in queues.values() for m in q["members"] if m["interface"] == f"PJSIP/{agent}"]


def screenshot(drv: WebDriver, path: Path, size: tuple[int, int], *, mobile: bool = False, scale: float = 1,
               full_page: bool = False) -> None:
    viewport(drv, size, mobile=mobile, scale=scale)
    wait_fresh_render(drv)            # let the chart redraw at the new width
    if full_page:
        height = drv.execute_script("return document.documentElement.scrollHeight")
        viewport(drv, (size[0], max(size[1], int(height))), mobile=mobile, scale=scale)
        wait_fresh_render(drv, 1)
    drv.execute_script("window.scrollTo(0, 0)")
    path.parent.mkdir(parents=True, exist_ok=True)
    assert drv.save_screenshot(str(path)), f"could not save {path}"


def console_problems(drv: WebDriver) -> list[str]:
    """Console errors that are bugs: CSP violations, script errors (403s we provoke are not)."""
    return [e["message"] for e in drv.get_log("browser")
            if e["level"] == "SEVERE" and "the server responded with a status of" not in e["message"]
            or "Content Security Policy" in e["message"]]


# ------------------------------------------------------------------ tests
def test_dashboard_is_public_and_served_with_a_strict_policy(stack: TestStack) -> None:
    for path in ("/", "/dashboard", "/static/dashboard.js", "/static/dashboard.css"):
        with urllib.request.urlopen(stack.info["api"] + path, timeout=10) as resp:
            body = resp.read()
            csp = resp.headers["Content-Security-Policy"]
            assert resp.status == 200 and body
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
    page = urllib.request.urlopen(stack.info["api"] + "/dashboard", timeout=10).read().decode()
    assert "<script>" not in page and "<style" not in page and "http://" not in page and "https://" not in page
    # only those exact files are public: the API and anything else under /static/ still need a token
    for path in ("/static/app.py", "/static/", "/static/dashboard.html", "/api/v1/live", "/api/v1/stream"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(stack.info["api"] + path, timeout=10)
        assert err.value.code == 401, path


def test_dashboard_shows_a_waiting_caller_and_pauses_an_agent(stack: TestStack, browser: WebDriver) -> None:
    drv = browser
    viewport(drv, LAPTOP)
    wait_for(lambda: paused_in_api(stack, AGENT) and not any(paused_in_api(stack, AGENT)), timeout=20,
             what=f"agent {AGENT} in its queues, not paused")
    wait_for(lambda: stack.queue("rebooking").get("waiting") == 0, timeout=30,
             what="nobody left waiting in rebooking by an earlier test")
    open_dashboard(drv, stack, stack.api.token)
    wait_for(lambda: css(drv, '[data-queue="support"]'), timeout=10, what="the support tile")
    wait_for(lambda: attr(drv, "#conn", "data-state") == "live", timeout=5, what="the stream to be live")
    assert text(drv, "#updated").startswith("updated ")
    assert attr(drv, f'[data-agent="{AGENT}"]', "data-paused") == "false"

    proc = stack.sipp.start_calls(CallerScript(steps=[("pause", 600), ("dtmf", "3")], end="wait_bye",
                                               patience_ms=20000),
                                  extension=stack.extension, caller=CALLER, timeout_s=60)
    try:
        # rebooking has nobody logged in: the caller waits there, and the tile shows it within seconds
        tile = '[data-queue="rebooking"]'
        wait_for(lambda: attr(drv, tile, "data-waiting") == "1", timeout=10, what="1 waiting on the rebooking tile")
        assert text(drv, f'{tile} [data-field="waiting"]') == "1"
        entry = wait_for(lambda: css(drv, f'{tile} .callers li[data-caller="{CALLER}"]'), timeout=5,
                         what="the caller listed on the rebooking tile")[0]
        assert entry.find_element(By.CSS_SELECTOR, ".pos").text == "1"
        assert CALLER in entry.text
        assert text(drv, f'{tile} [data-field="alert"]') == "no agents"

        # Pause agent 1001 from the page: Asterisk pauses it in all its queues, the page shows it
        row = f'[data-agent="{AGENT}"]'
        css(drv, f'{row} button[data-action="pause"]')[0].click()
        wait_for(lambda: (p := paused_in_api(stack, AGENT)) and all(p), timeout=5,
                 what=f"PJSIP/{AGENT} paused in the API")
        wait_for(lambda: attr(drv, row, "data-paused") == "true", timeout=5, what="the page to show it paused")
        assert text(drv, f'{row} td[data-col="paused"]') == "yes"
        assert "paused" in text(drv, f'{row} td[data-col="status"]')

        unpause = wait_for(lambda: [b for b in css(drv, f'{row} button[data-action="unpause"]') if b.is_enabled()],
                           timeout=5, what="the Unpause button")[0]
        unpause.click()
        wait_for(lambda: (p := paused_in_api(stack, AGENT)) and not any(p), timeout=5,
                 what=f"PJSIP/{AGENT} unpaused in the API")
        wait_for(lambda: attr(drv, row, "data-paused") == "false", timeout=5, what="the page to show it unpaused")

        # screenshots while the caller still waits (the chart, tiles and table at both sizes)
        # the "done" confirmations fade out by themselves after 4 s: clear them now (no stale-element race)
        drv.execute_script("document.querySelectorAll('#messages .msg').forEach((m) => m.remove())")
        screenshot(drv, ARTIFACTS / "dashboard-laptop.png", LAPTOP)
        if os.environ.get("IVR_UPDATE_README_SCREENSHOT"):   # refresh docs/img/dashboard.png on purpose only
            shutil.copyfile(ARTIFACTS / "dashboard-laptop.png", README_IMAGE)
        screenshot(drv, ARTIFACTS / "dashboard-laptop-full.png", LAPTOP, full_page=True)
        screenshot(drv, ARTIFACTS / "dashboard-phone.png", PHONE, mobile=True, scale=2)
        screenshot(drv, ARTIFACTS / "dashboard-phone-full.png", PHONE, mobile=True, scale=2, full_page=True)
        viewport(drv, LAPTOP)
        assert not console_problems(drv)
    finally:
        if any(paused_in_api(stack, AGENT)):      # never leave the agent paused for the other tests
            stack.api.request("POST", f"/api/v1/agents/{AGENT}/unpause")
        result = stack.sipp.finish(proc, timeout=90)
    assert result.ok, result.errors


def test_dashboard_shows_campaign_progress_and_starts_a_campaign(stack: TestStack, browser: WebDriver) -> None:
    from .test_campaigns import campaign, csv_body, post_csv
    cid = "t-dashboard"
    # the customer phones answer numbers ending in 6 busy: one attempt each, then the contact is closed
    assert stack.api.request("POST", "/api/v1/campaigns", campaign(cid, max_attempts=1))[0] == 201
    report = post_csv(stack, cid, csv_body([(f"+12025550{n}", f"Contact {n}", "") for n in ("216", "226", "236")]))
    assert report["imported"] == 3, report
    drv = browser
    viewport(drv, LAPTOP)
    open_dashboard(drv, stack, stack.api.token)
    row = f'[data-campaign="{cid}"]'
    wait_for(lambda: css(drv, row), timeout=10, what="the campaign row")
    assert attr(drv, row, "data-state") == "draft"
    assert text(drv, f'{row} .progress-label').startswith("0 / 3 (0%)")
    start = css(drv, f'{row} button[data-action="start"]')[0]
    assert start.text == "Start"
    start.click()
    wait_for(lambda: stack.api.get(f"/api/v1/campaigns/{cid}")["state"] in ("running", "done"), timeout=5,
             what="the campaign to start in the API")
    wait_for(lambda: text(drv, f'{row} .progress-label').startswith("3 / 3 (100%)"), timeout=15,
             what="the page to show every contact closed")
    assert not console_problems(drv)


def test_viewer_token_gets_a_visible_403_and_sign_out_forgets_the_token(stack: TestStack,
                                                                       browser: WebDriver) -> None:
    drv = browser
    viewport(drv, LAPTOP)
    # a wrong token is refused on the sign-in form
    open_dashboard(drv, stack, "not-a-token")
    wait_for(lambda: "unknown token" in text(drv, "#signin-error"), timeout=10, what="the sign-in error")
    assert drv.execute_script("return sessionStorage.getItem('ivr.dashboard.token')") is None

    viewer = create_token(stack, "viewer-test", "viewer")
    open_dashboard(drv, stack, viewer)
    row = f'[data-agent="{AGENT}"]'
    wait_for(lambda: attr(drv, "#conn", "data-state") == "live" and css(drv, row), timeout=10,
             what="the dashboard with a viewer token")
    assert drv.execute_script("return sessionStorage.getItem('ivr.dashboard.token')") == viewer
    wait_for(lambda: [b for b in css(drv, f'{row} button[data-action="pause"]') if b.is_enabled()],
             timeout=5, what="an enabled Pause button")[0].click()
    msg = wait_for(lambda: [m for m in css(drv, '#messages .msg.error[data-status="403"]') if m.is_displayed()],
                   timeout=5, what="a 403 message on the page")[0]
    assert "403" in msg.text and "supervisor" in msg.text, msg.text
    assert not any(paused_in_api(stack, AGENT))
    # the button is usable again (not stuck in a pending state) and the stream kept running
    wait_for(lambda: [b for b in css(drv, f'{row} button[data-action="pause"]') if b.is_enabled()],
             timeout=5, what="the Pause button enabled again")
    assert attr(drv, "#conn", "data-state") == "live"

    css(drv, "#signout")[0].click()
    wait_for(lambda: css(drv, "#token-input")[0].is_displayed(), timeout=5, what="the sign-in form after sign out")
    assert drv.execute_script("return sessionStorage.getItem('ivr.dashboard.token')") is None
    assert not css(drv, "#dashboard")[0].is_displayed()


def test_coach_control_on_a_novices_call_rings_the_chosen_teammate(stack: TestStack, browser: WebDriver) -> None:
    """A novice on a refunds call gets a Coach control listing the experienced teammates who are free (the
    first chosen, whisper by default); with none free the button is disabled and says why; it rings the
    coach's phone. Experienced agents, and novices not on a call, have no Coach control."""
    from selenium.webdriver.support.ui import Select

    drv = browser
    viewport(drv, LAPTOP)
    team = "coach-ui"   # a team of its own: the novice's only possible coach is the one added here
    made: dict[str, tuple[str, str]] = {}
    coach_port, novice_port = free_port(), free_port()
    phones = []
    caller = busy_caller = result = busy_result = None
    try:
        for key, fields in (("coach", {"name": "Coach Free", "queues": ["rebooking"], "skill": "experienced"}),
                            ("novice", {"name": "Novice Taking", "queues": ["refunds"], "skill": "novice"})):
            status, body = stack.api.request("POST", "/api/v1/agents", {**fields, "team": team, "tier": "core"})
            assert status == 201, body
            made[key] = (body["agent"]["id"], body["sip"]["password"])
        coach, novice = made["coach"][0], made["novice"][0]
        for aid, password in made.values():
            port = coach_port if aid == coach else novice_port
            assert stack.sipp.register(aid, password, port).ok
        # the coach's phone logs what it gets (the INVITEs that ring it) and talks 4 s a call; the novice's
        # streams audio, as a real phone does, for a 30 s call: time to look at the page and coach
        phones.append(stack.sipp.start_agent(coach_port, talk_ms=4000, trace_msg=True))
        phones.append(stack.sipp.start_agent(novice_port, talk_ms=30_000, sends_audio=True))
        for aid in (coach, novice):
            stack.api.post(f"/api/v1/agents/{aid}/login")
        # the other novice (1002, team a) paused, so the refunds call goes to this one (novices first on refunds)
        stack.api.post("/api/v1/agents/1002/pause")
        # the novice serves refunds only because an experienced teammate (the coach) is on duty
        wait_for(lambda: any(m["interface"] == f"PJSIP/{novice}" and m["status"] == "idle" and not m["paused"]
                             for m in stack.queue("refunds").get("members", [])),
                 timeout=20, what="the novice idle in refunds")
        assert invites_to(stack, coach_port, coach) == 0

        open_dashboard(drv, stack, stack.api.token)
        row = f'[data-agent="{novice}"]'
        wait_for(lambda: attr(drv, "#conn", "data-state") == "live" and css(drv, row), timeout=10,
                 what="the dashboard with the novice's row")
        assert attr(drv, row, "data-coachable") == "false"          # not on a call: no Coach control
        assert not css(drv, f"{row} .coach")[0].is_displayed()

        caller = stack.sipp.start_calls(CallerScript([("pause", 700), ("dtmf", "2")], end="wait_bye",
                                                     wait_bye_ms=60_000),
                                        extension=stack.extension, caller="5557310", timeout_s=90)
        wait_for(lambda: attr(drv, row, "data-in-call") == "true", timeout=20, what="the novice on the call")
        wait_for(lambda: attr(drv, row, "data-coachable") == "true", timeout=5, what="the Coach control")
        box = css(drv, f"{row} .coach")[0]
        assert box.is_displayed()
        pick = Select(box.find_element(By.CSS_SELECTOR, 'select[data-field="coach"]'))
        assert [o.get_attribute("value") for o in pick.options] == [coach]      # team a's 1001 is not offered
        assert pick.first_selected_option.get_attribute("value") == coach
        mode = Select(box.find_element(By.CSS_SELECTOR, 'select[data-field="coach-mode"]'))
        assert [o.get_attribute("value") for o in mode.options] == ["whisper", "listen", "barge"]
        assert mode.first_selected_option.get_attribute("value") == "whisper"
        button = box.find_element(By.CSS_SELECTOR, 'button[data-action="coach"]')
        assert button.is_enabled() and button.text == "Coach"
        # an experienced agent's row, and a novice's not on a call, offer no coaching
        for other in ("1001", "1002"):
            assert attr(drv, f'[data-agent="{other}"]', "data-coachable") == "false", other
            assert not css(drv, f'[data-agent="{other}"] .coach')[0].is_displayed(), other

        # the only coach takes a rebooking call of their own: nobody to offer, the button says why
        busy_caller = stack.sipp.start_calls(CallerScript([("pause", 700), ("dtmf", "3")], end="wait_bye",
                                                          wait_bye_ms=40_000),
                                             extension=stack.extension, caller="5557311", timeout_s=60)
        wait_for(lambda: attr(drv, f'[data-agent="{coach}"]', "data-in-call") == "true", timeout=20,
                 what="the coach on a call of their own")
        wait_for(lambda: not button.is_enabled(), timeout=5, what="the Coach button disabled")
        assert button.get_attribute("title") == \
            f"No experienced agent of team {team} is logged in and off a call to coach"
        assert [o.text for o in pick.options] == ["no coach free"]
        assert not box.find_element(By.CSS_SELECTOR, 'select[data-field="coach"]').is_enabled()
        assert attr(drv, row, "data-coachable") == "true"                # still the novice's call to coach
        # the coach hangs up: offered again, and chosen
        wait_for(lambda: attr(drv, f'[data-agent="{coach}"]', "data-in-call") == "false" and button.is_enabled(),
                 timeout=15, what="the coach free again, the Coach button enabled")
        assert pick.first_selected_option.get_attribute("value") == coach
        rang = invites_to(stack, coach_port, coach)
        assert rang == 1, rang                                          # the rebooking call

        # at phone size the control is there and within the screen; the supervisor uses it from the keyboard
        drv.execute_script("document.querySelectorAll('#messages .msg').forEach((m) => m.remove())")
        viewport(drv, PHONE, mobile=True, scale=2)
        wait_fresh_render(drv)
        drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        assert button.is_displayed()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert css(drv, row)[0].screenshot(str(ARTIFACTS / "dashboard-phone-coach.png"))
        right = drv.execute_script("return arguments[0].getBoundingClientRect().right", button)
        assert right <= PHONE[0], right
        button.send_keys(Keys.ENTER)

        wait_for(lambda: invites_to(stack, coach_port, coach) == rang + 1, timeout=10,
                 what="the coach's phone ringing")
        wait_for(lambda: f"Coach agent {novice} (whisper) with Coach Free ({coach}): done"
                 in [m.text for m in css(drv, "#messages .msg.info .msg-text")], timeout=5, what="the success message")
        assert not css(drv, "#messages .msg.error"), [m.text for m in css(drv, "#messages .msg.error")]
        audit = stack.api.get("/api/v1/audit")["audit"]
        assert any(a["action"] == "agent.coach" and a["target"] == novice
                   and a["new"] == {"coach": coach, "mode": "whisper"} for a in audit)
        viewport(drv, LAPTOP)
        assert not console_problems(drv)
    finally:
        try:
            stack.api.request("POST", "/api/v1/agents/1002/unpause")
            if busy_caller is not None:
                busy_result = stack.sipp.finish(busy_caller, timeout=60)
            if caller is not None:   # the novice's phone hangs up after 30 s: the call ends properly
                result = stack.sipp.finish(caller, timeout=60)
        finally:
            for proc in phones:
                stack.sipp.stop(proc)
            for aid, _ in made.values():
                stack.api.request("DELETE", f"/api/v1/agents/{aid}")
    assert result is not None and result.ok, result and result.errors
    assert busy_result is not None and busy_result.ok, busy_result and busy_result.errors


def invites_to(stack: TestStack, port: int, agent: str) -> int:
    """INVITEs the agent phone on ``port`` (started with trace_msg) received for ``agent``."""
    return stack.sipp.invites_received(port, phone="agent").get(agent, 0)
