"""Load, clean, split and tokenize labelled text: one row of a file becomes one training example."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import DataConfig
from .errors import LorafitError
from .packaged import cache_root
from .rundir import build_folder

AGNEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pkl": "pickle",
    ".pickle": "pickle",
}
CLASSIC_AGNEWS = "lorafit_classic_agnews"  # DataFrame.attrs key: read as the headerless "3","title","description"
_INT = re.compile(r"^\s*[+-]?\d+\s*$")


@dataclass
class Examples:
    """Texts (or, with data.pair, (first, second) pairs) with integer labels 0..K-1 and the K label names."""

    texts: list[str] | list[tuple[str, str]]
    labels: list[int]
    label_names: list[str]
    source: str = ""
    dropped: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> Examples:
        return Examples(
            [self.texts[i] for i in indices], [self.labels[i] for i in indices], self.label_names, self.source
        )

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels):
            digest.update(f"{label}\t{text}\n".encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:16]


def is_local_file(name: str) -> bool:
    """A data file (or what names one); anything else is a Hugging Face dataset: a hub id or a folder."""
    return Path(name).suffix.lower() in SUFFIX_FORMATS or Path(name).is_file()


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    kind = SUFFIX_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise LorafitError(
            f"{path}: unknown file type '{path.suffix}' (use .csv, .tsv, .jsonl, .parquet, or set data.format)"
        )
    if kind == "csv" and _looks_like_headerless_agnews(path):
        return "agnews_csv"
    return kind


def _looks_like_headerless_agnews(path: Path) -> bool:
    # the classic AG News CSV: "3","title","description" with no header row
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            first = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return len(first) == 3 and bool(_INT.match(first[0]))


def read_table(path: str | Path, fmt: str = "auto", trust_pickle: bool | None = False) -> pd.DataFrame:
    """Read a local file into a DataFrame of its columns, refusing pickles unless trusted
    (trust_pickle=None: refused without offering a flag)."""
    path = Path(path)
    if not path.is_file():
        raise LorafitError(f"{path}: file not found")
    kind = detect_format(path, fmt)
    if path.stat().st_size == 0:
        raise LorafitError(f"{path}: file is empty")
    if kind == "pickle":
        return _read_pickle(path, trust_pickle)
    try:
        if kind in ("csv", "tsv"):
            table = pd.read_csv(
                path,
                sep="," if kind == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8",
            )
        elif kind == "agnews_csv":
            table = pd.read_csv(
                path,
                header=None,
                names=["label", "title", "description"],
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8",
            )
            table.attrs[CLASSIC_AGNEWS] = True  # decided here, from the file: never again from column names
        elif kind in ("json", "jsonl"):
            table = pd.read_json(path, lines=not (kind == "json" and _starts_with(path, "[")), dtype=False)
        elif kind == "parquet":
            table = pd.read_parquet(path)
        else:
            raise LorafitError(f"{path}: unsupported format '{kind}'")
    except UnicodeDecodeError as e:
        raise LorafitError(f"{path}: not valid UTF-8 (byte {e.start}: {e.reason})") from None
    except (ValueError, pd.errors.ParserError, OSError) as e:
        raise LorafitError(f"{path}: cannot be read as {kind}: {str(e).splitlines()[0]}") from None
    if len(table) == 0:
        raise LorafitError(f"{path}: no data rows (columns: {', '.join(map(str, table.columns)) or 'none'})")
    return table


def _starts_with(path: Path, character: str) -> bool:
    """A .json file is either one JSON array of rows or JSON Lines (as `datasets` writes .json)."""
    with open(path, encoding="utf-8") as handle:
        return handle.read(4096).lstrip().startswith(character)


def _read_pickle(path: Path, trust_pickle: bool | None) -> pd.DataFrame:
    if trust_pickle is None:  # training reads the recipe's files: no flag can vouch for them
        raise LorafitError(
            f"{path}: lorafit does not train from pickle files, which can run arbitrary code "
            "when loaded; convert it to .parquet or .csv first"
        )
    if not trust_pickle:
        raise LorafitError(
            f"{path}: pickle files can run arbitrary code when loaded; pass --trust-pickle if you trust its source"
        )
    table = pd.read_pickle(path)
    if hasattr(table, "to_pandas"):  # a datasets.Dataset, as Kaggle competitions ship it
        table = table.to_pandas()
    if isinstance(table, dict):
        table = pd.DataFrame(table)
    if not isinstance(table, pd.DataFrame):
        raise LorafitError(f"{path}: pickle holds a {type(table).__name__}, not a table")
    return table


def join_texts(table: pd.DataFrame, columns: list[str], where: str, pair: bool = False) -> list:
    """One text per row, its columns joined by a space; with `pair`, a (first, second) tuple that
    the tokenizer encodes as a sentence pair (with the model's separator between them)."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise LorafitError(
            f"{where}: text column '{missing[0]}' not found (columns: {', '.join(map(str, table.columns))})"
        )
    texts = []
    parts = [table[c].tolist() for c in columns]
    for row, values in enumerate(zip(*parts), start=1):
        pieces = [str(v).strip() if not _is_missing(v) else "" for v in values]
        text = tuple(pieces) if pair else " ".join(p for p in pieces if p)
        if not all(text) if pair else not text:
            raise LorafitError(f"{where}: row {row} has an empty text in column(s) {', '.join(columns)}")
        texts.append(text)
    return texts


