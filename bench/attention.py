"""`make bench-attention`: lorafit's attention forms against the ones they replace, in one process.

- MiniLM (BERT's layout), training: lorafit's training attention (`speedups.attention`, the one with its
  CPU dropout) as it is, scaling the queries and adding the mask to the scores in place, against its
  earlier form (the scores scaled, the mask applied by masked_fill into a copy). The quickstart's LoRA
  (r=8 on query, key, value of all 6 layers), hidden and attention dropout 0.1, batches of 16 AG News rows,
  forward and backward, the two ways in turns step by step, median step; and the attention alone on
  MiniLM's shapes, forward and backward, in turns, median.
- all-mpnet-base-v2, inference: `training.fused_attention` (lorafit.mpnet_attention) against transformers'
  stock MPNet attention: one self-attention module of the real model alone, in eval mode, on batches of
  4,096 tokens, the two ways in turns, median. (At AG News lengths a whole pass moves by a few percent,
  less than this host's drift; training with attention dropout runs the stock attention either way.)
Writes bench/ATTENTION.md and bench/attention.json (one table per CPU).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path

import by_cpu
import torch
from dropout import BATCH_SIZE, batches, median_steps
from transformers import AttentionInterface
from transformers.models.mpnet.modeling_mpnet import MPNetSelfAttention

from lorafit import speedups
from lorafit.device import ISA_CAP_NOTE, SpeedSettings, cpu_label, training_precision
from lorafit.mpnet_attention import fuse_mpnet_attention

ROOT = Path(__file__).resolve().parents[1]


def earlier_training_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """speedups.attention before it scaled the queries and added the mask in place: the baseline."""
    if not module.training or dropout == 0.0 or query.device.type != "cpu":
        return speedups.attention(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    scores = torch.matmul(query, key.transpose(2, 3)) * (scaling or query.size(-1) ** -0.5)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = speedups.cpu_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def unfuse(model) -> None:
    for module in model.modules():
        if isinstance(module, MPNetSelfAttention):
            module.__class__ = MPNetSelfAttention


BERT_WAYS = {"earlier": earlier_training_attention, "lorafit": speedups.attention}
MPNET_WAYS = {"stock": unfuse, "fused": fuse_mpnet_attention}


def minilm_training(precision: str, steps: int) -> dict:
    from lorafit.config import load_recipe
    from lorafit.model import build_lora_model, load_tokenizer
    from lorafit.train import apply_speedups

    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    torch.manual_seed(0)
    model = build_lora_model(recipe.model, recipe.lora, list(recipe.data.labels))
    apply_speedups(model, SpeedSettings(device="cpu", precision=precision, threads=0, cpu_dropout=True))
    ways = {way: (lambda f=f: AttentionInterface.register(speedups.ATTENTION_NAME, f)) for way, f in BERT_WAYS.items()}
    try:
        kinds = {"whole model": batches(load_tokenizer(recipe.model), recipe.data.max_length)}
        return median_steps(model, kinds, ways, steps, bf16=precision == "bf16")
    finally:
        AttentionInterface.register(speedups.ATTENTION_NAME, speedups.attention)


def median_ms_in_turns(ways: dict, reps: int) -> dict:
    """Each way (name -> a function doing one timed unit of work) run `reps` times, the order swapping every
    round so that the host's drift falls on all alike, after one warm-up round: way -> median ms."""
    times = {way: [] for way in ways}
    for rep in range(reps + 1):
        for way in list(ways)[:: 1 if rep % 2 == 0 else -1]:
            start = time.perf_counter()
            ways[way]()
            if rep:
                times[way].append(1000 * (time.perf_counter() - start))
    return {way: statistics.median(t) for way, t in times.items()}


