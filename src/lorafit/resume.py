"""A run's life before it is complete: who may write into the run directory, checkpoints that
survive a kill at any moment, the best epoch's weights, and picking the run up again."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from transformers import TrainerCallback

from . import rundir
from .choices import BEST_METRICS
from .config import Recipe, recipe_from_dict
from .errors import LorafitError


def check_run_dir(run_dir: Path, recipe: Recipe, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything starts, a run directory that `resume` / `overwrite` do not allow."""
    exists = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        if not exists:
            raise LorafitError(f"nothing to resume: {run_dir} does not exist or is empty")
        if rundir.is_complete(run_dir):
            raise LorafitError(f"{run_dir} is a complete run; nothing to resume (--overwrite retrains it)")
        _check_same_recipe(run_dir, recipe)
    elif exists and not overwrite:
        state = (
            "a complete run"
            if rundir.is_complete(run_dir)
            else f"an incomplete run (resume it: lorafit train {run_dir / rundir.RECIPE_YAML} --resume {run_dir})"
        )
        raise LorafitError(
            f"{run_dir} already holds {state}; pass --overwrite to replace it, or --output-dir for another directory"
        )


def prepare_run_dir(run_dir: Path, recipe: Recipe, resume: bool, overwrite: bool) -> Path | None:
    """Claim the run directory; with `resume`, return the newest complete checkpoint (or None to
    start from the beginning when the kill came before the first one)."""
    check_run_dir(run_dir, recipe, resume, overwrite)
    if resume:
        return newest_checkpoint(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_text(
        run_dir / rundir.RECIPE_YAML, yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True)
    )
    return None


def _check_same_recipe(run_dir: Path, recipe: Recipe) -> None:
    path = run_dir / rundir.RECIPE_YAML
    if not path.is_file():
        raise LorafitError(f"{run_dir} is not a lorafit run ({rundir.RECIPE_YAML} is missing); nothing to resume")
    saved = recipe_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")), source=str(path)).to_dict()
    given = recipe.to_dict()
    for section, values in given.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if saved[section].get(key) != value and not (section == "training" and key == "output_dir"):
                raise LorafitError(
                    f"the recipe differs from the interrupted run's at {section}.{key} "
                    f"({saved[section].get(key)!r} there, {value!r} here); resume with "
                    f"{path}"
                )


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing (marked by CheckpointMarker)."""
    folder = run_dir / rundir.CHECKPOINTS
    done = [p for p in folder.glob("checkpoint-*") if (p / rundir.CHECKPOINT_DONE).is_file()] if folder.is_dir() else []
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


class CheckpointMarker(TrainerCallback):
    """The Trainer writes a checkpoint's files one by one; this marks it whole once it is saved.
    Two checkpoints are kept, so a kill while the newer is written leaves the older marked one."""

    def on_save(self, args, state, control, **_):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            rundir.write_text(folder / rundir.CHECKPOINT_DONE, f"{state.global_step}\n")


class BestEpochWeights(TrainerCallback):
    """Keeps the trainable weights of the best epoch so far (by `training.metric_for_best`; the first
    of equals) in one atomically replaced file, and stops after `patience` epochs without a better
    one. Both follow from the Trainer's log history, which a resumed Trainer restores."""

    def __init__(self, model, run_dir: Path, patience: int | None, metric: str = "accuracy", on_best=None):
        self.model, self.path, self.patience = model, run_dir / rundir.BEST_WEIGHTS, patience
        key, self.higher_is_better = BEST_METRICS[metric]
        self.key = f"eval_{key}"
        self.on_best = on_best or (lambda: None)  # called on every process at each new best epoch

    def on_evaluate(self, args, state, control, metrics=None, **_):
        sign = 1 if self.higher_is_better else -1
        scores = [sign * e[self.key] for e in state.log_history if self.key in e]
        if not scores or metrics is None:
            return
        best = scores.index(max(scores))
        if best == len(scores) - 1:  # the best so far (it is already logged)
            self.on_best()
            if state.is_world_process_zero:
                self.save(metrics[self.key], state.epoch)
        if self.patience and len(scores) - 1 - best >= self.patience:
            control.should_training_stop = True

    def save(self, score: float, epoch: float) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(self.model).items()}
        with rundir.atomic_file(self.path) as temporary:
            save_file(state, str(temporary), metadata={self.key: repr(score), "epoch": repr(epoch)})

    def restore(self) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if self.path.is_file():
            set_peft_model_state_dict(self.model, load_file(str(self.path)))
