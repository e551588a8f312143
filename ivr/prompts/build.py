"""Build telephone-ready audio prompts from text scripts or studio recordings.

Design: the source tree is ``<src>/<lang>/<name>.txt`` (spoken with espeak-ng)
optionally overridden by a recording ``<name>.wav|.flac|.ogg|.mp3``.  Every
prompt goes through one pipeline: decode -> mono 16-bit -> trim leading and
trailing silence (80 ms margin) -> peak-normalise -> resample to 8 kHz with
ffmpeg (pydub's own resampler does not low-pass, so sibilants would alias) ->
gain to the loudness target through a small look-ahead peak limiter (speech
has an ~18-20 dB crest factor, so plain gain would clip long before -16 dBFS)
-> ``<name>.wav`` (PCM s16le 8 kHz mono, Asterisk's format_wav) and
``<name>.ulaw`` (raw G.711 mu-law).  Outputs are written in a hidden temp dir
beside the target, checked, then moved into place with os.replace, so Asterisk
never sees half a file.  A ``<name>.hash`` sidecar (source content + voice +
pipeline settings) lets an unchanged prompt be skipped.  Prompts build in a
thread pool (the heavy lifting is espeak-ng/ffmpeg subprocesses); each prompt
fails on its own and is reported by ``lang/name``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import secrets
import shutil
import subprocess
import sys
import time
import wave
from array import array
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from pydub import AudioSegment, effects, silence

DEFAULT_LANGUAGES = ("en", "fa", "zh")
# espeak-ng 1.51's plain "cmn" voice reads many Hanzi as pinyin with the tone
# digit spoken in English ("hao two"); "cmn-latn-pinyin" reads Hanzi correctly.
DEFAULT_VOICES: Mapping[str, str] = {"en": "en-us", "fa": "fa", "zh": "cmn-latn-pinyin"}
RECORDING_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")  # first found wins
RATE, TARGET_DBFS, CEILING_DBFS, MARGIN_MS, SPEED = 8000, -16.0, -1.0, 80, 150
PIPELINE_VERSION = "1"  # bump to force a rebuild after changing the pipeline
ProgressFn = Callable[[int, int, str], None]


class PromptBuildError(RuntimeError):
    """One prompt could not be built; the message says why."""


@dataclass(frozen=True, slots=True)
class PromptSource:
    """One prompt to build: a recording (preferred) or a text script."""
    lang: str
    name: str
    text: str | None
    recording: Path | None
    path: Path | None = None  # the file this source came from (for mtimes)
    error: str | None = None  # e.g. the text file is not UTF-8

    @property
    def label(self) -> str:
        return f"{self.lang}/{self.name}"


@dataclass(slots=True)
class BuiltPrompt:
    """Result of building (or skipping) one prompt."""
    lang: str
    name: str
    wav: Path
    ulaw: Path
    duration: float  # seconds
    dbfs: float  # average level of the output
    peak_dbfs: float
    skipped: bool = False  # up to date, not rebuilt


@dataclass(slots=True)
class BuildReport:
    """Outcome of build_all; ``failed`` holds ``(lang/name, reason)``."""
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    prompts: list[BuiltPrompt] = field(default_factory=list)
    seconds: float = 0.0


def discover(src: Path, languages: Sequence[str]) -> list[PromptSource]:
    """List the prompts under ``src/<lang>/``; a recording beats the text of the same name."""
    found: list[PromptSource] = []
    for lang in languages:
        d, by_name = Path(src) / lang, dict[str, dict[str, Path]]()
        for f in d.iterdir() if d.is_dir() else ():
            if f.is_file() and not f.name.startswith("."):
                by_name.setdefault(f.stem, {})[f.suffix.lower()] = f
        for name, files in sorted(by_name.items()):
            rec = next((files[e] for e in RECORDING_EXTENSIONS if e in files), None)
            if rec is not None:
                found.append(PromptSource(lang, name, None, rec, rec))
            elif (txt := files.get(".txt")) is not None:
                try:
                    found.append(PromptSource(lang, name, " ".join(txt.read_text("utf-8-sig").split()), None, txt))
                except (OSError, UnicodeDecodeError) as exc:
                    found.append(PromptSource(lang, name, None, None, txt, f"cannot read {txt.name}: {exc}"))
    return found


def voice_for_source(source: PromptSource, voices: Mapping[str, str]) -> str:
    """Voice for a text prompt: ``lang-<code>`` is spoken in <code>, all else in the folder's language."""
    code = source.name[5:] if source.name.startswith("lang-") else source.lang
    voice = voices.get(code) or voices.get(source.lang)
    if voice is None:
        raise PromptBuildError(f"no espeak-ng voice configured for language {code!r}")
    return voice


