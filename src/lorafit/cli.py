"""`lorafit plan | train | search | baseline | evaluate | predict | classify | serve | export | push | card |
info | cache | schema`: parse, call the library, print."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import typing
import warnings

from .cache import PARTS, cache_parts, clear_cache, human_size
from .choices import BaselineClassifier, InferencePrecision
from .errors import LorafitError
from .packaged import cache_root


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's own parser."""
    parser = argparse.ArgumentParser(prog="lorafit", description=__doc__.split(":")[0], allow_abbrev=False)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser = functools.partial(commands.add_parser, allow_abbrev=False)  # --npr is no --nproc

    plan = commands.add_parser("plan", help="count trainable parameters of a recipe, no weights loaded")
    plan.add_argument("recipe")
    plan.add_argument("overrides", nargs="*", metavar="key.sub=value")
    plan.add_argument("--json", action="store_true", help="print one JSON object")
    plan.add_argument(
        "--fill-budget",
        nargs="?",
        type=int,
        const=0,
        metavar="N",
        help="the largest LoRA ranks that fit N trainable parameters (default: budget.max_trainable)",
    )
    plan.add_argument(
        "--option",
        default="uniform",
        choices=["uniform", "per-module", "per-layer"],
        help="with --apply: which --fill-budget option to write",
    )
    plan.add_argument("--apply", metavar="NEW_RECIPE", help="with --fill-budget: write the option as a new recipe")

    train = commands.add_parser("train", help="train a recipe and write a run directory")
    train.add_argument("recipe")
    train.add_argument("overrides", nargs="*", metavar="key.sub=value")
    train.add_argument("--output-dir", help="run directory (default runs/<recipe name>)")
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="RUN",
        help="continue an interrupted run (default: the recipe's run directory) from its newest complete checkpoint",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine (torchrun; gloo on CPU, NCCL on GPUs); "
        "training.batch_size is per process",
    )

    search = commands.add_parser("search", help="Optuna search over the recipe's search.space, inside the budget")
    search.add_argument("recipe")
    search.add_argument("overrides", nargs="*", metavar="key.sub=value")
    search.add_argument("--trials", type=int, help="default: search.trials of the recipe")
    search.add_argument("--output-dir", help="default runs/<recipe name>-search")

    baseline = commands.add_parser("baseline", help="TF-IDF + a linear classifier on the same split")
    baseline.add_argument("overrides", nargs="*", metavar="key.sub=value")
    baseline.add_argument("--data", required=True, help="labelled .csv/.tsv/.jsonl/.parquet file")
    baseline.add_argument("--recipe", help="take the split and columns from this recipe (default: the defaults)")
    baseline.add_argument("--json", action="store_true", help="print one JSON object")
    baseline.add_argument(
        "--classifier",
        choices=typing.get_args(BaselineClassifier),
        default=typing.get_args(BaselineClassifier)[0],
        help="the linear model on the TF-IDF features",
    )

    evaluate = _run_command(commands, "evaluate", "metrics of a run on a labelled file", reads_files=True)
    evaluate.add_argument(
        "--data", required=True, help="labelled .csv/.tsv/.jsonl/.parquet file, or a Hugging Face dataset (--split)"
    )
    evaluate.add_argument("--label-column", help="default: the run's data.label_column")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    predict = _run_command(
        commands, "predict", "write a submission file (ID,Label) for unlabelled texts", reads_files=True
    )
    predict.add_argument(
        "--input",
        required=True,
        help=".csv/.tsv/.jsonl/.parquet (a pickle needs --trust-pickle), or a Hugging Face dataset (--split)",
    )
    predict.add_argument("--output", default="submission.csv")
    predict.add_argument("--probs", action="store_true", help="add a probability column per class")

    serve = _run_command(commands, "serve", "an HTTP API with micro-batching and a page to try the run")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-texts", type=int, default=64, help="texts per request")
    serve.add_argument("--max-chars", type=int, default=10_000, help="characters per text")
    serve.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="longest a batch waits for more concurrent requests "
        "(it goes sooner once as many texts as the previous batch held have arrived)",
    )
    serve.add_argument("--no-batching", action="store_true", help="one forward pass per request (for comparison)")

    export = commands.add_parser("export", help="a run as a folder that needs no lorafit: transformers or ONNX")
    export.add_argument("run")
    export.add_argument("--output", required=True, help="the folder to write (must not exist)")
    export.add_argument(
        "--format",
        choices=["transformers", "onnx"],
        default="transformers",
        help="transformers: LoRA merged, a stock AutoModelForSequenceClassification folder; onnx: the same "
        "model as an ONNX graph for onnxruntime",
    )
    export.add_argument("--int8", action="store_true", help="with --format onnx: dynamic int8 weights")

    push = commands.add_parser("push", help="upload a run (adapter, card, plots) to a Hugging Face Hub repository")
    push.add_argument("run")
    push.add_argument("--repo-id", required=True, help="user/name; created if it does not exist")
    push.add_argument("--merged", action="store_true", help="upload the stock transformers export instead")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--stage-only", metavar="DIR", help="write the folder that would be uploaded, upload nothing")

    card = commands.add_parser("card", help="(re)write a run's model card, README.md, from the run")
    card.add_argument("run")

    info = commands.add_parser("info", help="this machine: CPU, what lorafit runs by default, allocator, versions")
    info.add_argument("--json", action="store_true", help="print one JSON object")

    cache = commands.add_parser("cache", help="what lorafit keeps in $LORAFIT_CACHE, and clearing parts of it")
    cache.add_argument(
        "--clear", nargs="+", choices=[*PARTS, "all"], metavar="PART", help=f"remove: {', '.join(PARTS)} or all"
    )

    schema = commands.add_parser("schema", help="the recipe schema: JSON Schema for editors, or the Markdown key table")
    schema.add_argument("--markdown", action="store_true", help="the table of recipe keys (as in the README)")

    classify = _run_command(commands, "classify", "label and probabilities of texts given on the command line")
    classify.add_argument("texts", nargs="+", help="texts (a sentence-pair run: two by two, first second)")
    classify.add_argument("--json", action="store_true", help="print one JSON array")
    return parser, commands.choices


