"""`--precision int8`: dynamic int8 quantization of the merged model's linear layers for CPU inference."""

import json

import numpy as np
import pytest
import torch

from lorafit.cli import main
from lorafit.inference import load_run, predict_proba


def test_int8_quantizes_every_linear_layer_and_keeps_the_probabilities(tiny_finished_run, agnews_rows):
    texts = agnews_rows.text.tolist()[:64]
    full = load_run(tiny_finished_run, precision="fp32")
    quantized = load_run(tiny_finished_run, precision="int8")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in quantized.model.modules())
    assert not any(type(m) is torch.nn.Linear for m in quantized.model.modules())
    assert not quantized.bf16
    expected, got = predict_proba(full, texts), predict_proba(quantized, texts)
    assert np.abs(expected - got).max() < 0.05
    assert not np.array_equal(expected, got)  # it did change the arithmetic


def test_int8_on_the_command_line(tiny_finished_run, agnews_csv, capsys):
    assert main(["evaluate", str(tiny_finished_run), "--data", str(agnews_csv), "--precision", "int8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] > 0
    with pytest.raises(SystemExit):  # one flag for the precision: the old --int8 is gone
        main(["classify", str(tiny_finished_run), "--int8", "a headline"])
    assert "unrecognized arguments: --int8" in capsys.readouterr().err
