"""Load a finished run and classify texts: batches sorted by length, padded per batch, input order kept."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import rundir
from .config import recipe_from_dict
from .data import examples_from_table, join_texts, length_batches, read_source
from .device import HALF_DTYPES, inference_path
from .errors import LorafitError
from .first_token import compute_last_layer_for_first_token
from .heads import apply_head, frozen_head_weights, load_frozen_head_weights
from .metrics import classification_metrics
from .model import build_base_model, model_identity, resolve_model_path, run_model_name
from .mpnet_attention import fuse_mpnet_attention
from .onnx_engine import ORT_PATHS, build_graph, cached_graph, export_key, onnx_classifier, require_onnxruntime


@dataclass
class LoadedRun:
    run_dir: Path
    model: torch.nn.Module
    tokenizer: object
    label_names: list[str]
    info: dict
    autocast: bool = False  # half-precision autocast around a model whose weights are not (a GPU)
    path: str = "fp32"  # the inference path: bf16 | fp16 | fp32 | int8 | ort-fp32 | ort-int8

    @property
    def half(self) -> torch.dtype | None:
        return HALF_DTYPES.get(self.path)

    @property
    def bf16(self) -> bool:
        return self.path == "bf16"

    @functools.cached_property
    def recipe(self):  # parsed once: serve reads it for every micro-batch
        return run_recipe(self.run_dir, self.info)


def run_recipe(run_dir: Path, info: dict):
    """The run's recipe, its base model located on this machine (runs can move)."""
    raw = {**info["recipe"], "model": {**info["recipe"]["model"], "name": run_model_name(run_dir, info)}}
    return recipe_from_dict(raw, source=str(run_dir / rundir.RUN_JSON))


