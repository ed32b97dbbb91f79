"""Which memory allocator trains fastest? The same `lorafit train` once per allocator, one after the other.

Each run trains recipes/mpnet-best.yaml (all-mpnet-base-v2, LoRA on layers 3-11, frozen layers 0-2
reused) on train-large.csv, as it was when ALLOCATOR.md was measured: mean head, batches not padded
beyond their longest row (AS_MEASURED). Two measurements:

- the window (default): 9,600 training rows, 300 validation rows; the wall, user and system seconds
  of training steps 50-150 (the same batches in every run) and the memory at step 150;
- --long: 20,000 training rows, the 15% validation split; the steps' seconds per tenth of the run
  (run.json `speed.step_seconds_by_tenth`): a run whose allocator fragments slows from the first
  tenths to the last.

Writes bench/allocator.json and bench/ALLOCATOR.md.

    python bench/allocator.py [--long] [--allocators glibc jemalloc tcmalloc mimalloc] [--report-only]

jemalloc and tcmalloc come from Debian's packages (apt-get install libjemalloc2 libtcmalloc-minimal4),
mimalloc from PyPI (pip install cmeel-mimalloc); a missing one is reported and skipped.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "src"))

from accuracy import MEAN_HEAD  # noqa: E402

from lorafit.device import cpu_info, cpu_label  # noqa: E402

DATA = ROOT.parent / "shared/data/ag_news/train-large.csv"
WORK = Path("/tmp/lorafit-allocator")
LIBRARIES = Path("/usr/lib/x86_64-linux-gnu")
# never hand memory back to the OS: returning and re-faulting pages was the cost of the defaults
JEMALLOC_CONF = "oversize_threshold:1,background_thread:true,metadata_thp:auto,dirty_decay_ms:-1,muzzy_decay_ms:-1"
WINDOW = (50, 150)
# the Trainer's step bar has no description; "frozen layers 0-2, ...: 100%|...| 9600/9600 [" is not a step count
TRAINING_BAR = re.compile(rb"[\r\n] *\d+%\|[^|\r\n]*\| (\d+)/\d+ \[")
WINDOW_DATA = ["data.validation_size=300", "data.train_limit=9600"]
LONG_DATA = ["data.validation_size=0.15", "data.train_limit=20000"]
AS_MEASURED = MEAN_HEAD  # ALLOCATOR.md measured mpnet-best before it took the first-token head


def mimalloc_library() -> Path | None:
    try:
        files = importlib.metadata.distribution("cmeel-mimalloc").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    return next((Path(f.locate()) for f in files if f.name.startswith("libmimalloc.so.")), None)


def allocators() -> dict[str, dict | None]:
    """Each allocator's environment, or None when its library is missing here."""
    jemalloc, tcmalloc = LIBRARIES / "libjemalloc.so.2", LIBRARIES / "libtcmalloc_minimal.so.4"
    mimalloc = mimalloc_library()
    has_jemalloc = jemalloc.is_file()
    return {
        "glibc": {},
        "jemalloc (default)": {"LD_PRELOAD": str(jemalloc)} if has_jemalloc else None,
        "jemalloc (no decay)": {"LD_PRELOAD": str(jemalloc), "MALLOC_CONF": JEMALLOC_CONF} if has_jemalloc else None,
        "tcmalloc": {"LD_PRELOAD": str(tcmalloc)} if tcmalloc.is_file() else None,
        "mimalloc (default)": {"LD_PRELOAD": str(mimalloc)} if mimalloc else None,
        "mimalloc (no purge)": {"LD_PRELOAD": str(mimalloc), "MIMALLOC_PURGE_DELAY": "-1"} if mimalloc else None,
    }


def command(name: str, data: list[str], overrides: tuple[str, ...] = ()) -> list[str]:
    return [
        *(sys.executable, "-m", "lorafit", "train", str(ROOT / "recipes/mpnet-best.yaml"), f"data.train={DATA}"),
        *("data.seed=42", "data.limit=null", *AS_MEASURED, *data, *overrides),
        *("--output-dir", str(WORK / slug(name)), "--overwrite"),
    ]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def environment(allocator: dict) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    return {**env, **allocator}


