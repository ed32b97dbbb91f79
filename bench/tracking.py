"""One AG News run watched through its trackers: the quickstart recipe trained with
`training.report_to=[tensorboard, mlflow]`, its scalars read back with each tracker's own reader
(TensorBoard's event reader, MLflow's client) and plotted -> bench/TRACKING.md and bench/tracking.png.

    python bench/tracking.py            # about 3 minutes on 2 cores
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGNEWS = ROOT.parent / "shared" / "data" / "ag_news" / "train.csv"
RUN = Path("/tmp/lorafit-tracking/quickstart")
SETTINGS = ["data.limit=2000", "training.report_to=[tensorboard, mlflow]", "training.logging_steps=5"]
SCALARS = {"train/loss": "loss", "train/learning_rate": "learning_rate", "eval/accuracy": "eval_accuracy",
           "eval/macro_f1": "eval_macro_f1", "eval/loss": "eval_loss"}  # fmt: skip


def train() -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "lorafit", "train", "recipes/quickstart.yaml", f"data.train={AGNEWS}"]
    subprocess.run([*command, *SETTINGS, "--output-dir", str(RUN), "--overwrite"], cwd=ROOT, check=True)
    return (time.perf_counter() - started) / 60


def read_back() -> tuple[dict, dict]:
    """{TensorBoard tag: [(step, value)]} and {MLflow key: [(step, value)]} of the run."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(RUN / "tensorboard")).Reload()
    board = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in SCALARS}
    client = MlflowClient(f"sqlite:///{RUN.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart")
    newest = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]
    flow = {
        key: [(m.step, m.value) for m in client.get_metric_history(newest.info.run_id, key)] for key in SCALARS.values()
    }
    return board, flow


def plot(board: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (("train/loss", "eval/loss"), ("train/learning_rate",), ("eval/accuracy", "eval/macro_f1"))
    for ax, tags in zip(axes, panels):
        for tag in tags:
            steps, values = zip(*board[tag])
            ax.plot(steps, values, marker="o" if tag.startswith("eval") else None, label=tag)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("quickstart (MiniLM, 2,000 AG News rows), read back from TensorBoard's event files")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from lorafit.device import cpu_label

    minutes = train()
    board, flow = read_back()
    plot(board, ROOT / "bench" / "tracking.png")
    rows = []
    for tag, key in SCALARS.items():
        same = len(board[tag]) == len(flow[key]) and all(
            s1 == s2 and abs(v1 - v2) <= 1e-6 * max(1.0, abs(v1)) for (s1, v1), (s2, v2) in zip(board[tag], flow[key])
        )
        rows.append(f"| `{tag}` | `{key}` | {len(board[tag])} | {board[tag][-1][1]:.4g} | {'yes' if same else 'NO'} |")
    text = f"""# Tracking: one AG News run in TensorBoard and MLflow

Produced by `python bench/tracking.py`: `lorafit train recipes/quickstart.yaml
data.train=shared/data/ag_news/train.csv {" ".join(SETTINGS)}` ({minutes:.1f} minutes on {cpu_label()}),
then each tracker's log read back with its own reader: TensorBoard's `EventAccumulator` on the run's
`tensorboard/` folder and MLflow's `MlflowClient` on `runs/mlflow.db` (here `{RUN.parent}/mlflow.db`).

![scalars of the run](tracking.png)

| TensorBoard tag | MLflow metric | points | last value | the same steps and values in both |
| --- | --- | ---: | ---: | --- |
{chr(10).join(rows)}

To watch a run live: `tensorboard --logdir runs` or `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`.
"""
    (ROOT / "bench" / "TRACKING.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
