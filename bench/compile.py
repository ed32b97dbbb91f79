"""`make bench-compile`: torch.compile (inductor) against eager PyTorch, for inference and training -> bench/COMPILE.md.

Inference: the MiniLM run of `make bench-paths` classifies 2,000 validation rows on each PyTorch path (bf16
where the CPU has bf16 units, fp32), eager and compiled with dynamic shapes (lorafit's batches vary in length).
Speed is the best of two passes after a warm-up pass, in each of two processes per way (eager and compiled take
turns); the warm-up pass, which compiles, is reported apart (the first process's).
Training: the quickstart recipe for one epoch on 1,500 rows with `training.torch_compile` off and on; the steady
speed is the time of the second half of the steps (run.json; the same batches either way), the command's time
includes compiling; compiled once more with torch's dropout in place of lorafit's (`training.cpu_dropout=false`),
whose mask lorafit builds outside the graph, so that inductor draws the masks inside its fused kernels. Each
measurement runs in its own process. Tables from machines of other kinds are kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
from by_cpu import precisions  # noqa: E402
from paths import AGNEWS, ROWS, minilm_run, tables_by_cpu_kind  # noqa: E402

WORK = Path("/tmp/lorafit-compile")
TRAIN_ROWS = 1500
# training: torch_compile column -> the recipe's overrides
TRAINING_WAYS = {
    "no": ["training.torch_compile=false"],
    "yes": ["training.torch_compile=true"],
    "yes, torch's dropout": ["training.torch_compile=true", "training.cpu_dropout=false"],
}
INFERENCE_TURNS = 2  # eager and compiled processes alternate, so that the host's drift touches both


def measure_inference(run_dir: str, path: str, compiled: str) -> dict:
    """Examples/s of one PyTorch path, eager or compiled, and its probabilities (saved for the agreement)."""
    import numpy as np
    import torch

    from lorafit.data import prepare_splits
    from lorafit.inference import load_run, predict_proba

    run = load_run(run_dir, precision=path)
    texts = prepare_splits(run.recipe.data, run.tokenizer).validation.texts[:ROWS]
    if compiled == "yes":
        run.model = torch.compile(run.model, dynamic=True)
    start = time.perf_counter()
    predict_proba(run, texts)  # warm-up; compiles when compiled
    first = time.perf_counter() - start
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        probabilities = predict_proba(run, texts)
        seconds.append(time.perf_counter() - start)
    np.save(WORK / f"inference-{path}-{compiled}.npy", probabilities)
    return {"examples_per_s": len(texts) / min(seconds), "first_pass_s": first}


def measure_training(precision: str, compiled: str) -> dict:
    """One epoch of the quickstart recipe through the command line, in its own process."""
    run_dir = WORK / f"train-{precision}-{compiled}"
    command = [sys.executable, "-m", "lorafit", "train", str(ROOT / "recipes" / "quickstart.yaml")]
    command += [f"data.train={AGNEWS}", f"data.limit={TRAIN_ROWS}", "training.epochs=1"]
    command += [f"training.precision={precision}", *TRAINING_WAYS[compiled]]
    start = time.perf_counter()
    subprocess.run([*command, "--output-dir", str(run_dir), "--overwrite"], check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    info = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "command_s": seconds,
        "train_examples_per_s": info["speed"]["train_examples_per_second"],
        "step_seconds_by_tenth": info["speed"]["step_seconds_by_tenth"],
        "accuracy": metrics["accuracy"],
    }


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"bench step {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def inference_table() -> dict:
    import numpy as np

    run, table = str(minilm_run()), {}
    for path in precisions():
        for turn in range(INFERENCE_TURNS):
            for compiled in ("no", "yes") if turn % 2 == 0 else ("yes", "no"):
                row = child("_infer", run, path, compiled)
                print(f"inference {path} compiled={compiled}: {row}", file=sys.stderr)
                best = table.setdefault(f"{path}/{compiled}", row | {"passes_per_s": []})
                best["passes_per_s"].append(row["examples_per_s"])
                best["examples_per_s"] = max(best["passes_per_s"])
        eager, fast = (np.load(WORK / f"inference-{path}-{c}.npy") for c in ("no", "yes"))
        table[f"{path}/yes"]["agreement"] = float((eager.argmax(-1) == fast.argmax(-1)).mean())
        table[f"{path}/yes"]["largest_difference"] = float(np.abs(eager - fast).max())
    return table


def training_table() -> dict:
    table = {}
    for precision in precisions():
        for compiled in TRAINING_WAYS:
            table[f"{precision}/{compiled}"] = measure_training(precision, compiled)
            print(f"training {precision} compiled={compiled}: {table[f'{precision}/{compiled}']}", file=sys.stderr)
    return table


def report(results: dict) -> str:
    lines = [
        "# torch.compile against eager PyTorch",
        "",
        "Produced by `make bench-compile` (`python bench/compile.py`); a run on one kind of CPU replaces only that "
        "kind's tables. " + __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
    ]
    for kind, entry in sorted(results.items()):
        lines += ["", f"## {kind}", "", f"CPU: {entry['cpu']}.", *inference_lines(entry), *training_lines(entry)]
        lines += ["", f"Faster compiled than eager here: {', '.join(faster(entry)) or 'nothing'}."]
    return "\n".join(lines) + "\n"


def inference_lines(entry: dict) -> list[str]:
    if "inference" not in entry:
        return ["", "Inference: not measured yet (`python bench/compile.py --parts inference`)."]
    lines = ["", "### Inference (MiniLM, 2,000 rows)", ""]
    if not all("passes_per_s" in row for row in entry["inference"].values()):
        lines += ["Measured before eager and compiled took turns: one process each way.", ""]
    lines += [
        "| path | compiled | examples/s | vs eager | first pass s | agreement with eager | largest difference |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in entry["inference"].items():
        path, compiled = key.split("/")
        eager = entry["inference"][f"{path}/no"]["examples_per_s"]
        agreement = f"{r['agreement']:.2%}" if "agreement" in r else ""
        difference = f"{r['largest_difference']:.1e}" if "largest_difference" in r else ""
        lines.append(
            f"| {path} | {compiled} | {r['examples_per_s']:.1f} | {r['examples_per_s'] / eager:.2f}× | "
            f"{r['first_pass_s']:.1f} | {agreement} | {difference} |"
        )
    return lines


def training_lines(entry: dict) -> list[str]:
    if "training" not in entry:
        return ["", "Training: not measured yet (`python bench/compile.py --parts training`)."]
    lines = ["", f"### Training (MiniLM, quickstart recipe, {TRAIN_ROWS:,} rows, one epoch)", ""]
    lines += [
        "| precision | torch_compile | 2nd half of the steps, s | vs eager | examples/s (epoch) | command s "
        "| accuracy |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, r in entry["training"].items():
        precision, compiled = key.split("/")
        eager, ours = (second_half(entry["training"][f"{precision}/{c}"]) for c in ("no", compiled))
        lines.append(
            f"| {precision} | {compiled} | {ours:.1f} | {eager / ours:.2f}× | "
            f"{r['train_examples_per_s']:.1f} | {r['command_s']:.0f} | {r['accuracy']:.4f} |"
        )
    return lines


def faster(entry: dict) -> list[str]:
    """What compiling sped up in steady state (compile time aside)."""
    found = []
    for key, row in entry.get("inference", {}).items():
        path, compiled = key.split("/")
        if compiled == "yes" and row["examples_per_s"] > entry["inference"][f"{path}/no"]["examples_per_s"]:
            eager_first = entry["inference"][f"{path}/no"]["first_pass_s"]
            found.append(
                f"{path} inference (its first pass, which compiles, took {row['first_pass_s']:.0f} s, "
                f"eager {eager_first:.0f} s)"
            )
    for key, row in entry.get("training", {}).items():
        precision, compiled = key.split("/")
        if compiled != "no" and second_half(row) < second_half(entry["training"][f"{precision}/no"]):
            found.append(f"{precision} training" + (f" ({compiled})" if compiled != "yes" else ""))
    return found


def second_half(row: dict) -> float:
    tenths = row["step_seconds_by_tenth"]
    return sum(tenths[len(tenths) // 2 :])


def main() -> None:
    from lorafit.device import cpu_kind, cpu_label

    if sys.argv[1:2] == ["_infer"]:
        print(json.dumps(measure_inference(*sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true", help="rewrite COMPILE.md from compile.json")
    parser.add_argument("--parts", default="inference,training", help="what to measure (default: both)")
    options = parser.parse_args()
    out, results = tables_by_cpu_kind("compile.json")
    if not options.report_only:
        WORK.mkdir(parents=True, exist_ok=True)
        entry = results.setdefault(cpu_kind(), {})
        entry["cpu"] = cpu_label()
        for part in options.parts.split(","):
            entry[part] = {"inference": inference_table, "training": training_table}[part]()
        out.write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "bench" / "COMPILE.md").write_text(report(results))
    print((ROOT / "bench" / "COMPILE.md").read_text())


if __name__ == "__main__":
    main()
