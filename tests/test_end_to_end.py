"""A shrunken random-weight RoBERTa (real tokenizer) through every CLI command."""

import json

import pandas as pd
import pytest
import torch
from conftest import RECIPES, run_cli

ARTIFACTS = [
    "adapter_config.json",
    "adapter_model.safetensors",
    "tokenizer.json",
    "labels.json",
    "metrics.json",
    "history.csv",
    "validation_predictions.csv",
    "run.json",
    "COMPLETE",
    "recipe.yaml",
    "plots/loss.png",
    "plots/accuracy.png",
    "plots/confusion_matrix.png",
]


lorafit = run_cli  # the command line, in this process


@pytest.fixture(scope="module")
def tiny_run(tiny_roberta, agnews_csv, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    out = lorafit(
        "train",
        RECIPES / "agnews-report-b.yaml",
        f"model.name={tiny_roberta}",
        f"data.train={agnews_csv}",
        "data.limit=240",
        "data.validation_size=64",
        "data.max_length=64",
        "training.epochs=2",
        "training.batch_size=16",
        "training.learning_rate=1e-3",
        "--output-dir",
        run_dir,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir, out


def test_train_writes_every_artifact(tiny_run):
    run_dir, out = tiny_run
    for name in ARTIFACTS:
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoints").exists()
    assert "validation accuracy" in out.stdout


def test_metrics_history_and_run_record_are_complete(tiny_run, tiny_roberta):
    run_dir, _ = tiny_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == 64
    assert set(metrics["per_class"]) == {"World", "Sports", "Business", "Sci/Tech"}
    assert sum(map(sum, metrics["confusion_matrix"])) == 64
    assert sum(c["support"] for c in metrics["per_class"].values()) == 64
    history = pd.read_csv(run_dir / "history.csv")
    assert history.epoch.tolist() == [1.0, 2.0]
    assert history[["train_loss", "eval_loss", "eval_accuracy", "eval_f1", "learning_rate"]].notna().all().all()
    assert metrics["accuracy"] == pytest.approx(history.eval_accuracy.max())  # the best epoch was restored
    run = json.loads((run_dir / "run.json").read_text())
    assert run["recipe"]["lora"]["r"] == 16 and run["recipe"]["model"]["classifier_dropout"] == 0.3
    assert run["label_names"] == ["World", "Sports", "Business", "Sci/Tech"]
    assert run["data"]["rows"] == 10_646 and len(run["data"]["fingerprint"]) == 16
    assert run["parameters"]["trainable"] > 0 and run["wall_seconds"] > 0
    assert run["versions"]["transformers"] and run["versions"]["peft"]
    assert run["speed"]["group_by_length"] and run["speed"]["dynamic_padding"] and run["speed"]["threads"] >= 1
    assert run["speed"]["allocator"] == "glibc"  # nothing preloaded
    assert run["speed"]["last_layer_first_token"]  # RoBERTa's own head reads the first token alone
    tenths = run["speed"]["step_seconds_by_tenth"]
    assert len(tenths) == 10 and all(seconds > 0 for seconds in tenths)  # 22 steps: every tenth has some


def test_validation_predictions_are_the_split_in_order_and_match_the_metrics(tiny_run):
    from lorafit.config import load_recipe
    from lorafit.data import prepare_splits

    run_dir, _ = tiny_run
    split = prepare_splits(load_recipe(run_dir / "recipe.yaml").data, tokenizer=None).validation
    rows = pd.read_csv(run_dir / "validation_predictions.csv")
    assert rows.text.tolist() == split.texts  # the Trainer's length-grouped order was undone
    assert rows.label.tolist() == [split.label_names[label] for label in split.labels]
    probabilities = rows[[f"p_{name}" for name in split.label_names]].to_numpy()
    assert probabilities.sum(axis=1) == pytest.approx(1.0, abs=1e-4)
    assert rows.prediction.tolist() == [split.label_names[i] for i in probabilities.argmax(axis=1)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (rows.prediction == rows.label).mean() == pytest.approx(metrics["accuracy"])  # the best epoch's


def test_adapter_reloads_with_plain_peft_and_gives_the_same_logits(tiny_run, tiny_roberta):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorafit.inference import load_run, predict_proba

    run_dir, _ = tiny_run
    base = AutoModelForSequenceClassification.from_pretrained(tiny_roberta, num_labels=4)
    plain = PeftModel.from_pretrained(base, run_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    texts = ["Stocks rallied on Wall Street today.", "The Lakers won again", "NASA launches a new probe"]
    with torch.no_grad():
        logits = plain(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    ours = predict_proba(load_run(run_dir, precision="fp32"), texts)
    assert torch.allclose(torch.softmax(logits, -1), torch.from_numpy(ours), atol=1e-5)
    head = dict(plain.named_parameters())
    trained = [n for n in head if "modules_to_save" in n]
    assert trained, "the classifier head must be saved with the adapter"


def test_evaluate_reproduces_the_training_runs_validation_metrics(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    rows = pd.read_csv(run_dir / "validation_predictions.csv")
    path = tmp_path / "validation.jsonl"
    rows[["text", "label"]].to_json(path, orient="records", lines=True)
    out = lorafit("evaluate", run_dir, "--data", path, "--json", "--precision", "fp32")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert report["n"] == 64 and {"accuracy", "f1", "precision", "recall", "per_class"} <= set(report)
    # the merged inference model predicts what the Trainer's evaluation did (a near tie may flip)
    assert abs(report["accuracy"] - trained["accuracy"]) <= 1 / 64


def test_predict_writes_submission_in_input_order(tiny_run, agnews_rows, tmp_path):
    from lorafit.inference import load_run, predict_proba

    run_dir, _ = tiny_run
    rows = agnews_rows.iloc[100:140][["text"]].reset_index(drop=True)
    source = tmp_path / "test.parquet"
    rows.assign(ID=range(1000, 1040)).to_parquet(source)
    target = tmp_path / "submission.csv"
    out = lorafit("predict", run_dir, "--input", source, "--output", target, "--probs", "--precision", "fp32")
    assert out.returncode == 0, out.stderr[-2000:]
    submission = pd.read_csv(target)
    assert list(submission.columns[:2]) == ["ID", "Label"] and submission.ID.tolist() == list(range(1000, 1040))
    assert [c for c in submission.columns[2:]] == ["prob_World", "prob_Sports", "prob_Business", "prob_Sci/Tech"]
    unpadded = predict_proba(load_run(run_dir, precision="fp32"), rows.text.tolist(), max_rows=1)
    expected = unpadded.argmax(-1)
    assert submission.Label.tolist() == expected.tolist()


def test_predict_and_evaluate_read_the_runs_data_format_and_parse_the_recipe_once(tiny_run, agnews_rows, tmp_path):
    from lorafit.inference import evaluate_file, load_run, predict_file

    run = load_run(tiny_run[0], precision="fp32")
    assert run.recipe is run.recipe
    run.recipe.data.format = "tsv"  # a .txt file is read only through the run's data.format
    source = tmp_path / "rows.txt"
    agnews_rows.iloc[:12].assign(text=lambda t: t.text.str.replace("\t", " ")).to_csv(source, sep="\t", index=False)
    submission = pd.read_csv(predict_file(run, str(source), str(tmp_path / "submission.csv")))
    assert len(submission) == 12
    assert evaluate_file(run, str(source))["n"] == 12


def test_predict_refuses_pickle_without_trust_flag(tiny_run, agnews_rows, tmp_path):
    run_dir, _ = tiny_run
    source = tmp_path / "test_unlabelled.pkl"
    agnews_rows.iloc[:10][["text"]].to_pickle(source)
    target = tmp_path / "submission.csv"
    out = lorafit("predict", run_dir, "--input", source, "--output", target)
    assert out.returncode == 2 and "--trust-pickle" in out.stderr and "Traceback" not in out.stderr
    assert not target.exists()
    out = lorafit("predict", run_dir, "--input", source, "--output", target, "--trust-pickle")
    assert out.returncode == 0 and len(pd.read_csv(target)) == 10


def test_classify_json_gives_label_and_probabilities(tiny_run):
    run_dir, _ = tiny_run
    out = lorafit("classify", run_dir, "Oil prices hit a record", "Federer wins Wimbledon", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout)
    assert len(results) == 2
    for result in results:
        assert result["label"] in result["probabilities"]
        assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-4)


def test_train_refuses_to_start_over_budget_before_loading_weights(tiny_roberta, agnews_csv, tmp_path):
    out = lorafit(
        "train",
        RECIPES / "quickstart.yaml",
        f"model.name={tiny_roberta}",
        f"data.train={agnews_csv}",
        "data.limit=100",
        "budget.max_trainable=1000",
        "--output-dir",
        tmp_path / "run",
    )
    assert out.returncode == 2 and "exceed budget.max_trainable=1,000" in out.stderr
    assert not (tmp_path / "run").exists()
