"""The live crisis banner: a supervisor's message, per language, changeable during a surge.

The text is kept in Redis (``{p}:banner:{lang}`` as JSON with a version hash);
every controller node turns it into audio once (espeak-ng through the prompt
pipeline, in a worker thread) and caches the file by version, so a change is
heard on the next call without a restart and without per-call synthesis.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import unicodedata
from pathlib import Path
from typing import Any


from ..app.config import Config
from ..app.logutil import RateLimit
from ..prompts.build import PromptBuildError, PromptSource, build_one
from ..store.errors import StoreError
from ..store.redis_store import Store

log = logging.getLogger(__name__)

MAX_TEXT = 600
CACHE_SECONDS = 2.0
READ_TIMEOUT = 1.0      # a caller never waits longer than this for the live banner (then: the last one heard)


def live_prompts_dir(cfg: Config) -> Path:
    """Where synthesised banners go: the stack's workdir, else beside the built prompts."""
    return Path(cfg.workdir) / "live-prompts" if cfg.workdir else Path(cfg.prompts_dir).parent / "live"


class BannerError(ValueError):
    """The banner text cannot be used; the message says why."""


def check_text(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise BannerError("text: empty (use clear to remove the banner)")
    if len(text) > MAX_TEXT:
        raise BannerError(f"text: {len(text)} characters, at most {MAX_TEXT}")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise BannerError("text: control characters are not allowed")
    return text


class BannerService:
    """Reads, sets and renders the live banner."""

    def __init__(self, store: Store, out_dir: str | Path, languages: tuple[str, ...]) -> None:
        self.store = store
        self.out_dir = Path(out_dir)
        self.languages = languages
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._unreachable = RateLimit(10.0)
        self._locks: dict[str, asyncio.Lock] = {}

    async def _render(self, lang: str, text: str, version: str) -> str:
        name = f"banner-{version}"
        path = self.out_dir / lang / f"{name}.wav"
        if not path.exists():
            lock = self._locks.setdefault(lang, asyncio.Lock())
            async with lock:
                if not path.exists():
                    source = PromptSource(lang=lang, name=name, text=text, recording=None)
                    try:
                        await asyncio.to_thread(build_one, source, self.out_dir)
                    except PromptBuildError as exc:
                        raise BannerError(f"cannot synthesise the banner: {exc}") from None
        return str(path.with_suffix(""))

    async def get(self, lang: str) -> str | None:
        """Audio file (no extension) of the live banner for ``lang``, or None when none is set."""
        now = time.monotonic()
        hit = self._cache.get(lang)
        if hit and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        path: str | None = None
        try:
            raw = await asyncio.wait_for(self.store.get_banner(lang), READ_TIMEOUT)
            if raw:
                data = json.loads(raw)
                path = await self._render(lang, data["text"], data["version"])
        except (StoreError, OSError, asyncio.TimeoutError) as exc:
            # Redis restarting: keep playing the banner callers heard last (or the default message)
            path = hit[1] if hit else None
            self._unreachable.log(log, logging.WARNING, "banner %s: Redis unreachable (%s): playing %s", lang,
                                  exc, "the last live banner" if path else "the default message")
        except (BannerError, ValueError, KeyError) as exc:
            log.error("banner %s unavailable (%s): playing the default message", lang, exc)
            path = None
        self._cache[lang] = (now, path)
        return path

    async def set(self, lang: str, text: str, by: str = "") -> dict[str, Any]:
        if lang not in self.languages:
            raise BannerError(f"lang: expected one of {', '.join(self.languages)}, got {lang!r}")
        text = check_text(text)
        version = hashlib.sha256(f"{lang}\0{text}".encode()).hexdigest()[:16]
        await self._render(lang, text, version)  # fail before publishing a banner nobody can hear
        data = {"text": text, "version": version, "set_by": by, "set_at": time.time()}
        old = await self.store.get_banner(lang)
        await self.store.set_banner(lang, json.dumps(data))
        await self.store.audit(by or "cli", "banner.set", lang, old, data)
        self._cache.pop(lang, None)
        return data

    async def clear(self, lang: str, by: str = "") -> None:
        if lang not in self.languages:
            raise BannerError(f"lang: expected one of {', '.join(self.languages)}, got {lang!r}")
        old = await self.store.get_banner(lang)
        await self.store.set_banner(lang, None)
        await self.store.audit(by or "cli", "banner.clear", lang, old, None)
        self._cache.pop(lang, None)

    async def all(self) -> dict[str, Any]:
        out = {}
        for lang in self.languages:
            raw = await self.store.get_banner(lang)
            out[lang] = json.loads(raw) if raw else None
        return out
