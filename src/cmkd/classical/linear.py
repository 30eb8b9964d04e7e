"""Linear models on flat features (:func:`cmkd.classical.trees.flat_features`): the teacher candidates for spectra
and other wide, nearly linear inputs (:mod:`cmkd.pipeline.crossval`), and the ``ridge`` reference."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

# missing values imputed by the training mean, features standardised; ``pls``: regression only
LINEAR = ("ridge", "pls")


def linear_model(algorithm: str, classification: bool, seed: int):  # noqa: ANN201 - a scikit-learn pipeline
    """``ridge``: RidgeCV over alphas 1e-3..1e3 (a logistic regression for a classification target);
    ``pls``: partial least squares with up to 10 components (:class:`SmallPLS`; classification: as ``ridge``)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if classification:
        est = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    elif algorithm == "pls":
        est = SmallPLS()
    else:
        est = RidgeCV(alphas=np.logspace(-3, 3, 13))
    return make_pipeline(SimpleImputer(keep_empty_features=True), StandardScaler(), est)


class SmallPLS(RegressorMixin, BaseEstimator):
    """Partial least squares with ``min(10, n_samples - 2, n_features)`` components (PLS on a spectrum with tens of
    labels; ``PLSRegression`` itself fails when asked for more components than the data have)."""

    def fit(self, x: np.ndarray, y: np.ndarray) -> SmallPLS:
        from sklearn.cross_decomposition import PLSRegression

        k = int(max(1, min(10, len(x) - 2, x.shape[1])))
        self.shape_ = np.shape(y)[1:]
        self.model_ = PLSRegression(n_components=k, scale=False).fit(x, np.asarray(y).reshape(len(x), -1))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        p = self.model_.predict(x)
        return p.reshape((len(x),) + self.shape_)
