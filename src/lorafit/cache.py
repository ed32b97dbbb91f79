"""What lorafit keeps in its cache ($LORAFIT_CACHE), and clearing parts of it when asked.

The frozen layers' stored states take gigabytes per dataset and dropout draw, and nothing else
removes them: lorafit never deletes what the user did not ask it to."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .packaged import cache_root

PARTS = {
    "models": "models unpacked from PyPI packages",
    "tokenized": "tokenized data (data.cache_tokenized)",
    "frozen-states": "the frozen layers' output (training.reuse_frozen_layers)",
    "onnx": "merged models exported for onnxruntime",
}


@dataclass
class CachePart:
    name: str
    folder: Path
    entries: int
    size: int


def cache_parts(names=PARTS) -> list[CachePart]:
    return [_measure(name, cache_root() / name) for name in names]


def clear_cache(names: list[str]) -> list[CachePart]:
    """Remove these parts of the cache; returns what each held."""
    cleared = cache_parts(names)
    for part in cleared:
        shutil.rmtree(part.folder, ignore_errors=True)
    return cleared


def _measure(name: str, folder: Path) -> CachePart:
    if not folder.is_dir():
        return CachePart(name, folder, 0, 0)
    files = (path for path in folder.rglob("*") if path.is_file() and not path.is_symlink())
    entries = sum(1 for path in folder.iterdir() if not path.name.startswith("."))  # not locks, not partial ones
    return CachePart(name, folder, entries, sum(path.stat().st_size for path in files))


def human_size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
