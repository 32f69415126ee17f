"""Tune an SVM on scikit-learn's bundled digits data set (no download)."""

from __future__ import annotations


def objective(params: dict) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import SVC

    features, labels = load_digits(return_X_y=True)
    model = SVC(C=params["C"], gamma=params["gamma"], kernel=params["kernel"])
    scores = cross_val_score(model, features[:600], labels[:600], cv=3)
    return {"accuracy": float(scores.mean())}