def _run_command(commands, name: str, help: str, reads_files: bool = False) -> argparse.ArgumentParser:
    """A command that loads a finished run directory."""
    command = commands.add_parser(name, help=help)
    command.add_argument("run")
    command.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="RUN",
        help="more runs (same labels) whose class probabilities are averaged with RUN's",
    )
    command.add_argument(
        "--precision",
        choices=typing.get_args(InferencePrecision),
        default="auto",
        help="the inference path. auto: the one measured fastest on this kind of CPU (bench/PATHS.md); "
        "bf16 / fp16: the merged model stored in that precision; int8: dynamic int8 linear layers in "
        "PyTorch; ort-fp32 / ort-int8: the merged model exported to ONNX, run by onnxruntime",
    )
    if reads_files:
        command.add_argument("--text-columns", nargs="+", help="default: the run's data.text_columns")
        command.add_argument("--split", default="test", help="the split, when the data is a Hugging Face dataset")
        command.add_argument("--subset", help="its configuration (data.subset), when it has several")
        command.add_argument("--trust-pickle", action="store_true", help="allow a pickled input file")
    return command


def cmd_plan(args) -> int:
    from .budget import format_plan, plan
    from .config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.fill_budget is not None:
        return _fill_budget(recipe, args)
    if args.apply:
        raise LorafitError("--apply needs --fill-budget")
    result = plan(recipe)
    print(json.dumps(result.to_dict()) if args.json else format_plan(result))
    if not result.fits:
        print(
            f"lorafit: error: {result.trainable:,} trainable parameters exceed the budget of {result.budget:,}",
            file=sys.stderr,
        )
        return LorafitError.exit_code
    return 0


def _fill_budget(recipe, args) -> int:
    from .budget import fill_budget, format_options, with_ranks
    from .config import write_recipe

    budget = args.fill_budget or recipe.budget.max_trainable
    options = fill_budget(recipe, budget)
    if args.json:
        print(json.dumps([o.__dict__ for o in options]))
    else:
        print(format_options(options, budget))
    if args.apply:
        chosen = {o.name: o for o in options}.get(args.option)
        if chosen is None:
            raise LorafitError(f"option '{args.option}' does not fit the budget here; choose one of the table")
        new = with_ranks(recipe, chosen.r, chosen.rank_pattern)
        new = new.model_copy(update={"budget": new.budget.model_copy(update={"max_trainable": budget})})
        path = write_recipe(
            new,
            args.apply,
            f"lorafit plan {args.recipe} --fill-budget {budget} --option {args.option}: {chosen.trainable:,} trainable",
        )
        print(f"wrote {path}")
    return 0


