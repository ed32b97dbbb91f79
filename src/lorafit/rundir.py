"""The run directory, the unit users share: file names, atomic writes, and reading it back."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from .errors import LorafitError

RUN_JSON = "run.json"
METRICS_JSON = "metrics.json"
LABELS_JSON = "labels.json"
HISTORY_CSV = "history.csv"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def write_text(path: Path, text: str) -> Path:
    """Write to a temporary name beside the target, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> Path:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def read_run_info(run_dir: str | Path) -> dict:
    """run.json of a finished run, or an error that says what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LorafitError(f"run directory {run_dir} not found")
    for name in (RUN_JSON, ADAPTER_CONFIG, ADAPTER_WEIGHTS, LABELS_JSON):
        if not (run_dir / name).is_file():
            raise LorafitError(f"{run_dir} is not a finished lorafit run: {name} is missing")
    try:
        return json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LorafitError(f"{run_dir / RUN_JSON}: not valid JSON ({e})") from None
