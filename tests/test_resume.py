"""Nothing lost: a run killed mid-epoch resumes to the metrics of an uninterrupted one; runs are
deterministic; run directories are never overwritten by accident nor read before they are complete."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import RECIPES, run_cli

from lorafit.resume import newest_checkpoint
from lorafit.rundir import RECIPE_YAML, is_complete


def command(run_dir, tiny_roberta, agnews_csv, *extra):
    return [
        "train",
        str(RECIPES / "agnews-report-b.yaml"),
        f"model.name={tiny_roberta}",
        f"data.train={agnews_csv}",
        "data.limit=700",
        "data.validation_size=64",
        "data.max_length=48",
        "training.epochs=2",
        "training.batch_size=16",
        "training.learning_rate=1e-3",
        "training.checkpoint_steps=4",
        *extra,
        "--output-dir",
        str(run_dir),
    ]


lorafit = run_cli  # the command line in this process; only the runs that get killed need processes of their own


def kill_after_checkpoint(args, run_dir, step: int) -> int:
    """Start `lorafit ARGS` in a process, SIGKILL it as soon as checkpoint `step` (or a later one) is complete."""
    command = [sys.executable, "-m", "lorafit", *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None:
            newest = newest_checkpoint(run_dir) if run_dir.exists() else None
            if newest and int(newest.name.split("-")[1]) >= step:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        process.wait(timeout=60)
    finally:
        process.kill()
    return process.returncode


@pytest.fixture(scope="module")
def uninterrupted(tiny_roberta, agnews_csv, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full") / "run"
    out = lorafit(*command(run_dir, tiny_roberta, agnews_csv))
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def killed(tiny_roberta, agnews_csv, tmp_path_factory):
    """A run killed early in its first epoch (636 training rows / 16 = 40 steps per epoch; checkpoint 8)."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    assert kill_after_checkpoint(command(run_dir, tiny_roberta, agnews_csv), run_dir, 8) == -signal.SIGKILL
    return run_dir


def copy_of(killed, tmp_path):
    return shutil.copytree(killed, tmp_path / "run")


def test_killed_run_resumes_to_the_same_metrics(uninterrupted, killed, tmp_path):
    run_dir = copy_of(killed, tmp_path)
    assert not is_complete(run_dir)
    refused = lorafit("classify", run_dir, "Stocks rallied")
    assert refused.returncode == 2 and "incomplete" in refused.stderr and "--resume" in refused.stderr
    assert "Traceback" not in refused.stderr

    resumed = lorafit("train", run_dir / RECIPE_YAML, "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert is_complete(run_dir) and not (run_dir / "checkpoints").exists()
    ours = json.loads((run_dir / "metrics.json").read_text())
    theirs = json.loads((uninterrupted / "metrics.json").read_text())
    for key in ("accuracy", "f1", "precision", "recall", "confusion_matrix", "best_epoch"):
        assert ours[key] == theirs[key], key
    # validation curves match; the Trainer averages the interrupted epoch's train loss over the
    # steps after the resume only, so that column may differ
    ours, theirs = (pd.read_csv(d / "history.csv") for d in (run_dir, uninterrupted))
    columns = ["epoch", "eval_loss", "eval_accuracy", "eval_f1", "learning_rate"]
    assert ours[columns].equals(theirs[columns])
    assert (run_dir / "adapter_model.safetensors").read_bytes() == (
        uninterrupted / "adapter_model.safetensors"
    ).read_bytes()


def test_same_recipe_and_seed_give_identical_metrics_and_adapter_bytes(
    uninterrupted, tiny_roberta, agnews_csv, tmp_path
):
    run_dir = tmp_path / "again"
    out = lorafit(*command(run_dir, tiny_roberta, agnews_csv))
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("adapter_model.safetensors", "metrics.json", "history.csv"):
        assert (run_dir / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_existing_run_is_not_overwritten_without_the_flag(uninterrupted, tiny_roberta, agnews_csv):
    before = (uninterrupted / "adapter_model.safetensors").read_bytes()
    out = lorafit(*command(uninterrupted, tiny_roberta, agnews_csv))
    assert out.returncode == 2 and "already holds a complete run" in out.stderr and "--overwrite" in out.stderr
    assert (uninterrupted / "adapter_model.safetensors").read_bytes() == before
    again = lorafit("train", uninterrupted / RECIPE_YAML, "--resume", uninterrupted)
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_resume_refuses_a_different_recipe(killed, tiny_roberta, agnews_csv, tmp_path):
    run_dir = copy_of(killed, tmp_path)
    out = lorafit(*command(run_dir, tiny_roberta, agnews_csv, "training.learning_rate=2e-3"), "--resume")
    assert out.returncode == 2 and "training.learning_rate" in out.stderr
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == sorted(
        p.relative_to(killed) for p in killed.rglob("*")
    )  # refused before writing anything
