"""Spending the budget: --fill-budget options, head choices and LoRA variants, counted exactly."""

import peft
import pytest
import torch
from conftest import RECIPES, run_cli
from packaging.version import Version

from lorafit.budget import fill_budget, plan, with_ranks
from lorafit.config import load_recipe
from lorafit.errors import LorafitError
from lorafit.model import build_lora_model

HIDDEN, LABELS = 768, 4
REPORT_A_MODULES = 36  # query, key, value of 12 layers, each 768 -> 768


def recipe_a(roberta_dir, *overrides):
    return load_recipe(RECIPES / "agnews-report-a.yaml", [f"model.name={roberta_dir}", *overrides])


def test_uniform_option_is_the_largest_rank_that_fits(roberta_dir):
    recipe = recipe_a(roberta_dir)
    options = {o.name: o for o in fill_budget(recipe)}
    uniform = options["uniform"]
    assert uniform.trainable <= 1_000_000 < plan(with_ranks(recipe, uniform.r + 1, {})).trainable
    assert uniform.r == 7 and uniform.trainable == 980_740  # report A's own choice was the most that fits
    for option in options.values():
        assert option.trainable == plan(with_ranks(recipe, option.r, option.rank_pattern)).trainable <= 1_000_000


def test_per_module_option_spends_the_leftover_on_the_top_layers(roberta_dir):
    option = {o.name: o for o in fill_budget(recipe_a(roberta_dir))}["per-module"]
    cost_of_one_rank = 2 * HIDDEN
    assert 1_000_000 - option.trainable < cost_of_one_rank  # nothing more fits
    assert all(key.startswith(("layer.11.", "layer.10.", "layer.9.", "layer.8.")) for key in option.rank_pattern)


def test_per_layer_option_grows_rank_with_depth(roberta_dir):
    option = {o.name: o for o in fill_budget(recipe_a(roberta_dir))}["per-layer"]
    by_layer = {int(key.split(".")[1]): rank for key, rank in option.rank_pattern.items()}
    ranks = [by_layer.get(layer, option.r) for layer in range(12)]
    assert ranks == sorted(ranks) and ranks[-1] > ranks[0]


def test_fill_budget_says_when_even_rank_one_does_not_fit(roberta_dir):
    with pytest.raises(LorafitError, match="even rank 1"):
        fill_budget(recipe_a(roberta_dir), budget=600_000)


def test_apply_writes_a_recipe_that_plans_to_the_option(roberta_dir, tmp_path):
    out = tmp_path / "filled.yaml"
    command = [
        "plan",
        RECIPES / "agnews-report-a.yaml",
        "--fill-budget",
        "500000",
        f"model.name={roberta_dir}",
        "model.head=linear",
        "--option",
        "per-layer",
        "--apply",
        out,
    ]
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    written = plan(load_recipe(out))
    listed = [line for line in result.stdout.splitlines() if line.startswith("per-layer")][0]
    assert f"{written.trainable:,}" in listed and written.trainable <= 500_000
    again = run_cli(*command)
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.parametrize(
    "head, expected_head, extra_lora",
    [
        ("default", HIDDEN * HIDDEN + HIDDEN + HIDDEN * LABELS + LABELS, 0),  # dense + out_proj: 593,668
        ("linear", HIDDEN * LABELS + LABELS, 0),  # one linear layer: 3,076
        ("lora-dense", HIDDEN * LABELS + LABELS, 7 * 2 * HIDDEN),  # out_proj + LoRA r=7 on the dense
    ],
)
def test_head_choices_are_counted_exactly(roberta_dir, head, expected_head, extra_lora):
    result = plan(recipe_a(roberta_dir, f"model.head={head}"))
    assert result.head == expected_head
    assert result.lora == REPORT_A_MODULES * 7 * 2 * HIDDEN + extra_lora
    assert result.trainable == result.head + result.lora


def test_bert_heads_use_the_first_token_or_adapt_the_pooler(minilm_dir):
    recipe = load_recipe(RECIPES / "quickstart.yaml", [f"model.name={minilm_dir}"])
    default, linear, lora_dense = (
        plan(load_recipe(RECIPES / "quickstart.yaml", [f"model.name={minilm_dir}", f"model.head={h}"]))
        for h in ("default", "linear", "lora-dense")
    )
    assert default.head == linear.head == 384 * 4 + 4
    assert lora_dense.lora - default.lora == recipe.lora.r * 2 * 384  # LoRA on the pooler's dense layer
    assert linear.total < default.total  # the pooler is gone


