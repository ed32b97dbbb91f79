"""The run directory, the unit users share: file names, atomic writes, and reading it back."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import LorafitError

RUN_JSON = "run.json"
METRICS_JSON = "metrics.json"
LABELS_JSON = "labels.json"
HISTORY_CSV = "history.csv"
VALIDATION_PREDICTIONS_CSV = "validation_predictions.csv"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
COMPLETE = "COMPLETE"  # written last: a run without it is not finished


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


def build_folder(folder: Path, build) -> Path:
    """Run `build(staging)` in a folder of its own, then rename it to `folder`: readers see the
    whole folder or none of it. When another process got there first, its folder is kept."""
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        build(staging)
        if not folder.exists():
            os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def write_json(path: Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> Path:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def is_complete(run_dir: Path) -> bool:
    return (run_dir / COMPLETE).is_file()


def mark_complete(run_dir: Path) -> None:
    write_text(run_dir / COMPLETE, "this run finished; every file beside this one is final\n")


def publish(staging: Path, run_dir: Path) -> None:
    """Move every file written in `staging` into `run_dir`, each by an atomic rename."""
    for source in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = run_dir / source.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    shutil.rmtree(staging, ignore_errors=True)


def read_run_info(run_dir: str | Path) -> dict:
    """run.json of a finished run, or an error that says what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LorafitError(f"run directory {run_dir} not found")
    if not is_complete(run_dir) and (run_dir / "recipe.yaml").is_file():
        raise LorafitError(
            f"{run_dir} is an incomplete run (training did not finish); resume it with: "
            f"lorafit train {run_dir / 'recipe.yaml'} --resume {run_dir}"
        )
    # runs from before the COMPLETE marker have no recipe.yaml either; their run.json was written last
    for name in (RUN_JSON, ADAPTER_CONFIG, ADAPTER_WEIGHTS, LABELS_JSON):
        if not (run_dir / name).is_file():
            raise LorafitError(f"{run_dir} is not a finished lorafit run: {name} is missing")
    try:
        return json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LorafitError(f"{run_dir / RUN_JSON}: not valid JSON ({e})") from None
