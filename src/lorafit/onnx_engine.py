"""Inference through onnxruntime: the merged model exported to ONNX once, fp32 or dynamic int8.

The exported graph is cached under a key of the run's adapter, recipe and base model, so a run
is exported on its first use only and the run directory itself is never written to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from . import rundir
from .errors import LorafitError
from .packaged import cache_root
from .rundir import build_folder

ORT_PATHS = ("ort-fp32", "ort-int8")


@dataclass
class OnnxOutput:
    logits: torch.Tensor


class OnnxClassifier:
    """An onnxruntime session called like a transformers classifier: model(**batch).logits."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, **batch) -> OnnxOutput:
        feed = {name: tensor.numpy() for name, tensor in batch.items() if name in self.inputs}
        return OnnxOutput(torch.from_numpy(self.session.run(["logits"], feed)[0]))


def require_onnxruntime() -> None:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise LorafitError(
            "the onnxruntime inference paths need onnxruntime and onnxscript: pip install 'lorafit[onnx]'"
        ) from None


# Bumped when the exported graph changes for the same run: 2 = the last layer computes the first
# token alone where the head reads no more (graphs of form 1 computed every token).
GRAPH_FORM = "2"


def export_key(run_dir: Path, model_identity: str) -> str:
    digest = hashlib.sha256(f"{GRAPH_FORM}:{model_identity}".encode())
    for name in (rundir.ADAPTER_WEIGHTS, rundir.ADAPTER_CONFIG, rundir.RUN_JSON):
        if name == rundir.RUN_JSON:  # the recipe and labels decide the graph; timings do not
            info = json.loads((run_dir / name).read_text(encoding="utf-8"))
            digest.update(json.dumps([info["recipe"], info["label_names"]], sort_keys=True).encode())
        else:
            digest.update((run_dir / name).read_bytes())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:24]


def cached_graph(key: str, int8: bool) -> Path:
    name = "model-int8" if int8 else "model"
    return cache_root() / "onnx" / f"{key}-{name}" / f"{name}.onnx"  # a folder: the graph may have external data


def build_graph(merged_model: torch.nn.Module, tokenizer, key: str, int8: bool) -> Path:
    """Export the merged fp32 model (and its int8 quantization when asked) into the cache."""
    fp32 = cached_graph(key, int8=False)
    if not fp32.is_file():
        build_folder(fp32.parent, lambda staging: _export(merged_model, tokenizer, staging / fp32.name))
    if not int8:
        return fp32
    quantized = cached_graph(key, int8=True)
    if not quantized.is_file():
        build_folder(quantized.parent, lambda staging: _quantize(fp32, staging / quantized.name))
    return quantized


def _export(model: torch.nn.Module, tokenizer, path: Path) -> None:
    sample = tokenizer(["lorafit exports this model", "to onnx"], padding=True, return_tensors="pt")
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    with warnings.catch_warnings(), torch.no_grad(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.float().eval(),
            (),
            kwargs={n: sample[n] for n in names},
            input_names=names,
            output_names=["logits"],
            dynamic_shapes=dynamic,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    program.save(str(path))


def _quantize(fp32: Path, path: Path) -> None:
    """Dynamic int8: weights per output channel, activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(""):  # a suggestion to pre-process, which is for static (calibrated) quantization
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)


@contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def onnx_classifier(graph: Path) -> OnnxClassifier:
    return OnnxClassifier(graph, threads=torch.get_num_threads())
