"""Evaluation: IQA correlation statistics and full-reference metrics with restoration-paper conventions."""

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
from clipiq.eval.probe import RidgeProbe, ridge_loo

__all__ = [
    "CorrelationReport",
    "Logistic4",
    "RidgeProbe",
    "correlation_report",
    "krcc",
    "logistic4_fit",
    "plcc",
    "psnr",
    "rgb2ycbcr",
    "ridge_loo",
    "rmse",
    "srcc",
    "ssim",
]
