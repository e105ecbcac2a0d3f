"""The DAP-LED benchmark's classic pipeline: the kernel estimate, the pipeline itself, and Levin's shifted PSNR."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

from clipiq.degrade import lowlight_blur_pair
from clipiq.eval import psnr

pytest.importorskip("skimage")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_dap_led as bench  # noqa: E402  (a benchmark script, not a package)


def smooth_image(size: int = 96, seed: int = 0) -> np.ndarray:
    """A (H,W,3) picture of soft blobs and sharp edges, mean near 0.4, in [0,1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    img = np.zeros((size, size, 3))
    for _ in range(12):
        cy, cx, r = rng.uniform(0, 1, 3) * (1, 1, 0.3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] += rng.uniform(0.1, 0.4, 3)
    return np.clip(img + 0.15, 0, 1)


def test_kernel_estimate_is_normalised_and_reads_the_direction():
    grey = smooth_image(128).mean(-1)
    assert bench.estimate_kernel(grey).sum() == pytest.approx(1.0)
    line = np.zeros((1, 15))
    line[0] = 1 / 15  # horizontal motion
    k = bench.estimate_kernel(fftconvolve(grey, line, mode="same"))
    assert k.min() >= 0 and k.sum() == pytest.approx(1.0)
    yy, xx = np.mgrid[: k.shape[0], : k.shape[1]] - np.array(k.shape)[:, None, None] // 2
    assert (k * xx**2).sum() > 2 * (k * yy**2).sum()  # wider along the blur than across it


def test_classic_pipeline_beats_the_dark_blurred_input():
    clean = torch.from_numpy(smooth_image(96)).permute(2, 0, 1).float()
    lq, gt = lowlight_blur_pair(clean, level=2, seed=0)
    lq = bench.quantise(lq)
    out = bench.to_chw(bench.classic_restore(bench.to_hwc(lq)))
    assert out.shape == gt.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float(psnr(out, gt)) > float(psnr(lq, gt)) + 1.0


def test_shifted_psnr_finds_the_shift():
    sharp = smooth_image(64).mean(-1)
    moved = np.roll(sharp, (2, -3), axis=(0, 1))
    assert bench.shifted_psnr(moved + 0.01, sharp, border=8, max_shift=4) == pytest.approx(40.0, abs=0.01)
