"""`lorafit search`: Optuna over the space a recipe declares, every trial inside the budget.

Each trial is a full `train` of the recipe with the sampled values. With `search.fill_budget`
the trial's LoRA rank is the largest uniform rank that fits, otherwise a sampled rank above
that is lowered to it, so no trial is ever over budget. Trials report their accuracy after
every epoch and the median pruner stops the weak ones. With `search.parallel_trials`, trials train
in batches at once, each in a worker process on its own share of the cores.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from . import rundir
from .budget import fill_budget, label_names_for_plan, plan, with_ranks
from .choices import BEST_METRICS
from .config import Recipe, recipe_from_dict, set_dotted, write_recipe
from .errors import LorafitError

TRIALS_CSV = "trials.csv"
BEST_RECIPE = "best-recipe.yaml"


@dataclass
class SearchResult:
    folder: Path
    best_recipe: Path
    best_accuracy: float
    trials: list[dict]


def trial_recipe(recipe: Recipe, values: dict, label_names: list[str]) -> tuple[Recipe, int]:
    """The recipe with the sampled values, its rank fitted to the budget (see the module doc), and
    its trainable parameters."""
    raw = recipe.to_dict()
    for key, value in values.items():
        set_dotted(raw, key, value, where=f"search.space['{key}']")
    candidate = recipe_from_dict(raw, source=f"search space of recipe '{recipe.name}'")
    # one count when the sampled rank fits; the search for the largest rank counts six models
    counted = None if recipe.search.fill_budget else plan(candidate, label_names)
    if counted is None or not counted.fits:
        largest = fill_budget(candidate, label_names=label_names)[0]  # raises when even rank 1 does not fit
        return with_ranks(candidate, largest.r, {}), largest.trainable
    return candidate, counted.trainable


def suggest(trial, space: dict) -> dict:
    """Sampled values: choices by index (Optuna stores only plain values), ranges as int or float."""
    values = {}
    for key, spec in space.items():
        if "choices" in spec:
            values[key] = spec["choices"][trial.suggest_categorical(key, list(range(len(spec["choices"]))))]
        elif all(isinstance(spec[b], int) and not isinstance(spec[b], bool) for b in ("low", "high")) and not spec.get(
            "log"
        ):
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
        else:
            values[key] = trial.suggest_float(
                key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")), step=spec.get("step")
            )
    return values


class ReportToTrial(TrainerCallback):
    """The epoch's metric_for_best to Optuna; a trial the pruner rejects stops here."""

    def __init__(self, trial, prune: bool, metric: str):
        self.trial, self.prune, self.metric = trial, prune, metric

    def on_evaluate(self, args, state, control, metrics=None, **_):
        import optuna

        step = max(1, round(state.epoch or 1))
        value = metrics[f"eval_{BEST_METRICS[self.metric][0]}"]
        self.trial.report(value, step)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric} {value:.4f} after epoch {step}")


def run_search(recipe: Recipe, output_dir: str | None = None, trials: int | None = None) -> SearchResult:
    import optuna
    from optuna.trial import TrialState

    if not recipe.search.space:
        raise LorafitError(f"recipe '{recipe.name}' declares no search.space; see recipes/minilm-search.yaml")
    folder = Path(output_dir or Path("runs") / f"{recipe.name}-search")
    if folder.exists() and any(folder.iterdir()):
        raise LorafitError(f"{folder} already exists and is not empty; choose another --output-dir")
    label_names = label_names_for_plan(recipe)
    _check_space(recipe, label_names)
    metric = recipe.training.metric_for_best
    study = optuna.create_study(
        direction="maximize" if BEST_METRICS[metric][1] else "minimize",
        sampler=optuna.samplers.TPESampler(seed=recipe.training.seed),
        pruner=_pruner(),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    total = trials or recipe.search.trials
    parallel = min(recipe.search.parallel_trials, total)
    deadline = time.time() + recipe.search.timeout_minutes * 60 if recipe.search.timeout_minutes else None
    rows: list[dict] = []
    with trial_workers(parallel) as workers:
        while len(study.trials) < total and not (deadline and time.time() > deadline):
            # a batch is asked for before any of it is told: its sampling and pruning never depend on which
            # parallel trial finishes first, so a search is reproducible for a given parallel_trials
            batch = [study.ask() for _ in range(min(parallel, total - len(study.trials)))]
            batch_rows, jobs = zip(*(_trial_job(recipe, trial, label_names, folder, workers) for trial in batch))
            rows += batch_rows
            for trial, row, outcome in zip(batch, batch_rows, _run_trials(jobs, batch, workers, study)):
                _tell(study, trial, row, outcome)
                print(f"trial {trial.number + 1}/{total}: {_outcome_line(row)}", flush=True)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise LorafitError(f"no trial of the search completed; see {folder}")
    best = study.best_trial
    best_recipe = recipe_from_dict(best.user_attrs["recipe"])
    _write_trials(folder, rows)
    from .plots import plot_search

    plot_search(rows, folder / "trials.png")
    path = write_recipe(
        best_recipe,
        folder / BEST_RECIPE,
        f"best of {len(study.trials)} trials of `lorafit search` on recipe '{recipe.name}': "
        f"trial {best.number}, validation {metric} {best.value:.4f}",
    )
    return SearchResult(folder, path, best.value, rows)


def _outcome_line(row: dict) -> str:
    if row["state"] == "pruned":
        return f"pruned after {row['minutes']} min"
    return f"validation accuracy {row['accuracy']:.4f}, weighted F1 {row['f1']:.4f} ({row['minutes']} min)"


def _pruner():
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3)


