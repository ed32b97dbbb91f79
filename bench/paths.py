"""`make bench-paths`: every inference path on this CPU, one table per CPU kind -> bench/PATHS.md.

Each path (PyTorch bf16, fp32 and dynamic int8; onnxruntime fp32 and dynamic int8) classifies the
same 2,000 validation rows of a trained run. Speed: examples/s, best of two passes after a warm-up.
Quality: agreement with PyTorch fp32 and the change in accuracy. A path qualifies when it agrees on
at least 99.5% of the rows and moves accuracy by at most 0.3 points; the fastest qualifying path
(geometric mean over the models measured) is the kind's default, `device.FASTEST_CPU_PATH`, which
a test checks against bench/paths.json. Tables from machines of other kinds are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
AGNEWS = ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"
WORK = Path("/tmp/lorafit-paths")
PATHS = ("bf16", "fp32", "int8", "ort-fp32", "ort-int8")
ROWS = 2000
MIN_AGREEMENT, MAX_ACCURACY_CHANGE = 0.995, 0.003


def minilm_run() -> Path:
    """The quickstart recipe with a 2,000-row validation split (about a minute with bf16 units)."""
    run = WORK / "minilm"
    if not (run / "run.json").is_file():
        command = [sys.executable, "-m", "lorafit", "train", str(ROOT / "recipes" / "quickstart.yaml")]
        command += [f"data.train={AGNEWS}", "data.limit=null", f"data.validation_size={ROWS}"]
        subprocess.run([*command, "--output-dir", str(run), "--overwrite"], check=True, cwd=ROOT)
    return run


def measure_path(run_dir: Path, path: str, texts: list[str]):
    """(examples/s, probabilities) of one inference path."""
    from lorafit.inference import load_run, predict_proba

    run = load_run(run_dir, precision=path)  # the ONNX paths export once, before the timing
    predict_proba(run, texts[:200])  # warm-up: oneDNN and onnxruntime build their kernels per shape
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        probabilities = predict_proba(run, texts)
        seconds.append(time.perf_counter() - start)
    return len(texts) / min(seconds), probabilities


def measurable_paths() -> list[str]:
    """Every path but bf16 on a CPU without bf16 units: there it emulates bf16 matmuls, many times
    slower than fp32, and lorafit never picks it."""
    from lorafit.device import bf16_supported

    return [path for path in PATHS if path != "bf16" or bf16_supported()]


def measure_model(run_dir: Path) -> dict:
    import numpy as np

    from lorafit.data import prepare_splits
    from lorafit.inference import load_run

    run = load_run(run_dir, precision="fp32")
    validation = prepare_splits(run.recipe.data, run.tokenizer).validation
    texts, labels = validation.texts[:ROWS], np.array(validation.labels[:ROWS])
    speeds, predicted, paths = {}, {}, measurable_paths()
    for path in paths:
        speeds[path], probabilities = measure_path(run_dir, path, texts)
        predicted[path] = probabilities.argmax(-1)
        print(f"{run_dir.name} {path}: {speeds[path]:.1f} examples/s", file=sys.stderr)
    reference = predicted["fp32"]
    return {
        "run": str(run_dir),
        "trained": trained_on(run.info),
        "base_model": run.info["base_model"],
        "rows": len(texts),
        "paths": {
            path: {
                "examples_per_s": speeds[path],
                "vs_fp32": speeds[path] / speeds["fp32"],
                "agreement": float((predicted[path] == reference).mean()),
                "accuracy": float((predicted[path] == labels).mean()),
                "accuracy_change": float((predicted[path] == labels).mean() - (reference == labels).mean()),
            }
            for path in paths
        },
    }


def trained_on(info: dict) -> str:
    """What a run was trained on, from its run.json: recipe, data file and training rows."""
    data = info["data"]
    return f"{info['recipe']['name']} on {Path(data['source']).name}, {data['train_rows']:,} training rows"


def qualifies(result: dict) -> bool:
    return result["agreement"] >= MIN_AGREEMENT and abs(result["accuracy_change"]) <= MAX_ACCURACY_CHANGE


def fastest(models: dict) -> str:
    """The qualifying path with the best geometric mean speed over the models measured."""

    def score(path: str) -> float:
        return math.exp(sum(math.log(m["paths"][path]["vs_fp32"]) for m in models.values()) / len(models))

    eligible = [p for p in PATHS if all(p in m["paths"] and qualifies(m["paths"][p]) for m in models.values())]
    return max(eligible, key=score)


def report(results: dict) -> str:
    lines = [
        "# Inference paths by CPU kind",
        "",
        "Produced by `make bench-paths` (`python bench/paths.py [--mpnet-run RUN]`) on each kind of CPU; "
        "a run on one kind replaces only that kind's table.",
        f"Each path classifies the same {ROWS:,} validation rows of a trained run (examples/s: best of two passes "
        "after a warm-up; batches of at most 4,096 tokens sorted by length). A path qualifies when it agrees with "
        f"PyTorch fp32 on at least {MIN_AGREEMENT:.1%} of the rows and changes accuracy by at most "
        f"{100 * MAX_ACCURACY_CHANGE:.1f} points. bf16 is measured only where the CPU has bf16 units. "
        "`--precision auto` takes the fastest qualifying path "
        "(geometric mean over the models) of the CPU kind in use: `FASTEST_CPU_PATH` in src/lorafit/device.py.",
        "",
        "MiniLM: `recipes/quickstart.yaml` on train.csv with a 2,000-row validation split. all-mpnet-base-v2: a run "
        "of `recipes/mpnet-best.yaml` on train-large.csv (the rows it trained on are named per table), first 2,000 "
        "rows of its validation split (15%, seed 42).",
    ]
    for kind, entry in sorted(results.items()):
        lines += ["", f"## {kind}", "", f"CPU: {entry['cpu']}. Default here: **{entry['fastest']}**.", ""]
        runs = [f"{model}: {m['trained']}" for model, m in entry["models"].items() if "trained" in m]
        lines += [f"Runs: {'; '.join(runs)}.", ""] if runs else []
        lines += [
            "| model | path | examples/s | vs fp32 | agreement with fp32 | accuracy | change | qualifies |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for model, measured in entry["models"].items():
            for path, r in measured["paths"].items():
                lines.append(
                    f"| {model} | {path} | {r['examples_per_s']:.1f} | {r['vs_fp32']:.2f}× | {r['agreement']:.2%} | "
                    f"{r['accuracy']:.4f} | {100 * r['accuracy_change']:+.2f} | {'yes' if qualifies(r) else 'no'} |"
                )
    return "\n".join(lines) + "\n"


def tables_by_cpu_kind(name: str) -> tuple[Path, dict]:
    """bench/NAME and what it holds: one entry per kind of CPU measured, each run replacing its own kind's."""
    out = ROOT / "bench" / name
    return out, json.loads(out.read_text()) if out.is_file() else {}


def main() -> None:
    from lorafit.device import cpu_info, cpu_kind, cpu_label

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpnet-run", type=Path, help="a trained all-mpnet-base-v2 run (the mpnet-best row)")
    parser.add_argument("--report-only", action="store_true", help="rewrite PATHS.md from paths.json")
    options = parser.parse_args()
    out, results = tables_by_cpu_kind("paths.json")
    if not options.report_only:
        WORK.mkdir(parents=True, exist_ok=True)
        models = {"MiniLM": measure_model(minilm_run())}
        if options.mpnet_run:
            models["all-mpnet-base-v2"] = measure_model(options.mpnet_run)
        cpu = cpu_info()
        results[cpu_kind()] = {
            "cpu": cpu_label(cpu),
            "models": models,
            "fastest": fastest(models),
        }
        out.write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "bench" / "PATHS.md").write_text(report(results))
    print((ROOT / "bench" / "PATHS.md").read_text())


if __name__ == "__main__":
    main()
