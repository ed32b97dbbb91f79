"""Trainer wiring: recipe -> data -> budget check -> LoRA model -> Trainer -> run directory."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import BatchRebalanceSampler

from . import rundir
from .budget import Plan, plan
from .card import write_card
from .choices import BEST_METRICS, HALF_PRECISIONS
from .config import Recipe
from .data import flat_text, length_batches, prepare_splits, tokenize
from .device import (
    SpeedSettings,
    allocator_in_use,
    configure_threads,
    cpu_info,
    package_versions,
    training_device,
    training_precision,
)
from .errors import LorafitError
from .first_token import compute_last_layer_for_first_token
from .frozen import (
    FrozenStatesDataset,
    collate_states,
    ensure_room,
    frozen_states,
    skip_frozen_layers,
    states_folder,
    switch_off_dropout_below,
)
from .heads import frozen_head_weights
from .metrics import classification_metrics, logits_and_labels, trainer_scores
from .model import build_lora_model, load_tokenizer, model_identity, portable_model_name, resolve_model_path
from .mpnet_attention import fuse_mpnet_attention
from .plots import plot_confusion_matrix, plot_history
from .resume import BestEpochWeights, CheckpointMarker, newest_checkpoint, prepare_run_dir
from .speedups import cast_frozen_linears, install_cpu_dropout, keep_lora_inputs_in_bf16
from .tracking import chosen_trackers, trackers

HISTORY_COLUMNS = ["epoch", "train_loss", "eval_loss", "eval_accuracy", "eval_f1", "eval_macro_f1", "learning_rate"]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    history: list[dict]
    plan: Plan
    wall_seconds: float
    wrote_artifacts: bool = True  # False on the non-zero ranks of a data-parallel run


def run_directory(recipe: Recipe, output_dir: str | None = None) -> Path:
    return Path(output_dir or recipe.training.output_dir or Path("runs") / recipe.name)


def speed_settings(recipe: Recipe, budget_plan: Plan | None = None) -> SpeedSettings:
    """What makes this run fast, decided once and recorded in run.json."""
    device = training_device()
    precision = training_precision(recipe.training.precision, device)
    reuse = recipe.training.reuse_frozen_layers and budget_plan is not None
    if reuse and recipe.model.quantization:
        raise LorafitError("training.reuse_frozen_layers does not combine with model.quantization")
    return SpeedSettings(
        device=device,
        precision=precision,
        threads=configure_threads(recipe.training.threads),
        frozen_layers_reused=budget_plan.frozen_below if reuse else 0,
        frozen_dropout_draws=recipe.training.frozen_dropout_draws if reuse else 0,
        dynamic_padding=not recipe.data.pad_to_max_length,
        group_by_length=recipe.training.group_by_length,
        pad_to_multiple_of=recipe.training.pad_to_multiple_of,
        tokenization_cache=recipe.data.cache_tokenized,
        cpu_dropout=recipe.training.cpu_dropout and device == "cpu",
        lora_inputs_in_bf16=recipe.training.lora_inputs_in_bf16 and precision == "bf16",
        fused_attention=recipe.training.fused_attention,
        last_layer_first_token=recipe.training.last_layer_first_token,
        allocator=allocator_in_use(),
    )


def optimizer_steps(recipe: Recipe, train_rows: int) -> int:
    t = recipe.training
    return max(1, math.ceil(math.ceil(train_rows / t.batch_size) / t.gradient_accumulation_steps * t.epochs))


class ValidationOutputs:
    """The Trainer's compute_metrics: scores each evaluation and keeps its logits and labels, so the
    best epoch's predictions are at hand after training without another pass over the validation rows."""

    def __init__(self):
        self.last = self.best = None

    def __call__(self, eval_prediction) -> dict:
        self.last = logits_and_labels(eval_prediction)
        return trainer_scores(eval_prediction)

    def keep_best(self) -> None:
        self.best = self.last


class AdaLoraAllocation(TrainerCallback):
    """AdaLoRA re-allocates ranks from the gradients: after each optimizer step, before they are zeroed."""

    def __init__(self, model):
        self.model = model

    def on_optimizer_step(self, args, state, control, **_):
        self.model.base_model.update_and_allocate(state.global_step)


