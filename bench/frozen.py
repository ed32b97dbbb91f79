"""`make bench-frozen`: what reusing the frozen lower layers buys, measured through `lorafit train` itself.

all-mpnet-base-v2 with LoRA on every linear module of its top 4 layers (8-11), the same recipe with
`training.reuse_frozen_layers` on and off, in one run on this machine. Reports the steady training
speed (examples/s of epoch 2, from run.json), the whole run's wall time (for reuse: including the one
pass through layers 0-7), validation accuracy, and peak memory (max RSS of the training process) at
two training sizes, each setting run --rounds times in turns. Then a 12-trial `lorafit search` each way:
end-to-end seconds and best validation accuracy; then the best trial trained again with two more seeds
each way, the noise those best accuracies are judged against. Writes bench/FROZEN.md and
bench/frozen.json, which keeps one table per kind of CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lorafit.device import ISA_CAP_NOTE, cpu_label
from lorafit.packaged import cache_root

ROOT = Path(__file__).resolve().parents[1]
AGNEWS = ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"
WORK = Path("/tmp/lorafit-bench-frozen")
# the search: the same trials both ways (one sampler seed, no pruning), so only the time may differ
SEARCH = [
    "search.space={training.learning_rate: {low: 3.0e-4, high: 3.0e-3, log: true}, "
    "lora.lora_dropout: {choices: [0.0, 0.1]}}",
    *("search.trials=12", "search.prune=false", "search.fill_budget=false"),
]
SEARCH_SEED, NOISE_SEEDS = 42, (43, 44, 45, 46)  # recipes/mpnet-best.yaml's seed, and four more
# the ways the searches train: without reuse, with it (layers 0-7 without dropout), and with it keeping
# their dropout (one stored draw per epoch)
SEARCH_WAYS = {
    "off": ["training.reuse_frozen_layers=false"],
    "on": ["training.reuse_frozen_layers=true"],
    "on, dropout draws": ["training.reuse_frozen_layers=true", "training.frozen_layers_dropout=true"],
}
# search.parallel_trials: two trials at once, each pinned to one core, against one at a time (same run)
PARALLEL_WAYS = {
    "off": SEARCH_WAYS["off"],
    "on": SEARCH_WAYS["on"],
    "off, 2 trials at once": [*SEARCH_WAYS["off"], "search.parallel_trials=2"],
    "on, 2 trials at once": [*SEARCH_WAYS["on"], "search.parallel_trials=2"],
}
NO_FROZEN_DROPOUT = "off, no frozen-layer dropout"  # the training plain reuse does, without reuse
NOISE_WAYS = {
    **SEARCH_WAYS,
    NO_FROZEN_DROPOUT: ["training.reuse_frozen_layers=false", "training.frozen_layers_dropout=false"],
}
TOP4 = "lora.targets=[{modules: [query, key, value, attention_output, ffn_in, ffn_out], layers: [8, 9, 10, 11]}]"


def command(verb: str, rows: int, way: str, run_dir: Path) -> list[str]:
    recipe = str(ROOT / "recipes" / "mpnet-best.yaml")
    return [
        *(sys.executable, "-m", "lorafit", verb, recipe, f"data.train={AGNEWS}", "data.validation_size=96"),
        *(f"data.train_limit={rows}", "training.epochs=2", "training.batch_size=16", "lora.r=16", TOP4),
        *{**SEARCH_WAYS, **PARALLEL_WAYS}[way],
        *(SEARCH if verb == "search" else ["--overwrite"]),
        *("--output-dir", str(run_dir)),
    ]


def run_alone(verb: str, rows: int, way: str, run_dir: Path) -> tuple[float, float]:
    """One `lorafit train|search` in its own process with an empty cache (the frozen pass is counted):
    its wall seconds and peak RSS in MB."""
    shutil.rmtree(run_dir, ignore_errors=True)
    return run_process(command(verb, rows, way, run_dir), fresh_cache("cache-"))


def run_process(argv: list[str], cache: Path) -> tuple[float, float]:
    log = cache / "stderr.log"
    start = time.perf_counter()
    with open(log, "w") as stderr:
        env = {**os.environ, "LORAFIT_CACHE": str(cache)}
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage: its peak RSS
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(argv)} failed:\n{log.read_text()[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def fresh_cache(prefix: str) -> Path:
    """An empty lorafit cache under WORK that shares the unpacked models (the states are not shared)."""
    cache = Path(tempfile.mkdtemp(prefix=prefix, dir=WORK))
    models = cache_root() / "models"
    models.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(models)
    return cache


def measure(rows: int, reuse: bool) -> dict:
    run_dir = WORK / f"{'reuse' if reuse else 'full'}-{rows}"
    seconds, peak_rss_mb = run_alone("train", rows, "on" if reuse else "off", run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    return {
        "rows": rows,
        "reuse": reuse,
        "wall_seconds": seconds,
        "epoch_examples_per_s": info["speed"]["epoch_train_examples_per_second"],
        "accuracy": info["validation"]["accuracy"],
        "eval_loss": _last_eval_loss(run_dir),
        "peak_rss_mb": peak_rss_mb,
        "cpu": info["cpu"],
        "head": info["recipe"]["model"]["head"],
        "pad_to_multiple_of": info["speed"]["pad_to_multiple_of"],
    }


def fastest_of_rounds(sizes: list[int], rounds: int) -> list[dict]:
    """Every setting run `rounds` times in turns, the run with the fastest epoch 2 kept: the host's speed
    drifts by tens of percent within an hour, and taking turns exposes each setting to the same drift."""
    settings = [(rows, reuse) for rows in sizes for reuse in (False, True)]
    runs = {setting: [] for setting in settings}
    for _ in range(rounds):
        for setting in settings:
            runs[setting].append(measure(*setting))
    kept = []
    for setting in settings:
        fastest = max(runs[setting], key=lambda run: run["epoch_examples_per_s"][1])
        speeds = [run["epoch_examples_per_s"][1] for run in runs[setting]]
        # memory is not a best-of: the highest peak of the rounds
        kept.append({**fastest, "rounds": speeds, "peak_rss_mb": max(run["peak_rss_mb"] for run in runs[setting])})
    return kept


def measure_search(rows: int, way: str) -> dict:
    folder = search_folder(rows, way)
    seconds, peak_rss_mb = run_alone("search", rows, way, folder)
    with open(folder / "trials.csv", encoding="utf-8") as handle:
        trials = list(csv.DictReader(handle))
    infos = [json.loads(path.read_text()) for path in sorted(folder.glob("trial-*/run.json"))]
    return {
        # where the time went: training steps (from each trial's epoch speeds), the rest of each trial
        # (evaluation, model building, the frozen pass), and outside the trials (imports, the study, plots)
        "step_seconds": sum(
            rows / speed for info in infos for speed in info["speed"]["epoch_train_examples_per_second"]
        ),
        "trial_seconds": sum(info["wall_seconds"] for info in infos),
        "validation_rows": infos[0]["data"]["validation_rows"],
        "last_layer_first_token": infos[0]["speed"].get("last_layer_first_token", False),
        "rows": rows,
        "way": way,
        "reuse": way != "off",
        "trials": len(trials),
        "wall_seconds": seconds,
        "best_accuracy": max(float(t["accuracy"]) for t in trials if t["state"] == "complete"),
        "accuracies": [float(t["accuracy"]) for t in trials if t["state"] == "complete"],
        "peak_rss_mb": peak_rss_mb,
    }


def search_folder(rows: int, way: str) -> Path:
    return WORK / f"search-{slug(way)}-{rows}"


def slug(way: str) -> str:
    return way.replace(", ", "-").replace(" ", "-")


def seed_noise(rows: int, best_trial: int) -> dict:
    """The noise the searches' best accuracies are judged against: the best trial of the search without
    reuse trained again with other seeds (the same validation rows; the seed moves the head's
    initialisation, the dropout masks and the batch order) each way the searches train, and one more:
    without reuse but with no dropout below the trained layers, the training plain reuse does.
    Way -> seed -> accuracy; the searches' own runs are the seed-42 runs of their ways."""
    recipe = search_folder(rows, "off") / f"trial-{best_trial:03d}" / "recipe.yaml"
    cache, accuracies = fresh_cache("seeds-"), {way: {} for way in NOISE_WAYS}
    for seed in (SEARCH_SEED, *NOISE_SEEDS):
        for way, settings in NOISE_WAYS.items():
            if seed == SEARCH_SEED and way in SEARCH_WAYS:
                continue  # the search ran it
            run_dir = WORK / f"seed-{seed}-{slug(way)}"
            argv = [sys.executable, "-m", "lorafit", "train", str(recipe), f"training.seed={seed}", *settings]
            run_process([*argv, "--overwrite", "--output-dir", str(run_dir)], cache)
            accuracies[way][seed] = json.loads((run_dir / "run.json").read_text())["validation"]["accuracy"]
            print(f"seed {seed}, {way}: {accuracies[way][seed]:.4f}", flush=True)
    return {"trial": best_trial, "accuracies": accuracies}


