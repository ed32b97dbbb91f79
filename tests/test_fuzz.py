"""Property-based tests: whatever bytes or overrides arrive, the loaders and the recipe parser
either load them correctly or raise the tool's own error (never anything else)."""

import json
import string
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorafit.config import DataConfig, Recipe, apply_overrides, load_recipe, recipe_from_dict
from lorafit.data import examples_from_table, read_table
from lorafit.errors import LorafitError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


def load_bytes(content: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(content)
        table = read_table(path)
        return table, examples_from_table(table, DataConfig(labels=LABELS), where=str(path))


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]))
def test_arbitrary_bytes_load_or_raise_lorafit_error(content, suffix):
    try:
        load_bytes(content, suffix)
    except LorafitError:
        pass


texts = st.text(alphabet=string.printable + "éü€—\u00a0", min_size=0, max_size=40)
labels = st.one_of(st.integers(-2, 6), st.sampled_from(LABELS + ["Cooking", ""]), st.none())


@FUZZ
@given(st.lists(st.tuples(texts, labels), min_size=0, max_size=12))
def test_csv_rows_load_exactly_or_raise_lorafit_error(rows):
    content = pd.DataFrame(rows, columns=["text", "label"]).to_csv(index=False).encode()
    try:
        _, examples = load_bytes(content, ".csv")
    except LorafitError:
        return
    # loaded: every row kept, in order, with its text and its label index
    assert len(examples) == len(rows)
    for (text, label), got_text, got_label in zip(rows, examples.texts, examples.labels):
        assert got_text.strip() and got_text.strip() == text.strip()
        expected = label if isinstance(label, int) else LABELS.index(label)
        assert got_label == expected


@FUZZ
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["text", "label", "title", "x"]),
            st.one_of(texts, labels, st.floats(allow_nan=True)),
            max_size=4,
        ),
        max_size=8,
    )
)
def test_jsonl_records_load_or_raise_lorafit_error(records):
    content = "\n".join(json.dumps(r) for r in records).encode()
    try:
        load_bytes(content, ".jsonl")
    except LorafitError:
        pass


keys = st.sampled_from(
    [
        "training.epochs",
        "training.learning_rate",
        "lora.r",
        "lora.targets",
        "data.max_length",
        "model.head",
        "lora.lora_dropout",
        "data.validation_size",
        "budget.max_trainable",
        "training.precision",
        "data.labels",
        "training",
        "lora.rank_pattern",
        "nope.key",
        "search.space",
        "data.length_percentiles",
        "model",
    ]
)
values = st.one_of(
    st.integers(-5, 5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(0, 12), st.text(max_size=6)), max_size=3),
    st.none(),
    st.booleans(),
)


@FUZZ
@given(st.lists(st.tuples(keys, values), max_size=4))
def test_overrides_build_a_valid_recipe_or_raise_lorafit_error(pairs):
    overrides = [f"{key}={json.dumps(value)}" for key, value in pairs]
    try:
        recipe = recipe_from_dict(apply_overrides(Recipe().to_dict(), overrides))
    except LorafitError:
        return
    assert recipe_from_dict(recipe.to_dict()) == recipe  # what loaded is a fixed point


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_recipe_text_loads_or_raises_lorafit_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_recipe(path)
        except LorafitError:
            pass