def minilm_attention_alone(bf16: bool, reps: int) -> dict:
    """The training attention alone, forward and backward, on MiniLM's shapes (16 rows of 72 tokens, 12
    heads of 32), every other row padded to half its width, dropout 0.1: way -> median ms, in turns."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    module = torch.nn.Module().train()
    rows, heads, tokens, size = 16, 12, 72, 32
    query, key, value = (torch.randn(rows, heads, tokens, size, dtype=dtype, requires_grad=True) for _ in range(3))
    mask = torch.ones(rows, 1, tokens, tokens, dtype=torch.bool)
    mask[::2, ..., tokens // 2 :] = False
    upstream = torch.randn(rows, tokens, heads, size, dtype=dtype)

    def forward_and_backward(attention):
        output, _ = attention(module, query, key, value, mask, scaling=size**-0.5, dropout=0.1)
        output.backward(upstream)

    return median_ms_in_turns({way: functools.partial(forward_and_backward, f) for way, f in BERT_WAYS.items()}, reps)


def put_and_forward(put_in_place, attention, *inputs) -> None:
    put_in_place(attention)  # swaps one module's class: microseconds against a forward's milliseconds
    attention(*inputs)


def mpnet_attention_alone(attention, bf16: bool, reps: int) -> dict:
    """One of the model's self-attention modules alone, in eval mode, on batches of 4,096 tokens as
    lorafit's inference forms them (64 rows of 64 tokens, 16 of 256), random hidden states, position bias
    and a padding mask: (rows, tokens) -> way -> median ms, the two ways in turns."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    attention = attention.eval().to(dtype)
    milliseconds = {}
    for rows, tokens in ((64, 64), (16, 256)):
        hidden, bias = torch.randn(rows, tokens, 768, dtype=dtype), torch.randn(rows, 12, tokens, tokens, dtype=dtype)
        mask = torch.zeros(rows, 1, 1, tokens, dtype=dtype)
        mask[::2, ..., tokens // 2 :] = torch.finfo(dtype).min  # every other row padded to half its width
        ways = {
            way: functools.partial(put_and_forward, put, attention, hidden, mask, bias)
            for way, put in MPNET_WAYS.items()
        }
        with torch.inference_mode():
            milliseconds[f"{rows} rows of {tokens} tokens"] = median_ms_in_turns(ways, reps)
    return milliseconds


def mpnet_inference(precision: str, reps: int) -> dict:
    from transformers import AutoModel

    from lorafit.model import resolve_model_path

    model = AutoModel.from_pretrained(resolve_model_path("all-mpnet-base-v2"))
    return mpnet_attention_alone(model.encoder.layer[0].attention.attn, precision == "bf16", reps)


def report(results: dict) -> str:
    lines = [
        "# Attention forms",
        "",
        "Produced by `make bench-attention` (`python bench/attention.py`), one table per CPU. The same numbers "
        "each way (tests/test_speedups.py, tests/test_mpnet_attention.py). **MiniLM** (BERT's layout): "
        "earlier: lorafit's training attention scaling the scores and masking them by masked_fill into a "
        "copy; lorafit: scaling the queries and adding the mask to the scores in place (always on with "
        "`training.cpu_dropout`, whose dropout it carries); the quickstart's LoRA, hidden and attention "
        f"dropout 0.1, batches of {BATCH_SIZE} AG News rows, forward and backward, the two ways in turns step by "
        "step in one process (median step); and the attention alone on MiniLM's shapes, forward and backward, "
        "in turns (median). **all-mpnet-base-v2**, inference: stock: transformers' MPNet "
        "attention (the scores written out, divided, the position bias and the mask added in passes of their "
        "own); fused: `training.fused_attention` (the default), torch's fused scaled_dot_product_attention with "
        "the two biases as one mask, where nothing is dropped. One self-attention module of the real model "
        "alone (its q, k, v and output projections included), in eval mode, on random hidden states, position "
        "bias and padding mask, in batches of 4,096 tokens as lorafit's inference forms them, the two ways in "
        "turns (median). At AG News lengths a whole pass moves by a few percent, less than this host's drift; "
        "training with attention dropout runs the stock attention either way. " + ISA_CAP_NOTE,
    ]
    for cpu, by_precision in results["by_cpu"].items():
        lines += ["", f"## {cpu}", ""]
        lines += [
            "| model | precision | work | baseline | lorafit | speed-up |",
            "| --- | --- | --- | ---: | ---: | ---: |",
        ]
        for precision, parts in by_precision.items():
            for kind, by_way in parts["minilm"].items():
                earlier, ours = (1000 * by_way[way] for way in BERT_WAYS)
                lines.append(
                    f"| minilm | {precision} | training step, {kind}, ms (earlier → lorafit) | {earlier:.0f} | "
                    f"{ours:.0f} | {earlier / ours:.2f}× |"
                )
            earlier, ours = (parts["minilm_attention"][way] for way in BERT_WAYS)
            lines.append(
                f"| minilm | {precision} | training, the attention alone (16 rows of 72 tokens), ms (earlier → "
                f"lorafit) | {earlier:.1f} | {ours:.1f} | {earlier / ours:.2f}× |"
            )
            for shape, by_way in parts["mpnet"].items():
                stock, fused = (by_way[way] for way in MPNET_WAYS)
                lines.append(
                    f"| mpnet | {precision} | inference, one attention module, {shape}, ms (stock → fused) | "
                    f"{stock:.1f} | {fused:.1f} | {stock / fused:.2f}× |"
                )
    return "\n".join(lines) + "\n"


def measure_here(results: dict, options) -> None:
    results["by_cpu"][cpu_label()] = {
        p: {
            "minilm": minilm_training(training_precision(p, "cpu"), options.steps),
            "minilm_attention": minilm_attention_alone(p == "bf16", 5 * options.steps),
            "mpnet": mpnet_inference(training_precision(p, "cpu"), 5 * options.steps),
        }
        for p in by_cpu.precisions()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps of each way and kind (after one warm-up)")
    by_cpu.run(parser, "attention", measure_here, report)


if __name__ == "__main__":
    main()
