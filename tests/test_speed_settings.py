"""The fast defaults: per-batch padding, length-grouped batches, bf16 where supported, a tokenization cache."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import RECIPES, ROOT

from lorafit.config import DataConfig, ModelConfig, load_recipe
from lorafit.data import cache_root, load_examples, tokenize
from lorafit.device import FASTEST_CPU_PATH, bf16_supported, cpu_kind, inference_path, training_precision
from lorafit.errors import LorafitError
from lorafit.model import load_tokenizer
from lorafit.train import build_trainer, evaluation_order, speed_settings, training_arguments


class CountingTokenizer:
    """The real tokenizer, counting how often it is asked to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.fixture(scope="module")
def sample(agnews_csv, roberta_dir):
    examples = load_examples(DataConfig(train=str(agnews_csv))).subset(range(300))
    return examples, load_tokenizer(ModelConfig(name=str(roberta_dir)))


def test_tokenized_data_is_cached_on_disk_and_reused(sample):
    examples, tokenizer = sample
    counting = CountingTokenizer(tokenizer)
    first = tokenize(examples, counting, 128, cache=True)
    second = tokenize(examples, counting, 128, cache=True)
    assert counting.calls == 1
    assert first["input_ids"] == second["input_ids"] and second["labels"] == examples.labels
    assert any((cache_root() / "tokenized").iterdir())
    tokenize(examples, counting, 64, cache=True)  # another max_length is another entry
    assert counting.calls == 2


def test_default_padding_is_per_batch_and_the_reports_padding_is_available(sample):
    examples, tokenizer = sample
    dynamic = tokenize(examples, tokenizer, 256)
    padded = tokenize(examples, tokenizer, 256, pad_to_max_length=True)
    assert {len(ids) for ids in padded["input_ids"]} == {256}
    lengths = [len(ids) for ids in dynamic["input_ids"]]
    assert max(lengths) <= 256 and sum(lengths) / len(lengths) < 100


def test_training_defaults_group_by_length_and_use_bf16_where_supported(tmp_path):
    recipe = load_recipe(RECIPES / "quickstart.yaml")
    speed = speed_settings(recipe)
    assert speed.group_by_length and speed.dynamic_padding and speed.tokenization_cache
    assert speed.bf16 == bf16_supported()
    assert speed.lora_inputs_in_bf16 == speed.bf16  # only under bf16 autocast is there a copy to spare
    args = training_arguments(recipe, tmp_path, speed)
    assert args.train_sampling_strategy == "group_by_length"
    assert args.bf16 == bf16_supported()
    reports = load_recipe(
        RECIPES / "quickstart.yaml",
        ["training.group_by_length=false", "training.precision=fp32", "data.pad_to_max_length=true"],
    )
    slow = speed_settings(reports)
    assert not (slow.group_by_length or slow.bf16 or slow.dynamic_padding or slow.lora_inputs_in_bf16)
    peft_way = load_recipe(RECIPES / "quickstart.yaml", ["training.lora_inputs_in_bf16=false"])
    assert not speed_settings(peft_way).lora_inputs_in_bf16
    assert training_arguments(reports, tmp_path, slow).train_sampling_strategy == "random"
    assert not args.torch_compile  # off unless asked: bench/COMPILE.md
    compiled = load_recipe(RECIPES / "quickstart.yaml", ["training.torch_compile=true"])
    assert training_arguments(compiled, tmp_path, speed_settings(compiled)).torch_compile


