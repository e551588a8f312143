"""Tests for ivr.prompts.build (real espeak-ng and ffmpeg runs on tiny prompt trees)."""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import wave
from pathlib import Path

import pytest
from pydub import AudioSegment
from pydub.generators import Sine, WhiteNoise

from ivr.prompts import build as b

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("ffmpeg") is None, reason="needs espeak-ng and ffmpeg"
)

PROJECT_PROMPTS = Path(__file__).resolve().parents[2] / "audio_prompts"
LANGS = ("en", "fa", "zh")
NAMES = """crisis-banner welcome lang-en lang-fa lang-zh main-menu invalid no-input goodbye please-hold
fallback enter-booking booking-invalid refund-status-intro status-received status-approved status-rejected
status-paid status-not-found refund-created callback-offer callback-number-is callback-confirm enter-number
callback-booked survey-intro survey-thanks wait-estimate minutes position closed agent-whisper
notice-cancelled notice-machine optout-done""".split()


def write(src: Path, rel: str, data: str | bytes) -> Path:
    path = src / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def padded_tone(path: Path, *, tone_db: float = -10.0, rate: int = 44100, channels: int = 2) -> Path:
    """1 s silence + 1 s 440 Hz tone + 1 s silence."""
    quiet = AudioSegment.silent(duration=1000, frame_rate=rate)
    tone = Sine(440, sample_rate=rate).to_audio_segment(duration=1000, volume=tone_db)
    (quiet + tone + quiet).set_channels(channels).export(path, format="wav")
    return path


def wav_params(path: Path) -> tuple[int, int, int, int]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()


def only(src: Path, lang: str = "en") -> b.PromptSource:
    (source,) = b.discover(src, [lang])
    return source