@pytest.mark.parametrize("model_fixture", ["tiny_roberta", "minilm_dir"])
def test_mean_head_averages_real_tokens_only(model_fixture, request):
    from transformers import AutoTokenizer

    folder = request.getfixturevalue(model_fixture)
    recipe = load_recipe(RECIPES / "quickstart.yaml", [f"model.name={folder}", "model.head=mean"])
    assert (
        plan(recipe).head
        == plan(load_recipe(RECIPES / "quickstart.yaml", [f"model.name={folder}", "model.head=linear"])).head
    )
    torch.manual_seed(0)
    model = build_lora_model(recipe.model, recipe.lora, ["a", "b", "c", "d"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    short = "Stocks rise."
    batch = tokenizer(
        [short, "A much longer headline about a football match played in the rain."], padding=True, return_tensors="pt"
    )
    alone = tokenizer([short], return_tensors="pt")
    with torch.no_grad():
        padded_logits = model(**batch).logits[0]
        alone_logits = model(**alone).logits[0]
        hidden = model.get_base_model().base_model(**alone).last_hidden_state
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # the short text is padded
    torch.testing.assert_close(padded_logits, alone_logits, atol=1e-4, rtol=1e-4)
    trained_head = model.get_base_model().classifier.modules_to_save["default"]
    out_proj = getattr(trained_head, "out_proj", trained_head)  # RoBERTa: pooling + out_proj; BERT: the linear
    torch.testing.assert_close(alone_logits, out_proj(hidden.mean(dim=1))[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("head", ["default", "lora-dense", "linear", "mean"])
def test_heads_are_modules_with_their_dropout_and_no_forward_hooks(head, tiny_roberta):
    """Report B's extra Dropout(0.3) before the classifier is a module of every head: in front of the
    stock head, or merged with a pooled head's own dropout (the hidden dropout, 0 here)."""
    recipe = load_recipe(
        RECIPES / "agnews-report-b.yaml",
        [
            f"model.name={tiny_roberta}",
            f"model.head={head}",
            "model.hidden_dropout=0",
            "model.attention_dropout=0",
            "lora.lora_dropout=0",
        ],
    )
    model = build_lora_model(recipe.model, recipe.lora, ["a", "b", "c", "d"])
    assert not [type(m).__name__ for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    base = model.get_base_model()
    named = dict(base.named_modules())
    dropout = named.get("pooling.dropout") or named.get("classifier.modules_to_save.default.input_dropout")
    dropout = dropout or named["classifier.input_dropout"]
    assert dropout.p == pytest.approx(0.3)
    batch = {"input_ids": torch.tensor([[0, 5, 6, 2]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        torch.manual_seed(0)
        first, second = model.train()(**batch).logits, model(**batch).logits
        assert not torch.equal(first, second)  # the head's dropout acts (no other dropout is left on)
        dropout.p = 0.0
        assert torch.equal(model(**batch).logits, model(**batch).logits)
    if head in ("linear", "mean"):  # with report B's hidden dropout of 0.2: two dropouts in a row, as one
        recipe.model.hidden_dropout = 0.2
        pooled = build_lora_model(recipe.model, recipe.lora, ["a", "b", "c", "d"]).get_base_model().pooling
        assert pooled.dropout.p == pytest.approx(1 - 0.8 * 0.7)


def test_dora_adds_one_magnitude_per_output_feature(roberta_dir):
    result = plan(recipe_a(roberta_dir, "lora.use_dora=true"))
    assert result.lora == REPORT_A_MODULES * (7 * 2 * HIDDEN + HIDDEN)


def test_rslora_scales_by_the_square_root_of_rank(tiny_roberta):
    recipe = load_recipe(
        RECIPES / "agnews-report-a.yaml",
        [f"model.name={tiny_roberta}", "lora.use_rslora=true", "lora.r=4", "lora.lora_alpha=8"],
    )
    model = build_lora_model(recipe.model, recipe.lora, ["a", "b"], weights=False)
    query = model.base_model.model.roberta.encoder.layer[0].attention.self.query
    assert query.scaling["default"] == pytest.approx(8 / 4**0.5)


def test_rank_pattern_sets_ranks_per_module(roberta_dir):
    result = plan(recipe_a(roberta_dir, "lora.rank_pattern={layer.11.attention.self.query: 20}"))
    assert result.lora_by_target["attention.self.query"][11] == 20 * 2 * HIDDEN
    assert result.lora_by_target["attention.self.query"][10] == 7 * 2 * HIDDEN


def test_adalora_is_counted_at_its_initial_rank(roberta_dir):
    result = plan(recipe_a(roberta_dir, "lora.variant=adalora", "lora.adalora_target_r=3"))
    # A, B and the singular values E of rank 7 per module; PEFT before 0.22 also marked the rank counter trainable
    rank_counter = Version(peft.__version__) < Version("0.22")
    assert result.lora == REPORT_A_MODULES * (7 * 2 * HIDDEN + 7 + rank_counter)


def test_orthogonal_init_starts_away_from_the_base_model(tiny_roberta):
    recipe = load_recipe(
        RECIPES / "agnews-report-a.yaml", [f"model.name={tiny_roberta}", "lora.init=orthogonal", "lora.r=4"]
    )
    torch.manual_seed(0)
    model = build_lora_model(recipe.model, recipe.lora, ["a", "b"])
    query = model.base_model.model.roberta.encoder.layer[0].attention.self.query
    assert query.lora_B["default"].weight.abs().sum() > 0  # default init has B = 0


@pytest.mark.parametrize("name", ["agnews-best", "minilm-best"])
def test_best_recipes_fill_the_budget_with_the_largest_uniform_rank(name, roberta_dir, minilm_dir):
    model = roberta_dir if name.startswith("agnews") else minilm_dir
    recipe = load_recipe(RECIPES / f"{name}.yaml", [f"model.name={model}"])
    assert plan(recipe).trainable <= 1_000_000
    assert recipe.lora.r == fill_budget(recipe)[0].r


@pytest.mark.parametrize(
    ("sampled_r", "fill", "expected"), [(2, False, 2), (40, False, "largest"), (2, True, "largest")]
)
def test_a_search_trial_keeps_a_rank_that_fits_and_fits_one_that_does_not(roberta_dir, sampled_r, fill, expected):
    from lorafit.search import trial_recipe

    recipe = recipe_a(roberta_dir, f"search.fill_budget={str(fill).lower()}")
    largest = fill_budget(recipe)[0].r
    chosen, trainable = trial_recipe(recipe, {"lora.r": sampled_r}, ["a", "b", "c", "d"])
    assert chosen.lora.r == (largest if expected == "largest" else expected)
    assert plan(chosen, ["a", "b", "c", "d"]).trainable == trainable <= recipe.budget.max_trainable
    assert largest not in (2, 40)  # the three cases differ
