"""Which files under a folder are audio: one rule for every command that walks a folder
(`fastcodec encode-dir`, training's --data, `python -m fastcodec.eval`). Torch-free."""
from __future__ import annotations

from pathlib import Path

# What libsndfile opens, by name; a file that then fails to open is skipped or reported by the caller.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")


def audio_files(root) -> list[Path]:
    """The files under the folder `root` (recursively) named as audio (AUDIO_SUFFIXES), sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
