"""What the step benches (dropout, casts, first_token, attention, step_forms, optimizer) share: results kept in
bench/<name>.json with one entry per CPU, a run replacing only its own CPU's, and bench/<NAME>.md rewritten from
them (`--report-only` rewrites it without measuring)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from lorafit.device import bf16_supported

BENCH = Path(__file__).resolve().parent


def precisions() -> list[str]:
    """The precisions this CPU trains in: bf16 too where it has bf16 units."""
    return ["bf16", "fp32"] if bf16_supported() else ["fp32"]


def run(
    parser: argparse.ArgumentParser,
    name: str,
    measure: Callable[[dict, argparse.Namespace], None],
    report: Callable[[dict], str],
    tables: tuple[str, ...] = ("by_cpu",),
) -> None:
    """Parse the bench's options, let `measure` fill this CPU's entries of the results (unless --report-only),
    save them and rewrite the page. `tables`: the results' top-level keys, each CPU -> entry."""
    parser.add_argument("--report-only", action="store_true", help=f"rewrite {name.upper()}.md from {name}.json")
    options = parser.parse_args()
    out = BENCH / f"{name}.json"
    results = {table: {} for table in tables} | (json.loads(out.read_text()) if out.is_file() else {})
    if not options.report_only:
        measure(results, options)
        out.write_text(json.dumps(results, indent=2) + "\n")
    page = BENCH / f"{name.upper()}.md"
    page.write_text(report(results))
    print(page.read_text())
