"""Benchmark a restorer on degraded/target pairs: PSNR and SSIM on Y, time and peak memory per megapixel.

Fidelity follows restoration papers (:mod:`clipiq.eval.fr`): each output is rounded to 8-bit levels as a
saved image would be, ``crop_border`` pixels (default: the restorer's scale) are cut from every side, and
PSNR and SSIM are measured on the Y channel of MATLAB's ``rgb2ycbcr``.

Cost is measured per image around the restorer call alone, after one untimed warm-up call on the first
image; pairs are decoded one at a time in between, so no decoding overlaps a measurement. Time per
megapixel is total seconds over total input megapixels. Peak memory is the growth above what was held
before the call: on CUDA the peak of ``torch.cuda.max_memory_allocated`` (tensors only); on the CPU the
process's peak resident set (VmHWM, reset before each call through ``/proc/self/clear_refs`` on Linux,
after glibc's ``malloc_trim`` hands freed heap memory back), which counts every allocation; where the
peak cannot be reset, ``resource.getrusage`` gives only the growth of the all-time peak, a lower bound.
Memory per megapixel is the median over images of peak MiB over input megapixels.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from clipiq.data.paired import ImagePair, PairedImageDataset
from clipiq.data.runner import error_text
from clipiq.eval import psnr, ssim
from clipiq.restore.base import Restorer

__all__ = ["RestorationReport", "evaluate_restorer", "peak_memory"]

_MIB = 1 << 20


@dataclass
class RestorationReport:
    """Per-pair rows (``lq``, ``gt``, ``psnr``, ``ssim``, ``megapixels``, ``seconds``, ``peak_mib``, ``error``)."""

    restorer: str
    crop_border: int
    memory_kind: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok_rows(self) -> list[dict[str, Any]]:
        """Rows of the pairs that were restored and measured."""
        return [r for r in self.rows if not r["error"]]

    def summary(self) -> dict[str, Any]:
        """Means of PSNR and SSIM (Y), seconds and peak MiB per megapixel, counts and conventions."""
        ok = self.ok_rows
        mp = sum(r["megapixels"] for r in ok)
        return {
            "restorer": self.restorer,
            "pairs": len(self.rows),
            "failed": len(self.rows) - len(ok),
            "psnr_y": statistics.fmean(r["psnr"] for r in ok) if ok else float("nan"),
            "ssim_y": statistics.fmean(r["ssim"] for r in ok) if ok else float("nan"),
            "seconds_per_mp": sum(r["seconds"] for r in ok) / mp if mp else float("nan"),
            "peak_mib_per_mp": statistics.median(r["peak_mib"] / r["megapixels"] for r in ok) if ok else float("nan"),
            "peak_mib": max((r["peak_mib"] for r in ok), default=float("nan")),
            "crop_border": self.crop_border,
            "memory": self.memory_kind,
        }


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # "reset the peak resident set size" (Linux >= 4.0)
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def _trim_heap() -> None:
    # glibc keeps freed memory mapped for reuse; without handing it back, a call that reuses it shows no growth
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def peak_memory(device: torch.device) -> tuple[str, Callable[[], Callable[[], float]]]:
    """How peak memory is measured on ``device``, and ``start()`` returning ``stop()`` -> peak growth in MiB."""
    if device.type == "cuda":
        def start_cuda() -> Callable[[], float]:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            return lambda: (torch.cuda.max_memory_allocated(device) - base) / _MIB

        return "cuda max_memory_allocated (tensors)", start_cuda
    if _reset_peak_rss():
        def start_rss() -> Callable[[], float]:
            _trim_heap()
            _reset_peak_rss()
            base = _proc_status_kib("VmRSS") or 0
            return lambda: max(0, (_proc_status_kib("VmHWM") or 0) - base) / 1024

        return "peak RSS growth (VmHWM)", start_rss
    import resource

    # ru_maxrss is in KiB on Linux and in bytes on macOS
    unit = 1 if sys.platform == "darwin" else 1024

    def start_maxrss() -> Callable[[], float]:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return lambda: (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * unit / _MIB

    return "all-time peak RSS growth (ru_maxrss, a lower bound)", start_maxrss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_restorer(restorer: Restorer, pairs: Sequence[ImagePair], crop_border: int | None = None,
                      on_row: Callable[[dict[str, Any]], None] | None = None
                      ) -> RestorationReport:
    """Restore every pair's ``lq`` and measure it against ``gt``; a pair that fails gets a row with an error.

    ``on_row`` is called with each finished row (for progress bars).
    """
    border = restorer.scale if crop_border is None else crop_border
    if isinstance(border, bool) or not isinstance(border, int) or border < 0:
        raise ValueError(f"crop_border must be a non-negative int, got {crop_border!r}")
    data = PairedImageDataset(pairs, scale=restorer.scale)
    kind, start = peak_memory(restorer.device)
    report = RestorationReport(restorer.name, border, kind)
    warm = False
    for index, pair in enumerate(pairs):
        row: dict[str, Any] = {"lq": str(pair.lq), "gt": str(pair.gt), "error": ""}
        report.rows.append(row)
        try:
            item = data[index]
            lq, gt = item["lq"], item["gt"]
            if not warm:
                restorer(lq)
                warm = True
            stop = start()
            _sync(restorer.device)
            t0 = time.perf_counter()
            out = restorer(lq)
            _sync(restorer.device)
            seconds = time.perf_counter() - t0
            peak = stop()
            # measured as saved: 8-bit levels
            out = out.mul(255).round().div(255)
            row.update(psnr=float(psnr(out, gt, crop_border=border, y_channel=True)),
                       ssim=float(ssim(out, gt, crop_border=border, y_channel=True)),
                       megapixels=lq.shape[-2] * lq.shape[-1] / 1e6, seconds=seconds, peak_mib=peak)
        except Exception as e:  # one pair that cannot be restored must not end the benchmark
            row["error"] = error_text(e)
        if on_row is not None:
            on_row(row)
    return report
