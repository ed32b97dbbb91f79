"""`training.precision=fp16` (GPUs without bf16) and `--precision fp16` (inference, also on a CPU)."""

import numpy as np
import torch
from conftest import RECIPES

from lorafit.cli import main
from lorafit.inference import load_run, predict_proba


def test_fp16_training_on_a_cpu_is_refused_in_one_line_before_loading(tiny_roberta, agnews_csv, tmp_path, capsys):
    """On a CPU accelerate applies no fp16 autocast, so an fp16 run would silently train in fp32."""
    run_dir = tmp_path / "fp16"
    args = [f"model.name={tiny_roberta}", f"data.train={agnews_csv}", "data.limit=120", "data.validation_size=32"]
    args += ["training.precision=fp16"]
    assert main(["train", str(RECIPES / "agnews-report-b.yaml"), *args, "--output-dir", str(run_dir)]) == 2
    error = capsys.readouterr().err.strip()
    assert "training.precision=fp16 trains on a GPU only" in error and len(error.splitlines()) == 1
    assert not run_dir.exists()


def test_fp16_inference_stores_the_merged_model_in_fp16(tiny_finished_run, agnews_rows):
    texts = agnews_rows.text.tolist()[:64]
    full = load_run(tiny_finished_run, precision="fp32")
    half = load_run(tiny_finished_run, precision="fp16")
    assert {p.dtype for p in half.model.parameters()} == {torch.float16} and half.half == torch.float16
    assert not half.autocast and not half.bf16  # stored in fp16 on a CPU: no autocast around it
    expected, got = predict_proba(full, texts), predict_proba(half, texts)
    assert np.abs(expected - got).max() < 0.01
    assert not np.array_equal(expected, got)  # it did change the arithmetic
    assert (expected.argmax(-1) == got.argmax(-1)).mean() >= 0.95
