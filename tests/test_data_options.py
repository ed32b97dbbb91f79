"""Data and metric options: dataset configurations and splits, sentence pairs, the metric that picks
the best epoch, macro F1, class weights, and the validation_file trap."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import RECIPES
from fastapi.testclient import TestClient

from lorafit.cli import main
from lorafit.config import load_recipe
from lorafit.data import prepare_splits
from lorafit.errors import LorafitError
from lorafit.inference import classify, ensemble_proba, load_runs
from lorafit.model import load_tokenizer
from lorafit.serve import create_app
from lorafit.train import balanced_class_weights, weighted_loss

SMALL = ["data.max_length=32", "training.epochs=1", "data.limit=null"]


@pytest.fixture(scope="module")
def dataset_folder(agnews_rows, tmp_path_factory):
    """A Hugging Face dataset as a local folder (what the hub serves, without the hub): two
    configurations declared in its README, `news` with train/validation/test splits and `tiny`."""
    folder = tmp_path_factory.mktemp("hub-dataset")
    rows = agnews_rows.sample(400, random_state=3)
    for name, part in (("train", rows[:240]), ("validation", rows[240:320]), ("test", rows[320:])):
        (folder / "news").mkdir(exist_ok=True)
        part.to_csv(folder / "news" / f"{name}.csv", index=False)
    (folder / "tiny").mkdir()
    rows[:40].to_csv(folder / "tiny" / "train.csv", index=False)
    (folder / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: news\n  data_files:\n"
        "  - {split: train, path: news/train.csv}\n"
        "  - {split: validation, path: news/validation.csv}\n"
        "  - {split: test, path: news/test.csv}\n"
        "- config_name: tiny\n  data_files:\n  - {split: train, path: tiny/train.csv}\n---\n"
    )
    return folder


def test_a_dataset_configuration_and_its_splits_train_and_evaluate(dataset_folder, tiny_roberta, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [str(RECIPES / "agnews-report-b.yaml"), f"model.name={tiny_roberta}", f"data.train={dataset_folder}"]
    chosen = ["data.subset=news", "data.validation_split=validation", *SMALL]
    assert main(["train", *args, *chosen, "--output-dir", str(run_dir)]) == 0
    data = json.loads((run_dir / "run.json").read_text())["data"]
    assert (data["train_rows"], data["validation_rows"]) == (240, 80)  # the splits as declared, no carving
    assert data["validation_source"].endswith("news[validation]")  # says which split validated
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", str(dataset_folder), "--subset", "news", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 80  # --split defaults to test
    assert main(["evaluate", str(run_dir), "--data", str(dataset_folder), "--subset", "tiny", "--split", "train"]) == 0
    assert "n=40 " in capsys.readouterr().out


def test_a_missing_split_names_the_dataset_and_split(dataset_folder, tiny_finished_run, capsys):
    assert main(["evaluate", str(tiny_finished_run), "--data", str(dataset_folder), "--subset", "tiny"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{dataset_folder}/tiny[test]" in error


def test_a_validation_file_that_is_no_file_is_refused_not_read_as_a_hub_train_split(tiny_roberta, agnews_csv):
    recipe = load_recipe(
        RECIPES / "agnews-report-b.yaml",
        [f"model.name={tiny_roberta}", f"data.train={agnews_csv}", "data.validation_file=ag_news", "data.limit=100"],
    )
    with pytest.raises(LorafitError, match="data.validation_file=ag_news is not a file.*data.validation_split"):
        prepare_splits(recipe.data, load_tokenizer(recipe.model))


def test_sentence_pairs_reach_the_tokenizer_as_pairs(agnews_rows, tiny_roberta, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["premise", "hypothesis", "label"])
        for text, label in zip(agnews_rows.text[:200], agnews_rows.label[:200]):
            words = text.split()
            writer.writerow([" ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2 :]), label])
    overrides = [f"model.name={tiny_roberta}", f"data.train={pairs}", "data.text_columns=[premise, hypothesis]"]
    recipe = load_recipe(RECIPES / "agnews-report-b.yaml", [*overrides, "data.pair=true", "data.validation_size=40"])
    tokenizer = load_tokenizer(recipe.model)
    splits = prepare_splits(recipe.data, tokenizer)
    first, second = splits.train.texts[0]
    ids = tokenizer(splits.train.texts[:1])["input_ids"][0]
    assert ids == tokenizer(first, second)["input_ids"]  # RoBERTa's <s> a </s></s> b </s>
    assert ids.count(tokenizer.sep_token_id) == 3
    run_dir = tmp_path / "run"
    assert main(["train", str(RECIPES / "agnews-report-b.yaml"), *overrides, "data.pair=true", *SMALL[:2],
                 "data.validation_size=40", "--output-dir", str(run_dir)]) == 0  # fmt: skip
    assert main(["predict", str(run_dir), "--input", str(pairs), "--output", str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 201
    classify_and_serve_pairs(run_dir, splits.validation.texts[:3], capsys)
    with pytest.raises(LorafitError, match="data.pair needs exactly two"):
        load_recipe(RECIPES / "agnews-report-b.yaml", ["data.pair=true"])


def classify_and_serve_pairs(run_dir, pairs, capsys):
    """classify (library and command line) and serve take a pair run's inputs as [first, second]."""
    runs = load_runs([run_dir], precision="fp32")
    expected = ensemble_proba(runs, pairs)
    assert [r["index"] for r in classify(runs, [list(p) for p in pairs])] == expected.argmax(-1).tolist()
    capsys.readouterr()
    assert main(["classify", str(run_dir), "--json", "--precision", "fp32", *[side for p in pairs for side in p]]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in printed] == [list(p) for p in pairs]
    assert [r["index"] for r in printed] == expected.argmax(-1).tolist()
    assert main(["classify", str(run_dir), "only one side"]) == 2
    assert "two by two" in capsys.readouterr().err
    client = TestClient(create_app(runs))
    assert client.get("/v1/model").json()["pairs"] is True
    body = client.post("/v1/classify", json={"texts": [list(p) for p in pairs]}).json()
    served = [list(p["probabilities"].values()) for p in body["predictions"]]
    assert np.allclose(served, expected, atol=1e-5)
    assert list(body["predictions"][0]["probabilities"]) == runs[0].label_names
    refused = client.post("/v1/classify", json={"texts": [pairs[0][0]]})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "pair_expected"
    assert "const PAIR = true;" in client.get("/").text


