"""Accuracy and weighted precision/recall/F1, as both reports measured them, and macro F1."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels, predictions, label_names: list[str]) -> dict:
    """Scalar scores, per-class scores and the confusion matrix (rows: true, columns: predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    indices = list(range(len(label_names)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=indices, average="weighted", zero_division=0
    )
    per_p, per_r, per_f, support = precision_recall_fscore_support(
        labels, predictions, labels=indices, average=None, zero_division=0
    )
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "macro_f1": float(per_f.mean()),
        "per_class": {
            name: {
                "precision": float(per_p[i]),
                "recall": float(per_r[i]),
                "f1": float(per_f[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(labels, predictions, labels=indices).tolist(),
        "label_names": list(label_names),
    }


def logits_and_labels(eval_prediction) -> tuple[np.ndarray, np.ndarray]:
    """The Trainer's evaluation output: the logits (first of a tuple when the model returns more)."""
    logits = eval_prediction.predictions
    return (logits[0] if isinstance(logits, tuple) else logits), eval_prediction.label_ids


def trainer_scores(eval_prediction) -> dict:
    """The scalars the Trainer logs each epoch and picks the best checkpoint by."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    logits, labels = logits_and_labels(eval_prediction)
    predictions = np.argmax(logits, axis=-1)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, average="weighted", zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1),
        "macro_f1": float(
            f1_score(labels, predictions, labels=range(logits.shape[-1]), average="macro", zero_division=0)
        ),
        "precision": float(precision),
        "recall": float(recall),
    }
