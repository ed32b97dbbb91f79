"""Does padding each training batch to a multiple of N tokens pay on a CPU? The same `lorafit train`
once per multiple (`training.pad_to_multiple_of`), one after the other.

Length-grouped batches without it come in almost every width from 8 to 128 tokens, so every matmul,
attention and layer-norm tensor comes in as many sizes; glibc keeps freed blocks of each size, and a
long run's memory grew to 11-12 GB (bench/ACCURACY.md notes). Padding to a multiple computes a few
more (masked) tokens per row for 8-16 times fewer shapes.

Measured as bench/allocator.py's window: recipes/mpnet-best.yaml (all-mpnet-base-v2, LoRA on layers
3-11, frozen layers 0-2 reused, bf16 where the CPU has bf16 units) on 9,600 rows of train-large.csv,
the wall, user and system seconds of training steps 50-150 and the memory at step 150.

A second, quick measurement (`--shapes`, seconds) isolates the cause: one forward and backward pass
through two base-size layers' linear modules with frozen weights and LoRA r=8 (no model, no data), in the
precision lorafit trains in on this CPU (bf16 autocast with bf16 weights where it has bf16 units, else
fp32), batches of 32 rows at widths drawn from one set per process: one width, every width from 8 to
128, or multiples of 8 or 16; tokens per second and the process's peak memory.

A third (`--evaluation`, minutes) times the validation pass: `trainer.evaluate()` of
recipes/mpnet-best.yaml on 96, 600 and 2,000 validation rows of train.csv, with the stock Trainer's
evaluation order (length groups shuffled in groups of up to 50 batches), with lorafit's order (longest
first) in batches of 64 rows, and with lorafit's default batches (longest first, at most 4,096 padded
tokens and 64 rows: `training.eval_batch_tokens`), in turns in one process; the best of the rounds, and
the token slots each way pads to.

    python bench/padding.py [--multiples 1 8 16] [--shapes] [--evaluation] [--report-only]

Writes bench/padding.json and bench/PADDING.md: one section per kind of CPU (`lorafit.device.cpu_kind`), each
measurement replacing only its own table in its kind's section.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

import torch
from allocator import BENCH, WINDOW, WORK, window, window_table

from lorafit.device import bf16_supported, cpu_info, cpu_kind, cpu_label

SHAPES = {
    "one width (68)": [68],
    "every width 8-128": list(range(8, 129)),
    "multiples of 8": list(range(8, 129, 8)),
    "multiples of 16": list(range(16, 129, 16)),
}
HIDDEN, FFN, ROWS, RANK = 768, 3072, 32, 8
AGNEWS = BENCH.parent.parent / "shared" / "data" / "ag_news" / "train.csv"
VALIDATION_ROWS = (96, 600, 2000)
TOKEN_BATCHES = "longest first, ≤ 4,096 tokens"  # the evaluation way of training.eval_batch_tokens' default


def lora_linears(frozen_dtype: torch.dtype, count: int = 2) -> list:
    """`count` layers' q, k, v, o, ffn_in, ffn_out: frozen weights and a trainable rank-8 pair each."""
    sizes = [(HIDDEN, HIDDEN)] * 4 + [(HIDDEN, FFN), (FFN, HIDDEN)]
    modules = []
    for fan_in, fan_out in sizes * count:
        frozen = torch.nn.Linear(fan_in, fan_out).to(frozen_dtype).requires_grad_(False)
        down, up = torch.nn.Linear(fan_in, RANK, bias=False), torch.nn.Linear(RANK, fan_out, bias=False)
        modules.append((frozen, down, up))
    return modules


def shapes_pass(modules: list, width: int, bf16: bool) -> None:
    hidden = torch.randn(ROWS, width, HIDDEN, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for frozen, down, up in modules:
            inner = frozen(hidden) + up(down(hidden))
            hidden = torch.nn.functional.gelu(inner) if inner.shape[-1] == FFN else inner
        loss = hidden.float().pow(2).mean()
    loss.backward()


def shapes_child(name: str) -> None:
    """One set of widths in this process: prints tokens/s and peak RSS as JSON."""
    torch.manual_seed(0)
    bf16 = bf16_supported()  # as lorafit trains here: without bf16 units, fp32
    modules, widths, draw = lora_linears(torch.bfloat16 if bf16 else torch.float32), SHAPES[name], random.Random(0)
    for width in widths[:20]:  # warm-up: the kernels for the first widths
        shapes_pass(modules, width, bf16)
    tokens, start = 0, time.perf_counter()
    for _ in range(150):
        width = draw.choice(widths)
        shapes_pass(modules, width, bf16)
        tokens += ROWS * width
    seconds = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"tokens_per_s": round(tokens / seconds), "peak_rss_mb": peak_rss_mb}))


