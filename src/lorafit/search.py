"""`lorafit search`: Optuna over the space a recipe declares, every trial inside the budget.

Each trial is a full `train` of the recipe with the sampled values. With `search.fill_budget`
the trial's LoRA rank is the largest uniform rank that fits, otherwise a sampled rank above
that is lowered to it, so no trial is ever over budget. Trials report their accuracy after
every epoch and the median pruner stops the weak ones.
"""

from __future__ import annotations

import shutil
import time
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

    from .train import train

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
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
    )
    rows: list[dict] = []

    def objective(trial) -> float:
        values = suggest(trial, recipe.search.space)
        chosen, trainable = trial_recipe(recipe, values, label_names)
        row = {
            "trial": trial.number,
            **{k: _plain(v) for k, v in values.items()},
            "lora.r": chosen.lora.r,
            "trainable": trainable,
        }
        rows.append(row)
        trial.set_user_attr("recipe", chosen.to_dict())
        started = time.time()
        run_dir = folder / f"trial-{trial.number:03d}"
        try:
            result = train(
                chosen, output_dir=str(run_dir), callbacks=[ReportToTrial(trial, recipe.search.prune, metric)]
            )
        except optuna.TrialPruned:
            shutil.rmtree(run_dir, ignore_errors=True)
            row.update(state="pruned", minutes=round((time.time() - started) / 60, 2))
            raise
        row.update(
            state="complete",
            accuracy=result.metrics["accuracy"],
            f1=result.metrics["f1"],
            macro_f1=result.metrics["macro_f1"],
            minutes=round((time.time() - started) / 60, 2),
        )
        return result.metrics[BEST_METRICS[metric][0]]

    timeout = recipe.search.timeout_minutes * 60 if recipe.search.timeout_minutes else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=trials or recipe.search.trials, timeout=timeout, catch=())
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
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


def _check_space(recipe: Recipe, label_names: list[str]) -> None:
    """Every key and the first value of every range build a valid recipe, before any training."""
    first = {k: s["choices"][0] if "choices" in s else s["low"] for k, s in recipe.search.space.items()}
    trial_recipe(recipe, first, label_names)


def _plain(value):
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _write_trials(folder: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    rundir.write_rows(folder / TRIALS_CSV, rows, columns)
