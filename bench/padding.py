"""Does padding each training batch to a multiple of N tokens pay on a CPU? The same `lorafit train`
once per multiple (`training.pad_to_multiple_of`), one after the other.

Length-grouped batches without it come in almost every width from 8 to 128 tokens, so every matmul,
attention and layer-norm tensor comes in as many sizes; glibc keeps freed blocks of each size, and a
long run's memory grew to 11-12 GB (bench/ACCURACY.md notes). Padding to a multiple computes a few
more (masked) tokens per row for 8-16 times fewer shapes.

Measured as bench/allocator.py's window: recipes/mpnet-best.yaml (all-mpnet-base-v2, LoRA on layers
3-11, frozen layers 0-2 reused, bf16 where the CPU has bf16 units) on 9,600 rows of train-large.csv,
the wall, user and system seconds of training steps 50-150 and the memory at step 150.

    python bench/padding.py [--multiples 1 8 16] [--report-only]

Writes bench/padding.json and bench/PADDING.md.
"""

from __future__ import annotations

import argparse
import json

from allocator import BENCH, WINDOW, WORK, window

from lorafit.device import cpu_info, cpu_label


def report(results: dict) -> str:
    rows = results["window"]
    base = rows["1"]["wall_s"]
    lines = [
        "# Padding training batches to a multiple of N tokens",
        "",
        "`python bench/padding.py`: `lorafit train recipes/mpnet-best.yaml` on 9,600 rows of train-large.csv "
        "(all-mpnet-base-v2, LoRA on layers 3-11, frozen layers 0-2 reused, bf16 where the CPU has bf16 units), "
        f"once per `training.pad_to_multiple_of`, one after the other; training steps {WINDOW[0]}-{WINDOW[1]} "
        f"(the same batches in every run). CPU: {cpu_label(results['cpu'])}.",
        "",
        "| pad_to_multiple_of | wall s | vs 1 | user s | system s | RSS MB at step 150 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {m} | {r['wall_s']} | {r['wall_s'] / base:.2f}× | {r['user_s']} | {r['sys_s']} | {r['rss_mb']} |"
        for m, r in rows.items()
    ]
    return "\n".join([*lines, "", *results.get("notes", [])]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--multiples", nargs="+", type=int, default=[1, 8, 16])
    parser.add_argument("--report-only", action="store_true", help="rewrite PADDING.md from padding.json")
    args = parser.parse_args()
    out = BENCH / "padding.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    if not args.report_only:
        WORK.mkdir(parents=True, exist_ok=True)
        results.update(cpu=cpu_info(), window={})
        for multiple in dict.fromkeys([1, *args.multiples]):  # 1, today's default, is the baseline
            override = f"training.pad_to_multiple_of={multiple}"
            results["window"][str(multiple)] = window(f"padding {multiple}", {}, (override,))
            print(multiple, json.dumps(results["window"][str(multiple)]), flush=True)
            out.write_text(json.dumps(results, indent=2) + "\n")  # after each run: an interrupted bench keeps them
    (BENCH / "PADDING.md").write_text(report(results))


if __name__ == "__main__":
    main()
