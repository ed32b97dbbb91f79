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
    lora_modules: dict = field(default_factory=dict)  # full module path -> params, every adapted module
    head_modules: dict = field(default_factory=dict)
    other_modules: dict = field(default_factory=dict)
    frozen_below: int = 0  # layers below this one train nothing: training.reuse_frozen_layers can reuse them
    reuse_frozen_layers: bool = False
    frozen_dropout_draws: int = 0  # with reuse: stored draws of the frozen layers' dropout, one per epoch
    last_layer_every_token: str | None = None  # why the last layer computes every token; None: token 0 alone

    @property
    def fits(self) -> bool:
        return self.trainable <= self.budget

    def to_dict(self) -> dict:
        return {**asdict(self), "fits": self.fits}

    def check(self) -> None:
        if not self.fits:
            raise LorafitError(
                f"{self.trainable:,} trainable parameters exceed budget.max_trainable="
                f"{self.budget:,} by {self.trainable - self.budget:,}; lower lora.r or drop targets "
                "(see `lorafit plan`)"
            )


def label_names_for_plan(recipe: Recipe) -> list[str]:
    """The head's size needs the label count: from the recipe, else from a local data file."""
    if recipe.data.labels:
        return recipe.data.labels
    from .data import is_local_file, load_examples

    if is_local_file(recipe.data.train):
        return load_examples(recipe.data).label_names
    raise LorafitError(
        f"set data.labels (the label names) so the head can be sized without downloading '{recipe.data.train}'"
    )


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
    lora_modules: dict = defaultdict(int)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        path = name.removeprefix("base_model.model.")
        n = parameter.numel()
        if ".lora_" in path or path.endswith(".ranknum." + path.rsplit(".", 1)[-1]):
            counts["lora"] += n
            module = path.split(".lora_")[0].split(".ranknum.")[0]
            lora_modules[module] += n
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
    from .first_token import why_every_token
    from .frozen import first_trained_layer

    every_token = why_every_token(model, recipe.model.head)
    if not recipe.training.last_layer_first_token:
        every_token = "training.last_layer_first_token=false"

    return Plan(
        model=recipe.model.name,
        trainable=trainable,
        total=total,
        budget=recipe.budget.max_trainable,
        frozen_below=first_trained_layer(model),
        reuse_frozen_layers=recipe.training.reuse_frozen_layers,
        frozen_dropout_draws=recipe.training.frozen_dropout_draws,
        last_layer_every_token=every_token,
        **counts,
        lora_by_target={k: dict(v) for k, v in by_target.items()},
        lora_outside_layers=dict(outside),
        lora_modules=dict(lora_modules),
        head_modules=dict(head_modules),
        other_modules=dict(other_modules),
    )


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
    if p.frozen_below:
        switch = "on" if p.reuse_frozen_layers else "off: training.reuse_frozen_layers=true"
        frozen = f"layers 0-{p.frozen_below - 1} train nothing"
        how = "computed once, without dropout"
        if p.frozen_dropout_draws:
            how = f"computed once per epoch with their dropout ({p.frozen_dropout_draws} draws)"
        lines.append(f"frozen     {frozen}: {how}, and reused ({switch})")
    else:
        lines.append("frozen     layer 0 trains: no frozen layers to reuse")
    if p.last_layer_every_token:
        lines.append(f"last layer computes every token: {p.last_layer_every_token}")
    else:
        lines.append("last layer computes the first token alone: the head reads no more")
    share = 100 * p.trainable / p.total if p.total else 0
    lines += [
        f"trainable  {p.trainable:,} of {p.total:,} ({share:.2f}%)",
        f"budget     {p.budget:,}: " + ("fits" if p.fits else f"EXCEEDED by {p.trainable - p.budget:,}"),
    ]
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


@dataclass
class RankOption:
    """One way to spend the budget on LoRA ranks: r everywhere, except where rank_pattern says."""

    name: str
    summary: str
    r: int
    rank_pattern: dict
    trainable: int


