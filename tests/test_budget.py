import json

import pytest
from conftest import RECIPES, run_cli

from lorafit.budget import plan
from lorafit.config import load_recipe, recipe_from_dict
from lorafit.errors import LorafitError
from lorafit.model import build_base_model, build_lora_model, resolve_targets

lorafit = run_cli  # the command line, in this process


def test_plan_reproduces_report_a_980740_trainable(roberta_dir):
    result = plan(load_recipe(RECIPES / "agnews-report-a.yaml", [f"model.name={roberta_dir}"]))
    assert result.trainable == 980_740
    assert result.head == 593_668  # RoBERTa's dense + out_proj head: 60% of the budget
    assert result.lora == 36 * 2 * 768 * 7
    assert set(result.lora_by_target) == {"attention.self.query", "attention.self.key", "attention.self.value"}
    assert all(sorted(layers) == list(range(12)) for layers in result.lora_by_target.values())


def test_plan_reproduces_report_b_864004_of_125512712(roberta_dir):
    result = plan(load_recipe(RECIPES / "agnews-report-b.yaml", [f"model.name={roberta_dir}"]))
    assert (result.trainable, result.total) == (864_004, 125_512_712)
    assert result.lora_by_target["output.dense"] == {10: 61_440, 11: 61_440}  # feed-forward 3072 -> 768
    assert sorted(result.lora_by_target["attention.self.query"]) == [0, 1, 5, 10]


def test_plan_cli_json_has_counts_and_verdict(roberta_dir):
    out = lorafit("plan", RECIPES / "agnews-report-b.yaml", f"model.name={roberta_dir}", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["trainable"], report["total"], report["budget"], report["fits"]) == (
        864_004,
        125_512_712,
        1_000_000,
        True,
    )


def test_plan_cli_fails_when_budget_is_exceeded(roberta_dir):
    out = lorafit("plan", RECIPES / "agnews-report-a.yaml", f"model.name={roberta_dir}", "lora.r=8")
    assert out.returncode == 2
    assert f"{36 * 2 * 768 * 8 + 593_668:,} trainable parameters exceed the budget of 1,000,000" in out.stderr
    assert "Traceback" not in out.stderr


def test_plan_loads_no_weights(roberta_dir):
    recipe = load_recipe(RECIPES / "agnews-report-a.yaml", [f"model.name={roberta_dir}"])
    model = build_lora_model(recipe.model, recipe.lora, ["a", "b", "c", "d"], weights=False)
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_targets_by_name_path_and_layers(roberta_dir):
    recipe = recipe_from_dict({"model": {"name": str(roberta_dir)}})
    model = build_base_model(recipe.model, ["x", "y"], weights=False)
    layer = "roberta.encoder.layer"
    assert resolve_targets(model, ["query"]) == [f"{layer}.{i}.attention.self.query" for i in range(12)]
    assert resolve_targets(model, [f"{layer}.3.attention.output.dense"]) == [f"{layer}.3.attention.output.dense"]
    assert resolve_targets(model, [{"modules": ["output.dense", "value"], "layers": [11]}]) == [
        f"{layer}.11.attention.self.value",
        f"{layer}.11.output.dense",
    ]
    with pytest.raises(LorafitError, match=r"lora target 'qeury' matches no linear module.*attention.self.query"):
        resolve_targets(model, ["qeury"])


def test_plan_counts_the_head_from_the_label_count_of_a_local_file(roberta_dir, agnews_csv):
    recipe = recipe_from_dict(
        {
            "model": {"name": str(roberta_dir)},
            "data": {"train": str(agnews_csv)},
            "lora": {"targets": ["query"], "r": 1},
        }
    )
    result = plan(recipe)
    assert result.head == 768 * 768 + 768 + 768 * 4 + 4
    assert result.lora == 12 * 2 * 768