def test_training_batches_pad_to_a_multiple_when_asked(tiny_roberta, agnews_csv, tmp_path):
    overrides = [f"model.name={tiny_roberta}", f"data.train={agnews_csv}", "data.limit=96", "data.validation_size=16"]
    widths = {}
    for multiple in (1, 16):
        recipe = load_recipe(RECIPES / "quickstart.yaml", [*overrides, f"training.pad_to_multiple_of={multiple}"])
        pipeline = build_trainer(recipe, tmp_path / str(multiple), claim=False)
        assert pipeline.speed.pad_to_multiple_of == multiple  # recorded in run.json's speed
        widths[multiple] = [batch["input_ids"].shape[1] for batch in pipeline.trainer.get_train_dataloader()]
    assert all(width % 16 == 0 for width in widths[16])
    assert widths[16] == [-(-width // 16) * 16 for width in widths[1]]  # the same batches, only wider
    assert any(width % 16 for width in widths[1])  # by default a batch is as wide as its longest row


def test_fused_optimizer_trains_as_the_per_tensor_loop_does(tiny_roberta, agnews_csv, tmp_path):
    overrides = [f"model.name={tiny_roberta}", f"data.train={agnews_csv}", "data.limit=96", "data.validation_size=16"]
    start, trained, fused_flags = {}, {}, {}
    for fused in ("true", "false"):
        recipe = load_recipe(RECIPES / "quickstart.yaml", [*overrides, f"training.fused_optimizer={fused}"])
        pipeline = build_trainer(recipe, tmp_path / fused, claim=False, max_steps=4, save_strategy="no")
        trainable = [(n, p) for n, p in pipeline.model.named_parameters() if p.requires_grad]
        start[fused] = {n: p.detach().clone() for n, p in trainable}
        pipeline.trainer.train()
        fused_flags[fused] = bool(pipeline.trainer.optimizer.defaults.get("fused"))
        trained[fused] = {n: p.detach() for n, p in trainable}
    assert fused_flags == {"true": True, "false": False}
    assert all(not torch.equal(start["true"][n], trained["true"][n]) for n in start["true"])  # every tensor moved
    for name in start["true"]:  # the same updates from the same start, rounded in another order
        torch.testing.assert_close(start["true"][name], start["false"][name], rtol=0, atol=0)
        torch.testing.assert_close(trained["true"][name], trained["false"][name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("reuse", [False, True], ids=["tokens", "stored-states"])
def test_validation_rows_go_longest_first_in_token_budgeted_batches(tiny_roberta, agnews_csv, tmp_path, reuse):
    recipe = load_recipe(
        RECIPES / "quickstart.yaml",
        [
            *(f"model.name={tiny_roberta}", f"data.train={agnews_csv}", "data.limit=300", "data.validation_size=100"),
            *("training.eval_batch_size=16", "lora.targets=[{modules: [query], layers: [11]}]"),
            f"training.reuse_frozen_layers={str(reuse).lower()}",
        ],
    )
    trainer = build_trainer(recipe, tmp_path, claim=False).trainer
    lengths = [len(ids) for ids in trainer.eval_dataset.input_ids] if reuse else None
    lengths = lengths or [len(ids) for ids in trainer.eval_dataset["input_ids"]]
    budget = 12 * sorted(lengths)[50]  # about 12 middling rows: long rows come in smaller batches
    slots = {}
    for tokens in (None, budget):
        trainer.eval_batch_tokens = tokens
        order = evaluation_order(trainer, trainer.eval_dataset)
        assert sorted(order) == list(range(100))  # every row once
        assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
        batches = [batch["attention_mask"].shape for batch in trainer.get_eval_dataloader()]
        assert sum(rows for rows, _ in batches) == 100 and max(rows for rows, _ in batches) <= 16
        starts = np.cumsum([0] + [rows for rows, _ in batches])
        assert [width for _, width in batches] == [lengths[order[at]] for at in starts[:-1]]  # padded to the longest
        slots[tokens] = sum(rows * width for rows, width in batches)
    assert all(rows * width <= budget or rows == 1 for rows, width in batches)
    assert len(batches) > 7 and slots[budget] < slots[None]  # 16-row batches: 7, more padding
    # the stock sampler shuffles groups of batches: on 100 rows it pads more
    stock = list(super(type(trainer), trainer)._get_eval_sampler(trainer.eval_dataset))
    assert sum(16 * max(lengths[i] for i in stock[at : at + 16]) for at in range(0, 100, 16)) > slots[None]


def test_precision_setting():
    assert training_precision("bf16", "cpu") == "bf16" and training_precision("fp32", "cpu") == "fp32"
    assert training_precision("auto", "cpu") == ("bf16" if bf16_supported() else "fp32")
    assert training_precision("fp16", "cuda") == "fp16"
    with pytest.raises(LorafitError, match="training.precision=fp16 trains on a GPU only"):
        training_precision("fp16", "cpu")


def test_the_default_inference_path_is_the_one_measured_fastest_on_each_kind_of_cpu():
    """`--precision auto` follows bench/PATHS.md: each CPU kind measured there defaults to its fastest
    qualifying path, recomputed here from the recorded measurements."""
    spec = importlib.util.spec_from_file_location("bench_paths", ROOT / "bench" / "paths.py")
    paths = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paths)
    measured = json.loads((ROOT / "bench" / "paths.json").read_text())
    assert measured
    for kind, entry in measured.items():
        assert paths.fastest(entry["models"]) == entry["fastest"] == FASTEST_CPU_PATH[kind], kind
    if cpu_kind() in FASTEST_CPU_PATH:
        assert inference_path("auto") == FASTEST_CPU_PATH[cpu_kind()]
    assert inference_path("int8") == "int8"
    # a table from a CPU without bf16 units has no bf16 row: the fastest is chosen among the others
    without_bf16 = {
        model: {**m, "paths": {p: r for p, r in m["paths"].items() if p != "bf16"}}
        for model, m in measured["amx"]["models"].items()
    }
    assert paths.fastest(without_bf16) != "bf16"
    assert paths.fastest(without_bf16) in without_bf16["MiniLM"]["paths"]
