"""Does the memory allocator slow long training runs? The same `lorafit train` once per allocator.

Each run trains recipes/mpnet-best.yaml (all-mpnet-base-v2, frozen layers 0-2 reused) on the first
--rows training rows of train-large.csv, one after the other on this machine. run.json gives the
training steps' seconds per tenth of the run (`speed.step_seconds_by_tenth`): a run whose allocator
fragments slows from the first tenths to the last. Writes bench/allocator.json and bench/ALLOCATOR.md.

    python bench/allocator.py [--rows 20000] [--allocators glibc jemalloc ...] [--collect]

jemalloc and tcmalloc come from Debian's packages (apt-get install libjemalloc2 libtcmalloc-minimal4),
mimalloc from PyPI (pip install cmeel-mimalloc); a missing one is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))

from lorafit.allocator import mimalloc_library  # noqa: E402
from lorafit.device import cpu_info  # noqa: E402

LIBRARIES = Path("/usr/lib/x86_64-linux-gnu")
# never hand memory back to the OS: returning and re-faulting pages was the cost of the defaults
JEMALLOC_CONF = "oversize_threshold:1,background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1"


def allocators() -> dict[str, dict | None]:
    """Each allocator's environment, or None when its library is missing here."""
    jemalloc = LIBRARIES / "libjemalloc.so.2"
    tcmalloc = LIBRARIES / "libtcmalloc_minimal.so.4"
    mimalloc = mimalloc_library()
    return {
        "glibc": {},
        "jemalloc": {"LD_PRELOAD": str(jemalloc), "MALLOC_CONF": JEMALLOC_CONF} if jemalloc.is_file() else None,
        "tcmalloc": {"LD_PRELOAD": str(tcmalloc)} if tcmalloc.is_file() else None,
        "mimalloc": {"LD_PRELOAD": str(mimalloc), "MIMALLOC_PURGE_DELAY": "-1"} if mimalloc else None,
    }


def train(name: str, environment: dict, rows: int, data: Path, out: Path) -> dict:
    command = [
        *(sys.executable, "-m", "lorafit", "train", str(ROOT / "recipes/mpnet-best.yaml")),
        *(f"data.train={data}", "data.validation_size=0.15", "data.seed=42", "data.limit=null"),
        *(f"data.train_limit={rows}", "--output-dir", str(out / name), "--overwrite"),
    ]
    env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    env.update(LORAFIT_ALLOCATOR="system", **environment)  # exactly the allocator named, nothing the command adds
    started = time.time()
    with open(out / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"bench/allocator.py: the {name} run failed; see {out / f'{name}.log'}")
    return {**summary(out / name), "peak_rss_mb": usage.ru_maxrss // 1024, "wall_minutes": (time.time() - started) / 60}


def summary(run_dir: Path) -> dict:
    """What a finished run's run.json says about its speed and accuracy."""
    record = json.loads((run_dir / "run.json").read_text())
    tenths = record["speed"]["step_seconds_by_tenth"]
    return {
        "allocator": record["speed"]["allocator"],
        "training_seconds": round(sum(tenths), 1),
        "step_seconds_by_tenth": tenths,
        "slowdown_last_over_first_tenths": round(sum(tenths[-3:]) / sum(tenths[:3]), 2),
        "train_examples_per_second": record["speed"]["train_examples_per_second"],
        "validation_accuracy": record["validation"]["accuracy"],
        "peak_rss_mb": None,  # only a run this script waited for has it
    }


def report(results: dict, rows: int, cpu: dict) -> str:
    baseline = results["glibc"]["training_seconds"]
    lines = [
        "# Memory allocators on a long training run",
        "",
        f"`python bench/allocator.py --rows {rows}`: `lorafit train recipes/mpnet-best.yaml` on the first {rows:,} "
        "training rows of train-large.csv (all-mpnet-base-v2, LoRA on layers 3-11, frozen layers 0-2 reused), "
        "once per allocator, one after the other.",
        f"CPU: {cpu['model']}, {cpu['cores']} cores, {'/'.join(cpu['flags'])}.",
        "",
        "| allocator | training s | vs glibc | last 3 tenths / first 3 | peak RSS MB | validation accuracy |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['training_seconds']} | {r['training_seconds'] / baseline:.2f}× | "
            f"{r['slowdown_last_over_first_tenths']} | {r['peak_rss_mb'] or '-'} | {r['validation_accuracy']:.4f} |"
        )
    lines += ["", "Training steps' seconds per tenth of the run (run.json `speed.step_seconds_by_tenth`):", ""]
    lines += [f"- {name}: {', '.join(map(str, r['step_seconds_by_tenth']))}" for name, r in results.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--allocators", nargs="+", default=["glibc", "jemalloc"], choices=list(allocators()))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/ag_news/train-large.csv")
    parser.add_argument("--out", type=Path, default=Path("/tmp/lorafit-allocator"))
    parser.add_argument("--collect", action="store_true", help="report the finished runs in --out, train nothing")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    available = allocators()
    results = {}
    for name in dict.fromkeys(["glibc", *args.allocators]):
        if available[name] is None:
            print(f"{name}: library not installed, skipped (see this script's docstring)")
            continue
        if args.collect:
            if (args.out / name / "run.json").is_file():
                results[name] = summary(args.out / name)
            continue
        results[name] = train(name, available[name], args.rows, args.data, args.out)
        print(name, json.dumps(results[name]), flush=True)
        write(results, args.rows)  # after each run: an interrupted bench keeps what it measured
    if args.collect:
        write(results, args.rows)


def write(results: dict, rows: int) -> None:
    cpu = cpu_info()
    (BENCH / "allocator.json").write_text(json.dumps({"rows": rows, "cpu": cpu, "results": results}, indent=2) + "\n")
    (BENCH / "ALLOCATOR.md").write_text(report(results, rows, cpu))


if __name__ == "__main__":
    main()
