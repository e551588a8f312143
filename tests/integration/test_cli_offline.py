"""The command line's offline commands on the real thing: `ivr menus check` over menu files, `ivr banner`
against a real (scratch) Redis, each run as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ivr.app.config import PROJECT_ROOT
from ivr.devtools.stack import start_scratch_redis


def ivr(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "ivr", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd or PROJECT_ROOT, env=env)


def test_menus_check_passes_the_shipped_menus_and_names_a_bad_file_without_hiding_the_good_ones(tmp_path: Path):
    shipped = ivr("menus", "check")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "ok" in shipped.stdout and "main.yaml" in shipped.stdout and "error" not in shipped.stdout

    menus = tmp_path / "dialplans"
    menus.mkdir()
    shutil.copy(PROJECT_ROOT / "dialplans" / "main.yaml", menus / "main.yaml")
    bad = yaml.safe_load((PROJECT_ROOT / "dialplans" / "main.yaml").read_text(encoding="utf-8"))
    start = bad.get("start") or next(iter(bad["nodes"]))
    bad["nodes"][start] = {**bad["nodes"][start], "next": "no-such-node"}
    bad["name"] = "broken"
    (menus / "broken.yaml").write_text(yaml.safe_dump(bad), encoding="utf-8")
    out = ivr("menus", "check", "--dir", str(menus))
    assert out.returncode == 1
    errors = [ln for ln in out.stdout.splitlines() if ln.startswith("error")]
    assert errors and all("broken.yaml" in ln for ln in errors), out.stdout
    assert "no-such-node" in out.stdout                          # the message names what is wrong
    assert any(ln.startswith("ok") and "main.yaml" in ln for ln in out.stdout.splitlines())


def test_banner_set_show_clear_against_a_real_redis(tmp_path: Path) -> None:
    proc, port = start_scratch_redis(tmp_path)
    try:
        cfg = tmp_path / "ivr.yaml"
        cfg.write_text(yaml.safe_dump({"redis": {"url": f"redis://127.0.0.1:{port}/0"}}), encoding="utf-8")
        text = "Airspace closed until 18:00: press 1 for a refund"
        got = ivr("banner", "set", *text.split(), "--config", str(cfg), "--lang", "en")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["text"] == text and json.loads(got.stdout)["set_by"] == "cli"
        shown = ivr("banner", "show", "--config", str(cfg))
        assert shown.returncode == 0 and json.loads(shown.stdout)["en"]["text"] == text
        bad = ivr("banner", "set", "--config", str(cfg), "--lang", "en")   # no text
        assert bad.returncode == 2 and "ivr banner: text: empty" in bad.stderr
        assert json.loads(ivr("banner", "show", "--config", str(cfg)).stdout)["en"]["text"] == text   # nothing lost
        cleared = ivr("banner", "clear", "--config", str(cfg), "--lang", "en")
        assert cleared.returncode == 0 and json.loads(cleared.stdout) == {"lang": "en", "banner": None}
        assert json.loads(ivr("banner", "show", "--config", str(cfg)).stdout)["en"] is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_campaign_import_reads_real_systems_column_names_and_the_configured_languages(tmp_path: Path) -> None:
    """`ivr campaign import` against a real Redis, on a line configured for English and German: a file
    from another system (its own column names, one named with --columns) is read, the report says which
    column was read as which field, and `lang` is checked against the configured languages, not a fixed set."""
    proc, port = start_scratch_redis(tmp_path)
    try:
        cfg = tmp_path / "ivr.yaml"
        cfg.write_text(yaml.safe_dump({"redis": {"url": f"redis://127.0.0.1:{port}/0"}, "languages": ["en", "de"]}),
                       encoding="utf-8")
        definition = tmp_path / "c.yaml"
        definition.write_text(yaml.safe_dump({"id": "cols", "name": "cols", "message": {"en": "notice-cancelled"},
                                              "allowed_prefixes": ["+1", "+49"]}), encoding="utf-8")
        made = ivr("campaign", "create", "--file", str(definition), "--config", str(cfg))
        assert made.returncode == 0, made.stderr
        contacts_csv = tmp_path / "export.csv"
        contacts_csv.write_text("Kunde,Rufnummer,Language,Booking_Ref\n"
                                "Anna,+49 30 901820,de,PNR1\n"
                                "Bob,+1 212 555 0123,fa,PNR2\n"           # not a language of this line
                                "Carl,+1 212 555 0124,en,PNR3\n", encoding="utf-8")
        got = ivr("campaign", "import", "--id", "cols", "--csv", str(contacts_csv), "--columns", "number=Rufnummer,name=Kunde",
                  "--config", str(cfg))
        assert got.returncode == 0, got.stderr
        report = json.loads(got.stdout)
        assert (report["imported"], report["rejected"]) == (2, 1), report
        assert report["columns"] == {"number": "Rufnummer", "name": "Kunde", "lang": "Language",
                                     "booking": "Booking_Ref"}
        assert "columns read: Rufnummer as number, Kunde as name, Language as lang, Booking_Ref as booking" in got.stderr
        assert "line 3: Language: 'fa' is not one of en, de" in got.stderr
        bad = ivr("campaign", "import", "--id", "cols", "--csv", str(contacts_csv), "--columns", "number=Tel",
                  "--config", str(cfg))
        assert bad.returncode == 2 and "no single column 'Tel'" in bad.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