def cmd_search(args) -> int:
    from .config import load_recipe
    from .search import run_search

    result = run_search(load_recipe(args.recipe, args.overrides), args.output_dir, args.trials)
    for row in result.trials:
        score = f"accuracy {row['accuracy']:.4f}" if "accuracy" in row else row.get("state", "failed")
        print(f"trial {row['trial']:>3}  {score:<16} r={row['lora.r']:<3} {row['trainable']:>9,} trainable")
    print(
        f"best validation accuracy {result.best_accuracy:.4f}; recipe written to {result.best_recipe}; "
        f"table {result.folder / 'trials.csv'}, plot {result.folder / 'trials.png'}"
    )
    return 0


def cmd_baseline(args) -> int:
    from .baseline import run_baseline
    from .config import Recipe, load_recipe, recipe_from_dict

    overrides = [f"data.train={args.data}", *args.overrides]
    if args.recipe:
        recipe = load_recipe(args.recipe, overrides)
    else:
        from .config import apply_overrides

        recipe = recipe_from_dict(apply_overrides(Recipe().to_dict(), overrides), source="baseline options")
    metrics = run_baseline(recipe, args.classifier)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(
            f"{metrics['model']}: validation accuracy {metrics['accuracy']:.4f}, weighted F1 {metrics['f1']:.4f}, "
            f"macro F1 {metrics['macro_f1']:.4f} "
            f"(n={metrics['n']}, {metrics['train_rows']} training rows, {metrics['seconds']} s)"
        )
    return 0


def cmd_train(args) -> int:
    from .config import load_recipe
    from .distributed import launch
    from .resume import check_run_dir
    from .train import run_directory, train

    output_dir = args.resume if isinstance(args.resume, str) else args.output_dir
    if args.resume and args.overwrite:
        raise LorafitError("--resume continues a run and --overwrite replaces it: choose one")
    recipe = load_recipe(args.recipe, args.overrides)
    if args.nproc != 1 and "LOCAL_RANK" not in os.environ:  # torchrun sets LOCAL_RANK in the processes it starts
        # a bad recipe or run directory fails here once, not in N processes
        check_run_dir(run_directory(recipe, output_dir), recipe, bool(args.resume), args.overwrite)
        return launch(args.nproc, args.argv)
    result = train(recipe, output_dir=output_dir, resume=bool(args.resume), overwrite=args.overwrite)
    if not result.wrote_artifacts:  # another rank of a data-parallel run: rank 0 reports
        return 0
    m = result.metrics
    print(
        f"run {result.run_dir}: validation accuracy {m['accuracy']:.4f}, weighted F1 {m['f1']:.4f}, "
        f"macro F1 {m['macro_f1']:.4f} "
        f"(n={m['n']}, best epoch {m['best_epoch']}), {result.plan.trainable:,} trainable, "
        f"{result.wall_seconds / 60:.1f} min"
    )
    return 0


def _load(args):
    from .inference import load_runs

    return load_runs([args.run, *args.ensemble], precision=args.precision)


def _file_options(args) -> dict:
    """How evaluate and predict read their data file or hub split."""
    options = ("trust_pickle", "text_columns", "subset", "split")
    return {name: getattr(args, name) for name in options}


def cmd_evaluate(args) -> int:
    from .inference import evaluate_file

    metrics = evaluate_file(_load(args), args.data, label_column=args.label_column, **_file_options(args))
    if args.json:
        print(json.dumps(metrics))
    else:
        print(
            f"n={metrics['n']} accuracy {metrics['accuracy']:.4f}  weighted precision {metrics['precision']:.4f}"
            f"  recall {metrics['recall']:.4f}  F1 {metrics['f1']:.4f}  macro F1 {metrics['macro_f1']:.4f}"
        )
        for name, scores in metrics["per_class"].items():
            print(
                f"  {name:<20} precision {scores['precision']:.4f}  recall {scores['recall']:.4f}  "
                f"F1 {scores['f1']:.4f}  support {scores['support']}"
            )
    return 0


def cmd_predict(args) -> int:
    from .inference import predict_file

    path = predict_file(_load(args), args.input, args.output, probs=args.probs, **_file_options(args))
    print(f"wrote {path}")
    return 0


