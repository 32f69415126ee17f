"""Tune an SVM on scikit-learn's bundled digits data set (no download)."""

from __future__ import annotations


def objective(params: dict) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import SVC

    features, labels = load_digits(return_X_y=True)
    model = SVC(C=params["C"], gamma=params["gamma"], kernel=params["kernel"])
    # The data set is ordered as it was collected: shuffled, stratified folds (fixed seed) keep
    # each fold representative, so accuracy measures the model rather than the split.
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    scores = cross_val_score(model, features[:600], labels[:600], cv=folds)
    return {"accuracy": float(scores.mean())}


def small_objective(params: dict) -> dict:
    """Accuracy, and the model's size: how many support vectors the SVM keeps (what it stores
    and what each prediction is computed against), for a constraint on it."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import SVC

    features, labels = load_digits(return_X_y=True)
    model = SVC(C=params["C"], gamma=params["gamma"], kernel=params["kernel"])
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    scores = cross_val_score(model, features[:600], labels[:600], cv=folds)
    model.fit(features[:600], labels[:600])
    return {"accuracy": float(scores.mean()), "support_vectors": int(model.n_support_.sum())}