def _last_eval_loss(run_dir: Path) -> float:
    with open(run_dir / "history.csv", encoding="utf-8") as handle:
        return float(list(csv.DictReader(handle))[-1]["eval_loss"])


def report(results: dict) -> str:
    lines = [
        "# Reusing the frozen lower layers",
        "",
        "Produced by `make bench-frozen` (`python bench/frozen.py`), one table per kind of CPU. all-mpnet-base-v2 "
        "with recipes/mpnet-best.yaml's head and padding as of each run, LoRA r=16 on every linear module of layers "
        "8-11 (the top 4 of 12), batch 16, 2 epochs, `../shared/data/ag_news/train.csv`, 96 validation rows; every "
        "run starts with an empty cache. Each table's ratios come from one run of the bench on that CPU. "
        + ISA_CAP_NOTE,
        "",
    ]
    for label, table in results["by_cpu"].items():
        lines += cpu_table(label, table["rows"]) if "rows" in table else [f"## {label}", ""]
        lines += search_table(table["search"], table.get("search_noise")) if "search" in table else []
        lines += parallel_table(table["search_parallel"]) if "search_parallel" in table else []
    lines += [
        "Layers 0-7 run once, without dropout, then the stored states feed layers 8-11. Without reuse they "
        "still run forward only (nothing below layer 8 needs gradients), so the bound is about 2×: "
        "(8 + 2×4) / (2×4) layer-passes per example. Searches run with `training.last_layer_first_token` (the "
        "default since 2026-12-06; bench/FIRST_TOKEN.md) compute the last layer's keys and values alone for all "
        "but the first token, about 1/6 of that layer: the bound becomes (8 + 2×3.17) / (2×3.17) = 2.26× per "
        "trained example.",
        "",
    ]
    return "\n".join(lines)


