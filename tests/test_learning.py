"""Learning must be real: the pretrained MiniLM encoder, trained through the CLI on ~1,000 rows."""

import json

from conftest import RECIPES, run_cli


def test_minilm_reaches_075_accuracy_after_one_epoch_on_1000_rows(minilm_dir, agnews_csv, tmp_path):
    run_dir = tmp_path / "minilm"
    recipe = RECIPES / "quickstart.yaml"
    out = run_cli(
        "train", recipe, f"data.train={agnews_csv}", "data.limit=1200", "training.epochs=1", "--output-dir", run_dir
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == 180
    assert metrics["accuracy"] >= 0.75, metrics
