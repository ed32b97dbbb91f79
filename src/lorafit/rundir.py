"""The run directory, the unit users share: every file name in it, the one atomic-write helper,
and reading it back."""

from __future__ import annotations

import contextlib
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
HEAD_WEIGHTS = "head_frozen.safetensors"  # frozen head weights no checkpoint holds (heads.frozen_head_weights)
README_MD = "README.md"  # the model card (card.py)
RECIPE_YAML = "recipe.yaml"  # written first: the run directory is claimed
PLOTS = "plots"
CONFUSION_MATRIX_PNG = "plots/confusion_matrix.png"
CHECKPOINTS = "checkpoints"  # the Trainer's, for --resume; removed when the run completes
CHECKPOINT_DONE = "lorafit-checkpoint-complete"  # inside a checkpoint, written after all its files
BEST_WEIGHTS = "best-epoch.safetensors"  # the best epoch so far, while training
COMPLETE = "COMPLETE"  # written last: a run without it is not finished


@contextlib.contextmanager
def atomic_file(path: Path):
    """A unique temporary path beside `path` to write to; once written it is flushed to disk and
    renamed to `path`, so readers see the old file or the whole new one. Removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> Path:
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="")
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
    if not is_complete(run_dir) and (run_dir / RECIPE_YAML).is_file():
        raise LorafitError(
            f"{run_dir} is an incomplete run (training did not finish); resume it with: "
            f"lorafit train {run_dir / RECIPE_YAML} --resume {run_dir}"
        )
    # runs from before the COMPLETE marker have no recipe.yaml either; their run.json was written last
    for name in (RUN_JSON, ADAPTER_CONFIG, ADAPTER_WEIGHTS, LABELS_JSON):
        if not (run_dir / name).is_file():
            raise LorafitError(f"{run_dir} is not a finished lorafit run: {name} is missing")
    try:
        return json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LorafitError(f"{run_dir / RUN_JSON}: not valid JSON ({e})") from None