def search_table(runs: list[dict], noise: dict | None) -> list[str]:
    by_way = {run["way"]: run for run in runs}
    full = by_way["off"]
    lines = [
        f"`lorafit search`, {full['trials']} trials of {full['rows']} training rows each, the same recipe, learning "
        "rate (log range 3e-4 to 3e-3) and LoRA dropout (0 or 0.1) sampled with one seed, no pruning: every search "
        "trains the same trials, each in one process with an empty cache. Reuse `on` runs layers 0-7 once without "
        "dropout; `on, dropout draws` (`training.frozen_layers_dropout=true`) runs them once per epoch with it, the "
        "draws shared by the trials.",
        "",
        "| reuse | trials | wall seconds | in training steps | rest of the trials | outside the trials "
        "| best validation accuracy | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        steps, trials = run.get("step_seconds"), run.get("trial_seconds")
        split = (
            f"{steps:.0f} | {trials - steps:.0f} | {run['wall_seconds'] - trials:.0f}" if steps else "n/a | n/a | n/a"
        )
        lines.append(
            f"| {run['way']} | {run['trials']} | {run['wall_seconds']:.0f} | {split} | "
            f"{run['best_accuracy']:.4f} | {run['peak_rss_mb']:.0f} |"
        )
    lines += ["", "| goal | measured | met |", "| --- | ---: | --- |"]
    for way, reuse in by_way.items():
        if way == "off":
            continue
        speedup = full["wall_seconds"] / reuse["wall_seconds"]
        draws = 2 if "draws" in way else 1  # the bench's 2 epochs
        first_token = full.get("last_layer_first_token", False)
        bound = search_bound(
            full["trials"], full["rows"], full.get("validation_rows", 96), draws=draws, first_token=first_token
        )
        paired = [a - b for a, b in zip(full["accuracies"], reuse["accuracies"])]  # trial by trial, same values
        lines += [
            f"| reuse {way}: the search ≥ 2× faster end to end (bound by layer-passes: {bound:.2f}×) | "
            f"{speedup:.2f}× | {'yes' if speedup >= 2 else f'no, {100 * (1 - speedup / 2):.1f}% short'} |",
            *([accuracy_goal(way, by_way, noise)] if noise else []),
            f"| not a goal: reuse {way}, accuracy without reuse minus with it, trial by trial: mean, largest | "
            f"{100 * sum(paired) / len(paired):+.2f}, {100 * max(paired, key=abs):+.2f} points | |",
        ]
    if noise:
        lines.append(accuracy_goal("on", by_way, noise, NO_FROZEN_DROPOUT))
    return [*lines, "", *(noise_lines(by_way, noise) if noise else [])]


def parallel_table(runs: list[dict]) -> list[str]:
    by_way = {run["way"]: run for run in runs}
    lines = [
        "The same search one trial at a time (each trial on both cores) and two trials at once "
        "(`search.parallel_trials=2`: each in its own process, pinned to one core; trials are asked for two at a "
        "time, so the sampled values after the first ten differ), measured in one run, in this order:",
        "",
        "| search | wall seconds | best validation accuracy | peak RSS MB of the largest process |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| reuse {run['way']} | {run['wall_seconds']:.0f} | {run['best_accuracy']:.4f} | "
            f"{run['peak_rss_mb']:.0f} |"
            for run in runs
        ),
        "",
        "| goal | measured | met |",
        "| --- | ---: | --- |",
    ]
    speedup = by_way["off, 2 trials at once"]["wall_seconds"] / by_way["on, 2 trials at once"]["wall_seconds"]
    serial = by_way["off"]["wall_seconds"] / by_way["on"]["wall_seconds"]
    lines += [
        f"| reuse on, 2 trials at once: the search ≥ 2× faster end to end than without reuse | {speedup:.2f}× | "
        f"{'yes' if speedup >= 2 else f'no, {100 * (1 - speedup / 2):.0f}% short'} |",
        f"| not a goal: the same one trial at a time, in this run | {serial:.2f}× | |",
        *(
            f"| not a goal: reuse {way}, 2 trials at once against one at a time | "
            f"{by_way[way]['wall_seconds'] / by_way[f'{way}, 2 trials at once']['wall_seconds']:.2f}× faster | |"
            for way in ("off", "on")
        ),
        "",
    ]
    return lines


