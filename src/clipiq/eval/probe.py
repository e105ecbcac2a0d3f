"""A linear read-out (ridge regression) of features to scores: the upper bound of what a linear head can take.

``RidgeProbe.fit`` standardises the features on the fitting part only and picks the penalty by exact
leave-one-out error on that part (the closed form scikit-learn's ``RidgeCV`` uses by default), so no test
image takes part in any choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The default penalty grid, wide enough for standardised features of a few hundred to a few thousand dims.
ALPHAS: np.ndarray = np.logspace(-2, 5, 29)


def ridge_loo(x: np.ndarray, y: np.ndarray, alphas: np.ndarray = ALPHAS) -> tuple[float, np.ndarray, float]:
    """(alpha, weights, intercept) of a ridge fit with an unpenalised intercept, alpha by closed-form LOO error."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (len(x),) or len(x) < 3:
        raise ValueError(f"ridge needs features (N,D) and targets (N,) with N >= 3, got {x.shape} and {y.shape}")
    xm, ym = x.mean(0), y.mean()
    u, s, vt = np.linalg.svd(x - xm, full_matrices=False)
    uty = u.T @ (y - ym)
    best = (math.inf, float(alphas[0]))
    for a in alphas:
        d = s**2 / (s**2 + a)
        fitted = u @ (d * uty)
        # Hat-matrix diagonal of the centred fit plus the intercept's 1/n: the exact LOO residual shortcut.
        h = (u**2) @ d + 1.0 / len(y)
        err = float(np.mean(((y - ym - fitted) / (1.0 - h)) ** 2))
        best = min(best, (err, float(a)))
    a = best[1]
    w = vt.T @ (s / (s**2 + a) * uty)
    return a, w, float(ym - xm @ w)


@dataclass(frozen=True)
class RidgeProbe:
    """A fitted ridge read-out with its standardisation; ``predict`` maps features to scores."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    intercept: float
    alpha: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alphas: np.ndarray = ALPHAS) -> RidgeProbe:
        """Standardise on x, then ridge with alpha chosen by leave-one-out error on x alone."""
        x = np.asarray(x, dtype=np.float64)
        mu, sd = x.mean(0), x.std(0) + 1e-8
        a, w, b = ridge_loo((x - mu) / sd, y, alphas)
        return cls(mu, sd, w, b, a)

    @property
    def alpha_at_grid_edge(self) -> bool:
        """Whether the chosen alpha is the grid's smallest or largest (the grid may be too narrow)."""
        return self.alpha in (float(ALPHAS[0]), float(ALPHAS[-1]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores (N,) of features (N,D)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.weights):
            raise ValueError(f"features must be (N,{len(self.weights)}), got {x.shape}")
        return (x - self.mean) / self.std @ self.weights + self.intercept


__all__ = ["ALPHAS", "RidgeProbe", "ridge_loo"]