def cmd_classify(args) -> int:
    from .data import flat_text
    from .inference import classify, is_pair_run, pairs_from_arguments

    runs = _load(args)
    results = classify(runs, pairs_from_arguments(args.texts) if is_pair_run(runs) else args.texts)
    if args.json:
        print(json.dumps(results))
        return 0
    for result in results:
        ranked = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])
        scores = "  ".join(f"{k} {v:.3f}" for k, v in ranked)
        print(f"{result['label']}\t{scores}\t{flat_text(result['text'])[:60]}")
    return 0


def cmd_serve(args) -> int:
    from .serve import Limits, serve

    if min(args.max_texts, args.max_chars) < 1 or args.max_wait_ms < 0:
        raise LorafitError("--max-texts and --max-chars must be at least 1, --max-wait-ms at least 0")
    serve(
        _load(args),
        args.host,
        args.port,
        Limits(args.max_texts, args.max_chars, args.max_wait_ms),
        batching=not args.no_batching,
    )
    return 0


def cmd_export(args) -> int:
    from .export import export_run

    print(f"wrote {export_run(args.run, args.output, args.format, args.int8)}")
    return 0


def cmd_push(args) -> int:
    from pathlib import Path

    from .push import push, stage

    if args.stage_only:
        folder = stage(Path(args.run), Path(args.stage_only), args.merged)
        print(f"staged {folder} for {args.repo_id}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
        return 0
    print(f"pushed {args.run} to {push(args.run, args.repo_id, args.merged, args.private)}")
    return 0


def cmd_card(args) -> int:
    from pathlib import Path

    from .card import write_card
    from .rundir import read_run_info

    read_run_info(args.run)  # a finished run, or the error that says what is missing
    print(f"wrote {write_card(Path(args.run))}")
    return 0


def cmd_cache(args) -> int:
    if args.clear:
        for part in clear_cache(list(PARTS) if "all" in args.clear else args.clear):
            print(f"removed {part.folder}: {part.entries} entries, {human_size(part.size)}")
        return 0
    parts = cache_parts()
    print(f"lorafit cache: {cache_root()} (LORAFIT_CACHE)")
    for part in parts:
        print(f"{part.name:<14}{part.entries:>5} entries{human_size(part.size):>11}  {PARTS[part.name]}")
    total = human_size(sum(part.size for part in parts))
    print(f"{'total':<27}{total:>11}  (lorafit cache --clear PART ... removes parts)")
    return 0


def cmd_info(args) -> int:
    from .device import cpu_label, machine_report

    report = machine_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"cpu\t{cpu_label(report.pop('cpu'))}")
    versions = report.pop("versions")
    for key, value in report.items():
        print(f"{key}\t{value}")
    print("versions\t" + ", ".join(f"{name} {version}" for name, version in versions.items()))
    return 0


def cmd_schema(args) -> int:
    from .config import json_schema, keys_markdown

    print(keys_markdown() if args.markdown else json.dumps(json_schema(), indent=2), end="\n" * (not args.markdown))
    return 0


COMMANDS = {
    "plan": cmd_plan,
    "train": cmd_train,
    "search": cmd_search,
    "baseline": cmd_baseline,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "classify": cmd_classify,
    "serve": cmd_serve,
    "export": cmd_export,
    "push": cmd_push,
    "card": cmd_card,
    "info": cmd_info,
    "cache": cmd_cache,
    "schema": cmd_schema,
}


def parse(argv: list[str]) -> argparse.Namespace:
    """Overrides may come before or after options (`train R --overwrite a=1 b=2`): the command's own
    parser reads them intermixed, which argparse cannot do through subparsers."""
    parser, commands = _parser()
    at = next((i for i, arg in enumerate(argv) if arg in commands), None)
    if at is None or any(arg != "--debug" for arg in argv[:at]):
        return parser.parse_args(argv)  # help, or the usage error
    args = commands[argv[at]].parse_intermixed_args(argv[at + 1 :])
    args.command, args.debug, args.argv = argv[at], "--debug" in argv[:at], argv
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else list(argv))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # raised inside PEFT for every model it wraps; nothing a user can act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        return COMMANDS[args.command](args)
    except LorafitError as e:
        if args.debug:
            raise
        print(f"lorafit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("lorafit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