def shapes(rounds: int = 2) -> dict:
    """Each set of widths in its own process, the sets in turn, `rounds` times: the best tokens/s of each
    (this host's speed drifts within minutes) and its largest peak memory."""
    out = {}
    for _ in range(rounds):
        for name in SHAPES:
            command = [sys.executable, __file__, "--shapes-child", name]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            got = json.loads(output.strip().splitlines()[-1])
            seen = out.get(name, got)
            out[name] = {key: max(seen[key], got[key]) for key in ("tokens_per_s", "peak_rss_mb")}
            print(name, got, flush=True)
    return out


def evaluation(rounds: int = 2) -> dict:
    """Validation rows -> order -> best seconds of `trainer.evaluate()` and padded token slots."""
    import functools
    import os

    from transformers import Trainer

    from lorafit.config import load_recipe
    from lorafit.train import build_trainer

    os.environ["LORAFIT_CACHE"] = str(WORK / "evaluation-cache")
    out = {}
    for rows in VALIDATION_ROWS:
        overrides = [f"data.train={AGNEWS}", f"data.validation_size={rows}", "data.train_limit=64"]
        recipe = load_recipe(BENCH.parent / "recipes" / "mpnet-best.yaml", overrides)
        pipeline = build_trainer(recipe, WORK / "evaluation-run", claim=False)
        trainer, lorafit_order = pipeline.trainer, pipeline.trainer._get_eval_sampler
        stock_order = functools.partial(Trainer._get_eval_sampler, trainer)
        # way -> (evaluation sampler, training.eval_batch_tokens)
        ways = {"stock": (stock_order, None), "longest first": (lorafit_order, None)}
        ways[TOKEN_BATCHES] = (lorafit_order, 4096)
        seconds, accuracy = {name: [] for name in ways}, {}
        with pipeline.layers_used:
            for _ in range(rounds + 1):  # the first round warms up and is not counted
                for name, (order, tokens) in ways.items():
                    trainer._get_eval_sampler, trainer.eval_batch_tokens = order, tokens
                    start = time.perf_counter()
                    accuracy[name] = trainer.evaluate()["eval_accuracy"]
                    seconds[name].append(time.perf_counter() - start)
        out[str(rows)] = {}
        for name, (order, tokens) in ways.items():
            trainer._get_eval_sampler, trainer.eval_batch_tokens = order, tokens
            out[str(rows)][name] = {"seconds": min(seconds[name][1:]), "slots": padded_slots(trainer)}
            out[str(rows)][name]["accuracy"] = accuracy[name]
        print(rows, json.dumps(out[str(rows)]), flush=True)
    return out


def padded_slots(trainer) -> int:
    return sum(batch["attention_mask"].numel() for batch in trainer.get_eval_dataloader())


def window_lines(entry: dict) -> list[str]:
    return [
        "### Training steps (`python bench/padding.py`)",
        "",
        "`lorafit train recipes/mpnet-best.yaml model.head=mean` on 9,600 rows of train-large.csv "
        "(all-mpnet-base-v2, LoRA on layers 3-11, frozen layers 0-2 reused, bf16 where the CPU has bf16 units, "
        f"else fp32), once per `training.pad_to_multiple_of`, one after the other; training steps {WINDOW[0]}-"
        f"{WINDOW[1]} (the same batches in every run). CPU: {cpu_label(entry['cpu'])}.",
        "",
        *window_table(entry["window"], "1", "pad_to_multiple_of"),
        "",
    ]


def shapes_lines(entry: dict) -> list[str]:
    base = entry["shapes"]["one width (68)"]["tokens_per_s"]
    how = (
        "frozen bf16 weights, LoRA r=8), forward and backward under bf16 autocast"
        if entry.get("shapes_precision", "bf16") == "bf16"
        else "frozen fp32 weights, LoRA r=8), forward and backward in fp32 (this CPU has no bf16 units)"
    )
    return [
        "### What the shapes cost (`python bench/padding.py --shapes`)",
        "",
        f"Two base-size layers' linear modules ({how}, 150 batches of 32 rows at widths drawn from each set, one "
        "process per set, the sets in turn twice (the best tokens/s of the two). CPU: "
        f"{cpu_label(entry['shapes_cpu'])}.",
        "",
        "| widths | tokens/s | vs one width | peak RSS MB |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {name} | {r['tokens_per_s']} | {r['tokens_per_s'] / base:.2f}× | {r['peak_rss_mb']} |"
            for name, r in entry["shapes"].items()
        ),
        "",
    ]


