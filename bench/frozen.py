"""`make bench-frozen`: what reusing the frozen lower layers buys, measured through `lorafit train` itself.

all-mpnet-base-v2 with LoRA on every linear module of its top 4 layers (8-11), the same recipe with
`training.reuse_frozen_layers` on and off, in one run on this machine. Reports the steady training
speed (examples/s of epoch 2, from run.json), the whole run's wall time (for reuse: including the one
pass through layers 0-7), validation accuracy, and peak memory (max RSS of the training process) at
two training sizes. Writes bench/FROZEN.md and bench/frozen.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lorafit.packaged import cache_root

ROOT = Path(__file__).resolve().parents[1]
AGNEWS = ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"
WORK = Path("/tmp/lorafit-bench-frozen")
TOP4 = "lora.targets=[{modules: [query, key, value, attention_output, ffn_in, ffn_out], layers: [8, 9, 10, 11]}]"


def command(rows: int, reuse: bool, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lorafit",
        "train",
        str(ROOT / "recipes" / "mpnet-best.yaml"),
        f"data.train={AGNEWS}",
        "data.validation_size=96",
        f"data.train_limit={rows}",
        "training.epochs=2",
        "training.batch_size=16",
        "lora.r=16",
        TOP4,
        f"training.reuse_frozen_layers={str(reuse).lower()}",
        *("model.head=mean", "training.pad_to_multiple_of=1"),  # mpnet-best as FROZEN.md measured it
        "--output-dir",
        str(run_dir),
        "--overwrite",
    ]


def measure(rows: int, reuse: bool) -> dict:
    """One `lorafit train` in its own process, with an empty cache (the frozen pass is counted)."""
    run_dir = WORK / f"{'reuse' if reuse else 'full'}-{rows}"
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=WORK))
    models = cache_root() / "models"
    models.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(models)  # the unpacked model is shared; the states are not
    log = cache / "stderr.log"
    start = time.perf_counter()
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            command(rows, reuse, run_dir),
            env={**os.environ, "LORAFIT_CACHE": str(cache)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage: its peak RSS
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command(rows, reuse, run_dir))} failed:\n{log.read_text()[-3000:]}")
    info = json.loads((run_dir / "run.json").read_text())
    return {
        "rows": rows,
        "reuse": reuse,
        "wall_seconds": time.perf_counter() - start,
        "epoch_examples_per_s": info["speed"]["epoch_train_examples_per_second"],
        "accuracy": info["validation"]["accuracy"],
        "eval_loss": _last_eval_loss(run_dir),
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "cpu": info["cpu"],
    }


def _last_eval_loss(run_dir: Path) -> float:
    import csv

    with open(run_dir / "history.csv", encoding="utf-8") as handle:
        return float(list(csv.DictReader(handle))[-1]["eval_loss"])


def report(results: dict) -> str:
    cpu = results["rows"][0]["cpu"]
    by = {(r["rows"], r["reuse"]): r for r in results["rows"]}
    small, large = sorted({r["rows"] for r in results["rows"]})
    full, reuse = by[(small, False)], by[(small, True)]
    speedup = reuse["epoch_examples_per_s"][1] / full["epoch_examples_per_s"][1]
    lines = [
        "# Reusing the frozen lower layers",
        "",
        f"Produced by `make bench-frozen` (`python bench/frozen.py`) on {cpu['model']}, {cpu['cores']} cores, "
        f"flags {'/'.join(cpu['flags']) or 'none of AVX2/AVX-512/AMX'}. all-mpnet-base-v2, LoRA r=16 on every "
        "linear module of layers 8-11 (the top 4 of 12), mean head, batch 16, 2 epochs, "
        f"`../shared/data/ag_news/train.csv`, 96 validation rows; every run starts with an empty cache.",
        "",
        "| training rows | reuse | epoch 1 examples/s | epoch 2 examples/s | wall seconds | validation accuracy "
        "| last eval loss | peak RSS MB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["rows"]:
        e = r["epoch_examples_per_s"]
        lines.append(
            f"| {r['rows']} | {'on' if r['reuse'] else 'off'} | {e[0]:.1f} | {e[1]:.1f} | "
            f"{r['wall_seconds']:.0f} | {r['accuracy']:.4f} | {r['eval_loss']:.4f} | {r['peak_rss_mb']:.0f} |"
        )
    memory_small, memory_large = by[(small, True)]["peak_rss_mb"], by[(large, True)]["peak_rss_mb"]
    lines += [
        "",
        "| goal | measured | met |",
        "| --- | ---: | --- |",
        f"| epoch 2 examples/s with reuse ≥ 1.8× without | {speedup:.2f}× | "
        f"{'yes' if speedup >= 1.8 else f'no, {100 * (1 - speedup / 1.8):.0f}% short'} |",
        f"| peak RSS flat from {small} to {large} rows (within 10%) | {memory_small:.0f} → {memory_large:.0f} MB | "
        f"{'yes' if memory_large <= 1.1 * memory_small else 'no'} |",
        "",
        "Layers 0-7 run once, without dropout, then the stored states feed layers 8-11. Without reuse they "
        "still run forward only (nothing below layer 8 needs gradients), so the bound is about 2×: "
        "(8 + 2×4) / (2×4) layer-passes per example.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[256, 1024], metavar=("SMALL", "LARGE"))
    parser.add_argument("--report-only", action="store_true", help="rewrite FROZEN.md from frozen.json")
    options = parser.parse_args()
    out = ROOT / "bench" / "frozen.json"
    if not options.report_only:
        WORK.mkdir(parents=True, exist_ok=True)
        small, large = options.rows
        rows = [measure(small, False), measure(small, True), measure(large, True)]
        out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    text = report(json.loads(out.read_text()))
    (ROOT / "bench" / "FROZEN.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
