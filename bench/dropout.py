"""`make bench-dropout`: lorafit's CPU dropout against torch's, in one process, on real training steps.

all-mpnet-base-v2 with the frozen bench's LoRA (r=16 on every linear module of layers 8-11, LoRA
dropout 0.1; the encoder's own hidden and attention dropout 0.1), batches of 16 AG News rows, in
training mode, forward and backward, in bf16 (where the CPU has bf16 units) and fp32. Two kinds of
step: the whole model (as without `training.reuse_frozen_layers`) and layers 8-11 fed with the
stored states (as with it). Each dropout runs the same batches, the kinds in turns, step by step, so
the host's drift falls on every one alike; the median step is reported. The dropouts:
- torch: `nn.functional.dropout`, what the model runs without lorafit's swap;
- mt-bool: lorafit's earlier CPU dropout (torch's Mersenne Twister, 16-bit draws, a bool mask cast);
- lorafit: `speedups.cpu_dropout` as it is;
- none: no dropout at all, the floor.
Writes bench/DROPOUT.md and bench/dropout.json (one table per CPU).
"""
# ruff: noqa: E402  (the bench's own folder first, for frozen.py's cache set-up)

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import os
import statistics
import time
from pathlib import Path

import by_cpu
import torch
from frozen import TOP4, WORK, fresh_cache
from torch import nn

from lorafit import speedups
from lorafit.config import load_recipe
from lorafit.device import ISA_CAP_NOTE, SpeedSettings, cpu_label, training_precision

ROOT = Path(__file__).resolve().parents[1]
AGNEWS = ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"
FIRST_TRAINED = 8
BATCHES, BATCH_SIZE = 6, 16
LORA = ["lora.r=16", TOP4]  # the frozen bench's


def mt_bool_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """lorafit's CPU dropout before numpy's draws and the integer-built mask: the baseline."""
    if not training or p == 0.0 or x.device.type != "cpu":
        return nn.functional.dropout(x, p, training)
    levels = 1 << 16
    dropped_levels = round(p * levels)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)
    keep = words.view(torch.int16)[: x.numel()].view(x.shape) >= dropped_levels - levels // 2
    return x * (keep.to(x.dtype) * (levels / (levels - dropped_levels)))


def no_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """The floor: what a step would cost if dropping were free (it is not the same training)."""
    return x


DROPOUTS = {
    "torch": nn.functional.dropout,
    "mt-bool": mt_bool_dropout,
    "lorafit": speedups.cpu_dropout,
    "none": no_dropout,
}


def batches(tokenizer, max_length: int) -> list[dict]:
    with open(AGNEWS, newline="", encoding="utf-8") as rows:
        texts = [row["text"] for _, row in zip(range(BATCHES * BATCH_SIZE), csv.DictReader(rows))]
    return [
        dict(
            tokenizer(
                texts[i : i + BATCH_SIZE], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            ),
            labels=torch.zeros(BATCH_SIZE, dtype=torch.long),
        )
        for i in range(0, len(texts), BATCH_SIZE)
    ]


