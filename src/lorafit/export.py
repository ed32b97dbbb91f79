"""`lorafit export`: a finished run as a folder that needs no lorafit. `transformers`: the LoRA
merged into the base, saved as a stock *ForSequenceClassification model; `onnx`: the same model as
an ONNX graph (fp32, or dynamic int8) with the tokenizer. Both carry the run's model card."""

from __future__ import annotations

import math
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
# A `mean` head becomes one more encoder layer that computes the mean (`_mean_layer`), in the
# families whose attention scores have no position term (MPNet and DeBERTa add a relative one).
MEAN_LAYER_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
# Powers of two, measured on random BERT layers with logits up to 27 (hidden 384 and 768): logits
# within 2e-5 to 2e-4, probabilities within 3e-6. The residual input adds |input| / LIFT; the logits'
# share of the layer norm's spread adds (|logits| / ANCHOR)^2 relatively; a larger ANCHOR costs fp32
# precision in the norm's sums instead.
LIFT = 2.0**20
ANCHOR = 2.0**14


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
    from transformers import AutoModelForSequenceClassification

    mean = isinstance(model.pooling.pool, MaskedMean)
    config = model.config
    if mean:
        _check_mean_layer(config)
        config = type(config).from_dict({**config.to_dict(), "num_hidden_layers": config.num_hidden_layers + 1})
    stock = AutoModelForSequenceClassification.from_config(config)
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith(("classifier.", "pooling."))}
    missing, unexpected = stock.load_state_dict(weights, strict=False)
    if unexpected:
        raise LorafitError(f"export: weights the stock {type(stock).__name__} has no place for: {unexpected[:3]}")
    linear = model.classifier.out_proj if isinstance(model.classifier, OutProj) else model.classifier
    weight, bias = linear.weight.detach(), linear.bias.detach()
    if mean:
        _mean_layer(getattr(stock, stock.base_model_prefix).encoder.layer[-1], weight)
        weight = torch.eye(*weight.shape)  # the new layer's first token carries weight @ mean already
    _identity_head(stock, weight, bias)
    new_layer = f".layer.{config.num_hidden_layers - 1}." if mean else None
    added = {name for name, _ in stock.named_parameters() if _is_head(name) or (new_layer and new_layer in name)}
    if set(missing) - added:
        raise LorafitError(f"export: weights missing from the run: {sorted(set(missing) - added)[:3]}")
    return stock.eval()


def _check_mean_layer(config) -> None:
    positions = getattr(config, "position_embedding_type", "absolute")
    if config.model_type not in MEAN_LAYER_TYPES or positions != "absolute":
        raise LorafitError(
            f"model.head=mean exports as a stock transformers model only for {', '.join(MEAN_LAYER_TYPES)} "
            "encoders with absolute positions (MPNet and DeBERTa add a relative position term to every layer's "
            f"attention, so no added layer can average the tokens), and this is '{config.model_type}': "
            "use --format onnx, or train with model.head=linear"
        )
    if 2 * config.num_labels + 2 > config.hidden_size:
        most = config.hidden_size // 2 - 1
        raise LorafitError(f"model.head=mean exports for at most {most} labels; use --format onnx")


def _is_head(name: str) -> bool:
    return name.startswith("classifier.") or ".pooler." in name


def _identity_head(stock: torch.nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Set the stock head so that it computes `weight` @ first token + `bias`."""
    classifier = stock.classifier
    if hasattr(classifier, "dense") and hasattr(classifier, "out_proj"):  # RoBERTa, MPNet: dense, tanh, out_proj
        dense, output = classifier.dense, classifier.out_proj
    else:  # BERT: the pooler's dense and tanh, then the classifier
        dense, output = getattr(stock, stock.base_model_prefix).pooler.dense, classifier
    with torch.no_grad():
        dense.weight.copy_(torch.eye(dense.weight.shape[0]) * EPSILON)
        dense.bias.zero_()
        output.weight.copy_(weight / EPSILON)
        output.bias.copy_(bias)


def _mean_layer(layer: torch.nn.Module, weight: torch.Tensor) -> None:
    """Set a BERT-like encoder layer so that its first token leaves as z = weight @ (the mean of the
    layer's input over the real tokens) in dimensions 0..L-1, and zeros elsewhere:
    - queries of zero give every real token the same attention: the values' average is the mean;
    - the values are z and -z, lifted by LIFT far above the residual input, beside a constant pair
      +/-LIFT*ANCHOR that dominates the layer norm's spread, which then no longer depends on the input:
      the norm is a fixed scaling, undone by its own weights;
    - the feed-forward part adds zero (its output weights are zero), and its layer norm is again a
      fixed scaling, set by the same pair."""
    labels, hidden = weight.shape
    z, pair = slice(0, labels), slice(2 * labels, 2 * labels + 2)
    spread = math.sqrt(2 / hidden)  # a layer norm's standard deviation of (+a, -a, 0, ..., 0) is a * spread
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.zero_()
        value = layer.attention.self.value.weight
        value[z], value[labels : 2 * labels] = weight, -weight
        lift = layer.attention.output.dense
        lift.weight[: 2 * labels, : 2 * labels] = LIFT * torch.eye(2 * labels)
        lift.bias[pair] = torch.tensor([LIFT * ANCHOR, -LIFT * ANCHOR])
        # after the norm: z, -z and the pair +/-ANCHOR; the zeroed weights keep the rest at 0
        layer.attention.output.LayerNorm.weight[: 2 * labels + 2] = ANCHOR * spread
        layer.output.LayerNorm.weight[z] = ANCHOR * spread  # z again; the pair only set the scale
