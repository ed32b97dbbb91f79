"""`make bench-casts`: LoRA's input left in bf16 against PEFT's fp32 copy of it, on real training steps.

Under bf16 autocast PEFT copies each bf16 LoRA input to the adapter's fp32, and autocast casts it
back to bf16 for lora_A's matmul; `training.lora_inputs_in_bf16` (speedups.keep_lora_inputs_in_bf16)
skips both copies. The model and batches are bench/dropout.py's: all-mpnet-base-v2 with LoRA r=16 on
every linear module of layers 8-11, lorafit's CPU dropout, batches of 16 AG News rows, forward and
backward under bf16 autocast, steps of the whole model and of layers 8-11 fed with stored states. The
two ways take turns step by step in one process; the median step is reported. bf16 only: in fp32
there is nothing to copy. Writes bench/CASTS.md and bench/casts.json (one table per CPU).
"""
# ruff: noqa: E402  (the bench's own folder first, for frozen.py's cache set-up)

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import by_cpu
from dropout import BATCH_SIZE, median_steps, model_and_steps
from frozen import WORK, fresh_cache

from lorafit.device import ISA_CAP_NOTE, bf16_supported, cpu_label

ROOT = Path(__file__).resolve().parents[1]
WAYS = {"peft": True, "lorafit": False}  # the way -> PEFT's cast_input_dtype_enabled


def measure(steps: int) -> dict:
    from peft.tuners.tuners_utils import BaseTunerLayer

    model, kinds = model_and_steps("bf16")
    lora_modules = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]

    def casting(cast: bool):
        def put_in_place():
            for module in lora_modules:
                module.cast_input_dtype_enabled = cast

        return put_in_place

    return median_steps(model, kinds, {way: casting(cast) for way, cast in WAYS.items()}, steps, bf16=True)


def report(results: dict) -> str:
    lines = [
        "# LoRA inputs in bf16",
        "",
        "Produced by `make bench-casts` (`python bench/casts.py`), one table per CPU with bf16 units. "
        "all-mpnet-base-v2 with LoRA r=16 on every linear module of layers 8-11, lorafit's CPU dropout (LoRA, "
        f"hidden and attention dropout 0.1), batches of {BATCH_SIZE} AG News rows, training mode, forward and "
        "backward under bf16 autocast. peft: PEFT copies each bf16 LoRA input to fp32, autocast casts it back for "
        "the matmul; lorafit: `training.lora_inputs_in_bf16` (the default) leaves it in bf16, the same numbers "
        "(tests/test_speedups.py). Both ways run the same batches, in turns step by step, in one process; the "
        "median of each is reported. The last column is the whole-model step over the stored-states step: what "
        "`training.reuse_frozen_layers` buys per step. " + ISA_CAP_NOTE,
    ]
    for cpu, by_kind in results["by_cpu"].items():
        lines += ["", f"## {cpu}", ""]
        lines += [
            "| step | LoRA input | median step ms | vs peft | whole model / stored states |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        whole = by_kind["whole model"]
        for kind, by_way in by_kind.items():
            for way, seconds in by_way.items():
                lines.append(
                    f"| {kind} | {way} | {1000 * seconds:.0f} | {by_way['peft'] / seconds:.2f}× | "
                    + (f"{whole[way] / seconds:.2f}× |" if kind != "whole model" else "|")
                )
    return "\n".join(lines) + "\n"


def measure_here(results: dict, options) -> None:
    if not bf16_supported():
        sys.exit("bench/casts.py measures bf16 autocast: this CPU has no bf16 units")
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ["LORAFIT_CACHE"] = str(fresh_cache("casts-"))  # the stored states start empty
    results["by_cpu"][cpu_label()] = measure(options.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps of each way and kind (after one warm-up)")
    by_cpu.run(parser, "casts", measure_here, report)


if __name__ == "__main__":
    main()
