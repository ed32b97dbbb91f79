"""Per-epoch curves and the confusion matrix of a run, as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .rundir import atomic_file  # noqa: E402


def plot_history(history: list[dict], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    epochs = [row["epoch"] for row in history]
    written = []
    for name, series, ylabel in (
        ("loss.png", {"train loss": "train_loss", "validation loss": "eval_loss"}, "cross-entropy loss"),
        (
            "accuracy.png",
            {
                "validation accuracy": "eval_accuracy",
                "validation F1 (weighted)": "eval_f1",
                "validation F1 (macro)": "eval_macro_f1",
            },
            "score",
        ),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, key in series.items():
            points = [(e, row[key]) for e, row in zip(epochs, history) if row.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, folder / name))
    return written


def plot_confusion_matrix(matrix: list[list[int]], label_names: list[str], path: Path) -> Path:
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(1.2 * len(label_names) + 2.5, 1.2 * len(label_names) + 2))
    ConfusionMatrixDisplay(np.array(matrix), display_labels=label_names).plot(ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title("validation confusion matrix")
    fig.tight_layout()
    return _save(fig, path)


def plot_search(trials: list[dict], path: Path) -> Path:
    """Validation accuracy of each completed trial, pruned trials marked, and the best so far."""
    fig, ax = plt.subplots(figsize=(6, 4))
    done = [(t["trial"], t["accuracy"]) for t in trials if t.get("state") == "complete"]
    pruned = [t["trial"] for t in trials if t.get("state") == "pruned"]
    best, line = float("-inf"), []
    for number, accuracy in done:
        best = max(best, accuracy)
        line.append((number, best))
    if done:
        ax.scatter(*zip(*done), label="trial")
        ax.step(*zip(*line), where="post", color="C1", label="best so far")
    if pruned:
        low = min((a for _, a in done), default=0.0)
        ax.scatter(pruned, [low] * len(pruned), marker="x", color="grey", label="pruned")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    try:
        with atomic_file(path) as temporary:
            fig.savefig(temporary, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path
