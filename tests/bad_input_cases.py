"""Every fault and bad input lorafit promises to handle, as data: the files to make, the command
to run, what the user must be told, and what must not be left behind.

Used by tests/test_bad_input.py (each case is a test) and by bench/reliability.py, which runs
the same cases and writes docs/RELIABILITY.md from what the user actually saw.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path

GOOD_ROWS = [
    ("Stocks rally as oil prices fall", 2),
    ("Team wins the cup final", 1),
    ("New chip doubles battery life", 3),
    ("Leaders meet for peace talks", 0),
] * 8


@dataclass
class Case:
    name: str
    files: dict  # file name -> bytes (written into the case's own folder)
    argv: list  # "{dir}" is the case folder, "{run}" a finished tiny run, "{recipe}" the tiny recipe
    expect: str  # a fragment of the one-line error; "" when the input must be handled without error
    absent: list = field(default_factory=list)  # outputs that must not exist afterwards
    preserved: str = "nothing was written"
    verify: object = None  # for handled inputs: (stdout, case folder) -> True when handled right


def _two_rows_evaluated(stdout: str, folder: Path) -> bool:
    return json.loads(stdout)["n"] == 2


def _submission_of_two_rows(stdout: str, folder: Path) -> bool:
    return (folder / "submission.csv").read_text().count("\n") == 3  # header + 2 rows


def csv_bytes(header: str, rows: list[tuple]) -> bytes:
    lines = [header] + [",".join(f'"{v}"' if isinstance(v, str) else str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def train(data: str, *extra: str) -> list:
    return [
        "train",
        "{recipe}",
        f"data.train={{dir}}/{data}",
        "data.validation_size=8",
        *extra,
        "--output-dir",
        "{dir}/run",
    ]


def predict(data: str, *extra: str) -> list:
    return ["predict", "{run}", "--input", f"{{dir}}/{data}", "--output", "{dir}/submission.csv", *extra]


CASES = [
    Case("missing data file", {}, train("nope.csv"), "nope.csv: file not found", ["run"]),
    Case("empty file", {"d.csv": b""}, train("d.csv"), "d.csv: file is empty", ["run"]),
    Case("header only", {"d.csv": b"text,label\n"}, train("d.csv"), "no data rows (columns: text, label)", ["run"]),
    Case(
        "wrong columns",
        {"d.csv": csv_bytes("title,category", GOOD_ROWS)},
        train("d.csv"),
        "not found (columns: title, category)",
        ["run"],
    ),
    Case(
        "missing label column",
        {"d.csv": csv_bytes("text,topic", GOOD_ROWS)},
        train("d.csv"),
        "label column 'label' not found",
        ["run"],
    ),
    Case(
        "empty text",
        {"d.csv": csv_bytes("text,label", GOOD_ROWS[:5] + [("", 1)] + GOOD_ROWS[5:])},
        train("d.csv"),
        "row 6 has an empty text",
        ["run"],
    ),
    Case(
        "NaN text",
        {
            "d.jsonl": (
                "\n".join(json.dumps({"text": t, "label": y}) for t, y in GOOD_ROWS[:3])
                + '\n{"text": NaN, "label": 1}\n'
            ).encode()
        },
        train("d.jsonl"),
        "row 4 has an empty text",
        ["run"],
    ),
    Case(
        "label out of range",
        {"d.csv": csv_bytes("text,label", GOOD_ROWS + [("Rates rise", 7)])},
        train("d.csv"),
        "has label 7, outside 0..3",
        ["run"],
    ),
    Case(
        "unknown label name",
        {
            "d.csv": csv_bytes(
                "text,label",
                [
                    (t, "Cooking" if i == 2 else n)
                    for i, (t, n) in enumerate(
                        [(t, ["World", "Sports", "Business", "Sci/Tech"][y]) for t, y in GOOD_ROWS]
                    )
                ],
            )
        },
        train("d.csv"),
        "unknown label 'Cooking'",
        ["run"],
    ),
    Case(
        "mixed label types",
        {"d.csv": csv_bytes("text,label", GOOD_ROWS[:3] + [("Rates rise", "Sports")])},
        train("d.csv"),
        "labels mix integers and names",
        ["run"],
    ),
    Case("non-UTF-8 bytes", {"d.csv": b'text,label\n"caf\xe9 opens",1\n'}, train("d.csv"), "not valid UTF-8", ["run"]),
    Case(
        "a single 5 MB text",
        {"d.csv": csv_bytes("text", [("word " * 1_000_000,), ("Team wins",)])},
        predict("d.csv"),
        "",
        preserved="handled: truncated to max_length, submission written",
        verify=_submission_of_two_rows,
    ),
    Case(
        "quotes and newlines inside CSV fields",
        {"d.csv": b'text,label\n"He said ""buy"",\nthen left",2\n"Two\nlines, one field",1\n'},
        ["evaluate", "{run}", "--data", "{dir}/d.csv", "--json"],
        "",
        preserved="handled: 2 rows read, quotes and newlines kept inside the text",
        verify=_two_rows_evaluated,
    ),
    Case(
        "recipe with an unknown key",
        {},
        ["plan", "{recipe}", "training.learning_rat=0.1"],
        "unknown key 'learning_rat'; did you mean 'learning_rate'?",
    ),
    Case(
        "recipe with a wrong type",
        {},
        ["plan", "{recipe}", "training.epochs=many"],
        "training.epochs must be a finite number",
    ),
    Case("recipe file missing", {}, ["plan", "{dir}/nope.yaml"], "recipe {dir}/nope.yaml not found"),
    Case(
        "target module matching nothing",
        {},
        ["plan", "{recipe}", "lora.targets=[querry]"],
        "lora target 'querry' matches no linear module (candidates:",
    ),
    Case(
        "budget exceeded",
        {"d.csv": csv_bytes("text,label", GOOD_ROWS)},
        train("d.csv", "budget.max_trainable=1000"),
        "exceed budget.max_trainable=1,000",
        ["run"],
    ),
    Case(
        "pickle without --trust-pickle",
        {"d.pkl": pickle.dumps({"text": ["a"], "label": [0]})},
        predict("d.pkl"),
        "pickle files can run arbitrary code",
        ["submission.csv"],
    ),
    Case(
        "pickle given to train",
        {"d.pkl": pickle.dumps({"text": ["a"], "label": [0]})},
        train("d.pkl"),
        "lorafit does not train from pickle files",
        ["run"],
    ),
    Case(
        "adapter of another base model",
        {},
        ["classify", "{dir}/other-base", "hello"],
        "does not fit the base model",
        preserved="the run directory is left as it was",
    ),
    Case(
        "adapter with another label count",
        {},
        ["classify", "{dir}/other-labels", "hello"],
        "does not fit the base model",
        preserved="the run directory is left as it was",
    ),
    Case("run directory missing", {}, ["classify", "{dir}/nope", "hello"], "run directory {dir}/nope not found"),
]


def prepare(case: Case, folder: Path, run: Path, recipe: Path, other_model: Path) -> dict:
    """Write the case's files; the adapter-mismatch cases get a copy of the run, edited."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in case.files.items():
        (folder / name).write_bytes(content)
    if case.name.startswith("adapter"):
        copy = folder / ("other-base" if "base" in case.name else "other-labels")
        shutil.copytree(run, copy)
        info = json.loads((copy / "run.json").read_text())
        model = info["recipe"]["model"]
        model["name"] = str((run / model["name"]).resolve())  # the copy moved away from the run's base model
        if "base" in case.name:
            info["recipe"]["model"]["name"] = str(other_model)
        else:
            info["label_names"] = info["label_names"][:3]
        (copy / "run.json").write_text(json.dumps(info))
    return {"dir": str(folder), "run": str(run), "recipe": str(recipe)}


def run_case(case: Case, folder: Path, run: Path, recipe: Path, other_model: Path) -> dict:
    """Run the command in this process; what the user saw, the exit status, and leftovers."""
    from lorafit.cli import main

    places = prepare(case, folder, run, recipe, other_model)
    argv = [a.format(**places) for a in case.argv]
    err, out = io.StringIO(), io.StringIO()
    traceback_text = ""
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code
        except BaseException:  # noqa: BLE001 - a traceback is exactly what this records
            status, traceback_text = 1, traceback.format_exc()
    message = [line for line in err.getvalue().splitlines() if line.startswith("lorafit: error:")]
    return {
        "status": status,
        "message": message[0] if message else "",
        "stderr": err.getvalue(),
        "stdout": out.getvalue(),
        "traceback": traceback_text or ("Traceback" in err.getvalue()) and err.getvalue(),
        "leftovers": [name for name in case.absent if (folder / name).exists()],
        "handled": status == 0 and (case.verify is None or case.verify(out.getvalue(), folder)),
        "expect": case.expect.format(**places),
    }
