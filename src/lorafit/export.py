"""`lorafit export`: a finished run as a folder that needs no lorafit. `transformers`: the LoRA
merged into the base, saved as a stock *ForSequenceClassification model; `onnx`: the same model as
an ONNX graph (fp32, or dynamic int8) with the tokenizer. Both carry the run's model card."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from . import rundir
from .card import portable_info, write_card
from .errors import LorafitError
from .heads import MaskedMean, OutProj

# A `linear` head (first token -> one linear layer) becomes the stock head whose dense layer is
# EPSILON * identity: tanh(EPSILON x) / EPSILON = x within (EPSILON x)^2 / 3, about 1e-6 relative
# for |x| < 20, far below the 1e-4 the export promises on probabilities; fp32 keeps ~1e-7.
EPSILON = 1e-4
FORMATS = ("transformers", "onnx")


def export_run(run_dir: str | Path, output: str | Path, fmt: str = "transformers", int8: bool = False) -> Path:
    """Write the export into a staging folder and rename it to `output`: all of it or nothing."""
    from .inference import load_run

    run_dir, output = Path(run_dir), Path(output)
    if output.exists():
        raise LorafitError(f"{output} already exists; choose another --output or remove it")
    if int8 and fmt != "onnx":
        raise LorafitError("--int8 is for --format onnx (a transformers folder is stored in fp32)")
    run = load_run(run_dir, merge=True, precision=("ort-int8" if int8 else "ort-fp32") if fmt == "onnx" else "fp32")

    def build(staging: Path) -> None:
        if fmt == "onnx":
            _copy_graph(run.model.path, staging)
        else:
            stock_model(run.model).save_pretrained(staging, safe_serialization=True)
        run.tokenizer.model_max_length = run.recipe.data.max_length  # truncation=True cuts where training did
        run.tokenizer.save_pretrained(staging)
        for name in (rundir.METRICS_JSON, rundir.LABELS_JSON):
            shutil.copy(run_dir / name, staging / name)
        rundir.write_json(staging / rundir.RUN_JSON, portable_info(run.info))
        if (run_dir / rundir.PLOTS).is_dir():
            shutil.copytree(run_dir / rundir.PLOTS, staging / rundir.PLOTS)
        write_card(staging)

    output.parent.mkdir(parents=True, exist_ok=True)
    return rundir.build_folder(output, build)


def _copy_graph(graph: Path, staging: Path) -> None:
    for part in graph.parent.iterdir():  # the graph and its external data, if any
        shutil.copy(part, staging / part.name)
    if graph.name != "model.onnx":
        (staging / graph.name).rename(staging / "model.onnx")


def stock_model(model: torch.nn.Module) -> torch.nn.Module:
    """The merged model as the stock class of its family, which plain transformers loads."""
    if not hasattr(model, "pooling"):  # default and lora-dense heads are the stock head already
        return model
    if isinstance(model.pooling.pool, MaskedMean):
        raise LorafitError(
            "model.head=mean cannot be exported as a stock transformers model (no stock class of this "
            "family averages over the tokens); use --format onnx, or train with model.head=linear or default"
        )
    from transformers import AutoModelForSequenceClassification

    stock = AutoModelForSequenceClassification.from_config(model.config)
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith(("classifier.", "pooling."))}
    missing, unexpected = stock.load_state_dict(weights, strict=False)
    if unexpected:
        raise LorafitError(f"export: weights the stock {type(stock).__name__} has no place for: {unexpected[:3]}")
    _identity_head(stock, model.classifier)
    loaded_head = {name for name, _ in stock.named_parameters() if _is_head(name)}
    if set(missing) - loaded_head:
        raise LorafitError(f"export: weights missing from the run: {sorted(set(missing) - loaded_head)[:3]}")
    return stock.eval()


def _is_head(name: str) -> bool:
    return name.startswith("classifier.") or ".pooler." in name


def _identity_head(stock: torch.nn.Module, trained: OutProj | torch.nn.Linear) -> None:
    """Set the stock head so that it computes the trained linear layer on the first token."""
    linear = trained.out_proj if isinstance(trained, OutProj) else trained
    classifier = stock.classifier
    if hasattr(classifier, "dense") and hasattr(classifier, "out_proj"):  # RoBERTa, MPNet: dense, tanh, out_proj
        dense, output = classifier.dense, classifier.out_proj
    else:  # BERT: the pooler's dense and tanh, then the classifier
        dense, output = getattr(stock, stock.base_model_prefix).pooler.dense, classifier
    with torch.no_grad():
        dense.weight.copy_(torch.eye(dense.weight.shape[0]) * EPSILON)
        dense.bias.zero_()
        output.weight.copy_(linear.weight / EPSILON)
        output.bias.copy_(linear.bias)
