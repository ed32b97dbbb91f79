"""Runs that leave lorafit: the model card, relocatable runs, `lorafit export` to stock transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import RECIPES, shrunk_model

from lorafit.cli import main
from lorafit.inference import load_run, predict_proba

# imports transformers only: what a colleague without lorafit would run (one process for every export)
STOCK_SCRIPT = """
import json, sys
from transformers import pipeline
folders, texts = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
out = {}
for folder in folders:
    classify = pipeline("text-classification", model=folder, top_k=None, truncation=True, device="cpu")
    out[folder] = [{row["label"]: row["score"] for row in ranked} for ranked in classify(texts, batch_size=16)]
print(json.dumps(out))
"""
ROBERTA_HEADS = ["default", "lora-dense", "linear", "mean"]


def train_tiny(folder, model, agnews_csv, *overrides):
    run_dir = folder / "run"
    args = [str(RECIPES / "agnews-report-b.yaml"), f"model.name={model}", f"data.train={agnews_csv}"]
    small = ["data.limit=120", "data.validation_size=32", "data.max_length=32", "training.epochs=1"]
    assert main(["train", *args, *small, *overrides, "--output-dir", str(run_dir)]) == 0
    return run_dir


def stock_probabilities(folders, texts, tmp_path) -> dict[str, list[dict]]:
    jobs, texts_json = tmp_path / "folders.json", tmp_path / "texts.json"
    jobs.write_text(json.dumps([str(folder) for folder in folders]))
    texts_json.write_text(json.dumps(texts))
    out = subprocess.run(
        [sys.executable, "-c", STOCK_SCRIPT, str(jobs), str(texts_json)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_the_card_is_read_from_the_run(tiny_finished_run, tiny_roberta):
    from huggingface_hub import ModelCard

    text = (tiny_finished_run / "README.md").read_text()
    card = ModelCard.load(tiny_finished_run / "README.md")
    metrics = json.loads((tiny_finished_run / "metrics.json").read_text())
    scores = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert scores["accuracy"] == round(metrics["accuracy"], 4)
    assert scores["F1 (weighted)"] == round(metrics["f1"], 4)
    macro = np.mean([c["f1"] for c in metrics["per_class"].values()])
    assert scores["F1 (macro)"] == round(macro, 4)
    info = json.loads((tiny_finished_run / "run.json").read_text())
    assert f"{info['parameters']['trainable']:,} trainable" in text
    for name, per_class in metrics["per_class"].items():
        assert f"| {name} | {per_class['precision']:.4f} | {per_class['recall']:.4f} |" in text
    assert "[More Information Needed]" not in text
    assert str(tiny_roberta) not in text and str(tiny_finished_run.parent) not in text  # no machine paths
    adapter_config = json.loads((tiny_finished_run / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == info["base_model"]
    assert not adapter_config["base_model_name_or_path"].startswith("/")


def test_a_run_moved_with_its_model_loads_and_predicts_the_same(tiny_finished_run, tiny_roberta, tmp_path):
    texts = ["Stocks rallied after the bank held rates.", "The striker scored twice in the final."]
    before = predict_proba(load_run(tiny_finished_run, precision="fp32"), texts)
    # the same layout elsewhere: the run keeps its model's place relative to itself
    moved_run = tmp_path / tiny_finished_run.parent.name / "run"
    shutil.copytree(tiny_finished_run, moved_run)
    shutil.copytree(tiny_roberta, tmp_path / tiny_roberta.name)
    moved = load_run(moved_run, precision="fp32")
    assert moved.recipe.model.name == str(tmp_path / tiny_roberta.name)
    np.testing.assert_allclose(predict_proba(moved, texts), before, atol=1e-6)


def test_a_run_moved_without_its_model_names_the_missing_folder(tiny_finished_run, tmp_path, capsys):
    moved_run = tmp_path / "elsewhere" / "run"
    shutil.copytree(tiny_finished_run, moved_run)
    assert main(["classify", str(moved_run), "some text"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "base model" in error and str(tmp_path) in error


@pytest.fixture(scope="module")
def texts(agnews_rows) -> list[str]:
    return agnews_rows.text.tolist()[:1000]


def exported(runs: dict, texts, tmp_path) -> dict:
    """Each run exported, then read back by stock transformers in one process:
    {case: (run, export folder, stock probabilities)}."""
    for run_dir in runs.values():
        assert main(["export", str(run_dir), "--output", str(run_dir.parent / "exported")]) == 0
    theirs = stock_probabilities([r.parent / "exported" for r in runs.values()], texts, tmp_path)
    return {case: (r, r.parent / "exported", theirs[str(r.parent / "exported")]) for case, r in runs.items()}


@pytest.fixture(scope="module")
def tiny_mpnet(mpnet_dir, tmp_path_factory):
    """all-mpnet-base-v2 shrunk to width 32, random weights."""
    files = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
    return shrunk_model(mpnet_dir, tmp_path_factory.mktemp("tiny-mpnet"), files)


@pytest.fixture(scope="module")
def stock_exports(tiny_roberta, tiny_mpnet, agnews_csv, texts, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    runs = {head: train_tiny(root / head, tiny_roberta, agnews_csv, f"model.head={head}") for head in ROBERTA_HEADS}
    # MPNet's exportable head (mpnet-best's): the first token through the stock MPNet head
    runs["mpnet-linear"] = train_tiny(root / "mpnet-linear", tiny_mpnet, agnews_csv, "model.head=linear")
    return exported(runs, texts, root)


@pytest.mark.parametrize("case", [*ROBERTA_HEADS, "mpnet-linear"])
def test_exported_heads_give_lorafit_predictions_in_stock_transformers(case, stock_exports, texts):
    assert_export_matches(*stock_exports[case], texts)


def test_an_exported_bert_mean_head_gives_lorafit_predictions(minilm_dir, agnews_csv, texts, tmp_path):
    # BERT's stock head is its pooler: this covers both the averaging layer and the pooler's identity
    run_dir = tmp_path / "mean" / "run"
    overrides = ["data.limit=200", "data.validation_size=40", "data.max_length=48", "training.epochs=1"]
    args = [str(RECIPES / "quickstart.yaml"), f"data.train={agnews_csv}", "model.head=mean", *overrides]
    assert main(["train", *args, "--output-dir", str(run_dir)]) == 0
    assert_export_matches(*exported({"mean": run_dir}, texts, tmp_path)["mean"], texts)


def assert_export_matches(run_dir, exported, stock: list[dict], texts):
    config = json.loads((exported / "config.json").read_text())
    labels = json.loads((run_dir / "labels.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(labels)}
    assert (exported / "model.safetensors").is_file() and (exported / "README.md").is_file()
    ours = predict_proba(load_run(run_dir, precision="fp32"), texts)
    theirs = np.array([[row[name] for name in labels] for row in stock])
    print(f"{run_dir}: largest probability difference {np.abs(theirs - ours).max():.2e}, "
          f"same label on {(theirs.argmax(1) == ours.argmax(1)).mean():.2%} of {len(texts)} rows")  # fmt: skip
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    top_two = np.sort(ours, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 1e-5  # a tie within float error may go either way
    assert clear.sum() > 0.9 * len(texts)
    assert (theirs.argmax(1) == ours.argmax(1))[clear].all()


def test_an_mpnet_mean_head_is_refused_for_transformers_with_the_way_out(tmp_path):
    from transformers import MPNetConfig, MPNetForSequenceClassification

    from lorafit.errors import LorafitError
    from lorafit.export import stock_model
    from lorafit.heads import apply_head

    config = MPNetConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model = MPNetForSequenceClassification(config)
    apply_head(model, "mean")
    with pytest.raises(LorafitError, match="model.head=mean.*relative position.*'mpnet'.*--format onnx"):
        stock_model(model)


def test_export_refuses_an_existing_folder_and_int8_without_onnx(tiny_finished_run, tmp_path, capsys):
    assert main(["export", str(tiny_finished_run), "--output", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(tiny_finished_run), "--output", str(tmp_path / "x"), "--int8"]) == 2
    assert "--format onnx" in capsys.readouterr().err


def test_push_stages_the_adapter_card_and_plots_without_machine_paths(tiny_finished_run, tmp_path, capsys):
    staged = tmp_path / "upload"
    assert main(["push", str(tiny_finished_run), "--repo-id", "someone/tiny", "--stage-only", str(staged)]) == 0
    names = {p.name for p in staged.iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "README.md",
        "run.json",
        "plots",
        "labels.json",
    } <= names
    assert not names & {"validation_predictions.csv", "recipe.yaml", "checkpoints"}  # training texts stay home
    text = "\n".join(p.read_text() for p in staged.iterdir() if p.suffix in (".json", ".md"))
    assert "/tmp/" not in text and "/work/" not in text  # no path of this machine
    info = json.loads((staged / "run.json").read_text())
    assert info["recipe"]["data"]["train"] == "train.csv"
    assert "staged" in capsys.readouterr().out


def test_push_of_the_merged_export_stages_a_stock_model(tiny_finished_run, tmp_path):
    staged = tmp_path / "merged"
    assert main(["push", str(tiny_finished_run), "--repo-id", "a/b", "--merged", "--stage-only", str(staged)]) == 0
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in staged.iterdir()}


def test_push_offline_fails_in_one_line_naming_the_repository(tiny_finished_run, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub cannot be reached here either way; this fails fast
    assert main(["push", str(tiny_finished_run), "--repo-id", "someone/tiny"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "push to someone/tiny failed" in error
