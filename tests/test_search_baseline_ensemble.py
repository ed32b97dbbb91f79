"""`lorafit search`, `lorafit baseline`, ensembles, and runs with the non-default heads."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import RECIPES, run_cli

from lorafit.budget import plan
from lorafit.config import load_recipe
from lorafit.data import prepare_splits
from lorafit.errors import LorafitError
from lorafit.inference import ensemble_proba, load_run, load_runs, predict_proba, run_recipe

lorafit = run_cli


def tiny_train(run_dir, tiny_roberta, agnews_csv, *overrides):
    out = lorafit(
        "train",
        RECIPES / "agnews-report-b.yaml",
        f"model.name={tiny_roberta}",
        f"data.train={agnews_csv}",
        "data.limit=200",
        "data.validation_size=64",
        "data.max_length=48",
        "training.epochs=1",
        "training.batch_size=16",
        "training.learning_rate=1e-3",
        *overrides,
        "--output-dir",
        run_dir,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def two_seeds(tiny_roberta, agnews_csv, tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    return [tiny_train(root / f"seed{seed}", tiny_roberta, agnews_csv, f"training.seed={seed}") for seed in (1, 2)]


def test_ensemble_averages_the_probabilities_of_its_runs(two_seeds, agnews_rows):
    texts = agnews_rows.text.tolist()[:20]
    runs = load_runs(two_seeds, precision="fp32")
    single = [predict_proba(run, texts) for run in runs]
    assert not np.allclose(single[0], single[1])
    assert np.allclose(ensemble_proba(runs, texts), (single[0] + single[1]) / 2)


def test_ensemble_cli_and_label_mismatch(two_seeds, tmp_path):
    out = run_cli("classify", two_seeds[0], "Stocks fell as oil prices rose", "--ensemble", two_seeds[1], "--json")
    assert out.returncode == 0, out.stderr
    assert sum(json.loads(out.stdout)[0]["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    other = tmp_path / "other-labels"
    shutil.copytree(two_seeds[1], other)
    info = json.loads((other / "run.json").read_text())
    info["label_names"] = ["Sports", "World", "Business", "Sci/Tech"]
    (other / "run.json").write_text(json.dumps(info))
    with pytest.raises(LorafitError, match="same labels"):
        load_runs([two_seeds[0], other])
    out = run_cli("classify", two_seeds[0], "some text", "--ensemble", other)
    assert out.returncode == 2 and "same labels" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("head", ["linear", "lora-dense"])
def test_runs_with_other_heads_reload_to_their_own_metrics(head, tiny_roberta, agnews_csv, tmp_path):
    run_dir = tiny_train(tmp_path / head, tiny_roberta, agnews_csv, f"model.head={head}", "training.precision=fp32")
    info = json.loads((run_dir / "run.json").read_text())
    recipe = run_recipe(run_dir, info)  # run.json records a local base model relative to the run
    assert info["parameters"]["trainable"] == plan(recipe).trainable
    validation = prepare_splits(recipe.data, None).validation
    for merge in (False, True):
        run = load_run(run_dir, merge=merge, precision="fp32")
        accuracy = (predict_proba(run, validation.texts).argmax(-1) == np.array(validation.labels)).mean()
        assert accuracy == pytest.approx(info["validation"]["accuracy"])
    saved_head = run_dir / "head_frozen.safetensors"  # RoBERTa's head dense layer: not pretrained, frozen
    assert saved_head.is_file() == (head == "lora-dense")
    if head == "lora-dense":  # a run from before the head was saved: told how to retrain
        saved_head.unlink()
        with pytest.raises(LorafitError, match="retrain it: lorafit train .*recipe.yaml --overwrite"):
            load_run(run_dir)


def tiny_search_recipe(tiny_roberta, agnews_csv, path: Path, **sections) -> Path:
    """recipes/minilm-search.yaml on the tiny model, 160 AG News rows, one epoch and a 30,000 budget, its
    sections updated with `sections`; written to `path`."""
    recipe = yaml.safe_load((RECIPES / "minilm-search.yaml").read_text())
    recipe["model"]["name"] = str(tiny_roberta)
    recipe["data"].update(train=str(agnews_csv), limit=160, validation_size=48, max_length=48)
    recipe["training"]["epochs"] = 1
    recipe["budget"]["max_trainable"] = 30_000
    for section, values in sections.items():
        recipe[section].update(values)
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_search_keeps_every_trial_in_budget_and_writes_the_best_recipe(tiny_roberta, agnews_csv, tmp_path):
    # each trial is an MLflow run
    path = tiny_search_recipe(
        tiny_roberta, agnews_csv, tmp_path / "search.yaml", search={"trials": 3}, training={"report_to": ["mlflow"]}
    )
    recipe = yaml.safe_load(path.read_text())
    out = lorafit("search", path, "--output-dir", tmp_path / "search")
    assert out.returncode == 0, out.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "search" / "trials.csv")
    assert len(trials) == 3 and (trials.trainable <= 30_000).all()
    assert (trials.state == "complete").all()
    best = load_recipe(tmp_path / "search" / "best-recipe.yaml")
    assert plan(best).trainable <= 30_000
    best_row = trials.loc[trials.accuracy.idxmax()]
    assert best.training.learning_rate == pytest.approx(best_row["training.learning_rate"])
    assert f"{trials.accuracy.max():.4f}" in out.stdout
    assert (tmp_path / "search" / "trials.png").stat().st_size > 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'search' / 'mlflow.db'}")
    logged = client.search_runs([client.get_experiment_by_name(recipe["name"]).experiment_id])
    by_name = {run.info.run_name: run.data.metrics["eval_accuracy"] for run in logged}
    assert by_name == {
        f"{recipe['name']}/trial-{t:03d}": pytest.approx(a) for t, a in zip(trials.trial, trials.accuracy)
    }
    again = lorafit("search", path, "--output-dir", tmp_path / "search")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_a_parallel_search_trains_each_batch_at_once_on_its_share_of_cores_reproducibly(
    tiny_roberta, agnews_csv, tmp_path
):
    path = tiny_search_recipe(
        tiny_roberta, agnews_csv, tmp_path / "search.yaml", search={"trials": 4, "parallel_trials": 2}
    )
    searches = []
    for attempt in ("first", "second"):
        out = lorafit("search", path, "--output-dir", tmp_path / attempt)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "trial 4/4: validation accuracy" in out.stdout
        searches.append(pd.read_csv(tmp_path / attempt / "trials.csv"))
    pd.testing.assert_frame_equal(searches[0].drop(columns="minutes"), searches[1].drop(columns="minutes"))
    assert len(searches[0]) == 4 and (searches[0].state == "complete").all()
    trial_dirs = sorted((tmp_path / "first").glob("trial-*"))
    infos = [json.loads((d / "run.json").read_text()) for d in trial_dirs]
    assert {info["speed"]["threads"] for info in infos} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    # the two trials of a batch ran at once: each started before the other finished
    finished = [(d / "COMPLETE").stat().st_mtime for d in trial_dirs]
    started = [end - info["wall_seconds"] for end, info in zip(finished, infos)]
    assert started[1] < finished[0] and started[0] < finished[1]
    assert started[2] >= max(finished[:2]) and started[3] >= max(finished[:2])
    many = f"search.parallel_trials={len(os.sched_getaffinity(0)) + 1}"
    too_many = lorafit("search", path, "search.trials=64", many, "--output-dir", tmp_path / "too-many")
    assert too_many.returncode == 2 and "this process may use only" in too_many.stderr
    assert not (tmp_path / "too-many").exists() or not any((tmp_path / "too-many").iterdir())


def test_a_parallel_trial_is_pruned_against_the_trials_finished_before_its_batch(tiny_roberta, agnews_csv, tmp_path):
    import optuna

    from lorafit.search import _trial_in_worker

    path = tiny_search_recipe(tiny_roberta, agnews_csv, tmp_path / "trial.yaml")
    better = [
        optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, value=1.0, intermediate_values={1: 1.0})
        for _ in range(3)
    ]  # three finished trials that scored 1.0 after epoch 1: the median pruner's start-up count
    job = {"recipe": load_recipe(path).to_dict(), "metric": "accuracy", "direction": "maximize", "finished": better}
    pruned = _trial_in_worker({**job, "run_dir": str(tmp_path / "pruned"), "prune": True})
    assert pruned["state"] == "pruned" and "value" not in pruned and not (tmp_path / "pruned").exists()
    kept = _trial_in_worker({**job, "run_dir": str(tmp_path / "kept"), "prune": False})
    assert kept["state"] == "complete" and kept["value"] == kept["accuracy"] < 1.0
    assert pruned["intermediate"] == kept["intermediate"] == {1: kept["accuracy"]}  # the parent reports these


def test_a_parallel_search_computes_the_reused_states_before_its_workers_start(tiny_roberta, agnews_csv, tmp_path):
    import torch

    from lorafit.search import prepare_frozen_states

    upper = {"targets": [{"modules": ["query", "value"], "layers": [10, 11]}]}
    jobs = {}
    for reuse in (False, True):
        path = tiny_search_recipe(
            tiny_roberta, agnews_csv, tmp_path / f"{reuse}.yaml", lora=upper, training={"reuse_frozen_layers": reuse}
        )
        raw = load_recipe(path).to_dict()
        raw["training"]["threads"] = 1  # what a worker's job says; the parent uses all its cores
        jobs[reuse] = {"recipe": raw, "run_dir": str(tmp_path / f"trial-{reuse}")}
    states = Path(os.environ["LORAFIT_CACHE"]) / "frozen-states"
    before = set(states.iterdir()) if states.is_dir() else set()
    threads = torch.get_num_threads()
    prepare_frozen_states([jobs[False]])
    assert (set(states.iterdir()) if states.is_dir() else set()) == before  # no reuse: nothing to compute
    prepare_frozen_states([jobs[True], jobs[True]])
    # the training rows and the validation rows, once each however many trials share them
    assert len(set(states.iterdir()) - before) == 2
    assert torch.get_num_threads() == threads and not (tmp_path / "trial-True").exists()


def test_search_rejects_an_unknown_key_before_training(tmp_path):
    recipe = yaml.safe_load((RECIPES / "minilm-search.yaml").read_text())
    recipe["search"]["space"] = {"training.learning_rat": {"low": 1e-4, "high": 1e-2}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = run_cli("search", path, "--output-dir", tmp_path / "out")
    assert out.returncode == 2 and "learning_rate" in out.stderr  # the suggestion
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("classifier", ["logistic-regression", "linear-svm"])
def test_tfidf_baseline_learns_ag_news(agnews_csv, classifier):
    out = run_cli("baseline", "--data", agnews_csv, "data.limit=2000", "--classifier", classifier, "--json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout)
    assert metrics["n"] == 200 and metrics["train_rows"] == 1800
    assert metrics["model"] == f"tfidf-{classifier}"
    assert metrics["accuracy"] > 0.7  # four balanced classes: chance is 0.25


def test_adalora_trains_and_prunes_ranks(tiny_roberta, agnews_csv, tmp_path):
    run_dir = tiny_train(
        tmp_path / "adalora",
        tiny_roberta,
        agnews_csv,
        "lora.variant=adalora",
        "lora.r=8",
        "lora.adalora_target_r=2",
        "lora.targets=[query, value]",
        "training.epochs=2",
    )
    config = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA" and config["init_r"] == 8
    ranks = config["rank_pattern"]  # written by AdaLoRA once it has pruned: the ranks left per module
    assert ranks and sum(sum(mask) for mask in ranks.values()) < 8 * len(ranks)
    assert load_run(run_dir, precision="fp32").label_names == ["World", "Sports", "Business", "Sci/Tech"]


def test_early_stopping_stops_after_patience_epochs_without_a_better_accuracy(tiny_roberta, agnews_csv, tmp_path):
    run_dir = tiny_train(
        tmp_path / "early",
        tiny_roberta,
        agnews_csv,
        "training.epochs=6",
        "training.learning_rate=1e-6",
        "training.early_stopping_patience=1",
    )
    history = pd.read_csv(run_dir / "history.csv")
    scores = history.eval_accuracy.tolist()
    assert len(scores) < 6  # stopped early
    assert scores[-1] <= max(scores[:-1])  # the last epoch brought no better accuracy
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(max(scores))  # the best epoch's weights were restored