def flat_text(text: str | tuple[str, str]) -> str:
    """A sentence pair as one string, for what reads plain text (TF-IDF, the predictions file)."""
    return text if isinstance(text, str) else " | ".join(text)


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def encode_labels(values: list, label_names: list[str] | None, where: str) -> tuple[list[int], list[str]]:
    """Integer labels stay (0..K-1); label names map through `label_names` or their sorted set."""
    kinds = []
    for row, value in enumerate(values, start=1):
        if _is_missing(value) or (isinstance(value, str) and not value.strip()) or isinstance(value, bool):
            raise LorafitError(f"{where}: row {row} has no label")
        is_int = (
            isinstance(value, (int, np.integer))
            or (isinstance(value, float) and value.is_integer())
            or (isinstance(value, str) and bool(_INT.match(value)))
        )
        kinds.append(is_int)
    if all(kinds):
        ints = [int(float(v)) if not isinstance(v, str) else int(v) for v in values]
        count = len(label_names) if label_names else max(ints) + 1
        for row, value in enumerate(ints, start=1):
            if not 0 <= value < count:
                raise LorafitError(f"{where}: row {row} has label {value}, outside 0..{count - 1}")
        return ints, list(label_names) if label_names else [str(i) for i in range(count)]
    if any(kinds):
        row = kinds.index(True) + 1 if not kinds[0] else kinds.index(False) + 1
        raise LorafitError(f"{where}: labels mix integers and names (row {row}: {values[row - 1]!r})")
    names = [str(v).strip() for v in values]
    known = list(label_names) if label_names else sorted(set(names))
    index = {name: i for i, name in enumerate(known)}
    for row, name in enumerate(names, start=1):
        if name not in index:
            raise LorafitError(f"{where}: row {row} has unknown label '{name}' (labels: {', '.join(known)})")
    return [index[n] for n in names], known


def examples_from_table(
    table: pd.DataFrame, cfg: DataConfig, where: str, label_names: list[str] | None = None
) -> Examples:
    text_columns, label_names = cfg.text_columns, label_names or cfg.labels
    if table.attrs.get(CLASSIC_AGNEWS):
        text_columns = ["title", "description"]
        table = table.assign(label=[_shift_agnews_label(v, row, where) for row, v in enumerate(table["label"], 1)])
        label_names = label_names or AGNEWS_LABELS
    if cfg.label_column not in table.columns:
        raise LorafitError(
            f"{where}: label column '{cfg.label_column}' not found (columns: {', '.join(map(str, table.columns))})"
        )
    texts = join_texts(table, text_columns, where, pair=cfg.pair)
    labels, names = encode_labels(table[cfg.label_column].tolist(), label_names, where)
    return Examples(texts, labels, names, source=where)