def seed_accuracies(by_way: dict, noise: dict) -> dict:
    """Way -> the best trial's accuracy per seed (the seed-42 runs of the search ways are the searches')."""
    accuracies = {way: {int(seed): a for seed, a in runs.items()} for way, runs in noise["accuracies"].items()}
    for way, run in by_way.items():
        accuracies[way][SEARCH_SEED] = run["accuracies"][noise["trial"]]
    return {way: [runs[seed] for seed in sorted(runs)] for way, runs in accuracies.items()}


def paired_interval(with_reuse: list[float], without: list[float]) -> tuple[float, float, float]:
    """The mean seed-by-seed difference and its 95% t-interval: (mean, low, high)."""
    from scipy.stats import t

    differences = [a - b for a, b in zip(with_reuse, without)]
    mean = statistics.mean(differences)
    half = t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) / len(differences) ** 0.5
    return mean, mean - half, mean + half


def accuracy_goal(way: str, by_way: dict, noise: dict, against: str = "off") -> str:
    by_seed = seed_accuracies(by_way, noise)
    mean, low, high = paired_interval(by_seed[way], by_seed[against])
    what = (
        f"reuse {way}: the same best validation accuracy within noise, reuse minus off"
        if against == "off"
        else f"not a goal: reuse {way} minus the training it does without reuse ({against})"
    )
    return (
        f"| {what}, the best trial by seed (mean, 95% interval; in noise if it holds 0) | {100 * mean:+.2f} "
        f"({100 * low:+.2f} to {100 * high:+.2f}) points | {'yes' if low <= 0 <= high else 'no'} |"
    )