def test_the_best_epoch_follows_metric_for_best_and_macro_f1_is_reported(tiny_roberta, agnews_csv, tmp_path):
    run_dir = tmp_path / "run"
    args = [str(RECIPES / "agnews-report-b.yaml"), f"model.name={tiny_roberta}", f"data.train={agnews_csv}"]
    small = ["data.limit=160", "data.validation_size=48", "data.max_length=32", "training.epochs=3"]
    choice = ["training.metric_for_best=loss", "training.learning_rate=3e-3"]
    assert main(["train", *args, *small, *choice, "--output-dir", str(run_dir)]) == 0
    history = list(csv.DictReader((run_dir / "history.csv").open()))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    losses = [float(row["eval_loss"]) for row in history]
    assert metrics["best_epoch"] == float(history[int(np.argmin(losses))]["epoch"])
    assert metrics["loss"] == pytest.approx(min(losses))
    per_class = [c["f1"] for c in metrics["per_class"].values()]
    assert metrics["macro_f1"] == pytest.approx(np.mean(per_class))
    assert all(row["eval_macro_f1"] for row in history)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["validation"]["macro_f1"] == metrics["macro_f1"]


def test_balanced_class_weights_are_sklearns_and_weigh_the_loss():
    from sklearn.utils.class_weight import compute_class_weight

    labels = [0] * 6 + [1] * 3 + [2]
    weights = balanced_class_weights(labels, 3)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array(labels))
    np.testing.assert_allclose(weights.numpy(), expected)
    logits, targets = torch.randn(10, 3), torch.tensor(labels)
    loss = weighted_loss(weights)({"logits": logits}, targets, num_items_in_batch=20)  # half of an accumulated step
    by_hand = sum(expected[t] * -torch.log_softmax(logits[i], -1)[t] for i, t in enumerate(labels)) / 20
    assert loss.item() == pytest.approx(float(by_hand), rel=1e-5)


def test_class_weights_are_recorded_in_the_run(tiny_roberta, agnews_csv, tmp_path):
    run_dir = tmp_path / "run"
    args = [str(RECIPES / "agnews-report-b.yaml"), f"model.name={tiny_roberta}", f"data.train={agnews_csv}"]
    small = ["data.limit=120", "data.validation_size=32", *SMALL[:2], "training.class_weights=balanced"]
    assert main(["train", *args, *small, "--output-dir", str(run_dir)]) == 0
    data = json.loads((run_dir / "run.json").read_text())["data"]
    assert len(data["class_weights"]) == 4 and min(data["class_weights"]) > 0