def _shift_agnews_label(value: str, row: int, where: str) -> int:
    if not _INT.match(str(value)) or not 1 <= int(value) <= 4:
        raise LorafitError(f"{where}: row {row} has label {value!r}; classic AG News labels are 1..4")
    return int(value) - 1


def load_examples(
    cfg: DataConfig,
    source: str | None = None,
    split: str | None = None,
    label_names: list[str] | None = None,
    trust_pickle: bool | None = None,
) -> Examples:
    """Labelled examples from a local file or, when `source` is no file, a Hugging Face dataset."""
    table, where, declared = read_source(source or cfg.train, cfg, split or cfg.split, trust_pickle)
    names = label_names or (cfg.labels or declared if declared else None)
    return examples_from_table(table, cfg, where=where, label_names=names)


def read_source(
    source: str, cfg: DataConfig, split: str, trust_pickle: bool | None = None
) -> tuple[pd.DataFrame, str, list[str] | None]:
    """(table, where it came from, label names the dataset declares): a local file, or a split of a
    Hugging Face dataset (a hub id, or a local dataset folder) in its configuration `data.subset`."""
    if is_local_file(source):
        return read_table(source, cfg.format, trust_pickle=trust_pickle), str(source), None
    import datasets

    where = f"{source}{f'/{cfg.subset}' if cfg.subset else ''}[{split}]"
    try:
        dataset = datasets.load_dataset(source, cfg.subset, split=split)
    except Exception as e:  # the hub raises many types: offline, missing, gated, no such split
        raise LorafitError(
            f"dataset {where} could not be loaded: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
            "give a local file with data.train=path/to/file.csv"
        ) from None
    feature = dataset.features.get(cfg.label_column)
    return dataset.to_pandas(), where, getattr(feature, "names", None)


def stratified_split(examples: Examples, size: float, seed: int, what: str) -> tuple[Examples, Examples]:
    """Split into (rest, part) with `size` rows (a count, or a fraction when < 1) in `part`."""
    from sklearn.model_selection import train_test_split

    count = int(size) if size >= 1 else max(1, round(size * len(examples)))
    classes = len(set(examples.labels))
    if count >= len(examples) or len(examples) - count < classes or count < classes:
        raise LorafitError(
            f"{what}: cannot take {count} of {len(examples)} rows while keeping every one of "
            f"the {classes} labels on both sides"
        )
    try:
        rest, part = train_test_split(
            np.arange(len(examples)), test_size=count, random_state=seed, stratify=examples.labels
        )
    except ValueError as e:
        raise LorafitError(f"{what}: stratified split impossible: {e}") from None
    return examples.subset(sorted(rest)), examples.subset(sorted(part))


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.array([len(ids) for ids in encoded])


def filter_by_length(examples: Examples, lengths: np.ndarray, percentiles: list[float]) -> Examples:
    """Drop rows whose token length lies outside the given percentiles (report A: 1st-99th)."""
    low, high = np.percentile(lengths, percentiles)
    keep = [i for i, n in enumerate(lengths) if low <= n <= high]
    kept = examples.subset(keep)
    kept.dropped = {"length_filter": len(examples) - len(keep), "min_tokens": float(low), "max_tokens": float(high)}
    return kept