def _trial_job(recipe: Recipe, trial, label_names: list[str], folder: Path, workers) -> tuple[dict, dict]:
    """The trial's row in trials.csv, and what trains it: its sampled recipe and run directory."""
    values = suggest(trial, recipe.search.space)
    chosen, trainable = trial_recipe(recipe, values, label_names)
    row = {"trial": trial.number, **{k: _plain(v) for k, v in values.items()}, "lora.r": chosen.lora.r}
    trial.set_user_attr("recipe", chosen.to_dict())
    raw = chosen.to_dict()
    if workers is not None:  # each worker has its share of the cores, whatever the recipe says
        raw["training"]["threads"] = workers.threads
    job = {
        "recipe": raw,
        "run_dir": str(folder / f"trial-{trial.number:03d}"),
        "prune": recipe.search.prune,
        "metric": recipe.training.metric_for_best,
    }
    return {**row, "trainable": trainable}, job


def _run_trials(jobs: tuple[dict, ...], batch: list, workers, study) -> list[dict]:
    if workers is None:  # one at a time, in this process, reporting to the study itself
        return [_train_trial(job, trial) for job, trial in zip(jobs, batch)]
    from optuna.trial import TrialState

    # the batch is running: finished are the trials told before it
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if len(study.trials) == len(batch):  # the first batch: nothing is cached yet
        prepare_frozen_states(jobs)
    context = {"finished": finished, "direction": study.direction}
    return [future.result() for future in [workers.pool.submit(_trial_in_worker, {**job, **context}) for job in jobs]]


def prepare_frozen_states(jobs) -> None:
    """The stored states the trials reuse, computed here on all of this process's cores before the
    workers start: else every worker of the first batch computes the same states at once, each on its
    share of the cores. Later trials find them in the cache."""
    from .train import build_trainer

    for job in jobs:
        raw = copy.deepcopy(job["recipe"])
        if raw["training"]["reuse_frozen_layers"]:
            raw["training"].update(threads=None, report_to=["none"])  # all cores; no tracker run for this
            with tempfile.TemporaryDirectory() as unused:  # nothing is written there: claim=False
                build_trainer(recipe_from_dict(raw), Path(unused), claim=False)


def _tell(study, trial, row: dict, outcome: dict) -> None:
    """The trial's outcome to its row and to the study (a worker's epoch values first)."""
    from optuna.trial import TrialState

    for step, value in outcome.pop("intermediate", {}).items():
        trial.report(value, step)
    value = outcome.pop("value", None)
    row.update(outcome)
    if value is None:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, value)


def _trial_in_worker(job: dict) -> dict:
    """A trial in a worker process, pruned against the trials finished before its batch: a study of
    their copies stands in for the real one, whose intermediate values the parent reports after."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=job["direction"], sampler=optuna.samplers.RandomSampler(), pruner=_pruner())
    study.add_trials(job["finished"])
    trial = study.ask()
    outcome = _train_trial(job, trial)
    outcome["intermediate"] = dict(study.trials[-1].intermediate_values)
    return outcome


def _train_trial(job: dict, trial) -> dict:
    """Train one trial; its outcome for trials.csv, with `value` (the objective) unless it was pruned."""
    import optuna

    from .train import train

    started = time.time()
    run_dir = Path(job["run_dir"])
    try:
        result = train(
            recipe_from_dict(job["recipe"]),
            output_dir=str(run_dir),
            callbacks=[ReportToTrial(trial, job["prune"], job["metric"])],
        )
    except optuna.TrialPruned:
        shutil.rmtree(run_dir, ignore_errors=True)
        return {"state": "pruned", "minutes": round((time.time() - started) / 60, 2)}
    return {
        "state": "complete",
        "accuracy": result.metrics["accuracy"],
        "f1": result.metrics["f1"],
        "macro_f1": result.metrics["macro_f1"],
        "minutes": round((time.time() - started) / 60, 2),
        "value": result.metrics[BEST_METRICS[job["metric"]][0]],
    }


@dataclass
class TrialWorkers:
    pool: object
    threads: int


@contextmanager
def trial_workers(parallel: int):
    """`parallel` worker processes, each pinned to its own share of this process's CPUs (one trial per
    core trains faster than one trial on all of them: bench/FROZEN.md); None for one trial at a time."""
    if parallel == 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if parallel > len(cpus):
        raise LorafitError(f"search.parallel_trials={parallel}: this process may use only {len(cpus)} CPUs")
    context = multiprocessing.get_context("spawn")  # no fork of a process that has torch's threads running
    shares = context.Queue()
    for share in (cpus[i::parallel] for i in range(parallel)):
        shares.put(share)
    with ProcessPoolExecutor(parallel, mp_context=context, initializer=_pin_worker, initargs=(shares,)) as pool:
        yield TrialWorkers(pool, len(cpus) // parallel)


def _pin_worker(shares) -> None:
    share = shares.get()
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere the share only sets the thread count
        os.sched_setaffinity(0, share)
    os.environ["TQDM_DISABLE"] = "1"  # parallel progress bars would interleave; the parent reports each trial


def _check_space(recipe: Recipe, label_names: list[str]) -> None:
    """Every key and the first value of every range build a valid recipe, before any training."""
    first = {k: s["choices"][0] if "choices" in s else s["low"] for k, s in recipe.search.space.items()}
    trial_recipe(recipe, first, label_names)


def _plain(value):
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _write_trials(folder: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    rundir.write_rows(folder / TRIALS_CSV, rows, columns)