def stored_state_batches(model, recipe, token_batches: list[dict], bf16: bool) -> list[dict]:
    """The same batches as the states entering layer 8, computed once and stored by lorafit.frozen."""
    from datasets import Dataset

    from lorafit.frozen import FrozenStatesDataset, collate_states, frozen_states

    ids, labels = [], []
    for batch in token_batches:
        ids += [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
        labels += batch["labels"].tolist()
    tokenized = Dataset.from_dict({"input_ids": ids, "labels": labels})
    states = FrozenStatesDataset(tokenized, frozen_states(model, tokenized, FIRST_TRAINED, f"bench {bf16=}", bf16))
    return [
        collate_states([states[i] for i in range(start, start + BATCH_SIZE)])
        for start in range(0, len(states), BATCH_SIZE)
    ]


def step_seconds(model, batch: dict, bf16: bool) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    return time.perf_counter() - start


def model_and_steps(precision: str) -> tuple[nn.Module, dict]:
    """The MPNet model (lorafit's speed-ups for `precision`, nothing else) and its two kinds of step:
    kind -> batches."""
    from lorafit.model import build_lora_model, load_tokenizer
    from lorafit.train import apply_speedups

    recipe = load_recipe(ROOT / "recipes" / "mpnet-best.yaml", LORA)
    torch.manual_seed(0)
    model = build_lora_model(recipe.model, recipe.lora, list(recipe.data.labels))
    apply_speedups(model, SpeedSettings(device="cpu", precision=precision, threads=0, cpu_dropout=True))
    token_batches = batches(load_tokenizer(recipe.model), recipe.data.max_length)
    return model, {
        "whole model": token_batches,
        "layers 8-11 on stored states": stored_state_batches(model, recipe, token_batches, precision == "bf16"),
    }


def median_steps(model: nn.Module, kinds: dict, ways: dict, steps: int, bf16: bool) -> dict:
    """Every way (name -> a function that puts it in place) on every kind of step, in turns step by
    step, so the host's drift falls on all alike: kind -> way -> median step seconds."""
    from lorafit.frozen import skip_frozen_layers

    model.train()
    seconds = {(kind, way): [] for kind in kinds for way in ways}
    for step in range(steps + 1):  # the first round warms oneDNN's kernels up and is not counted
        for kind, kind_batches in kinds.items():
            skip = skip_frozen_layers(model, FIRST_TRAINED) if kind != "whole model" else contextlib.nullcontext()
            with skip:
                for way, put_in_place in ways.items():
                    put_in_place()
                    taken = step_seconds(model, kind_batches[step % len(kind_batches)], bf16)
                    if step:
                        seconds[kind, way].append(taken)
    return {kind: {way: statistics.median(seconds[kind, way]) for way in ways} for kind in kinds}


def measure(precision: str, steps: int) -> dict:
    model, kinds = model_and_steps(precision)
    # what CpuDropout and lorafit's attention call
    ways = {name: functools.partial(setattr, speedups, "cpu_dropout", dropout) for name, dropout in DROPOUTS.items()}
    try:
        return median_steps(model, kinds, ways, steps, bf16=precision == "bf16")
    finally:
        speedups.cpu_dropout = DROPOUTS["lorafit"]


def report(results: dict) -> str:
    lines = [
        "# lorafit's CPU dropout",
        "",
        "Produced by `make bench-dropout` (`python bench/dropout.py`), one table per CPU. all-mpnet-base-v2 with "
        "LoRA r=16 on every linear module of layers 8-11 (LoRA dropout 0.1; the encoder's hidden and attention "
        f"dropout 0.1), batches of {BATCH_SIZE} AG News rows, training mode, forward and backward. Steps of the "
        "whole model (as without `training.reuse_frozen_layers`) and of layers 8-11 fed with stored states (as "
        "with it). Every dropout runs the same batches, in turns step by step, in one process; the median of "
        "each is reported. torch: `nn.functional.dropout` (the model without lorafit's swap); mt-bool: "
        "lorafit's earlier CPU dropout (torch's Mersenne Twister, a bool mask cast to the float type); lorafit: "
        "`speedups.cpu_dropout` (numpy's PCG64 draws, the mask built with integer ops); none: nothing dropped, "
        "the floor (not the same training). " + ISA_CAP_NOTE,
    ]
    for cpu, by_precision in results["by_cpu"].items():
        lines += ["", f"## {cpu}", ""]
        lines += [
            "| precision | step | dropout | median step ms | vs torch | vs mt-bool |",
            "| --- | --- | --- | ---: | ---: | ---: |",
        ]
        for precision, by_kind in by_precision.items():
            for kind, by_name in by_kind.items():
                for name, seconds in by_name.items():
                    lines.append(
                        f"| {precision} | {kind} | {name} | {1000 * seconds:.0f} | "
                        f"{by_name['torch'] / seconds:.2f}× | {by_name['mt-bool'] / seconds:.2f}× |"
                    )
    return "\n".join(lines) + "\n"


def measure_here(results: dict, options) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ["LORAFIT_CACHE"] = str(fresh_cache("dropout-"))  # the stored states start empty
    results["by_cpu"][cpu_label()] = {
        p: measure(training_precision(p, "cpu"), options.steps) for p in by_cpu.precisions()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps of each dropout and kind (after one warm-up)")
    by_cpu.run(parser, "dropout", measure_here, report)


if __name__ == "__main__":
    main()
