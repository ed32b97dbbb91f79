"""Experiment tracking (`training.report_to`): the Trainer's own integrations, pointed at places
that work offline. TensorBoard writes into the run directory (`tensorboard/`); MLflow, unless
MLFLOW_TRACKING_URI says otherwise, into one local database beside the runs (`mlflow.db`: MLflow 3
refuses its old plain-folder store), one experiment per recipe, one MLflow run per lorafit run."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from transformers import TrainerCallback

from .config import Recipe
from .errors import LorafitError

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"
NEEDS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def mlflow_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(run_dir.parent / MLFLOW_DB).resolve()}"


def chosen_trackers(recipe: Recipe) -> list[str]:
    """The recipe's trackers, each checked to be installed (before any data is read)."""
    chosen = [name for name in recipe.training.report_to if name != "none"]
    for name in chosen:
        if importlib.util.find_spec(NEEDS[name]) is None:
            raise LorafitError(
                f"training.report_to={name} needs the package {NEEDS[name]}: pip install 'lorafit[tracking]'"
                + (" (wandb: pip install wandb)" if name == "wandb" else "")
            )
    return chosen


def trackers(recipe: Recipe, run_dir: Path, chosen: list[str]) -> tuple[list[str], list[TrainerCallback]]:
    """(report_to for TrainingArguments, callbacks to add) for the `chosen_trackers`."""
    callbacks: list[TrainerCallback] = []
    if "tensorboard" in chosen:
        callbacks.append(run_tensorboard(run_dir / TENSORBOARD_DIR))
    if "mlflow" in chosen:
        import mlflow

        mlflow.set_tracking_uri(mlflow_uri(run_dir))
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or recipe.name)
        callbacks.append(RecipeParams(recipe))
    return [name for name in chosen if name != "tensorboard"], callbacks


def run_tensorboard(folder: Path) -> TrainerCallback:
    """The Trainer's TensorBoard callback writing into `folder` (its default is the checkpoints folder,
    which a finished run removes); the folder appears when training starts, after the run is claimed."""
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(folder)
    return callback


def flat(tree: dict, prefix: str = "") -> dict[str, str]:
    items: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            items.update(flat(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = str(value)[:500]
    return items


class RecipeParams(TrainerCallback):
    """The whole recipe as MLflow parameters (`recipe.lora.r`, ...), beside the Trainer's own: runs
    and search trials compare by the keys users set. Runs after MLflowCallback has started the run."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def on_train_begin(self, args, state, control, **_):
        import mlflow

        if state.is_world_process_zero and mlflow.active_run() is not None:
            params = list(flat(self.recipe.to_dict(), "recipe.").items())
            for start in range(0, len(params), 100):  # MLflow takes at most 100 per batch
                mlflow.log_params(dict(params[start : start + 100]))
