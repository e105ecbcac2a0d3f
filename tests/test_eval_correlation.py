"""clipiq.eval correlation statistics against scipy and brute-force references."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
import torch
from scipy import stats

from clipiq.eval import correlation_report, krcc, logistic4_fit, plcc, rmse, srcc
from clipiq.eval.correlation import _bootstrap_srcc


def _tied_data(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.6 * x + rng.normal(scale=0.8, size=n)
    # Rounding creates ties on both sides, which exercises the tie corrections.
    return np.round(x, 1), np.round(y, 1)


def _kendall_tau_b_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), k=1)
    dx, dy = dx[iu], dy[iu]
    s = float(np.sum(dx * dy))
    return s / math.sqrt(float(np.sum(dx != 0)) * float(np.sum(dy != 0)))


@pytest.mark.parametrize("kind", ["numpy", "list", "torch"])
def test_matches_scipy(kind: str) -> None:
    x, y = _tied_data()
    conv = {
        "numpy": lambda a: a,
        "list": lambda a: a.tolist(),
        "torch": lambda a: torch.from_numpy(a).float(),
    }
    px, py = conv[kind](x), conv[kind](y)
    # float32 tensors round the data; the references see the same rounded values.
    rx = np.asarray(torch.as_tensor(px, dtype=torch.float64)) if kind == "torch" else x
    ry = np.asarray(torch.as_tensor(py, dtype=torch.float64)) if kind == "torch" else y
    assert srcc(px, py) == pytest.approx(stats.spearmanr(rx, ry).statistic, abs=1e-10)
    assert krcc(px, py) == pytest.approx(stats.kendalltau(rx, ry).statistic, abs=1e-10)
    assert krcc(px, py) == pytest.approx(_kendall_tau_b_bruteforce(rx, ry), abs=1e-10)
    assert plcc(px, py) == pytest.approx(stats.pearsonr(rx, ry).statistic, abs=1e-10)
    assert rmse(px, py) == pytest.approx(float(np.sqrt(np.mean((rx - ry) ** 2))), abs=1e-10)


def test_negative_and_perfect_relations() -> None:
    x = np.arange(10.0)
    assert srcc(x, x**3) == pytest.approx(1.0)
    assert krcc(x, -np.exp(x)) == pytest.approx(-1.0)
    assert plcc(x, 2 * x + 1) == pytest.approx(1.0)


def test_constant_input_gives_nan(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert math.isnan(srcc([1, 1, 1, 1], [1, 2, 3, 4]))
        assert math.isnan(krcc([1, 2, 3, 4], [5, 5, 5, 5]))
        assert math.isnan(plcc([2, 2, 2], [1, 2, 3]))
    assert "constant" in caplog.text


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        ([1, 2, 3], [1, 2], "same length"),
        ([1, 2], [1, 2], "at least 3"),
        ([1, float("nan"), 3, 4], [1, 2, 3, 4], "pred contains 1 non-finite"),
        ([1, 2, 3, 4], [1, 2, float("inf"), 4], "target contains 1 non-finite"),
        (np.ones((3, 3)), np.ones((3, 3)), "pred must be 1-D"),
        (["a", "b", "c"], [1, 2, 3], "pred must be a 1-D sequence of numbers"),
    ],
)
@pytest.mark.parametrize("fn", [srcc, krcc, plcc, rmse, logistic4_fit, correlation_report])
def test_errors(fn, pred, target, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fn(pred, target)


def test_logistic_mapping_improves_plcc_on_nonlinear_monotonic() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, size=400)
    true = (80.0 - 10.0) / (1 + np.exp(-(x - 0.5) / 0.6)) + 10.0
    y = true + rng.normal(scale=2.0, size=x.size)
    mapping = logistic4_fit(x, y)
    assert mapping.kind == "logistic"
    b1, b2, b3, b4 = mapping.params
    assert (b1, b2, b3, abs(b4)) == pytest.approx((80.0, 10.0, 0.5, 0.6), rel=0.1, abs=0.1)
    rep = correlation_report(x, y, bootstrap=0)
    assert rep.plcc >= rep.plcc_raw
    assert rep.plcc > rep.plcc_raw + 0.02  # the relation is strongly saturating, so the gain is real
    assert rep.plcc == pytest.approx(stats.pearsonr(mapping(x), y).statistic, abs=1e-12)
    assert rep.rmse < rep.rmse_raw
    assert rep.rmse == pytest.approx(float(np.sqrt(np.mean((mapping(x) - y) ** 2))), abs=1e-12)


def test_logistic_mapping_of_decreasing_relation() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, size=300)
    y = 5.0 - 4.0 / (1 + np.exp(-(x - 0.4) / 0.08)) + rng.normal(scale=0.1, size=x.size)
    rep = correlation_report(x, y, bootstrap=0)
    assert rep.plcc_raw < 0 and rep.srcc < 0
    # A decreasing logistic is fitted, so the mapped correlation is positive and higher than |raw|.
    assert rep.plcc > abs(rep.plcc_raw)


def test_logistic_fallback_is_linear_fit(caplog: pytest.LogCaptureFixture) -> None:
    x, y = _tied_data(50, seed=3)
    with caplog.at_level(logging.WARNING):
        mapping = logistic4_fit(x, y, maxfev=1)  # too few evaluations to converge
    assert mapping.kind == "linear"
    assert "falling back" in caplog.text
    slope, intercept = np.polyfit(x, y, 1)
    assert mapping.params == pytest.approx((slope, intercept), abs=1e-10)
    np.testing.assert_allclose(mapping(x), slope * x + intercept, atol=1e-10)


def test_too_few_points_for_logistic_fall_back_to_linear(caplog: pytest.LogCaptureFixture) -> None:
    x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 5.0]
    with caplog.at_level(logging.WARNING):
        rep = correlation_report(x, y, bootstrap=50)
    assert rep.mapping.kind == "linear"
    assert "more than 4 points" in caplog.text
    # A linear map leaves Pearson's r unchanged.
    assert rep.plcc == pytest.approx(rep.plcc_raw, abs=1e-12)


def test_report_keys_and_values() -> None:
    x, y = _tied_data(100, seed=4)
    d = correlation_report(x, y, bootstrap=200, seed=0).as_dict()
    for key in ("srcc", "krcc", "plcc_raw", "rmse_raw", "plcc", "rmse", "n", "srcc_ci_low", "srcc_ci_high"):
        assert key in d
    assert d["n"] == 100
    assert d["srcc"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-10)
    assert d["krcc"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-10)
    assert d["plcc_raw"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-10)
    assert "mapping" not in d


def test_bootstrap_ci_contains_estimate_and_is_seeded() -> None:
    x, y = _tied_data(300, seed=5)
    a = correlation_report(x, y, bootstrap=500, seed=7)
    b = correlation_report(x, y, bootstrap=500, seed=7)
    c = correlation_report(x, y, bootstrap=500, seed=8)
    assert a.srcc_ci_low < a.srcc < a.srcc_ci_high
    assert (a.srcc_ci_low, a.srcc_ci_high) == (b.srcc_ci_low, b.srcc_ci_high)
    assert (a.srcc_ci_low, a.srcc_ci_high) != (c.srcc_ci_low, c.srcc_ci_high)
    wide = correlation_report(x, y, bootstrap=500, seed=7, ci=0.99)
    assert wide.srcc_ci_low <= a.srcc_ci_low and wide.srcc_ci_high >= a.srcc_ci_high
    none = correlation_report(x, y, bootstrap=0)
    assert math.isnan(none.srcc_ci_low) and math.isnan(none.srcc_ci_high)


def test_bootstrap_ranks_match_scipy_on_the_same_resamples() -> None:
    # The vectorised tie-aware ranking must equal a plain loop of spearmanr over identical resamples
    # (the reference re-draws them with the same generator calls as the implementation).
    x, y = _tied_data(60, seed=6)
    boots = _bootstrap_srcc(x, y, 64, seed=11)
    idx = np.random.default_rng(11).integers(0, x.size, size=(64, x.size))
    ref = np.array([stats.spearmanr(x[i], y[i]).statistic for i in idx])
    np.testing.assert_allclose(boots, ref, atol=1e-12)


def test_bootstrap_is_fast() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=10_000)
    y = x + rng.normal(size=10_000)
    _bootstrap_srcc(x, y, 10, seed=0)  # warm-up: first-touch allocations are not what is measured
    # CPU time, not wall time, so that other processes on a shared machine do not make this flaky.
    t0 = time.process_time()
    _bootstrap_srcc(x, y, 1000, seed=0)
    elapsed = time.process_time() - t0
    # Target < 1 s (about 0.45 s measured); a per-resample scipy loop takes about 3 s of CPU.
    assert elapsed < 1.5, f"1000 bootstrap resamples of 10k points took {elapsed:.2f} s of CPU"


def test_report_rejects_bad_options() -> None:
    x, y = _tied_data(20)
    with pytest.raises(ValueError, match="ci must be"):
        correlation_report(x, y, ci=1.5)
    with pytest.raises(ValueError, match="bootstrap must be"):
        correlation_report(x, y, bootstrap=-1)
