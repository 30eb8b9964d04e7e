"""Linear models on flat features (:func:`cmkd.classical.trees.flat_features`): the teacher candidates for spectra
and other wide, nearly linear inputs (:mod:`cmkd.pipeline.crossval`), and the ``ridge`` reference."""

from __future__ import annotations

import numpy as np

# missing values imputed by the training mean, features standardised; ``pls``: regression only
LINEAR = ("ridge", "pls")


def linear_model(algorithm: str, classification: bool, seed: int):  # noqa: ANN201 - a scikit-learn pipeline
    """``ridge``: RidgeCV over alphas 1e-3..1e3 (a logistic regression for a classification target);
    ``pls``: partial least squares with up to 10 components (:class:`cmkd.classical.pls.SmallPLS`; classification:
    as ``ridge``). scikit-learn is imported here, not with the module: a run that fails before its first fit
    exits without loading it."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if classification:
        est = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    elif algorithm == "pls":
        from cmkd.classical.pls import SmallPLS

        est = SmallPLS()
    else:
        est = RidgeCV(alphas=np.logspace(-3, 3, 13))
    return make_pipeline(SimpleImputer(keep_empty_features=True), StandardScaler(), est)