def window(name: str, allocator: dict, overrides: tuple[str, ...] = ()) -> dict:
    """Seconds of training steps 50-150, read from the progress bar, then the run is stopped."""
    process = subprocess.Popen(
        command(name, WINDOW_DATA, overrides),
        env=environment(allocator),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    marks, tail = {}, b""
    while len(marks) < len(WINDOW) and (chunk := process.stderr.read1(4096)):
        tail = (tail + chunk)[-4096:]
        steps = [int(step) for step in TRAINING_BAR.findall(tail)]
        for mark in WINDOW:
            if mark not in marks and steps and max(steps) >= mark:
                stat = Path(f"/proc/{process.pid}/stat").read_text().split()
                marks[mark] = (time.perf_counter(), int(stat[13]) / 100, int(stat[14]) / 100)
    if len(marks) < len(WINDOW):
        raise SystemExit(f"bench/allocator.py: the {name} run ended before step {WINDOW[-1]}:\n{tail.decode()[-2000:]}")
    rss = next(line for line in Path(f"/proc/{process.pid}/status").read_text().splitlines() if "VmRSS" in line)
    process.kill()
    process.wait()
    (wall0, user0, sys0), (wall1, user1, sys1) = (marks[m] for m in WINDOW)
    return {
        "wall_s": round(wall1 - wall0, 1),
        "user_s": round(user1 - user0, 1),
        "sys_s": round(sys1 - sys0, 1),
        "rss_mb": int(rss.split()[1]) // 1024,
    }


def long_run(name: str, allocator: dict) -> dict:
    with open(WORK / f"{slug(name)}.log", "w") as log:
        process = subprocess.Popen(command(name, LONG_DATA), env=environment(allocator), stdout=log, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"bench/allocator.py: the {name} run failed; see {WORK / slug(name)}.log")
    record = json.loads((WORK / slug(name) / "run.json").read_text())
    tenths = record["speed"]["step_seconds_by_tenth"]
    return {
        "training_s": round(sum(tenths), 1),
        "step_seconds_by_tenth": tenths,
        "last_over_first_tenths": round(sum(tenths[-3:]) / sum(tenths[:3]), 2),
        "peak_rss_mb": usage.ru_maxrss // 1024,
        "validation_accuracy": record["validation"]["accuracy"],
    }


def window_table(rows: dict, baseline: str, label: str) -> list[str]:
    """The step windows as a markdown table, each row's wall time against the `baseline` row's."""
    base = rows[baseline]["wall_s"]
    return [
        f"| {label} | wall s | vs {baseline} | user s | system s | RSS MB at step {WINDOW[1]} |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {name} | {r['wall_s']} | {r['wall_s'] / base:.2f}× | {r['user_s']} | {r['sys_s']} | {r['rss_mb']} |"
            for name, r in rows.items()
        ),
    ]


def report(results: dict) -> str:
    cpu = results["cpu"]
    lines = [
        "# Memory allocators on MPNet training",
        "",
        "`python bench/allocator.py` (and `--long`): `lorafit train recipes/mpnet-best.yaml "
        f"{' '.join(AS_MEASURED)}` on train-large.csv (all-mpnet-base-v2, LoRA on layers 3-11, frozen layers 0-2 "
        "reused, bf16 where the CPU has bf16 units), "
        "once per allocator, one after the other. "
        f"CPU: {cpu_label(cpu)}.",
        "",
    ]
    if results.get("window"):
        lines += [f"## Training steps {WINDOW[0]}-{WINDOW[1]} (9,600 training rows)", ""]
        lines += [*window_table(results["window"], "glibc", "allocator"), ""]
    if results.get("long"):
        lines += [
            "## A whole run (20,000 training rows, 625 steps)",
            "",
            "| allocator | training s | last 3 tenths / first 3 | peak RSS MB | validation accuracy |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {name} | {r['training_s']} | {r['last_over_first_tenths']} | {r['peak_rss_mb']} | "
            f"{r['validation_accuracy']:.4f} |"
            for name, r in results["long"].items()
        ]
        lines += ["", "Seconds of training steps per tenth of the run:", ""]
        lines += [f"- {name}: {', '.join(map(str, r['step_seconds_by_tenth']))}" for name, r in results["long"].items()]
        lines.append("")
    return "\n".join(lines + results.get("notes", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long", action="store_true", help="whole runs on 20,000 rows instead of the step window")
    parser.add_argument("--allocators", nargs="+", choices=list(allocators()), default=list(allocators()))
    parser.add_argument("--report-only", action="store_true", help="rewrite ALLOCATOR.md from allocator.json")
    args = parser.parse_args()
    out = BENCH / "allocator.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    if not args.report_only:
        WORK.mkdir(parents=True, exist_ok=True)
        section, measure = ("long", long_run) if args.long else ("window", window)
        results.update(cpu=cpu_info(), **{section: {}})
        available = allocators()
        for name in dict.fromkeys(["glibc", *args.allocators]):
            if available[name] is None:
                print(f"{name}: library not installed, skipped (see this script's docstring)")
                continue
            results[section][name] = measure(name, available[name])
            print(name, json.dumps(results[section][name]), flush=True)
            out.write_text(json.dumps(results, indent=2) + "\n")  # after each run: an interrupted bench keeps them
    (BENCH / "ALLOCATOR.md").write_text(report(results))


if __name__ == "__main__":
    main()
