"""`lorafit baseline`: TF-IDF features and a linear classifier on the recipe's own split,
so that a user sees what fine-tuning buys over a classical model."""

from __future__ import annotations

import time
import typing

from .choices import BaselineClassifier
from .config import Recipe

CLASSIFIERS = typing.get_args(BaselineClassifier)


def tfidf_pipeline(seed: int, classifier: str = "logistic-regression"):
    """Word 1-2-grams and character 2-5-grams (within word bounds), sublinear tf, then logistic
    regression or a linear SVM (often the stronger of the two on tens of thousands of rows)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, strip_accents="unicode"),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, max_features=200_000),
    )
    if classifier == "linear-svm":
        return make_pipeline(features, LinearSVC(C=0.5, random_state=seed))
    return make_pipeline(features, LogisticRegression(C=10.0, max_iter=2000, random_state=seed))


def run_baseline(recipe: Recipe, classifier: str = "logistic-regression") -> dict:
    """Validation metrics of the TF-IDF baseline, trained on the recipe's training split."""
    from .data import flat_text, prepare_splits
    from .metrics import classification_metrics

    tokenizer = None
    if recipe.data.length_percentiles:  # the length filter counts model tokens
        from .model import load_tokenizer

        tokenizer = load_tokenizer(recipe.model)
    splits = prepare_splits(recipe.data, tokenizer)
    started = time.time()
    train_texts, validation_texts = ([flat_text(t) for t in part.texts] for part in (splits.train, splits.validation))
    pipeline = tfidf_pipeline(recipe.data.seed, classifier).fit(train_texts, splits.train.labels)
    predictions = pipeline.predict(validation_texts)
    metrics = classification_metrics(splits.validation.labels, predictions, splits.info["label_names"])
    return {
        **metrics,
        "model": f"tfidf-{classifier}",
        "train_rows": len(splits.train),
        "seconds": round(time.time() - started, 1),
    }
