"""A memory allocator that keeps long CPU runs fast: mimalloc, preloaded by the `lorafit` command.

With per-batch padding every training step allocates tensors of new sizes. glibc's malloc
fragments under that: in a 66-minute MPNet training run its steps slowed from 1.3 s to 3-4 s while
the process grew from 6.5 to 11.9 GB, and a quarter of the main thread's time went to
`posix_memalign` (bench/ALLOCATOR.md). An allocator can only be chosen when a process starts, so
the `lorafit` command re-executes itself once with mimalloc in LD_PRELOAD (from the
`cmeel-mimalloc` package, a dependency on Linux). LORAFIT_ALLOCATOR=system keeps glibc's.
Code that imports lorafit as a library keeps its process's allocator.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

SWITCH = "LORAFIT_ALLOCATOR"
CHOICES = ("mimalloc", "system")
KNOWN = ("mimalloc", "jemalloc", "tcmalloc")


def mimalloc_library() -> Path | None:
    """libmimalloc.so from the cmeel-mimalloc package, when installed."""
    try:
        files = importlib.metadata.distribution("cmeel-mimalloc").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name.startswith("libmimalloc.so."):
            return Path(file.locate()).resolve()
    return None


def preload(argv: list[str]) -> None:
    """Re-execute `python -m lorafit argv` with mimalloc preloaded, unless it already is, the
    user chose the system allocator, or this is not Linux. Returns only when nothing was done."""
    choice = os.environ.get(SWITCH, "mimalloc")
    if choice not in CHOICES:
        from .errors import LorafitError

        raise LorafitError(f"{SWITCH}={choice!r} is not one of {', '.join(CHOICES)}")
    if choice == "system" or not sys.platform.startswith("linux") or in_use() != "system":
        return
    library = mimalloc_library()
    if library is None:
        return
    preloaded = " ".join(filter(None, [str(library), os.environ.get("LD_PRELOAD")]))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "lorafit", *argv], {**os.environ, "LD_PRELOAD": preloaded})


def in_use() -> str:
    """The allocator this process runs on, from the libraries it has mapped: recorded in run.json."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8")
    except OSError:
        return "system"
    return next((name for name in KNOWN if f"lib{name}" in maps), "system")
