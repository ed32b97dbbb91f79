"""The onnxruntime inference paths (--precision ort-fp32 / ort-int8) against PyTorch fp32."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import RECIPES

from lorafit import inference
from lorafit.cli import main
from lorafit.errors import LorafitError
from lorafit.first_token import computes_first_token_only
from lorafit.inference import load_run, predict_proba
from lorafit.onnx_engine import OnnxClassifier


@pytest.fixture(scope="module")
def minilm_mean_run(minilm_dir, agnews_csv, tmp_path_factory):
    """The real MiniLM, mean head (its pooling takes the attention mask), LoRA on the top two layers."""
    run_dir = tmp_path_factory.mktemp("onnx") / "run"
    assert (
        main(
            [
                "train",
                str(RECIPES / "quickstart.yaml"),
                f"data.train={agnews_csv}",
                "data.limit=1600",
                "data.validation_size=96",
                "data.max_length=64",
                "training.epochs=1",
                "model.head=mean",
                "lora.targets=[{modules: [query, key, value, attention_output], layers: [3, 4, 5]}]",
                "training.reuse_frozen_layers=true",
                "--output-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    return run_dir


def test_onnxruntime_paths_agree_with_pytorch_fp32_on_2000_rows(minilm_mean_run, agnews_rows):
    rows = agnews_rows.sample(2000, random_state=11)
    texts, labels = rows.text.tolist(), rows.label.to_numpy()
    reference = predict_proba(load_run(minilm_mean_run, precision="fp32"), texts)
    accuracy = (reference.argmax(-1) == labels).mean()
    assert accuracy > 0.7  # a model that learned: the agreement below is not that of a constant guess
    # (path, largest probability difference, least agreement, largest accuracy change). fp32 meets the
    # goal of 99.5% agreement and 0.3 points; dynamic int8 measured 99.25% agreement on an AVX2 CPU and
    # 99.35% on an AMX one, whose int8 kernels moved one row's probabilities by 0.31 (0.3 on AVX2), so it
    # is held to what it does (and is never the default): README, "Inference paths", bench/PATHS.md
    for path, tolerance, agree, change in (("ort-fp32", 1e-4, 0.995, 0.003), ("ort-int8", 0.4, 0.985, 0.005)):
        run = load_run(minilm_mean_run, precision=path)
        assert isinstance(run.model, OnnxClassifier) and run.path == path
        got = predict_proba(run, texts)
        print(
            f"{path}: agreement with PyTorch fp32 {(got.argmax(-1) == reference.argmax(-1)).mean():.4f}, "
            f"accuracy {(got.argmax(-1) == labels).mean():.4f} against {accuracy:.4f}"
        )
        assert np.abs(got - reference).max() < tolerance, path
        assert (got.argmax(-1) == reference.argmax(-1)).mean() >= agree, path
        assert abs((got.argmax(-1) == labels).mean() - accuracy) <= change, path


def test_a_first_token_head_exports_a_graph_whose_last_layer_computes_token_0_alone(
    tiny_finished_run, agnews_rows, monkeypatch, tmp_path
):
    """RoBERTa's own head reads token 0 only, so the graph skips the rest of the last layer; its
    probabilities are still those of the stock model."""
    monkeypatch.setenv("LORAFIT_CACHE", str(tmp_path))  # an empty cache: exported here
    exported_forms, build_graph = [], inference.build_graph

    def recording_build_graph(model, *args, **kwargs):
        exported_forms.append(computes_first_token_only(model))
        return build_graph(model, *args, **kwargs)

    monkeypatch.setattr(inference, "build_graph", recording_build_graph)
    texts = [t[:200] for t in agnews_rows.text.tolist()[:48]]
    got = predict_proba(load_run(tiny_finished_run, precision="ort-fp32"), texts)
    assert exported_forms == [True]
    stock = predict_proba(load_run(tiny_finished_run, precision="fp32", first_token=False), texts)
    assert np.abs(got - stock).max() < 1e-4


def test_the_graph_is_exported_once_then_read_from_the_cache(minilm_mean_run, monkeypatch):
    load_run(minilm_mean_run, precision="ort-int8")

    def export_again(*_, **__):
        raise AssertionError("exported a second time")

    monkeypatch.setattr(inference, "build_graph", export_again)
    assert load_run(minilm_mean_run, precision="ort-int8").model.path.name == "model-int8.onnx"
    assert load_run(minilm_mean_run, precision="ort-fp32").model.path.name == "model.onnx"


def test_onnxruntime_paths_on_the_command_line(minilm_mean_run, agnews_rows, tmp_path, capsys):
    agnews_rows.head(64).to_csv(tmp_path / "heldout.csv", index=False)
    assert (
        main(
            [
                "evaluate",
                str(minilm_mean_run),
                "--data",
                str(tmp_path / "heldout.csv"),
                "--precision",
                "ort-fp32",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["n"] == 64
    assert (
        main(
            [
                "classify",
                str(minilm_mean_run),
                "--precision",
                "ort-int8",
                "--json",
                "Yankees rally in the ninth to beat the Red Sox",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["label"] in {"World", "Sports", "Business", "Sci/Tech"}


def test_without_onnxruntime_the_error_names_the_extra(minilm_mean_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(LorafitError, match=r"pip install 'lorafit\[onnx\]'"):
        load_run(minilm_mean_run, precision="ort-fp32")


def test_an_onnx_export_of_a_mean_head_runs_without_lorafit(minilm_mean_run, agnews_rows, tmp_path):
    """`lorafit export --format onnx` carries every head, the mean head included: onnxruntime and the
    tokenizer alone reproduce lorafit's fp32 probabilities."""
    import onnxruntime
    from transformers import AutoTokenizer

    exported = tmp_path / "onnx-export"
    assert main(["export", str(minilm_mean_run), "--output", str(exported), "--format", "onnx"]) == 0
    texts = agnews_rows.text.tolist()[:200]
    tokenizer = AutoTokenizer.from_pretrained(exported)
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    logits = session.run(["logits"], {k: v for k, v in batch.items() if k in names})[0]
    theirs = np.exp(logits - logits.max(1, keepdims=True))
    theirs /= theirs.sum(1, keepdims=True)
    ours = predict_proba(load_run(minilm_mean_run, precision="fp32"), texts)
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    assert (exported / "README.md").is_file() and json.loads((exported / "labels.json").read_text())
