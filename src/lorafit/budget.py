"""Exact trainable-parameter counts from the model config alone, on the meta device."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

from .config import Recipe
from .errors import LorafitError
from .model import build_lora_model, layer_of


@dataclass
class Plan:
    model: str
    trainable: int
    total: int
    budget: int
    lora: int
    head: int
    other: int
    lora_by_target: dict = field(default_factory=dict)  # module name inside a layer -> {layer: params}
    lora_outside_layers: dict = field(default_factory=dict)  # full module path -> params
    head_modules: dict = field(default_factory=dict)
    other_modules: dict = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return self.trainable <= self.budget

    def to_dict(self) -> dict:
        return {**asdict(self), "fits": self.fits}

    def check(self) -> None:
        if not self.fits:
            raise LorafitError(f"{self.trainable:,} trainable parameters exceed budget.max_trainable="
                               f"{self.budget:,} by {self.trainable - self.budget:,}; lower lora.r or drop targets "
                               "(see `lorafit plan`)")


def label_names_for_plan(recipe: Recipe) -> list[str]:
    """The head's size needs the label count: from the recipe, else from a local data file."""
    if recipe.data.labels:
        return recipe.data.labels
    from .data import is_local_file, load_examples

    if is_local_file(recipe.data.train):
        return load_examples(recipe.data).label_names
    raise LorafitError("set data.labels (the label names) so the head can be sized without downloading "
                       f"'{recipe.data.train}'")


def plan(recipe: Recipe, label_names: list[str] | None = None) -> Plan:
    """Build the PEFT model with no weights and count what PEFT counts (the head is counted
    twice in `total`, as PEFT keeps the original head beside its trainable copy)."""
    label_names = label_names or label_names_for_plan(recipe)
    model = build_lora_model(recipe.model, recipe.lora, label_names, weights=False)
    trainable, total = model.get_nb_trainable_parameters()
    counts = {"lora": 0, "head": 0, "other": 0}
    by_target: dict = defaultdict(lambda: defaultdict(int))
    outside: dict = defaultdict(int)
    head_modules: dict = defaultdict(int)
    other_modules: dict = defaultdict(int)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        path = name.removeprefix("base_model.model.")
        n = parameter.numel()
        if ".lora_" in path:
            counts["lora"] += n
            module = path.split(".lora_")[0]
            located = layer_of(module)
            if located:
                by_target[located[1]][located[0]] += n
            else:
                outside[module] += n
        elif ".modules_to_save." in path:
            counts["head"] += n
            head_modules[path.split(".modules_to_save.")[0]] += n
        else:
            counts["other"] += n
            other_modules[path.rsplit(".", 1)[0]] += n
    return Plan(model=recipe.model.name, trainable=trainable, total=total, budget=recipe.budget.max_trainable,
                **counts, lora_by_target={k: dict(v) for k, v in by_target.items()},
                lora_outside_layers=dict(outside), head_modules=dict(head_modules),
                other_modules=dict(other_modules))


def format_plan(p: Plan) -> str:
    lines = [f"model      {p.model}"]
    for target, layers in p.lora_by_target.items():
        spans = _spans(sorted(layers))
        per = sorted(set(layers.values()))
        per_text = f"{per[0]:,} each" if len(per) == 1 else "varies"
        lines.append(f"lora       {target:<28} layers {spans:<12} {sum(layers.values()):>10,}  ({per_text})")
    for module, n in p.lora_outside_layers.items():
        lines.append(f"lora       {module:<41} {n:>10,}")
    for module, n in p.head_modules.items():
        lines.append(f"head       {module:<41} {n:>10,}")
    for module, n in p.other_modules.items():
        lines.append(f"other      {module:<41} {n:>10,}")
    share = 100 * p.trainable / p.total if p.total else 0
    lines += [f"trainable  {p.trainable:,} of {p.total:,} ({share:.2f}%)",
              f"budget     {p.budget:,}: " + ("fits" if p.fits else f"EXCEEDED by {p.trainable - p.budget:,}")]
    return "\n".join(lines)


def _spans(indices: list[int]) -> str:
    """[0, 1, 2, 5, 10, 11] -> '0-2,5,10-11'"""
    spans, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            spans.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return ",".join(spans)
