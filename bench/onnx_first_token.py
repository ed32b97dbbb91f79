"""The onnxruntime fp32 path with the first-token last layer in the graph, against the stock graph.

python bench/onnx_first_token.py RUN [--rows 2000] [--turns 2]
RUN is a trained run with a first-token head (e.g. the MiniLM run of `make bench-paths`). Both graphs
are exported from the same merged fp32 model, into a temporary folder; each classifies the run's
first ROWS validation rows, best of two passes after a warm-up, the two ways taking turns. Prints one
JSON object: rows/s each way, the largest probability difference and the agreement.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from paths import ROWS  # noqa: E402

from lorafit.data import prepare_splits  # noqa: E402
from lorafit.inference import load_run, predict_proba  # noqa: E402
from lorafit.onnx_engine import _export, onnx_classifier  # noqa: E402

WAYS = {"stock graph": False, "first-token graph": True}


def exported(run_dir: str, first_token: bool, folder: Path):
    """The run with its merged model exported to ONNX (last layer in first-token form or stock)."""
    run = load_run(run_dir, merge=True, precision="fp32", first_token=first_token)
    graph = folder / ("first-token" if first_token else "stock") / "model.onnx"
    graph.parent.mkdir()
    _export(run.model, run.tokenizer, graph)
    run.model = onnx_classifier(graph)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--turns", type=int, default=2)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        runs = {way: exported(options.run, first_token, Path(folder)) for way, first_token in WAYS.items()}
        texts = prepare_splits(runs["stock graph"].recipe.data, runs["stock graph"].tokenizer).validation.texts
        texts = texts[: options.rows]
        seconds = {way: [] for way in WAYS}
        probabilities = {way: predict_proba(run, texts[:64]) for way, run in runs.items()}  # warm-up
        for turn in range(options.turns):
            for way in list(WAYS)[:: 1 if turn % 2 == 0 else -1]:
                for _ in range(2):
                    start = time.perf_counter()
                    probabilities[way] = predict_proba(runs[way], texts)
                    seconds[way].append(time.perf_counter() - start)
    stock, first = probabilities["stock graph"], probabilities["first-token graph"]
    result = {way: {"rows_per_s": len(texts) / min(s)} for way, s in seconds.items()}
    result["speed-up"] = result["first-token graph"]["rows_per_s"] / result["stock graph"]["rows_per_s"]
    result["largest_difference"] = float(np.abs(stock - first).max())
    result["agreement"] = float((stock.argmax(-1) == first.argmax(-1)).mean())
    print(json.dumps({"run": options.run, "rows": len(texts), **result}))


if __name__ == "__main__":
    main()