def noise_lines(by_way: dict, noise: dict) -> list[str]:
    by_seed = seed_accuracies(by_way, noise)
    seeds = ", ".join(str(seed) for seed in sorted({SEARCH_SEED, *map(int, noise["accuracies"]["off"])}))
    shown = "; ".join(
        f"{way}: {', '.join(f'{a:.4f}' for a in values)} (mean {statistics.mean(values):.4f})"
        for way, values in by_seed.items()
    )
    return [
        f"Noise: the best trial of the search without reuse (trial {noise['trial']}), trained with seeds {seeds} "
        f"(seed {SEARCH_SEED} of each search way: the searches' own trials), reuse {shown}. Plain reuse runs "
        "layers 0-7 once without dropout, so against the same recipe without reuse it trains without the hidden "
        "and attention dropout of those layers; `training.frozen_layers_dropout=false` trains that way without "
        "reuse, and `=true` with reuse keeps it, with one stored draw per epoch.",
        "",
    ]


# the last layer for the first token alone: its keys and values, 2 of the 12 hidden²-sized matmuls per token
FIRST_TOKEN_LAST_LAYER = 2 / 12


def search_bound(
    trials: int, rows: int, validation_rows: int, epochs: int = 2, draws: int = 1, first_token: bool = False
) -> float:
    """The search's speed-up if time went by layer-passes alone: per trained example the full model runs
    layers 0-7 forward and the top 4 forward and backward, reuse the top 4 forward and backward; per
    evaluated row 8 + 4 or 4 forward; reuse adds a pass through layers 0-7 for every draw of the training
    rows and once for the validation rows, shared by the trials. With the last layer computing the first
    token alone, the top 4 count as 3 + FIRST_TOKEN_LAST_LAYER."""
    top = 3 + (FIRST_TOKEN_LAST_LAYER if first_token else 1)
    full = trials * epochs * (rows * (8 + 2 * top) + validation_rows * (8 + top))
    reuse = trials * epochs * (rows * 2 * top + validation_rows * top) + (rows * draws + validation_rows) * 8
    return full / reuse