class TrainingClock(TrainerCallback):
    """Seconds of training steps (evaluation excluded), for run.json: per epoch (the second epoch on
    shows the steady speed, after caches and warm-up) and per tenth of the steps (a run that slows
    as it goes shows it there)."""

    def __init__(self):
        self.seconds: list[float] = []
        self.tenths = [0.0] * 10

    def on_epoch_begin(self, args, state, control, **_):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, args, state, control, **_):
        self.seconds.append(round(time.perf_counter() - self.epoch_started, 2))

    def on_step_begin(self, args, state, control, **_):
        self.step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **_):
        tenth = min(9, (state.global_step - 1) * 10 // max(1, state.max_steps))
        self.tenths[tenth] += time.perf_counter() - self.step_started


def balanced_class_weights(labels: list[int], num_labels: int) -> torch.Tensor:
    """rows / (classes x rows of the class), as scikit-learn's class_weight="balanced"."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=num_labels).clamp(min=1)
    return len(labels) / (num_labels * counts.double())


def class_weighted_loss(recipe: Recipe, splits):
    """The Trainer's compute_loss_func for `training.class_weights` (None: the model's own loss);
    the weights are recorded in run.json."""
    if recipe.training.class_weights != "balanced":
        return None
    weights = balanced_class_weights(splits.train.labels, len(splits.info["label_names"]))
    splits.info["class_weights"] = [round(w, 6) for w in weights.tolist()]
    return weighted_loss(weights)


def weighted_loss(weights: torch.Tensor):
    """The Trainer's compute_loss_func: cross-entropy with a weight per class, summed over the batch and
    divided by the rows of the whole accumulated step (the Trainer's num_items_in_batch)."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"].float()
        total = torch.nn.functional.cross_entropy(logits, labels, weight=weights.to(logits), reduction="sum")
        return total / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    return loss


def apply_speedups(model, speed: SpeedSettings, head: str = "default"):
    """The model-level speed settings: cheap CPU dropout, frozen linear weights stored in bf16,
    LoRA inputs left in bf16, the last layer for the first token alone (where `head` reads no more),
    MPNet's attention fused."""
    if speed.cpu_dropout:
        install_cpu_dropout(model)
    if speed.bf16 and speed.device == "cpu":
        cast_frozen_linears(model)
    if speed.lora_inputs_in_bf16:
        keep_lora_inputs_in_bf16(model)
    if speed.last_layer_first_token:
        speed.last_layer_first_token = compute_last_layer_for_first_token(model, head)
    if speed.fused_attention:
        speed.fused_attention = fuse_mpnet_attention(model) > 0
    return model


def reuse_frozen_layers(model, recipe: Recipe, speed: SpeedSettings, train_set, validation_set):
    """The tokenized splits as datasets of the frozen layers' stored output (computed on first use):
    the training rows once per dropout draw, the validation rows once without dropout."""
    identity = f"{model_identity(resolve_model_path(recipe.model.name))}|bf16={speed.bf16}"
    layer, seed = speed.frozen_layers_reused, recipe.training.seed
    train_ids, validation_ids = train_set["input_ids"], validation_set["input_ids"]  # each column read once
    wanted = [(train_ids, draw) for draw in range(speed.frozen_dropout_draws) or [None]] + [(validation_ids, None)]
    folders = [states_folder(model, ids, layer, identity, draw, seed) for ids, draw in wanted]
    ensure_room(model.config.hidden_size, [(folder, ids) for folder, (ids, _) in zip(folders, wanted)])
    stored = [
        frozen_states(model, {"input_ids": ids}, layer, identity, speed.bf16, draw=draw, seed=seed, folder=folder)
        for folder, (ids, draw) in zip(folders, wanted)
    ]
    return FrozenStatesDataset(train_set, stored[:-1]), FrozenStatesDataset(validation_set, stored[-1])


class FrozenDrawPerEpoch(TrainerCallback):
    """Epoch e trains on the e-th stored draw of the frozen layers' dropout (resumed runs too)."""

    def __init__(self, dataset: FrozenStatesDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the epochs done so far, a fraction within an epoch resumed midway
        self.dataset.use_epoch(math.floor((state.epoch or 0) + 1e-6))


def training_arguments(recipe: Recipe, checkpoint_dir: Path, speed: SpeedSettings, report_to: list[str] = ()):
    from transformers import TrainingArguments

    t = recipe.training
    logging = {"logging_strategy": "steps", "logging_steps": t.logging_steps} if t.logging_steps else {}
    return TrainingArguments(
        **({speed.precision: True} if speed.precision in HALF_PRECISIONS else {}),  # bf16=True / fp16=True
        use_cpu=speed.device == "cpu",  # the Trainer takes bf16 on a CPU only when told it is one
        train_sampling_strategy="group_by_length" if speed.group_by_length else "random",
        output_dir=str(checkpoint_dir),
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio if t.warmup_ratio else 0,  # a float < 1 is a ratio in transformers 5
        max_grad_norm=t.max_grad_norm,
        optim="adamw_torch_fused" if t.fused_optimizer else "adamw_torch",
        eval_strategy="epoch",
        # checkpoints every N steps for --resume; the best epoch is kept apart (BestEpochWeights)
        save_strategy="steps",
        save_steps=t.checkpoint_steps,
        save_total_limit=2,
        # by default the logged loss is the mean over the epoch; history.csv averages finer logs per epoch
        **(logging or {"logging_strategy": "epoch"}),
        seed=t.seed,
        report_to=list(report_to) or "none",
        run_name=f"{recipe.name}/{checkpoint_dir.parent.name}",  # a tracker's name for this run
        disable_tqdm=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        # classification losses are per-example means that ignore num_items_in_batch; with this on,
        # the Trainer would still multiply them by the process count (doubling gradients on 2 processes)
        average_tokens_across_devices=False,
        torch_compile=t.torch_compile,
    )


@dataclass
class Pipeline:
    """Everything a training run is made of, built once by `build_trainer` for train, search and bench."""

    trainer: object
    model: torch.nn.Module
    splits: object
    plan: Plan
    speed: SpeedSettings
    checkpoint: Path | None  # where --resume continues from
    layers_used: contextlib.AbstractContextManager  # the frozen-layer skip, active while training
    outputs: ValidationOutputs
    best: BestEpochWeights
    clock: TrainingClock

    @property
    def is_main(self) -> bool:
        return self.trainer.args.process_index == 0


class LorafitTrainer(Trainer):
    """The Trainer, evaluating the validation rows longest first, in batches of at most
    `eval_batch_tokens` padded tokens, when batches are grouped by length. Evaluation needs no random
    order, and the stock evaluation sampler shuffles groups of up to 50 batches: a validation set of a
    few batches gets no grouping at all, so every batch was padded to about its longest row
    (bench/PADDING.md, "Evaluation order")."""

    def __init__(self, *args, eval_batch_tokens: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_batch_tokens = eval_batch_tokens

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or self.args.train_sampling_strategy != "group_by_length":
            return super()._get_eval_sampler(eval_dataset)
        lengths = token_counts(eval_dataset)
        if self.eval_batch_tokens and self.args.world_size == 1:
            return EvaluationBatches(lengths, self.eval_batch_tokens, self.args.eval_batch_size)
        # several processes each take a share of one row order, in batches the Trainer makes
        return np.argsort(-np.array(lengths), kind="stable").tolist()


class EvaluationBatches(BatchRebalanceSampler):
    """Validation rows longest first, in batches of at most `max_tokens` padded tokens and `max_rows`
    rows. A BatchRebalanceSampler only because that is the kind the Trainer gives its DataLoader as a
    batch sampler; iterating `rows` gives the evaluation order."""

    def __init__(self, lengths: list[int], max_tokens: int, max_rows: int):
        self.batches = [batch.tolist() for batch in length_batches(lengths, max_tokens, max_rows, longest_first=True)]
        self.rows = [row for batch in self.batches for row in batch]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def token_counts(dataset) -> list[int]:
    # the stored-states dataset keeps the token ids as an attribute; a datasets.Dataset as a column
    ids = dataset.input_ids if isinstance(dataset, FrozenStatesDataset) else dataset["input_ids"]
    return [len(row) for row in ids]


def build_trainer(
    recipe: Recipe,
    run_dir: Path,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list | None = None,
    claim: bool = True,
    **argument_overrides,
) -> Pipeline:
    """Data, budget check, model, speed settings and Trainer for a recipe. `claim=False` (the
    benchmarks) leaves the run directory alone; `argument_overrides` replace TrainingArguments fields."""
    from transformers import DataCollatorWithPadding, set_seed

    chosen = chosen_trackers(recipe)  # a missing tracker package fails before the data is read
    tokenizer = load_tokenizer(recipe.model)
    splits = prepare_splits(recipe.data, tokenizer)
    label_names = splits.info["label_names"]
    budget_plan = plan(recipe, label_names)
    budget_plan.check()  # before any weights are loaded or files written
    speed = speed_settings(recipe, budget_plan)
    report_to, tracking_callbacks = trackers(recipe, run_dir, chosen)
    # joins the process group under torchrun
    args = training_arguments(recipe, run_dir / rundir.CHECKPOINTS, speed, report_to)
    if argument_overrides:
        args = dataclasses.replace(args, **argument_overrides)
    speed.processes = args.world_size
    checkpoint = None
    if claim:
        with args.main_process_first(local=False, desc="claiming the run directory"):
            if args.process_index == 0:
                checkpoint = prepare_run_dir(run_dir, recipe, resume, overwrite)
            else:  # rank 0 has claimed it: only read where to resume from
                checkpoint = newest_checkpoint(run_dir) if resume else None

    set_seed(recipe.training.seed)  # the head's initialisation depends on it
    total_steps = optimizer_steps(recipe, len(splits.train))
    lora_model = build_lora_model(recipe.model, recipe.lora, label_names, total_steps=total_steps)
    model = apply_speedups(lora_model, speed, recipe.model.head)
    if recipe.training.frozen_layers_dropout is False:
        switch_off_dropout_below(model, budget_plan.frozen_below)
    with args.main_process_first(local=False, desc="tokenizing"):  # one process writes the cache
        data = recipe.data
        train_set, validation_set = (
            tokenize(part, tokenizer, data.max_length, data.pad_to_max_length, cache=data.cache_tokenized)
            for part in (splits.train, splits.validation)
        )
    multiple = speed.pad_to_multiple_of
    collator, layers_used = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple), contextlib.nullcontext()
    if speed.frozen_layers_reused:
        with args.main_process_first(local=False, desc="frozen layers"):
            train_set, validation_set = reuse_frozen_layers(model, recipe, speed, train_set, validation_set)
        collator = functools.partial(collate_states, pad_to_multiple_of=multiple)
        layers_used = skip_frozen_layers(model, speed.frozen_layers_reused)
        callbacks = [*(callbacks or []), FrozenDrawPerEpoch(train_set)]
    outputs = ValidationOutputs()
    t = recipe.training
    best = BestEpochWeights(model, run_dir, t.early_stopping_patience, t.metric_for_best, on_best=outputs.keep_best)
    clock = TrainingClock()
    callbacks = [best, CheckpointMarker(), clock, *tracking_callbacks, *(callbacks or [])]
    if recipe.lora.variant == "adalora":
        callbacks.append(AdaLoraAllocation(model))
    trainer = LorafitTrainer(
        model=model,
        args=args,
        compute_loss_func=class_weighted_loss(recipe, splits),
        train_dataset=train_set,
        eval_dataset=validation_set,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=outputs,
        callbacks=callbacks,
        eval_batch_tokens=recipe.training.eval_batch_tokens,
    )
    # The classification heads take **kwargs but return a per-batch mean: told they handle
    # num_items_in_batch, the Trainer would skip its division by gradient_accumulation_steps and
    # train (and log) with the loss times that (huggingface/transformers#47688)
    trainer.model_accepts_loss_kwargs = False
    return Pipeline(trainer, model, splits, budget_plan, speed, checkpoint, layers_used, outputs, best, clock)


def train(
    recipe: Recipe,
    output_dir: str | None = None,
    callbacks: list | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Train the recipe and write every artifact of the run; returns its validation metrics.

    The run directory is claimed first (an existing one only with `overwrite`, or `resume` to
    continue it from its newest complete checkpoint). Artifacts appear by atomic renames and the
    COMPLETE marker last, so a killed run never looks finished.
    """
    started = time.time()
    run_dir = run_directory(recipe, output_dir)
    run = build_trainer(recipe, run_dir, resume, overwrite, callbacks)
    trainer, speed = run.trainer, run.speed
    with run.layers_used:
        trained = trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint else None)
        speed.train_examples_per_second = trained.metrics.get("train_samples_per_second")
        speed.epoch_train_examples_per_second = [round(len(trainer.train_dataset) / s, 2) for s in run.clock.seconds]
        speed.step_seconds_by_tenth = [round(seconds, 3) for seconds in run.clock.tenths]
        trainer.accelerator.wait_for_everyone()  # rank 0 may still be writing the best epoch's weights
        # AdaLoRA prunes ranks as it trains: earlier weights no longer fit, so it keeps the last epoch
        adalora = recipe.lora.variant == "adalora"
        if not adalora:
            run.best.restore()
        best_outputs = run.outputs.last if adalora else run.outputs.best
        logits, labels = best_outputs or validation_logits(trainer, trainer.eval_dataset)
    label_names = run.splits.info["label_names"]
    history = epoch_history(trainer.state.log_history)
    metrics = classification_metrics(labels, logits.argmax(-1), label_names)
    metrics["best_epoch"] = best_epoch(history, recipe.training.metric_for_best)
    metrics["metric_for_best"] = recipe.training.metric_for_best
    metrics["loss"] = next((row["eval_loss"] for row in history if row["epoch"] == metrics["best_epoch"]), None)
    wall = time.time() - started
    if not run.is_main:
        return RunResult(run_dir, metrics, history, run.plan, wall, wrote_artifacts=False)
    staging = run_dir / ".staging"
    base_model = portable_model_name(recipe.model.name, run_dir)  # relative to the run, not to .staging
    save_run(staging, recipe, run, metrics, history, wall, base_model)
    order = evaluation_order(trainer, trainer.eval_dataset)
    save_validation_predictions(staging, run.splits.validation, logits, labels, order, label_names)
    rundir.publish(staging, run_dir)
    rundir.mark_complete(run_dir)
    shutil.rmtree(run_dir / rundir.CHECKPOINTS, ignore_errors=True)  # the best weights are the run's own now
    (run_dir / rundir.BEST_WEIGHTS).unlink(missing_ok=True)
    return RunResult(run_dir, metrics, history, run.plan, wall)


def validation_logits(trainer, validation_set):
    """A pass over the validation rows, for a resumed run whose best epoch was before the resume."""
    output = trainer.predict(validation_set)
    return output.predictions, output.label_ids


def evaluation_order(trainer, validation_set) -> list[int]:
    """The row order of the Trainer's evaluation outputs (longest first with group_by_length)."""
    sampler = trainer._get_eval_sampler(validation_set)
    if isinstance(sampler, EvaluationBatches):
        return sampler.rows
    return list(sampler) if sampler is not None else list(range(len(validation_set)))


def save_validation_predictions(run_dir: Path, validation, logits, labels, order: list[int], label_names) -> None:
    """validation_predictions.csv: each validation row with its label, the prediction and the
    probabilities, in the split's own order (for error analysis and ensembles)."""
    if [validation.labels[i] for i in order] != [int(label) for label in labels]:
        raise LorafitError(
            "the Trainer's evaluation order could not be replayed; validation_predictions.csv "
            "would mislabel rows (a transformers change?)"
        )
    probabilities = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=-1).numpy()
    by_row = dict(zip(order, probabilities))
    columns = ["text", "label", "prediction", *[f"p_{name}" for name in label_names]]
    rows = [
        {
            "text": flat_text(text),
            "label": label_names[label],
            "prediction": label_names[by_row[i].argmax()],
            **{f"p_{name}": round(float(p), 6) for name, p in zip(label_names, by_row[i])},
        }
        for i, (text, label) in enumerate(zip(validation.texts, validation.labels))
    ]
    rundir.write_rows(run_dir / rundir.VALIDATION_PREDICTIONS_CSV, rows, columns)


def epoch_history(log_history: list[dict]) -> list[dict]:
    """One row per evaluated epoch from the Trainer's logs: its evaluation, and the mean of the
    training losses logged since the previous one (one per epoch, or one per training.logging_steps)."""
    rows, losses = [], []
    for entry in log_history:
        if "loss" in entry:
            losses.append((entry["loss"], entry.get("learning_rate")))
        if "eval_accuracy" in entry:
            row = {"epoch": round(entry["epoch"] + 1e-9, 4)}
            if losses:
                row.update(train_loss=sum(loss for loss, _ in losses) / len(losses), learning_rate=losses[-1][1])
            row.update({k: entry[k] for k in ("eval_loss", "eval_accuracy", "eval_f1", "eval_macro_f1") if k in entry})
            rows.append(row)
            losses = []
    return rows


def best_epoch(history: list[dict], metric: str = "accuracy") -> float | None:
    """The first epoch with the best `metric` (training.metric_for_best), as BestEpochWeights kept it."""
    key, higher_is_better = BEST_METRICS[metric]
    sign = 1 if higher_is_better else -1
    return max(history, key=lambda row: sign * row[f"eval_{key}"])["epoch"] if history else None


def save_run(
    run_dir: Path,
    recipe: Recipe,
    run: Pipeline,
    metrics: dict,
    history: list[dict],
    wall: float,
    base_model: tuple[str, bool],
) -> None:
    label_names, budget_plan = run.splits.info["label_names"], run.plan
    base_model, relative = base_model
    for adapter in run.model.peft_config.values():  # PEFT would record this machine's path
        adapter.base_model_name_or_path = base_model
    # adapter_config.json + adapter_model.safetensors, head included; LoRA targets only linear layers,
    # so PEFT need not look the base model up (on the hub, for a name) to see if embeddings changed
    run.model.save_pretrained(run_dir, save_embedding_layers=False)
    frozen_head = frozen_head_weights(run.model.get_base_model(), recipe.model.head)
    if frozen_head:
        from safetensors.torch import save_file

        with rundir.atomic_file(run_dir / rundir.HEAD_WEIGHTS) as path:
            save_file(frozen_head, str(path))
    run.trainer.processing_class.save_pretrained(run_dir)
    rundir.write_json(run_dir / rundir.LABELS_JSON, label_names)
    rundir.write_json(run_dir / rundir.METRICS_JSON, metrics)
    rundir.write_rows(run_dir / rundir.HISTORY_CSV, history, HISTORY_COLUMNS)
    plot_history(history, run_dir / rundir.PLOTS)
    plot_confusion_matrix(metrics["confusion_matrix"], label_names, run_dir / rundir.CONFUSION_MATRIX_PNG)
    rundir.write_json(
        run_dir / rundir.RUN_JSON,
        {
            "recipe": recipe.to_dict() | {"model": recipe.to_dict()["model"] | {"name": base_model}},
            "base_model": base_model,  # a name, or a folder relative to the run: never this machine's path
            "base_model_relative_to_run": relative,
            "label_names": label_names,
            "data": run.splits.info,
            "speed": run.speed.to_dict(),
            "parameters": {
                "trainable": budget_plan.trainable,
                "total": budget_plan.total,
                "budget": budget_plan.budget,
                "lora": budget_plan.lora,
                "head": budget_plan.head,
            },
            "validation": {k: metrics[k] for k in ("accuracy", "f1", "macro_f1", "precision", "recall", "n")},
            "wall_seconds": round(wall, 2),
            "versions": package_versions(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu": cpu_info(),
        },
    )
    write_card(run_dir)  # replaces PEFT's empty template
