"""`lorafit cache`: what lorafit keeps in $LORAFIT_CACHE, and clearing only the parts asked."""

from __future__ import annotations

from conftest import run_cli
from test_frozen import examples, lora_on_top

from lorafit.data import tokenize
from lorafit.frozen import frozen_states


def test_cache_lists_its_parts_and_clears_only_those_asked(tiny_roberta, agnews_rows, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LORAFIT_CACHE", str(cache))  # not the session's cache: the other tests read it
    model, tokenizer = lora_on_top(tiny_roberta, [10, 11])
    tokenized = tokenize(examples(agnews_rows, 200), tokenizer, 64, cache=True)
    states = frozen_states(model, tokenized, 10, identity="cache test")
    tokens = sum(len(ids) for ids in tokenized["input_ids"])
    assert states.file.stat().st_size == tokens * 32 * 2  # width 32, float16

    listed = run_cli("cache")
    assert listed.returncode == 0 and str(cache) in listed.stdout
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(lines) == {"models", "tokenized", "frozen-states", "onnx", "total"}
    assert " 1 entries" in lines["frozen-states"] and " 1 entries" in lines["tokenized"]
    assert " 0 entries" in lines["models"] and " 0 entries" in lines["onnx"]
    stored = sum(path.stat().st_size for path in states.folder.iterdir())  # states, offsets, meta
    assert f" {stored / 1e6:.1f} MB" in lines["frozen-states"], (stored, lines["frozen-states"])

    cleared = run_cli("cache", "--clear", "frozen-states")
    assert cleared.returncode == 0 and "frozen-states: 1 entries" in cleared.stdout
    assert not (cache / "frozen-states").exists() and any((cache / "tokenized").iterdir())

    unknown = run_cli("cache", "--clear", "weights")
    assert unknown.returncode == 2 and "invalid choice: 'weights'" in unknown.stderr
    assert any((cache / "tokenized").iterdir())

    run_cli("cache", "--clear", "all")
    assert not any(cache.iterdir())
