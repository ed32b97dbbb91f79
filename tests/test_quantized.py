"""QLoRA: a bitsandbytes-quantized frozen base (4-bit NF4 / 8-bit) under the LoRA adapter."""

import json
import sys

import pytest
import torch
from conftest import RECIPES

from lorafit.budget import plan
from lorafit.cli import main
from lorafit.config import load_recipe
from lorafit.errors import LorafitError
from lorafit.model import build_lora_model

bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install -e '.[dev]')")


def recipe(model_dir, *overrides):
    return load_recipe(RECIPES / "quickstart.yaml", [f"model.name={model_dir}", *overrides])


@pytest.mark.parametrize("bits, layer_type", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_base_trains_only_the_planned_parameters(minilm_dir, bits, layer_type):
    settings = recipe(minilm_dir, f"model.quantization={bits}")
    model = build_lora_model(settings.model, settings.lora, ["a", "b", "c", "d"])
    query = model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert type(query.base_layer).__name__ == layer_type and not query.base_layer.weight.is_floating_point()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == plan(settings).trainable == plan(recipe(minilm_dir)).trainable
    inputs = {"input_ids": torch.randint(1000, 2000, (2, 12)), "labels": torch.tensor([0, 3])}
    model(**inputs).loss.backward()
    assert query.lora_B["default"].weight.grad.abs().sum() > 0


def test_4bit_run_end_to_end(minilm_dir, agnews_rows, tmp_path, capsys):
    # MiniLM, not the shrunken RoBERTa: bitsandbytes' CPU kernels need layers at least 64 wide
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    agnews_rows.iloc[:200].to_csv(train_csv, index=False)
    agnews_rows.iloc[-100:].to_csv(test_csv, index=False)
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(RECIPES / "quickstart.yaml"),
                f"model.name={minilm_dir}",
                f"data.train={train_csv}",
                "data.validation_size=40",
                "data.max_length=32",
                "training.epochs=1",
                "model.quantization=4bit",
                "--output-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    info = json.loads((run_dir / "run.json").read_text())
    assert info["recipe"]["model"]["quantization"] == "4bit"
    assert (run_dir / "adapter_model.safetensors").is_file() and (run_dir / "COMPLETE").is_file()
    assert info["validation"]["accuracy"] > 0.4  # it learned: chance is 0.25
    capsys.readouterr()
    # inference merges the adapter into the full-precision base, and still classifies unseen rows
    assert main(["evaluate", str(run_dir), "--data", str(test_csv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.4


def test_missing_bitsandbytes_is_a_clear_error(minilm_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    settings = recipe(minilm_dir, "model.quantization=4bit")
    with pytest.raises(LorafitError, match=r"needs bitsandbytes: pip install 'lorafit\[qlora\]'"):
        build_lora_model(settings.model, settings.lora, ["a", "b"])


def test_unknown_quantization_is_refused(minilm_dir):
    with pytest.raises(LorafitError, match="model.quantization"):
        recipe(minilm_dir, "model.quantization=3bit")