def length_batches(lengths, max_tokens: int, max_rows: int, longest_first: bool = False) -> list[np.ndarray]:
    """Row indices in batches of similar length, shortest rows first (or longest first), each at most
    `max_tokens` once padded (or a single row) and at most `max_rows` long, so that one long text does
    not pad a whole batch."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths if longest_first else lengths, kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        widest = max(lengths[order[start]], lengths[order[end - 1]])
        if end - start > 1 and ((end - start) * widest > max_tokens or end - start > max_rows):
            batches.append(order[start : end - 1])
            start = end - 1
    if start < len(order):
        batches.append(order[start:])
    return batches


@dataclass
class Splits:
    train: Examples
    validation: Examples
    info: dict


def prepare_splits(cfg: DataConfig, tokenizer) -> Splits:
    """Load, sample, split and length-filter the data as the recipe says."""
    pool = load_examples(cfg)
    info = {"source": pool.source, "rows": len(pool), "fingerprint": pool.fingerprint()}
    if cfg.limit and cfg.limit < len(pool):
        _, pool = stratified_split(pool, cfg.limit, cfg.seed, f"data.limit={cfg.limit}")
    if cfg.validation_file:
        if not is_local_file(cfg.validation_file):  # not read as a hub dataset: its *train* split would be used
            raise LorafitError(
                f"data.validation_file={cfg.validation_file} is not a file; for a split of the dataset "
                "use data.validation_split=NAME"
            )
        train, validation = pool, load_examples(cfg, source=cfg.validation_file, label_names=pool.label_names)
    elif cfg.validation_split:
        if is_local_file(cfg.train):
            raise LorafitError(
                "data.validation_split names a split of a Hugging Face dataset; for a file use data.validation_file"
            )
        train = pool
        validation = load_examples(cfg, split=cfg.validation_split, label_names=pool.label_names)
    else:
        train, validation = stratified_split(pool, cfg.validation_size, cfg.seed, "data.validation_size")
    if cfg.train_limit and cfg.train_limit < len(train):  # the validation split stays that of the whole pool
        _, train = stratified_split(train, cfg.train_limit, cfg.seed, f"data.train_limit={cfg.train_limit}")
    if cfg.length_percentiles:
        train = filter_by_length(train, token_lengths(tokenizer, train.texts), cfg.length_percentiles)
        info.update(train.dropped)
    info.update(train_rows=len(train), validation_rows=len(validation), label_names=pool.label_names)
    if validation.source != pool.source:  # which file or split validated, said where it is read back
        info["validation_source"] = validation.source
    return Splits(train, validation, info)


def tokenize(examples: Examples, tokenizer, max_length: int, pad_to_max_length: bool = False, cache: bool = False):
    """A datasets.Dataset of token ids, unpadded unless asked: padding then happens per batch.

    With `cache`, the result is kept on disk under a key of the tokenizer, the settings and the
    examples, so a second run with the same data does not tokenize again.
    """
    import datasets

    folder = cache_root() / "tokenized" / _tokenized_key(examples, tokenizer, max_length, pad_to_max_length)
    if cache and folder.is_dir():
        return datasets.load_from_disk(str(folder))
    encoded = tokenizer(
        examples.texts,
        truncation=True,
        max_length=max_length,
        verbose=False,
        padding="max_length" if pad_to_max_length else False,
    )
    columns = {key: encoded[key] for key in encoded.keys()}
    columns["labels"] = examples.labels
    dataset = datasets.Dataset.from_dict(columns)
    if cache:
        _save_atomically(dataset, folder)
    return dataset


def _tokenized_key(examples: Examples, tokenizer, max_length: int, padded: bool) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # truncation and padding are state that each call changes, not identity
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        identity = json.dumps(state, sort_keys=True)
    else:
        identity = f"{tokenizer.name_or_path}/{len(tokenizer)}"
    digest = hashlib.sha256(identity.encode())
    digest.update(f"{type(tokenizer).__name__}|{max_length}|{padded}|{examples.fingerprint()}".encode())
    return digest.hexdigest()[:20]


def _save_atomically(dataset, folder: Path) -> None:
    try:
        build_folder(folder, lambda staging: dataset.save_to_disk(str(staging)))
    except OSError:  # a full or read-only disk costs only the cache, never the run
        pass