def _fingerprint(source: PromptSource, voice: str | None) -> str:
    h = hashlib.sha256(f"{PIPELINE_VERSION}|{RATE}|{TARGET_DBFS}|{CEILING_DBFS}|{MARGIN_MS}|{SPEED}|{voice}|".encode())
    if source.recording is not None:
        h.update(b"rec|" + source.recording.read_bytes())
    else:
        h.update(b"txt|" + (source.text or "").encode())
    return h.hexdigest()


def _run(cmd: Sequence[str]) -> None:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PromptBuildError(f"{cmd[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise PromptBuildError(f"{cmd[0]} exited {proc.returncode}: {tail[0]}")


def _limit(seg: AudioSegment, gain_db: float, ceiling_db: float, release_s: float = 0.05) -> AudioSegment:
    """Apply ``gain_db`` to 16-bit mono ``seg``; a 2 ms look-ahead limiter keeps peaks under ``ceiling_db``.

    The gain curve is the sliding minimum of the per-sample allowed gain over the
    look-ahead window, released exponentially, then averaged over the same window:
    every average that covers a peak only contains values at or below that peak's
    allowed gain, so no sample exceeds the ceiling and there are no gain steps.
    """
    g, ceil = 10 ** (gain_db / 20), 32767 * 10 ** (ceiling_db / 20)
    x = array("h", seg.raw_data)  # native order, like pydub's own audioop use (little-endian hosts)
    look = max(1, seg.frame_rate // 500)
    padded = [0] * (look - 1) + x.tolist() + [0] * (look - 1)
    allowed = [min(1.0, ceil / (abs(v) * g)) if v else 1.0 for v in padded]
    mins: list[float] = []
    dq: deque[int] = deque()
    for j, a in enumerate(allowed):  # mins[i] = min(allowed[i : i + look])
        while dq and allowed[dq[-1]] >= a:
            dq.pop()
        dq.append(j)
        if j >= look - 1:
            if dq[0] <= j - look:
                dq.popleft()
            mins.append(allowed[dq[0]])
    k, r, acc = 1 - math.exp(-1 / (release_s * seg.frame_rate)), 1.0, 0.0
    hist: deque[float] = deque()
    out = array("h")
    for i, m in enumerate(mins):  # mins[i] belongs to padded[i]; smoothed gain over the last `look`
        r = min(m, r + (1 - r) * k)
        hist.append(r)
        acc += r
        if len(hist) > look:
            acc -= hist.popleft()
        if look - 1 <= i < look - 1 + len(x):
            out.append(max(-32768, min(32767, round(padded[i] * g * acc / len(hist)))))
    return seg._spawn(out.tobytes())


def _process(audio: AudioSegment, tmp: Path) -> AudioSegment:
    """Trim, normalise and resample ``audio`` to 8 kHz mono 16-bit at ``TARGET_DBFS``."""
    audio = audio.set_channels(1).set_sample_width(2)
    if len(audio) == 0 or audio.max == 0:
        raise PromptBuildError("audio is empty or silent")
    thresh = min(audio.max_dBFS - 40.0, -35.0)
    start = silence.detect_leading_silence(audio, silence_threshold=thresh, chunk_size=10)
    end = len(audio) - silence.detect_leading_silence(audio.reverse(), silence_threshold=thresh, chunk_size=10)
    # Peak to -3 dBFS: full resolution for the resampler, room for its overshoot; level is set below.
    audio = effects.normalize(audio[max(0, start - MARGIN_MS):min(len(audio), end + MARGIN_MS)], headroom=3.0)
    if audio.frame_rate != RATE:  # ffmpeg's resampler low-passes; audioop.ratecv would alias
        audio.export(tmp / "resampled.wav", format="wav", parameters=["-ar", str(RATE), "-ac", "1", "-acodec", "pcm_s16le"])
        audio = AudioSegment.from_file(tmp / "resampled.wav", format="wav")
    gain, out = TARGET_DBFS - audio.dBFS, audio
    for _ in range(3):  # limiting lowers the average a little: re-aim from the measured level
        out = audio.apply_gain(gain) if audio.max_dBFS + gain <= CEILING_DBFS else _limit(audio, gain, CEILING_DBFS)
        if abs(TARGET_DBFS - out.dBFS) < 0.2:
            break
        gain += TARGET_DBFS - out.dBFS
    return out


def _stats(lang: str, name: str, wav: Path, ulaw: Path, skipped: bool) -> BuiltPrompt:
    seg = AudioSegment.from_file(wav, format="wav")
    return BuiltPrompt(lang, name, wav, ulaw, len(seg) / 1000, seg.dBFS, seg.max_dBFS, skipped)


def build_one(source: PromptSource, out_dir: Path, *, espeak: str = "espeak-ng",
              voice_for: Mapping[str, str] | None = None, force: bool = False) -> BuiltPrompt:
    """Build ``out_dir/<lang>/<name>.wav`` and ``.ulaw`` from ``source``; raise PromptBuildError on failure.

    Skips the work (``skipped=True``) when both outputs are newer than the source and
    the ``.hash`` sidecar matches, unless ``force``.  ``voice_for`` overrides entries
    of DEFAULT_VOICES (language code -> espeak-ng voice).
    """
    if source.error:
        raise PromptBuildError(source.error)
    if source.recording is None and not source.text:
        raise PromptBuildError("empty text and no recording")
    voice = None if source.recording else voice_for_source(source, {**DEFAULT_VOICES, **(voice_for or {})})
    lang_dir = Path(out_dir) / source.lang
    wav, ulaw, sidecar = (lang_dir / f"{source.name}{e}" for e in (".wav", ".ulaw", ".hash"))
    try:
        digest = _fingerprint(source, voice)
    except OSError as exc:
        raise PromptBuildError(f"cannot read recording: {exc}") from exc
    if (not force and wav.is_file() and ulaw.is_file() and sidecar.is_file()
            and min(wav.stat().st_mtime_ns, ulaw.stat().st_mtime_ns) >= (source.path.stat().st_mtime_ns if source.path else 0)
            and sidecar.read_text().strip() == digest and not check_output(wav) + check_output(ulaw)):
        return _stats(source.lang, source.name, wav, ulaw, skipped=True)
    lang_dir.mkdir(parents=True, exist_ok=True)
    tmp = lang_dir / f".tmp-{source.name}-{secrets.token_hex(4)}"  # same filesystem: os.replace is atomic
    tmp.mkdir()
    try:
        if source.recording is not None:
            try:
                audio = AudioSegment.from_file(source.recording)
            except Exception as exc:  # pydub raises CouldntDecodeError, IndexError, ...
                lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
                why = lines[0] if len(lines) == 1 else f"{lines[0]} ({lines[-1]})"  # ffmpeg's verdict is last
                raise PromptBuildError(f"cannot decode {source.recording.name}: {why}") from exc
        else:
            _run([espeak, "-b", "1", "-v", str(voice), "-w", str(tmp / "tts.wav"), "-s", str(SPEED), "--", str(source.text)])
            audio = AudioSegment.from_file(tmp / "tts.wav", format="wav")
        audio = _process(audio, tmp)
        t_wav, t_ulaw = tmp / wav.name, tmp / ulaw.name
        audio.export(t_wav, format="wav")
        audio.export(t_ulaw, format="mulaw", parameters=["-ar", str(RATE), "-ac", "1"])
        if problems := check_output(t_wav) + check_output(t_ulaw):
            raise PromptBuildError("; ".join(problems))
        (tmp / "hash").write_text(digest + "\n")
        for part, final in ((t_wav, wav), (t_ulaw, ulaw), (tmp / "hash", sidecar)):  # hash last: marks complete
            part.replace(final)
    except PromptBuildError:
        raise
    except Exception as exc:  # ffmpeg/pydub errors: keep the first line, it names the cause
        raise PromptBuildError(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _stats(source.lang, source.name, wav, ulaw, skipped=False)


def check_output(path: Path) -> list[str]:
    """Problems with a built ``.wav`` (8 kHz mono 16-bit, 0.2-60 s) or ``.ulaw`` (matches its ``.wav``)."""
    path, problems = Path(path), []
    if path.suffix == ".ulaw":
        if (size := path.stat().st_size if path.is_file() else 0) == 0:
            return [f"{path.name}: missing or empty"]
        seconds, twin = size / RATE, path.with_suffix(".wav")
        if twin.is_file():
            with wave.open(str(twin), "rb") as w:
                if w.getnframes() != size:
                    problems.append(f"{path.name}: {size} bytes but {twin.name} has {w.getnframes()} frames")
    else:
        try:
            with wave.open(str(path), "rb") as w:
                rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
        except (OSError, EOFError, wave.Error) as exc:
            return [f"{path.name}: not a readable PCM wav ({exc})"]
        for what, got, want in (("rate", rate, RATE), ("channels", channels, 1), ("sample width", width, 2)):
            if got != want:
                problems.append(f"{path.name}: {what} {got}, want {want}")
        seconds = frames / (rate or RATE)
    if not 0.2 <= seconds <= 60:
        problems.append(f"{path.name}: duration {seconds:.2f} s outside 0.2-60 s")
    return problems


def build_all(src: Path, out: Path, languages: Sequence[str] = DEFAULT_LANGUAGES, *, jobs: int = 2,
              force: bool = False, progress: ProgressFn | None = None) -> BuildReport:
    """Build every prompt of ``languages``; failures are collected per prompt, never raised."""
    started, report = time.monotonic(), BuildReport()
    for lang in languages:
        if not (Path(src) / lang).is_dir():
            report.failed.append((f"{lang}/*", f"no directory {Path(src) / lang}"))
    sources = discover(Path(src), languages)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(build_one, s, Path(out), force=force): s for s in sources}
        for done, fut in enumerate(as_completed(futures), 1):
            s = futures[fut]
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - one bad prompt must not stop the rest
                report.failed.append((s.label, str(exc) or type(exc).__name__))
            else:
                report.prompts.append(result)
                (report.skipped if result.skipped else report.built).append(s.label)
            if progress is not None:
                progress(done, len(sources), s.label)
    report.failed.sort()
    report.prompts.sort(key=lambda p: (p.lang, p.name))
    report.seconds = time.monotonic() - started
    return report


def progress_bar(stream: TextIO = sys.stderr, width: int = 20) -> ProgressFn:
    """A callback drawing ``[#####-----] 12/99 en/main-menu``: in place on a tty, else one line per 10%."""
    tty, last_decile = hasattr(stream, "isatty") and stream.isatty(), [-1]

    def draw(done: int, total: int, label: str) -> None:
        filled = width * done // max(total, 1)
        line = f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} {label}"
        if tty:
            stream.write(f"\r{line:<{width + 50}}" + ("\n" if done >= total else ""))
        elif (decile := 10 * done // max(total, 1)) != last_decile[0]:
            last_decile[0] = decile
            stream.write(line + "\n")
        stream.flush()

    return draw


def main(argv: Sequence[str] | None = None) -> int:
    """``ivr prompts build``: build all prompts, print a summary; exit 1 if any prompt failed."""
    default_src = Path(__file__).resolve().parents[2] / "audio_prompts"
    p = argparse.ArgumentParser(prog="ivr prompts build", description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=default_src, help="prompt sources (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output dir (default: SRC/build)")
    p.add_argument("--lang", action="append", default=None, help=f"language (repeatable; default: {' '.join(DEFAULT_LANGUAGES)})")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--jobs", type=int, default=2, help="parallel builds (default: %(default)s)")
    args = p.parse_args(argv)
    out = args.out or args.src / "build"
    report = build_all(args.src, out, args.lang or DEFAULT_LANGUAGES, jobs=args.jobs, force=args.force,
                       progress=progress_bar())
    total = len(report.built) + len(report.skipped) + len(report.failed)
    print(f"prompts: {len(report.built)} built, {len(report.skipped)} up to date, {len(report.failed)} failed"
          f" of {total} in {report.seconds:.1f} s -> {out}")
    if ps := report.prompts:
        lo, hi = min(ps, key=lambda b: b.duration), max(ps, key=lambda b: b.duration)
        print(f"durations {lo.duration:.2f} s ({lo.lang}/{lo.name}) .. {hi.duration:.2f} s ({hi.lang}/{hi.name}),"
              f" total {sum(b.duration for b in ps):.0f} s; level {min(b.dbfs for b in ps):.1f} .. "
              f"{max(b.dbfs for b in ps):.1f} dBFS, peak <= {max(b.peak_dbfs for b in ps):.1f} dBFS")
    for label, reason in report.failed:
        print(f"FAILED {label}: {reason}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
