"""Partial least squares for a few labels (:func:`cmkd.classical.linear.linear_model`'s ``pls``), in its own
module so that importing :mod:`cmkd.classical.linear` does not load scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


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
