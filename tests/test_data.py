import csv
from collections import Counter

import pytest

from lorafit.config import DataConfig, ModelConfig
from lorafit.data import (
    AGNEWS_LABELS,
    filter_by_length,
    load_examples,
    prepare_splits,
    read_table,
    stratified_split,
    token_lengths,
)
from lorafit.errors import LorafitError
from lorafit.model import load_tokenizer


@pytest.fixture(scope="module")
def slice_200(agnews_rows):
    return agnews_rows.iloc[:200].reset_index(drop=True)


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "json", "lines.json", "parquet"])
def test_every_format_loads_the_same_examples(slice_200, tmp_path, suffix):
    path = tmp_path / f"train.{suffix}"
    if suffix == "json":  # one JSON array of rows
        slice_200.to_json(path, orient="records", force_ascii=False)
    elif suffix == "lines.json":  # JSON Lines under .json, as `datasets` writes it
        slice_200.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == "csv":
        slice_200.to_csv(path, index=False)
    elif suffix == "tsv":
        slice_200.assign(text=slice_200.text.str.replace("\t", " ")).to_csv(path, sep="\t", index=False)
    elif suffix == "jsonl":
        slice_200.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        slice_200.to_parquet(path)
    examples = load_examples(DataConfig(train=str(path)))
    assert len(examples) == 200
    assert examples.labels == slice_200.label.tolist()
    assert examples.texts[5] == slice_200.text[5].strip()
    assert examples.label_names == ["0", "1", "2", "3"]


def test_classic_headerless_agnews_csv_joins_title_and_description(slice_200, tmp_path):
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, quoting=csv.QUOTE_ALL)
        for text, label in zip(slice_200.text, slice_200.label):
            title, _, description = text.partition(" ")
            writer.writerow([label + 1, title, description])
    examples = load_examples(DataConfig(train=str(path)))
    assert examples.label_names == AGNEWS_LABELS
    assert examples.labels == slice_200.label.tolist()
    assert examples.texts[0] == slice_200.text[0].strip()


def test_a_headed_label_title_description_csv_keeps_its_labels(tmp_path):
    path = tmp_path / "headed.csv"
    path.write_text(
        "label,title,description\n2,Stocks rally,Oil falls\n3,New chip,Longer battery\n1,Cup final,Team wins\n",
        encoding="utf-8",
    )
    examples = load_examples(DataConfig(train=str(path), text_columns=["title", "description"], labels=AGNEWS_LABELS))
    assert examples.labels == [2, 3, 1]  # read as they are: only the headerless classic file is 1-based
    assert examples.texts[0] == "Stocks rally Oil falls"


def test_title_and_description_columns_with_label_names(slice_200, tmp_path):
    table = slice_200.assign(
        title=slice_200.text.str.split(" ").str[0],
        body=slice_200.text.str.split(" ", n=1).str[1],
        topic=[AGNEWS_LABELS[i] for i in slice_200.label],
    ).drop(columns=["text", "label"])
    path = tmp_path / "named.csv"
    table.to_csv(path, index=False)
    config = DataConfig(train=str(path), text_columns=["title", "body"], label_column="topic", labels=AGNEWS_LABELS)
    examples = load_examples(config)
    assert examples.labels == slice_200.label.tolist()
    assert examples.texts[3] == slice_200.text[3].strip()
    inferred = load_examples(DataConfig(train=str(path), text_columns=["title", "body"], label_column="topic"))
    assert inferred.label_names == sorted(set(table.topic))


def test_missing_columns_are_listed(slice_200, tmp_path):
    path = tmp_path / "train.csv"
    slice_200.to_csv(path, index=False)
    with pytest.raises(LorafitError, match=r"text column 'body' not found \(columns: text, label\)"):
        load_examples(DataConfig(train=str(path), text_columns=["body"]))
    with pytest.raises(LorafitError, match=r"label column 'topic' not found"):
        load_examples(DataConfig(train=str(path), label_column="topic"))


def test_bad_labels_name_the_row(slice_200, tmp_path):
    path = tmp_path / "train.csv"
    table = slice_200.astype({"label": object})
    table.loc[7, "label"] = "Weather"
    table.to_csv(path, index=False)
    with pytest.raises(LorafitError, match=r"labels mix integers and names \(row 8: 'Weather'\)"):
        load_examples(DataConfig(train=str(path)))
    with pytest.raises(LorafitError, match=r"row 1 has label 9, outside 0..3"):
        _write_and_load(tmp_path, slice_200.assign(label=[9] + slice_200.label.tolist()[1:]), AGNEWS_LABELS)
    with pytest.raises(LorafitError, match=r"row 2 has unknown label 'Weather' \(labels: World, Sports"):
        _write_and_load(tmp_path, slice_200.assign(label=["World", "Weather"] * 100), AGNEWS_LABELS)