def test_text_prompt_gives_8k_mono_16bit_wav_and_matching_ulaw(tmp_path: Path) -> None:
    write(tmp_path / "src", "en/welcome.txt", "Welcome to the travel support line.\n")
    built = b.build_one(only(tmp_path / "src"), tmp_path / "out")
    assert built.wav == tmp_path / "out" / "en" / "welcome.wav" and not built.skipped
    rate, channels, width, frames = wav_params(built.wav)
    assert (rate, channels, width) == (8000, 1, 2)
    assert 1.0 < frames / rate < 5.0
    assert built.ulaw.stat().st_size == frames  # G.711: one byte per sample
    assert b.check_output(built.wav) == [] and b.check_output(built.ulaw) == []
    assert abs(built.dbfs - b.TARGET_DBFS) < 1.0  # speech reaches the target through the limiter...
    assert built.peak_dbfs <= b.CEILING_DBFS + 0.05  # ...without clipping
    leftovers = [p.name for p in built.wav.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temp dir cleaned up


def test_leading_and_trailing_silence_is_trimmed(tmp_path: Path) -> None:
    (tmp_path / "src" / "en").mkdir(parents=True)
    padded_tone(tmp_path / "src" / "en" / "tone.wav")
    built = b.build_one(only(tmp_path / "src"), tmp_path / "out")
    # 1 s of tone plus an 80 ms margin each side; far less than the 2 s of padding.
    assert 1.0 <= built.duration <= 1.0 + 2 * b.MARGIN_MS / 1000 + 0.05
    assert wav_params(built.wav)[:3] == (8000, 1, 2)  # 44.1 kHz stereo input converted


@pytest.mark.parametrize("tone_db", [-40.0, -0.5])
def test_loudness_lands_near_target(tmp_path: Path, tone_db: float) -> None:
    (tmp_path / "src" / "en").mkdir(parents=True)
    padded_tone(tmp_path / "src" / "en" / "tone.wav", tone_db=tone_db, rate=8000, channels=1)
    built = b.build_one(only(tmp_path / "src"), tmp_path / "out")
    assert abs(built.dbfs - b.TARGET_DBFS) < 0.5
    assert built.peak_dbfs <= b.CEILING_DBFS + 0.05


def test_limiter_never_exceeds_ceiling() -> None:
    noise = WhiteNoise(sample_rate=8000).to_audio_segment(duration=500, volume=-10).set_sample_width(2)
    loud = b._limit(noise, 12.0, -1.0)
    assert len(loud.raw_data) == len(noise.raw_data)
    assert loud.max_dBFS <= -0.99
    assert loud.dBFS > noise.dBFS + 3  # and it really did make it louder


def test_broken_recording_fails_only_that_prompt(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src, "en/x.wav", bytes(random.Random(1).randrange(256) for _ in range(4000)))
    write(src, "en/empty.txt", "  \n")
    write(src, "en/ok.txt", "Goodbye.")
    write(src, "en/x.txt", "This text is overridden by the broken recording.")
    report = b.build_all(src, tmp_path / "out", ["en", "xx"])
    assert report.built == ["en/ok"]
    failed = dict(report.failed)
    assert set(failed) == {"en/x", "en/empty", "xx/*"}
    assert "x.wav" in failed["en/x"]
    assert not (tmp_path / "out" / "en" / "x.wav").exists()


def test_check_output_flags_16k_stereo(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    Sine(440, sample_rate=16000).to_audio_segment(duration=1000).set_channels(2).export(path, format="wav")
    problems = b.check_output(path)
    assert any("rate 16000" in p for p in problems) and any("channels 2" in p for p in problems)
    short = tmp_path / "short.wav"
    AudioSegment.silent(duration=100, frame_rate=8000).export(short, format="wav")
    assert any("duration" in p for p in b.check_output(short))
    (tmp_path / "short.ulaw").write_bytes(b"\xff" * 10)
    assert any("frames" in p for p in b.check_output(tmp_path / "short.ulaw"))
    assert b.check_output(tmp_path / "missing.ulaw") == ["missing.ulaw: missing or empty"]


def test_second_build_skips_unchanged_prompts(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    write(src, "en/a.txt", "Please hold.")
    write(src, "en/b.txt", "Thank you.")
    assert sorted(b.build_all(src, out, ["en"]).built) == ["en/a", "en/b"]
    again = b.build_all(src, out, ["en"])
    assert again.built == [] and sorted(again.skipped) == ["en/a", "en/b"]
    text = write(src, "en/a.txt", "Please hold the line.")
    future = (out / "en" / "a.wav").stat().st_mtime_ns + 10**9
    os.utime(text, ns=(future, future))
    changed = b.build_all(src, out, ["en"])
    assert changed.built == ["en/a"] and changed.skipped == ["en/b"]
    assert sorted(b.build_all(src, out, ["en"], force=True).built) == ["en/a", "en/b"]


def test_language_offer_is_spoken_in_the_offered_language() -> None:
    src = b.PromptSource("en", "lang-fa", "برای فارسی، کلید ۲ را فشار دهید.", None)
    assert b.voice_for_source(src, b.DEFAULT_VOICES) == "fa"
    assert b.voice_for_source(b.PromptSource("zh", "welcome", "x", None), b.DEFAULT_VOICES) == "cmn-latn-pinyin"


def test_progress_bar_draws_one_line_per_tenth_when_not_a_tty() -> None:
    stream = io.StringIO()
    draw = b.progress_bar(stream)
    for i in range(1, 100):
        draw(i, 99, f"en/p{i}")
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11
    assert re.fullmatch(r"\[#{20}\] 99/99 en/p99", lines[-1])


def test_main_exit_code_and_failure_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    write(src, "en/ok.txt", "Goodbye.")
    assert b.main(["--src", str(src), "--lang", "en"]) == 0
    assert (src / "build" / "en" / "ok.ulaw").is_file()
    write(src, "en/bad.mp3", b"not audio")
    assert b.main(["--src", str(src), "--lang", "en", "--jobs", "1"]) == 1
    assert "en/bad" in capsys.readouterr().out


def test_every_prompt_exists_in_every_language() -> None:
    assert (PROJECT_PROMPTS / "README.md").is_file()
    for lang in LANGS:
        for name in NAMES:
            path = PROJECT_PROMPTS / lang / f"{name}.txt"
            assert path.is_file(), path
            assert path.read_text(encoding="utf-8").strip(), path
    scripts = {"fa": re.compile(r"[\u0600-\u06ff]"), "zh": re.compile(r"[\u4e00-\u9fff]")}
    for lang, script in scripts.items():
        for name in NAMES:
            if not name.startswith("lang-"):
                assert script.search((PROJECT_PROMPTS / lang / f"{name}.txt").read_text(encoding="utf-8")), (lang, name)
    for name in ("lang-en", "lang-fa", "lang-zh"):  # played in sequence: same text in every folder
        texts = {(PROJECT_PROMPTS / lang / f"{name}.txt").read_text(encoding="utf-8") for lang in LANGS}
        assert len(texts) == 1, name
