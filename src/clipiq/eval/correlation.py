"""Correlation between predicted quality scores and ground truth, as reported in IQA papers.

SRCC (Spearman), KRCC (Kendall tau-b), PLCC (Pearson) and RMSE, with PLCC/RMSE also reported after the
standard 4-parameter logistic mapping of predictions onto the target scale (VQEG practice), and a seeded
percentile-bootstrap confidence interval for SRCC.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy import optimize, special, stats

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]

__all__ = [
    "CorrelationReport",
    "Logistic4",
    "correlation_report",
    "krcc",
    "logistic4_fit",
    "plcc",
    "rmse",
    "srcc",
]

# Bounds the (resamples x points) working arrays of the bootstrap to roughly 4M elements per chunk.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000


def _to_1d(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a 1-D sequence of numbers ({e})") from None
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_pair(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _to_1d(pred, "pred")
    t = _to_1d(target, "target")
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"pred and target must have the same length, got {p.shape[0]} and {t.shape[0]}")
    if p.shape[0] < 3:
        raise ValueError(f"need at least 3 (pred, target) pairs for a correlation, got {p.shape[0]}")
    for name, a in (("pred", p), ("target", t)):
        bad = ~np.isfinite(a)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ValueError(
                f"{name} contains {idx.size} non-finite value(s) (NaN/inf), "
                f"first at index {idx[0]}: {a[idx[0]]}"
            )
    return p, t


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two validated 1-D arrays; NaN (with a warning) when either is constant."""
    xc = x - x.mean()
    yc = y - y.mean()
    den = math.sqrt(float(xc @ xc) * float(yc @ yc))
    if den == 0.0:
        logger.warning("correlation is undefined for a constant input; returning NaN")
        return math.nan
    return float(np.clip((xc @ yc) / den, -1.0, 1.0))


def srcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Spearman rank-order correlation (ties get average ranks); NaN if either input is constant."""
    p, t = _check_pair(pred, target)
    return _pearson(stats.rankdata(p), stats.rankdata(t))


def krcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Kendall rank correlation, tau-b (tie-corrected); NaN if either input is constant."""
    p, t = _check_pair(pred, target)
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        logger.warning("correlation is undefined for a constant input; returning NaN")
        return math.nan
    return float(stats.kendalltau(p, t, variant="b").statistic)


def plcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Pearson linear correlation of the raw values (no logistic mapping); NaN if either is constant."""
    p, t = _check_pair(pred, target)
    return _pearson(p, t)


def rmse(pred: ArrayLike, target: ArrayLike) -> float:
    """Root-mean-square error between the raw values (apply `logistic4_fit` first to map scales)."""
    p, t = _check_pair(pred, target)
    return float(np.sqrt(np.mean((p - t) ** 2)))


@dataclass(frozen=True)
class Logistic4:
    """A fitted monotonic mapping from predictions to the target scale.

    ``kind == "logistic"``: f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2.
    ``kind == "linear"`` (fallback when the logistic fit fails): f(x) = slope * x + intercept.
    """

    kind: str
    params: tuple[float, ...]

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """Map predictions (1-D) onto the target scale."""
        xs = _to_1d(x, "x")
        if self.kind == "logistic":
            return _logistic4(xs, *self.params)
        slope, intercept = self.params
        return slope * xs + intercept


def _logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    # expit avoids overflow of exp() for predictions far from b3.
    scale = abs(b4) + 1e-12
    return (b1 - b2) * special.expit((x - b3) / scale) + b2


def _linear_fit(p: np.ndarray, t: np.ndarray) -> Logistic4:
    if np.ptp(p) == 0:
        return Logistic4("linear", (0.0, float(t.mean())))
    slope, intercept = np.polyfit(p, t, 1)
    return Logistic4("linear", (float(slope), float(intercept)))


def logistic4_fit(pred: ArrayLike, target: ArrayLike, maxfev: int = 10_000) -> Logistic4:
    """Fit the VQEG 4-parameter logistic mapping pred -> target; falls back to a linear fit on failure."""
    p, t = _check_pair(pred, target)
    linear = _linear_fit(p, t)
    std = float(p.std())
    if std == 0.0:
        logger.warning("logistic4_fit: pred is constant; falling back to a linear (constant) mapping")
        return linear
    if p.shape[0] <= 4:
        logger.warning("logistic4_fit needs more than 4 points for 4 parameters; falling back to a linear fit")
        return linear
    b1, b2 = float(t.max()), float(t.min())
    if linear.params[0] < 0:
        # A decreasing relation starts from the mirrored curve so the optimiser does not cross b1 == b2.
        b1, b2 = b2, b1
    p0 = [b1, b2, float(p.mean()), std / 4.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(_logistic4, p, t, p0=p0, maxfev=maxfev)
    except (RuntimeError, optimize.OptimizeWarning, ValueError, FloatingPointError) as e:
        logger.warning("logistic4_fit did not converge (%s); falling back to a linear mapping", e)
        return linear
    fitted = Logistic4("logistic", tuple(float(v) for v in params))
    sse_logistic = float(np.sum((fitted(p) - t) ** 2))
    sse_linear = float(np.sum((linear(p) - t) ** 2))
    if not np.isfinite(sse_logistic) or sse_logistic > sse_linear * (1 + 1e-9):
        # A local minimum worse than a straight line is a failed fit for the purpose of PLCC.
        logger.warning(
            "logistic4_fit converged to a fit worse than a straight line (SSE %.4g > %.4g); "
            "using the linear map",
            sse_logistic,
            sse_linear,
        )
        return linear
    return fitted


@dataclass(frozen=True)
class CorrelationReport:
    """The standard IQA correlation summary; `as_dict()` gives the flat key/value form."""

    srcc: float
    krcc: float
    plcc: float
    rmse: float
    plcc_raw: float
    rmse_raw: float
    n: int
    srcc_ci_low: float
    srcc_ci_high: float
    ci: float
    bootstrap: int
    mapping: Logistic4 = field(repr=False)

    def as_dict(self) -> dict[str, float | int]:
        """Flat dictionary of the numbers (the fitted mapping is left out)."""
        d = asdict(self)
        d.pop("mapping")
        return d

    def __str__(self) -> str:
        return (
            f"n={self.n} SRCC={self.srcc:.4f} [{self.srcc_ci_low:.4f}, {self.srcc_ci_high:.4f}] "
            f"KRCC={self.krcc:.4f} PLCC={self.plcc:.4f} RMSE={self.rmse:.4g}"
        )


def _bootstrap_srcc(p: np.ndarray, t: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """SRCC of `n_boot` resamples of the pairs, vectorised without re-sorting each resample.

    A resample only repeats original values, so the average rank of each value inside a resample follows
    from how many times each distinct value was drawn:
    rank = (#drawn strictly below) + (#drawn equal + 1) / 2.
    """
    n = p.shape[0]
    rng = np.random.default_rng(seed)
    gp = stats.rankdata(p, method="dense").astype(np.int64) - 1  # distinct-value group of each point
    gt = stats.rankdata(t, method="dense").astype(np.int64) - 1
    n_gp, n_gt = int(gp.max()) + 1, int(gt.max()) + 1
    out = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    with np.errstate(invalid="ignore", divide="ignore"):
        for start in range(0, n_boot, chunk):
            b = min(chunk, n_boot - start)
            idx = rng.integers(0, n, size=(b, n))
            ranks = []
            for groups, n_groups in ((gp, n_gp), (gt, n_gt)):
                g = groups[idx]  # (b, n)
                offset = (np.arange(b, dtype=np.int64) * n_groups)[:, None]
                counts = np.bincount((g + offset).ravel(), minlength=b * n_groups).reshape(b, n_groups)
                counts = counts.astype(np.float64)
                group_rank = np.cumsum(counts, axis=1) - (counts - 1.0) / 2.0
                ranks.append(np.take_along_axis(group_rank, g, axis=1))
            rp, rt = ranks
            rp -= rp.mean(axis=1, keepdims=True)
            rt -= rt.mean(axis=1, keepdims=True)
            num = np.einsum("ij,ij->i", rp, rt)
            den = np.sqrt(np.einsum("ij,ij->i", rp, rp) * np.einsum("ij,ij->i", rt, rt))
            out[start : start + b] = num / den  # NaN for a resample where one side is constant
    return out


def correlation_report(
    pred: ArrayLike, target: ArrayLike, bootstrap: int = 1000, seed: int = 0, ci: float = 0.95
) -> CorrelationReport:
    """SRCC, KRCC, PLCC/RMSE (raw and after logistic mapping) and a bootstrap CI for SRCC.

    The CI is the percentile bootstrap over `bootstrap` resamples of the (pred, target) pairs, seeded by
    `seed`; `bootstrap=0` skips it (the CI bounds are then NaN).
    """
    p, t = _check_pair(pred, target)
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    mapping = logistic4_fit(p, t)
    mapped = mapping(p)
    lo = hi = math.nan
    if bootstrap > 0:
        boots = _bootstrap_srcc(p, t, bootstrap, seed)
        if np.isnan(boots).all():
            logger.warning("every bootstrap resample had a constant side; the SRCC CI is undefined")
        else:
            alpha = (1.0 - ci) / 2.0
            lo, hi = (float(v) for v in np.nanquantile(boots, [alpha, 1.0 - alpha]))
    return CorrelationReport(
        srcc=srcc(p, t),
        krcc=krcc(p, t),
        plcc=_pearson(mapped, t),
        rmse=float(np.sqrt(np.mean((mapped - t) ** 2))),
        plcc_raw=_pearson(p, t),
        rmse_raw=float(np.sqrt(np.mean((p - t) ** 2))),
        n=int(p.shape[0]),
        srcc_ci_low=lo,
        srcc_ci_high=hi,
        ci=float(ci),
        bootstrap=int(bootstrap),
        mapping=mapping,
    )