def fill_budget(recipe: Recipe, budget: int | None = None, label_names: list[str] | None = None) -> list[RankOption]:
    """The largest ranks that fit the budget on the recipe's targets: uniform, uniform topped up
    module by module (top layers first), and ranks growing with depth. Counts come from `plan`."""
    budget = budget or recipe.budget.max_trainable
    label_names = label_names or label_names_for_plan(recipe)
    count = lambda r, pattern=None: plan(with_ranks(recipe, r, pattern or {}), label_names).trainable  # noqa: E731
    one, two = plan(with_ranks(recipe, 1, {}), label_names), plan(with_ranks(recipe, 2, {}), label_names)
    per_rank = {m: two.lora_modules[m] - one.lora_modules[m] for m in one.lora_modules}
    fixed = one.trainable - sum(per_rank.values())  # head, biases, DoRA magnitudes: independent of rank
    uniform = (budget - fixed) // sum(per_rank.values())
    if uniform < 1:
        raise LorafitError(
            f"even rank 1 on these targets needs {one.trainable:,} trainable parameters, over the "
            f"budget of {budget:,}: drop targets or choose a smaller head (model.head)"
        )
    options = [RankOption("uniform", f"r={uniform} on every target", uniform, {}, count(uniform))]
    top_up = _top_up(per_rank, uniform, budget - options[0].trainable)
    if top_up:
        options.append(
            RankOption(
                "per-module",
                f"r={uniform}, r={uniform + 1} on {len(top_up)} module"
                f"{'s' if len(top_up) > 1 else ''} of the top layers",
                uniform,
                top_up,
                count(uniform, top_up),
            )
        )
    by_layer = _growing_with_depth(per_rank, uniform, budget - fixed)
    if by_layer:
        ranks = sorted(set(by_layer.values()))
        options.append(
            RankOption(
                "per-layer",
                f"r growing with depth, {ranks[0]} to {ranks[-1]}",
                uniform,
                by_layer,
                count(uniform, by_layer),
            )
        )
    return [o for o in options if o.trainable <= budget]


def with_ranks(recipe: Recipe, r: int, rank_pattern: dict) -> Recipe:
    return recipe.model_copy(update={"lora": recipe.lora.model_copy(update={"r": r, "rank_pattern": rank_pattern})})


def pattern_key(module: str) -> str:
    """The shortest readable key PEFT matches to this module alone: from the layer list on."""
    parts = module.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i].isdigit():
            return ".".join(parts[i - 1 :])
    return module


def _top_up(per_rank: dict, r: int, left: int) -> dict:
    pattern = {}
    for module in sorted(per_rank, key=lambda m: -(layer_of(m) or (-1, ""))[0]):
        if per_rank[module] <= left:
            pattern[pattern_key(module)] = r + 1
            left -= per_rank[module]
    return pattern


def _growing_with_depth(per_rank: dict, r: int, room: int) -> dict:
    """Ranks proportional to layer depth (layer i of n gets about top*(i+1)/n), the largest top that fits."""
    layers = {m: (layer_of(m) or (None, ""))[0] for m in per_rank}
    depth = max((i for i in layers.values() if i is not None), default=None)
    if depth is None or depth == 0:
        return {}

    def ranks(top: int) -> dict:
        return {m: max(1, round(top * (i + 1) / (depth + 1))) if i is not None else r for m, i in layers.items()}

    top = r
    while sum(per_rank[m] * k for m, k in ranks(top + 1).items()) <= room:
        top += 1
    chosen = ranks(top)
    if sum(per_rank[m] * k for m, k in chosen.items()) > room:
        return {}
    return {pattern_key(m): k for m, k in chosen.items() if k != r}


def format_options(options: list[RankOption], budget: int) -> str:
    lines = [f"{'option':<11} {'trainable':>10}  {'of budget':>9}  ranks"]
    lines += [f"{o.name:<11} {o.trainable:>10,}  {100 * o.trainable / budget:>8.2f}%  {o.summary}" for o in options]
    return "\n".join(lines)
