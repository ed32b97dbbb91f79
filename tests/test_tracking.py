"""training.report_to: a tiny run logged to MLflow and TensorBoard, read back with their own readers."""

from __future__ import annotations

import csv
import json
import math

import pytest
from conftest import RECIPES

from lorafit import tracking
from lorafit.cli import main


@pytest.fixture(scope="module")
def tracked_run(tiny_roberta, agnews_csv, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch_module.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    args = [str(RECIPES / "agnews-report-b.yaml"), f"model.name={tiny_roberta}", f"data.train={agnews_csv}"]
    small = ["data.limit=160", "data.validation_size=32", "data.max_length=32", "training.epochs=2"]
    tracking = ["training.report_to=[mlflow, tensorboard]", "training.logging_steps=1", "training.batch_size=16"]
    assert main(["train", *args, *small, *tracking, "--output-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_mlflow_holds_the_recipe_and_every_logged_metric(tracked_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked_run.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("agnews-report-b")  # one experiment per recipe
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name == "agnews-report-b/run"
    assert logged.data.params["recipe.lora.r"] == "16" and logged.data.params["recipe.data.max_length"] == "32"
    assert float(logged.data.params["learning_rate"]) == 3e-5  # the Trainer's own arguments too
    history = list(csv.DictReader((tracked_run / "history.csv").open()))
    accuracy = client.get_metric_history(logged.info.run_id, "eval_accuracy")
    assert [round(m.value, 6) for m in accuracy] == [round(float(row["eval_accuracy"]), 6) for row in history]
    steps = json.loads((tracked_run / "run.json").read_text())["data"]["train_rows"] // (16 * 2) * 2  # 2 epochs
    losses = client.get_metric_history(logged.info.run_id, "loss")
    assert len(losses) >= steps  # every step (logging_steps=1)
    # report B accumulates 2 batches per step: the step's loss is their mean, about ln 4 for an untrained
    # 4-class head, not their sum (transformers#47688 would log and train with about 2 ln 4)
    assert losses[0].value == pytest.approx(math.log(4), rel=0.1)


def test_tensorboard_events_hold_the_same_scalars(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run / "tensorboard")).Reload()
    history = list(csv.DictReader((tracked_run / "history.csv").open()))
    accuracy = [round(e.value, 5) for e in events.Scalars("eval/accuracy")]
    assert accuracy == [round(float(row["eval_accuracy"]), 5) for row in history]
    assert len(events.Scalars("train/loss")) > len(history)  # per step, not per epoch


def test_history_averages_the_step_losses_of_each_epoch(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run / "tensorboard")).Reload()
    history = list(csv.DictReader((tracked_run / "history.csv").open()))
    steps_per_epoch = len(events.Scalars("train/loss")) // 2
    first = [e.value for e in events.Scalars("train/loss")[:steps_per_epoch]]
    assert float(history[0]["train_loss"]) == pytest.approx(sum(first) / len(first), rel=1e-4)


def test_a_missing_tracker_names_the_extra(tiny_roberta, agnews_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(tracking.NEEDS, "mlflow", "lorafit_test_no_such_package")  # as if mlflow were absent
    args = [str(RECIPES / "agnews-report-b.yaml"), f"model.name={tiny_roberta}", f"data.train={agnews_csv}"]
    assert (
        main(["train", *args, "data.limit=100", "training.report_to=mlflow", "--output-dir", str(tmp_path / "r")]) == 2
    )
    assert "pip install 'lorafit[tracking]'" in capsys.readouterr().err