def _write_and_load(tmp_path, table, labels):
    path = tmp_path / "labels.csv"
    table.to_csv(path, index=False)
    return load_examples(DataConfig(train=str(path), labels=labels))


def test_empty_text_and_pickle_are_refused(slice_200, tmp_path):
    with pytest.raises(LorafitError, match="row 3 has an empty text"):
        _write_and_load(tmp_path, slice_200.assign(text=["a", "b", "  "] + slice_200.text.tolist()[3:]), None)
    pickled = tmp_path / "test.pkl"
    slice_200.to_pickle(pickled)
    with pytest.raises(LorafitError, match="pass --trust-pickle"):
        read_table(pickled)
    with pytest.raises(LorafitError, match="does not train from pickle files.*convert it to .parquet or .csv"):
        load_examples(DataConfig(train=str(pickled)))  # training offers no flag, so none is suggested
    assert len(read_table(pickled, trust_pickle=True)) == 200


def test_stratified_split_by_count_keeps_class_shares_and_is_seeded(agnews_csv):
    pool = load_examples(DataConfig(train=str(agnews_csv)))
    train, validation = stratified_split(pool, 640, seed=42, what="test")
    assert (len(train), len(validation)) == (len(pool) - 640, 640)
    pool_share = {k: v / len(pool) for k, v in Counter(pool.labels).items()}
    for label, count in Counter(validation.labels).items():
        assert abs(count / 640 - pool_share[label]) < 0.01
    again = stratified_split(pool, 640, seed=42, what="test")[1]
    other = stratified_split(pool, 640, seed=7, what="test")[1]
    assert again.texts == validation.texts and other.texts != validation.texts
    assert not set(train.texts) & set(validation.texts)


def test_split_by_fraction_and_limit(agnews_csv, tmp_path):
    splits = prepare_splits(DataConfig(train=str(agnews_csv), limit=1000, validation_size=0.2), tokenizer=None)
    assert (splits.info["train_rows"], splits.info["validation_rows"]) == (800, 200)
    assert splits.info["rows"] == 10_646


def test_train_limit_samples_training_rows_and_keeps_the_whole_files_validation_split(agnews_csv):
    whole = prepare_splits(DataConfig(train=str(agnews_csv), validation_size=0.15), tokenizer=None)
    capped = prepare_splits(DataConfig(train=str(agnews_csv), validation_size=0.15, train_limit=3000), tokenizer=None)
    assert capped.validation.texts == whole.validation.texts and len(whole.validation) == 1597
    assert len(capped.train) == 3000 and set(capped.train.texts) <= set(whole.train.texts)
    shares = {k: v / len(whole.train) for k, v in Counter(whole.train.labels).items()}
    assert all(abs(n / 3000 - shares[k]) < 0.01 for k, n in Counter(capped.train.labels).items())


def test_length_filter_drops_training_rows_outside_percentiles(agnews_csv, roberta_dir):
    tokenizer = load_tokenizer(ModelConfig(name=str(roberta_dir)))
    config = DataConfig(train=str(agnews_csv), limit=2000, validation_size=200, length_percentiles=[1, 99])
    splits = prepare_splits(config, tokenizer)
    lengths = token_lengths(tokenizer, splits.train.texts)
    assert 20 <= splits.info["length_filter"] <= 60  # about 2% of 1,800 rows
    assert lengths.min() >= splits.info["min_tokens"] and lengths.max() <= splits.info["max_tokens"]
    assert splits.info["validation_rows"] == 200  # validation rows are never filtered
    unfiltered = prepare_splits(DataConfig(train=str(agnews_csv), limit=2000, validation_size=200), tokenizer)
    assert len(unfiltered.train) - len(splits.train) == splits.info["length_filter"]
    assert splits.validation.texts == unfiltered.validation.texts


def test_filter_by_length_keeps_rows_inside_the_range():
    import numpy as np

    from lorafit.data import Examples

    examples = Examples([f"t{i}" for i in range(101)], [i % 2 for i in range(101)], ["a", "b"])
    kept = filter_by_length(examples, np.arange(101), [1, 99])
    assert kept.texts == [f"t{i}" for i in range(1, 100)]


def test_atomic_writes_leave_the_old_file_or_the_whole_new_one(tmp_path):
    from lorafit.rundir import atomic_file, write_text

    target = write_text(tmp_path / "metrics.json", "old")
    with pytest.raises(RuntimeError), atomic_file(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with atomic_file(target) as first, atomic_file(target) as second:  # two writers: two temporary names
        assert first != second
        first.write_text("one")
        second.write_text("two")
    assert target.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
