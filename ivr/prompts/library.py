"""Find the built prompt file for a (language, name), falling back to English.

Asterisk plays a file given without its extension and picks the best format it
finds (``.ulaw`` or ``.wav``), so the library hands out paths without one.
``sound:<name>`` refers to one of Asterisk's own sounds (``sound:beep``).
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".ulaw", ".wav", ".sln", ".sln16", ".gsm")


class PromptLibrary:
    """Index of built prompts under ``<root>/<lang>/<name>.<ext>``."""

    def __init__(self, root: str | Path, default_language: str = "en") -> None:
        self.root = Path(root)
        self.default_language = default_language
        self._index: dict[tuple[str, str], str] = {}
        self.missing: set[tuple[str, str]] = set()
        self.scan()

    def scan(self) -> int:
        index: dict[tuple[str, str], str] = {}
        if self.root.is_dir():
            for lang_dir in self.root.iterdir():
                if not lang_dir.is_dir():
                    continue
                for f in lang_dir.iterdir():
                    if f.suffix in AUDIO_EXTENSIONS:
                        index[(lang_dir.name, f.stem)] = str(f.with_suffix(""))
        self._index = index
        return len(index)

    def path(self, lang: str, name: str) -> str | None:
        """File path (no extension) to play, or None when the prompt does not exist in any language."""
        if name.startswith("sound:"):
            return name[6:]
        found = self._index.get((lang, name)) or self._index.get((self.default_language, name))
        if found is None and (lang, name) not in self.missing:
            self.missing.add((lang, name))
            log.warning("prompt %s/%s is not built; skipping it (run `ivr prompts build`)", lang, name)
        return found

    def has(self, lang: str, name: str) -> bool:
        return name.startswith("sound:") or (lang, name) in self._index

    def __len__(self) -> int:
        return len(self._index)
