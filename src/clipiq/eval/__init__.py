"""Evaluation: IQA correlation statistics, full-reference metrics and the synthetic ranking benchmark."""

from clipiq.eval.correlation import (
    CorrelationReport,
    Logistic4,
    correlation_report,
    krcc,
    logistic4_fit,
    plcc,
    rmse,
    srcc,
)
from clipiq.eval.fr import psnr, rgb2ycbcr, ssim
from clipiq.eval.synthetic import SyntheticResult, SyntheticRow, synthetic_ranking

__all__ = [
    "CorrelationReport",
    "Logistic4",
    "SyntheticResult",
    "SyntheticRow",
    "correlation_report",
    "krcc",
    "logistic4_fit",
    "plcc",
    "psnr",
    "rgb2ycbcr",
    "rmse",
    "srcc",
    "ssim",
    "synthetic_ranking",
]