def evaluation_lines(entry: dict) -> list[str]:
    token_batches = any(TOKEN_BATCHES in by_order for by_order in entry["evaluation"].values())  # since 13ef40d
    lines = [
        "### Evaluation order (`python bench/padding.py --evaluation`)",
        "",
        "`trainer.evaluate()` of recipes/mpnet-best.yaml (frozen layers 0-2 reused, batches of 64 rows padded to a "
        "multiple of 16) on validation rows of train.csv, the stock Trainer's order (lengths grouped within "
        "shuffled groups of up to 50 batches), lorafit's order (longest first) in the same batches"
        + (
            ", and lorafit's default batches (longest first, at most 4,096 tokens once padded: "
            "`training.eval_batch_tokens`)"
            if token_batches
            else ""
        )
        + ", in turns in one process, the best of two passes after a warm-up. "
        f"CPU: {cpu_label(entry['evaluation_cpu'])}.",
        "",
        "| validation rows | order and batches | padded token slots | seconds | vs stock | accuracy |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for rows, by_order in entry["evaluation"].items():
        stock = by_order["stock"]["seconds"]
        lines += [
            f"| {int(rows):,} | {name} | {r['slots']:,} | {r['seconds']:.1f} | {stock / r['seconds']:.2f}× | "
            f"{r['accuracy']:.4f} |"
            for name, r in by_order.items()
        ]
    return [*lines, ""]


def report(results: dict) -> str:
    kinds = sorted(results["kinds"])
    lines = [
        "# Padding training batches to a multiple of N tokens",
        "",
        "Produced by `python bench/padding.py` (training steps; `--shapes`, `--evaluation`: the other two tables) "
        "on each kind of CPU; a run replaces only its own table in its kind's section.",
        "",
        f"Sections: {', '.join(f'[{kind}](#{kind})' for kind in kinds)}.",
        "",
    ]
    for kind in kinds:
        entry = results["kinds"][kind]
        lines += [f"## {kind}", ""]
        lines += window_lines(entry) if entry.get("window") else []
        lines += shapes_lines(entry) if entry.get("shapes") else []
        lines += evaluation_lines(entry) if entry.get("evaluation") else []
    return "\n".join([*lines, *results.get("notes", [])]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--multiples", nargs="+", type=int, default=[1, 8, 16])
    parser.add_argument("--shapes", action="store_true", help="only the quick measurement of tensor shapes")
    parser.add_argument("--evaluation", action="store_true", help="only the validation pass, three ways")
    parser.add_argument("--shapes-child", choices=list(SHAPES), help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true", help="rewrite PADDING.md from padding.json")
    args = parser.parse_args()
    if args.shapes_child:
        return shapes_child(args.shapes_child)
    out = BENCH / "padding.json"
    results = json.loads(out.read_text()) if out.is_file() else {"kinds": {}}
    entry = {} if args.report_only else results["kinds"].setdefault(cpu_kind(), {})

    def save() -> None:
        out.write_text(json.dumps(results, indent=2) + "\n")

    if args.shapes:
        entry.update(shapes_cpu=cpu_info(), shapes_precision="bf16" if bf16_supported() else "fp32", shapes=shapes())
        save()
    elif args.evaluation:
        WORK.mkdir(parents=True, exist_ok=True)
        entry.update(evaluation_cpu=cpu_info(), evaluation=evaluation())
        save()
    elif not args.report_only:
        WORK.mkdir(parents=True, exist_ok=True)
        entry.update(cpu=cpu_info(), window={})
        for multiple in dict.fromkeys([1, *args.multiples]):  # 1, today's default, is the baseline
            override = f"training.pad_to_multiple_of={multiple}"
            entry["window"][str(multiple)] = window(f"padding {multiple}", {}, (override,))
            print(multiple, json.dumps(entry["window"][str(multiple)]), flush=True)
            save()  # after each run: an interrupted bench keeps them
    (BENCH / "PADDING.md").write_text(report(results))


if __name__ == "__main__":
    main()