def cpu_table(label: str, rows: list[dict]) -> list[str]:
    by = {(r["rows"], r["reuse"]): r for r in rows}
    small, large = sorted({r["rows"] for r in rows})
    compared = large if (large, False) in by else small  # older tables ran without reuse at the small size only
    speedup = by[(compared, True)]["epoch_examples_per_s"][1] / by[(compared, False)]["epoch_examples_per_s"][1]
    lines = [
        f"## {label}",
        "",
        "| training rows | reuse | head | padded to | epoch 1 examples/s | epoch 2 examples/s | wall seconds "
        "| validation accuracy | last eval loss | peak RSS MB | epoch 2 examples/s of each round |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        e = r["epoch_examples_per_s"]
        lines.append(
            f"| {r['rows']} | {'on' if r['reuse'] else 'off'} | {r.get('head', 'mean')} | "
            f"{r.get('pad_to_multiple_of', 1)} | {e[0]:.1f} | {e[1]:.1f} | {r['wall_seconds']:.0f} | "
            f"{r['accuracy']:.4f} | {r['eval_loss']:.4f} | {r['peak_rss_mb']:.0f} | "
            f"{', '.join(f'{x:.1f}' for x in r.get('rounds', [e[1]]))} |"
        )
    memory_small, memory_large = by[(small, True)]["peak_rss_mb"], by[(large, True)]["peak_rss_mb"]
    return [
        *lines,
        "",
        "| goal | measured | met |",
        "| --- | ---: | --- |",
        f"| epoch 2 examples/s with reuse ≥ 1.8× without ({compared} rows) | {speedup:.2f}× | "
        f"{'yes' if speedup >= 1.8 else f'no, {100 * (1 - speedup / 1.8):.0f}% short'} |",
        f"| peak RSS flat from {small} to {large} rows (within 10%) | {memory_small:.0f} → {memory_large:.0f} MB | "
        f"{'yes' if memory_large <= 1.1 * memory_small else 'no'} |",
        "",
    ]


def states_memory(rows: int) -> None:
    """Peak RSS of computing the states entering layer 3 of all-mpnet-base-v2 (mpnet-best's frozen layers)
    for `rows` rows of train-large.csv, in this process and a fresh cache. Run it on two commits to
    compare how they store the states."""
    import resource

    os.environ["LORAFIT_CACHE"] = str(fresh_cache("states-memory-"))
    import pandas as pd

    from lorafit.config import recipe_from_dict
    from lorafit.data import Examples, tokenize
    from lorafit.frozen import frozen_states
    from lorafit.model import build_lora_model, load_tokenizer

    labels = ["World", "Sports", "Business", "Sci/Tech"]
    table = pd.read_csv(AGNEWS.with_name("train-large.csv")).head(rows)
    lora = {"r": 4, "targets": [{"modules": ["query"], "layers": [3]}]}
    recipe = recipe_from_dict({"model": {"name": "all-mpnet-base-v2"}, "lora": lora})
    model = build_lora_model(recipe.model, recipe.lora, labels).eval()
    tokenized = tokenize(Examples(table.text.tolist(), table.label.tolist(), labels), load_tokenizer(recipe.model), 128)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    states = frozen_states(model, tokenized, 3, identity="states memory", bf16=True)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    size = states.file.stat().st_size // 2**20
    print(f"{rows} rows: states file {size} MB; peak RSS {before} MB before computing them, {after} MB after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=[256, 1024], metavar=("SMALL", "LARGE"))
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs of each training setting, in turns; the fastest is kept"
    )
    parser.add_argument("--search-rows", type=int, default=256, help="training rows of each search trial")
    parser.add_argument(
        "--only",
        choices=["train", "search", "noise", "parallel"],
        help="measure one part, the rest stays as it was (noise: the seed runs, from the last search's trials; "
        "parallel: searches with 2 trials at once against one at a time)",
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite FROZEN.md from frozen.json")
    parser.add_argument("--states-memory", type=int, metavar="ROWS", help="only the peak RSS of computing states")
    options = parser.parse_args()
    if options.states_memory:
        return states_memory(options.states_memory)
    out = ROOT / "bench" / "frozen.json"
    if not options.report_only:
        WORK.mkdir(parents=True, exist_ok=True)
        results = json.loads(out.read_text()) if out.is_file() else {"by_cpu": {}}
        table = results["by_cpu"].setdefault(cpu_label(), {})
        if options.only in (None, "train"):
            table["rows"] = fastest_of_rounds(options.rows, options.rounds)
        if options.only in (None, "search"):
            table["search"] = [measure_search(options.search_rows, way) for way in SEARCH_WAYS]
        if options.only in (None, "parallel"):
            table["search_parallel"] = [measure_search(options.search_rows, way) for way in PARALLEL_WAYS]
        if options.only in (None, "search", "noise"):
            accuracies = table["search"][0]["accuracies"]
            best_trial = accuracies.index(max(accuracies))
            table["search_noise"] = seed_noise(options.search_rows, best_trial)
        out.write_text(json.dumps(results, indent=2) + "\n")
    text = report(json.loads(out.read_text()))
    (ROOT / "bench" / "FROZEN.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
