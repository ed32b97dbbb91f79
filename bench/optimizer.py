"""`make bench-optimizer`: AdamW's step on lorafit's trainable tensors, fused against torch's CPU default.

On a CPU torch's AdamW runs a loop of small ops per tensor unless told otherwise (foreach and fused are
picked by default only on GPUs); LoRA gives many small tensors (two per adapted module). The trainable
tensors of three recipes (the quickstart's MiniLM, and the reports' LoRA on all-mpnet-base-v2), random
gradients, AdamW with the recipe's learning rate and weight decay:
- per tensor: torch's CPU default (`training.fused_optimizer=false`, the Trainer's adamw_torch);
- foreach: torch's multi-tensor ops;
- fused: one fused kernel (`training.fused_optimizer=true`, the default: the Trainer's adamw_torch_fused).
The ways take turns step by step (median ms of an optimizer step; gradient clipping, the same either way,
is left out). Each way also runs 10 steps on its own copy of the parameters with the same gradients: the
largest difference from the per-tensor loop's parameters, relative to their largest value.
Writes bench/OPTIMIZER.md and bench/optimizer.json (one table per CPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import by_cpu
import torch
from attention import median_ms_in_turns

from lorafit.device import cpu_label

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "minilm quickstart": "quickstart.yaml",
    "mpnet report A": "mpnet-report-a.yaml",
    "mpnet report B": "mpnet-report-b.yaml",
}
WAYS = {"per tensor": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
CHECK_STEPS = 10


def trainable_tensors(recipe_file: str) -> tuple[list[torch.Tensor], dict]:
    from lorafit.config import load_recipe
    from lorafit.model import build_lora_model

    recipe = load_recipe(ROOT / "recipes" / recipe_file)
    torch.manual_seed(0)
    model = build_lora_model(recipe.model, recipe.lora, list(recipe.data.labels))
    tensors = [p.detach() for p in model.parameters() if p.requires_grad]
    return tensors, {"lr": recipe.training.learning_rate, "weight_decay": recipe.training.weight_decay}


def optimizer(tensors: list[torch.Tensor], settings: dict, way: str) -> torch.optim.Optimizer:
    parameters = [torch.nn.Parameter(t.clone()) for t in tensors]
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter)
    return torch.optim.AdamW(parameters, **settings, **WAYS[way])


def largest_differences(tensors: list[torch.Tensor], settings: dict) -> dict:
    """way -> its parameters' largest difference from the per-tensor loop's after CHECK_STEPS steps."""
    optimizers = {way: optimizer(tensors, settings, way) for way in WAYS}
    generator = torch.Generator().manual_seed(1)
    for _ in range(CHECK_STEPS):
        gradients = [torch.randn(t.shape, generator=generator) for t in tensors]
        for opt in optimizers.values():
            for parameter, gradient in zip(opt.param_groups[0]["params"], gradients):
                parameter.grad = gradient.clone()
            opt.step()
    reference = optimizers["per tensor"].param_groups[0]["params"]
    scale = max(float(p.abs().max()) for p in reference)
    return {
        way: max(float((p - r).abs().max()) for p, r in zip(opt.param_groups[0]["params"], reference)) / scale
        for way, opt in optimizers.items()
    }


def measure(recipe_file: str, reps: int) -> dict:
    tensors, settings = trainable_tensors(recipe_file)
    steps = {way: optimizer(tensors, settings, way).step for way in WAYS}
    for step in steps.values():  # the first steps create the optimizer state
        step()
    milliseconds = median_ms_in_turns(steps, reps)
    differences = largest_differences(tensors, settings)
    return {
        "tensors": len(tensors),
        "parameters": sum(t.numel() for t in tensors),
        "by_way": {way: {"step_ms": milliseconds[way], "difference": differences[way]} for way in WAYS},
    }


def report(results: dict) -> str:
    lines = [
        "# AdamW's step: fused against torch's CPU default",
        "",
        "Produced by `make bench-optimizer` (`python bench/optimizer.py`), one table per CPU. The trainable "
        "tensors of three recipes (the quickstart's MiniLM, the reports' LoRA on all-mpnet-base-v2), random "
        "gradients, AdamW with the recipe's learning rate and weight decay. **per tensor**: torch's default on a "
        "CPU, a loop of small ops per tensor (`training.fused_optimizer=false`, the Trainer's adamw_torch); "
        "**foreach**: torch's multi-tensor ops; **fused**: one fused kernel (`training.fused_optimizer=true`, the "
        "default, the Trainer's adamw_torch_fused). The ways take turns step by step (median of an optimizer "
        "step; gradient clipping, the same either way, left out). Difference: each way's parameters after "
        f"{CHECK_STEPS} steps from the same start with the same gradients, the largest difference from the "
        "per-tensor loop's, relative to their largest value.",
    ]
    for cpu, by_recipe in results["by_cpu"].items():
        lines += ["", f"## {cpu}", ""]
        lines += [
            "| recipe | trainable tensors | parameters | way | step ms | vs per tensor | difference after "
            f"{CHECK_STEPS} steps |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
        ]
        for name, r in by_recipe.items():
            base = r["by_way"]["per tensor"]["step_ms"]
            for way, row in r["by_way"].items():
                lines.append(
                    f"| {name} | {r['tensors']} | {r['parameters']:,} | {way} | {row['step_ms']:.2f} | "
                    f"{base / row['step_ms']:.2f}× | {row['difference']:.1e} |"
                )
    return "\n".join(lines) + "\n"


def measure_here(results: dict, options) -> None:
    results["by_cpu"][cpu_label()] = {name: measure(f, options.reps) for name, f in RECIPES.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="optimizer steps of each way (after one warm-up)")
    by_cpu.run(parser, "optimizer", measure_here, report)


if __name__ == "__main__":
    main()
