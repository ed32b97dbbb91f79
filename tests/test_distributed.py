"""Data-parallel training: `lorafit train --nproc 2` (torchrun, gloo on CPU) against one process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RECIPES, run_cli

# The real MiniLM encoder, so the runs learn something to compare. No dropout anywhere: both runs
# then see the same examples per optimizer step and compute the same updates, up to float sums.
COMMON = [
    "data.limit=400",
    "data.validation_size=64",
    "data.max_length=48",
    "training.epochs=2",
    "model.hidden_dropout=0",
    "model.attention_dropout=0",
    "lora.lora_dropout=0",
    "training.threads=1",
]


def train_args(minilm_dir, agnews_csv, run_dir: Path, *extra) -> list[str]:
    data = [f"model.name={minilm_dir}", f"data.train={agnews_csv}", *COMMON]
    return ["train", str(RECIPES / "quickstart.yaml"), *data, "--output-dir", str(run_dir), *extra]


def train(minilm_dir, agnews_csv, run_dir: Path, *extra) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lorafit", *train_args(minilm_dir, agnews_csv, run_dir, *extra)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")}


@pytest.fixture(scope="module")
def single_and_parallel(minilm_dir, agnews_csv, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    single = run_cli(*train_args(minilm_dir, agnews_csv, root / "single", "training.batch_size=16"))
    parallel = train(minilm_dir, agnews_csv, root / "parallel", "training.batch_size=8", "--nproc", "2")
    assert single.returncode == 0, single.stderr[-3000:]
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    return root / "single", root / "parallel", parallel


def test_two_processes_write_one_run_of_the_same_form(single_and_parallel):
    single, parallel, result = single_and_parallel
    assert files(single) == files(parallel)
    info = json.loads((parallel / "run.json").read_text())
    assert info["speed"]["processes"] == 2
    assert json.loads((single / "run.json").read_text())["speed"]["processes"] == 1
    assert info["parameters"] == json.loads((single / "run.json").read_text())["parameters"]
    assert result.stdout.count("validation accuracy") == 1  # only rank 0 reports


def test_two_processes_match_one_process_with_the_same_global_batch(single_and_parallel):
    single, parallel, _ = single_and_parallel
    one, two = (json.loads((run / "metrics.json").read_text()) for run in (single, parallel))
    assert one["n"] == two["n"] == 64  # every validation row counted once, none twice
    history = [(run / "history.csv").read_text().splitlines() for run in (single, parallel)]
    assert len(history[0]) == len(history[1]) == 3
    losses = [[float(line.split(",")[2]) for line in rows[1:]] for rows in history]
    assert losses[0] == pytest.approx(losses[1], rel=0.005)
    assert one["accuracy"] > 0.6  # it learned: chance is 0.25
    assert abs(one["accuracy"] - two["accuracy"]) <= 2 / 64


def test_nproc_must_be_positive(minilm_dir, agnews_csv, tmp_path):
    result = run_cli(*train_args(minilm_dir, agnews_csv, tmp_path / "run", "--nproc", "0"))
    assert result.returncode == 2 and "--nproc must be at least 1" in result.stderr
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_refused_before_any_process_starts(single_and_parallel, minilm_dir, agnews_csv):
    _, parallel, _ = single_and_parallel
    before = sorted(files(parallel))
    result = run_cli(*train_args(minilm_dir, agnews_csv, parallel, "--nproc", "2"))
    assert result.returncode == 2 and "already holds a complete run" in result.stderr
    assert "torch.distributed" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(files(parallel)) == before