def load_run(run_dir: str | Path, merge: bool = True, precision: str = "auto", first_token: bool = True) -> LoadedRun:
    """The base model with the run's adapter and head; LoRA merged into the weights for speed,
    and bf16 where the hardware has bf16 units (precision='fp32' turns it off;
    precision='int8' quantizes the merged linear layers instead, on a CPU). The last layer computes
    the first token alone where the head reads no more (`first_token=False`: the stock layer)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    run_dir = Path(run_dir)
    info = rundir.read_run_info(run_dir)
    recipe = run_recipe(run_dir, info)
    label_names = info["label_names"]
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    path = inference_path(precision)
    if path in ORT_PATHS:
        require_onnxruntime()
        key = export_key(run_dir, model_identity(resolve_model_path(recipe.model.name)))
        graph = cached_graph(key, int8=path == "ort-int8")
        if not graph.is_file():  # exported once, from the merged fp32 model
            merged = load_run(run_dir, merge=True, precision="fp32").model  # last layer for token 0 where it can
            graph = build_graph(merged, tokenizer, key, int8=path == "ort-int8")
        return LoadedRun(run_dir, onnx_classifier(graph), tokenizer, label_names, info, path=path)
    base = build_base_model(recipe.model, label_names)
    apply_head(base, recipe.model.head, recipe.model.classifier_dropout)
    restore_frozen_head(base, run_dir, recipe)
    int8 = path == "int8"
    try:
        adapted = PeftModel.from_pretrained(base, run_dir)
    except (RuntimeError, ValueError, KeyError) as e:  # shape or module-name mismatch
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if "size mismatch" in line), lines[0] if lines else type(e).__name__)
        raise LorafitError(
            f"{run_dir}: the adapter does not fit the base model '{recipe.model.name}' with "
            f"{len(label_names)} labels ({detail[:240]})"
        ) from None
    half = HALF_DTYPES.get(path)
    model = for_inference(adapted, merge, half)
    if int8:
        model = quantize_int8(model)
    if first_token and recipe.training.last_layer_first_token:
        compute_last_layer_for_first_token(model, recipe.model.head)
    if recipe.training.fused_attention:
        fuse_mpnet_attention(model)
    autocast = half is not None and next(model.parameters()).dtype != half  # a half-precision model needs none
    return LoadedRun(run_dir, model, tokenizer, label_names, info, autocast=autocast, path=path)


def restore_frozen_head(base, run_dir: Path, recipe) -> None:
    """The head weights that the run saved beside its adapter (RoBERTa's dense layer under lora-dense)."""
    if not frozen_head_weights(base, recipe.model.head):
        return
    saved = run_dir / rundir.HEAD_WEIGHTS
    if not saved.is_file():
        raise LorafitError(
            f"{run_dir}: trained before lorafit saved the head's frozen dense layer ({rundir.HEAD_WEIGHTS}, "
            f"model.head=lora-dense); retrain it: lorafit train {run_dir / rundir.RECIPE_YAML} --overwrite"
        )
    from safetensors.torch import load_file

    load_frozen_head_weights(base, load_file(saved))


def for_inference(peft_model, merge: bool, half: torch.dtype | None = None) -> torch.nn.Module:
    """Frozen, in eval mode, merged. In bf16 (or fp16) on a CPU the merged model is stored wholly in
    that precision and run without autocast: autocast would keep layer norms in fp32 and cast activations
    back and forth around them (a third more throughput at batch 32 for MiniLM, bench/RESULTS.md)."""
    model = peft_model.merge_and_unload() if merge else peft_model
    model.eval().requires_grad_(False)
    if merge and half is not None and next(model.parameters()).device.type == "cpu":
        model.to(half)
    return model


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of every linear layer: weights per output channel, once;
    activations per batch. The model must be merged, and on the CPU."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    if next(model.parameters()).device.type != "cpu":
        raise LorafitError("--precision int8 is for CPU inference; on a GPU use the default precision")
    if any("lora_" in name for name, _ in model.named_parameters()):
        raise LorafitError("--precision int8 needs the merged model (the LoRA matrices folded into the weights)")
    if "onednn" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "onednn"  # 15% faster than fbgemm here (bench/RESULTS.md)
    with warnings.catch_warnings():
        # torch deprecates quantized tensors in favour of torchao, but still ships these kernels
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*", category=UserWarning)
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def predict_proba(
    run: LoadedRun,
    texts: list[str],
    max_tokens: int = 4096,
    max_rows: int = 256,
    max_length: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Class probabilities, one row per text in the given order."""
    max_length = max_length or run.recipe.data.max_length
    encoded = run.tokenizer(texts, truncation=True, max_length=max_length, verbose=False)
    batches = length_batches([len(ids) for ids in encoded["input_ids"]], max_tokens, max_rows)
    probabilities = np.zeros((len(texts), len(run.label_names)), dtype=np.float32)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="predict", unit="batch")
    device_type = "cuda" if torch.cuda.is_available() and run.path not in ORT_PATHS else "cpu"
    with torch.inference_mode(), torch.autocast(device_type, dtype=run.half or torch.bfloat16, enabled=run.autocast):
        for rows in batches:
            logits = run.model(**padded(encoded, rows, run.tokenizer.pad_token_id)).logits
            probabilities[rows] = torch.softmax(logits.float(), dim=-1).numpy()
    return probabilities


def padded(encoded, rows: np.ndarray, pad_token_id: int, multiple: int = 8) -> dict[str, torch.Tensor]:
    """The rows' encodings as right-padded tensors (the tokenizer's own `pad` is slower in Python).
    Widths are rounded up to a multiple of 8, so fewer distinct shapes reach the matmul kernels."""
    width = -(-max(len(encoded["input_ids"][i]) for i in rows) // multiple) * multiple
    batch = {}
    for key in encoded.keys():
        array = np.full((len(rows), width), pad_token_id if key == "input_ids" else 0, dtype=np.int64)
        for j, i in enumerate(rows):
            array[j, : len(encoded[key][i])] = encoded[key][i]
        batch[key] = torch.from_numpy(array)
    return batch


def load_runs(run_dirs: list[str], merge: bool = True, precision: str = "auto") -> list[LoadedRun]:
    """Several runs for an ensemble: they must share the label names, in the same order."""
    runs = [load_run(d, merge, precision) for d in run_dirs]
    for other in runs[1:]:
        if other.label_names != runs[0].label_names:
            raise LorafitError(
                f"run {other.run_dir} has labels {other.label_names} but run {runs[0].run_dir} has "
                f"{runs[0].label_names}: an ensemble needs the same labels in the same order"
            )
    return runs


def ensemble_proba(runs: LoadedRun | list[LoadedRun], texts: list[str], progress: bool = False) -> np.ndarray:
    """Class probabilities averaged over the runs (one run: its own probabilities)."""
    runs = runs if isinstance(runs, list) else [runs]
    return np.mean([predict_proba(run, texts, progress=progress) for run in runs], axis=0)


def evaluate_file(
    runs: LoadedRun | list[LoadedRun], path: str, trust_pickle: bool = False, split: str = "test", **data_overrides
) -> dict:
    """Metrics on any labelled file or dataset split, with the (first) run's column options."""
    run = first_run(runs)
    data = run.recipe.data.model_copy(update={k: v for k, v in data_overrides.items() if v is not None})
    table, where, _ = read_source(path, data, split, trust_pickle)
    examples = examples_from_table(table, data, where=where, label_names=run.label_names)
    predictions = ensemble_proba(runs, examples.texts, progress=True).argmax(-1)
    return classification_metrics(examples.labels, predictions, run.label_names)


def predict_file(
    runs: LoadedRun | list[LoadedRun],
    input_path: str,
    output_path: str,
    probs: bool = False,
    trust_pickle: bool = False,
    text_columns: list[str] | None = None,
    id_column: str = "id",
    split: str = "test",
    subset: str | None = None,
) -> Path:
    """A Kaggle-style submission: ID,Label (label index), with a probability column per class if asked."""
    import pandas as pd

    run = first_run(runs)
    data = run.recipe.data.model_copy(update={"subset": subset} if subset else {})
    table, where, _ = read_source(input_path, data, split, trust_pickle)
    texts = join_texts(table, text_columns or data.text_columns, where=where, pair=data.pair)
    probabilities = ensemble_proba(runs, texts, progress=True)
    ids = _id_column(table, id_column)
    submission = pd.DataFrame({"ID": ids, "Label": probabilities.argmax(-1)})
    if probs:
        for i, name in enumerate(run.label_names):
            submission[f"prob_{name}"] = probabilities[:, i].round(6)
    return rundir.write_text(Path(output_path), submission.to_csv(index=False))


def _id_column(table, id_column: str) -> list:
    for name in table.columns:
        if str(name).lower() == id_column.lower():
            return table[name].tolist()
    return list(range(len(table)))


def first_run(runs: LoadedRun | list[LoadedRun]) -> LoadedRun:
    """The run whose recipe and labels an ensemble follows (ensembles share labels: load_runs)."""
    return runs[0] if isinstance(runs, list) else runs


def is_pair_run(runs: LoadedRun | list[LoadedRun]) -> bool:
    """Whether the run classifies sentence pairs (trained with data.pair)."""
    return first_run(runs).recipe.data.pair


def model_inputs(texts: list) -> list:
    """Checked inputs as the tokenizer takes them: a text, or a (first, second) tuple for a pair."""
    return [text if isinstance(text, str) else tuple(text) for text in texts]


def input_problem(text, pair: bool) -> tuple[str, str] | None:
    """Why one input cannot go to a run (`pair`: a sentence-pair run), as (code, what is wrong), or None."""
    if pair and (isinstance(text, str) or len(text) != 2 or not all(isinstance(side, str) for side in text)):
        return "pair_expected", "is not a [first, second] pair: this run classifies sentence pairs (data.pair)"
    if not pair and not isinstance(text, str):
        return "text_expected", "is a pair: this run classifies single texts (it was trained without data.pair)"
    if not all(side.strip() for side in ([text] if isinstance(text, str) else text)):
        return "empty_text", "has an empty side" if pair else "is empty"
    return None


def pairs_from_arguments(texts: list[str]) -> list[tuple[str, str]]:
    """Command-line texts for a sentence-pair run, read two by two: first, second, first, second..."""
    if len(texts) % 2:
        raise LorafitError(
            f"this run classifies sentence pairs (data.pair): give its texts two by two (first second ...), "
            f"got {len(texts)}"
        )
    return list(zip(texts[::2], texts[1::2]))


def classify(runs: LoadedRun | list[LoadedRun], texts: list) -> list[dict]:
    """Label and class probabilities for each text (each [first, second] pair for a pair run)."""
    if not texts:
        raise LorafitError("give at least one text to classify")
    pair = is_pair_run(runs)
    for i, text in enumerate(texts, start=1):
        problem = input_problem(text, pair)
        if problem:
            raise LorafitError(f"text {i} to classify {problem[1]}")
    names = first_run(runs).label_names
    probabilities = ensemble_proba(runs, model_inputs(texts))
    return [
        {
            "text": text,
            "label": names[int(row.argmax())],
            "index": int(row.argmax()),
            "probabilities": {name: float(p) for name, p in zip(names, row)},
        }
        for text, row in zip(texts, probabilities)
    ]
