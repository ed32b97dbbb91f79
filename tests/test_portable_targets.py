"""Portable LoRA target names mean the same module in every encoder family."""

from __future__ import annotations

import pytest
import torch
from conftest import RECIPES
from transformers import AutoConfig, AutoModelForSequenceClassification

from lorafit.budget import format_plan, plan
from lorafit.config import load_recipe
from lorafit.errors import LorafitError
from lorafit.model import PORTABLE_NAMES, resolve_targets

SMALL = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=3)
# what each portable name must reach, as (in features, out features) of the linear layer
SHAPES = {
    "query": (32, 32),
    "key": (32, 32),
    "value": (32, 32),
    "attention_output": (32, 32),
    "ffn_in": (32, 64),
    "ffn_out": (64, 32),
}


def tiny_model(model_type: str):
    if model_type == "distilbert":
        config = AutoConfig.for_model("distilbert", dim=32, n_heads=2, hidden_dim=64, n_layers=3)
    else:
        config = AutoConfig.for_model(model_type, **SMALL)
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "mpnet", "distilbert", "deberta-v2"])
def test_each_portable_name_reaches_its_module_in_every_layer(model_type):
    model = tiny_model(model_type)
    chosen_by_name = {}
    for name in PORTABLE_NAMES:
        chosen = resolve_targets(model, [name])
        assert len(chosen) == 3, (name, chosen)  # one per layer
        for path in chosen:
            linear = model.get_submodule(path)
            assert (linear.in_features, linear.out_features) == SHAPES[name], (name, path)
        chosen_by_name[name] = chosen
    all_chosen = [path for paths in chosen_by_name.values() for path in paths]
    assert len(set(all_chosen)) == 18  # six different modules in each of the three layers


def test_explicit_module_names_keep_working_beside_portable_ones():
    model = tiny_model("mpnet")
    assert (
        resolve_targets(model, [{"modules": ["attn.q"], "layers": [1]}])
        == resolve_targets(model, [{"modules": ["query"], "layers": [1]}])
        == ["mpnet.encoder.layer.1.attention.attn.q"]
    )


def test_portable_names_beyond_qkv_need_a_known_family():
    config = AutoConfig.for_model("gpt2", n_embd=32, n_head=2, n_layer=2)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(LorafitError, match="'ffn_out' is a portable name, mapped only for model types .*mpnet"):
        resolve_targets(model, ["ffn_out"])


def test_plan_prints_the_real_module_names_it_chose(mpnet_dir):
    report = format_plan(plan(load_recipe(RECIPES / "mpnet-best.yaml")))
    for real in ("attention.attn.q", "attention.attn.o", "intermediate.dense", "output.dense"):
        assert f"lora       {real} " in report
    assert "ffn_in" not in report and "attention_output" not in report
