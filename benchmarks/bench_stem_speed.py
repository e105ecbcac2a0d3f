#!/usr/bin/env python
"""CPU speed of the EfficientNet-Lite0 stem's fast inference path against its exact reference path.

The fast path (``clipiq.clip.efficientnet.ConvBN``: batch norms folded into the convs, channels_last, stride-2
'same' padding done by the conv, ReLU6 and the residual add fused into oneDNN's conv) is timed against the
reference path (``EfficientNetLite0.reference_path()``, the unfused modules) in the same process, on:

* ``features``: the ImageNet stem alone (``load_lite0().features``), inputs in [-1, 1];
* ``clipiqa``: the whole zero-shot metric, ``clipiq.create_metric("clipiqa")`` on the offline default backbone,
  with only its stem switched between the two paths.

Inputs are random 500x500 images, batch 1 and 8, fp32 and bf16. The two variants alternate within each round
(the order flips every round) so a shared machine's load hits both alike; the speed-up is the ratio of the two
times within a round, and the table gives the median over rounds. ``max diff`` is the largest absolute
difference of the outputs (stem: over the s16/s32 maps and the statistics, also relative to the largest reference
value; metric: the scores). ``--ablate`` adds the fast path without channels_last for the stem alone.

    OMP_NUM_THREADS=2 python benchmarks/bench_stem_speed.py
    OMP_NUM_THREADS=2 python benchmarks/bench_stem_speed.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

import clipiq
import clipiq.clip.efficientnet as effnet
from clipiq.clip.efficientnet import ConvBN, EfficientNetLite0, load_lite0

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SIZE = 500


@dataclass
class Row:
    """One table row: median times of both paths, the median per-round speed-up and the output difference."""

    target: str
    precision: str
    batch: int
    variant: str
    ref_s: float
    new_s: float
    speedup: float
    max_diff: float
    rel_diff: float
    ref_vs_fp32: float | None = None  # relative max difference of each path's outputs from fp32's (bf16 rows)
    new_vs_fp32: float | None = None


def _flat(out: object) -> list[Tensor]:
    """The output tensors of a call (stem maps or metric scores)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [v for v in out.values() if isinstance(v, Tensor)]
    return [t for t in out if isinstance(t, Tensor)]  # type: ignore[union-attr]


def _diff(new: object, ref: object) -> tuple[float, float]:
    """Max absolute difference over all outputs, and that relative to the largest reference value."""
    pairs = list(zip(_flat(new), _flat(ref), strict=True))
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in pairs)
    scale = max(float(b.float().abs().max()) for _, b in pairs)
    return diff, diff / scale if scale else diff


@contextlib.contextmanager
def _no_channels_last(stem: EfficientNetLite0) -> Iterator[None]:
    """The fast path without channels_last (for the ablation); the folded weights are refolded on both sides."""
    def refold() -> None:
        for m in stem.modules():
            if isinstance(m, ConvBN):
                m._fused = None
    effnet._CHANNELS_LAST = False
    refold()
    try:
        yield
    finally:
        effnet._CHANNELS_LAST = True
        refold()


def _time(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds of one call, and its output."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def compare(target: str, precision: str, batch: int, variant: str, stem: EfficientNetLite0,
            run: Callable[[], object], repeats: int,
            fast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
            fp32: object = None) -> tuple[Row, object]:
    """Time the reference path against the fast path (inside ``fast()``), alternating, after a warm-up each.

    Returns the row and the reference output; ``fp32`` (the fp32 reference output) adds each path's distance to it.
    """
    def ref_call() -> tuple[float, object]:
        with stem.reference_path():
            return _time(run)

    def new_call() -> tuple[float, object]:
        with fast():
            return _time(run)

    _, ref_out = ref_call()
    _, new_out = new_call()
    max_diff, rel_diff = _diff(new_out, ref_out)
    ref_t: list[float] = []
    new_t: list[float] = []
    for r in range(repeats):
        order = (ref_call, new_call) if r % 2 == 0 else (new_call, ref_call)
        for call in order:
            (ref_t if call is ref_call else new_t).append(call()[0])
    ratios = [a / b for a, b in zip(ref_t, new_t, strict=True)]
    vs = (_diff(ref_out, fp32)[1], _diff(new_out, fp32)[1]) if fp32 is not None else (None, None)
    return Row(target, precision, batch, variant, statistics.median(ref_t), statistics.median(new_t),
               statistics.median(ratios), max_diff, rel_diff, *vs), ref_out


def table(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    lines = ["| target | precision | batch | fast path | reference s | fast s | reference img/s | fast img/s "
             "| speed-up (median of rounds) | max abs diff | relative | ref vs fp32 | fast vs fp32 |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        vs = [f"{v:.1e}" if v is not None else "" for v in (r.ref_vs_fp32, r.new_vs_fp32)]
        lines.append(f"| {r.target} | {r.precision} | {r.batch} | {r.variant} | {r.ref_s:.3f} | {r.new_s:.3f} | "
                     f"{r.batch / r.ref_s:.2f} | {r.batch / r.new_s:.2f} | **{r.speedup:.2f}x** | "
                     f"{r.max_diff:.2e} | {r.rel_diff:.1e} | {vs[0]} | {vs[1]} |")
    return "\n".join(lines)


def main() -> None:
    """Parse the options, run every comparison and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per comparison (default 5)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--precisions", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    ap.add_argument("--targets", nargs="+", choices=["features", "clipiqa"], default=["features", "clipiqa"])
    ap.add_argument("--ablate", action="store_true", help="also time the stem's fast path without channels_last")
    ap.add_argument("--quick", action="store_true", help="batch 1 only, 3 rounds (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.batches, args.repeats = [1], 3
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {SIZE}x{SIZE} inputs, "
          f"{args.repeats} rounds", flush=True)
    rows: list[Row] = []
    fp32_out: dict[tuple[str, int], object] = {}  # the fp32 reference outputs, for the bf16 rows
    lite0 = load_lite0()
    for precision in args.precisions:
        dtype = DTYPES[precision]
        stem = lite0 if dtype == torch.float32 else copy.deepcopy(lite0).to(dtype)
        metric = clipiq.create_metric("clipiqa", device="cpu", precision=precision) \
            if "clipiqa" in args.targets else None
        for batch in args.batches:
            x = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
            with torch.inference_mode():
                if "features" in args.targets:
                    xn = (x * 2 - 1).to(dtype)
                    row, ref = compare("features", precision, batch, "all", stem,
                                       lambda s=stem, xn=xn: s.features(xn), args.repeats,
                                       fp32=fp32_out.get(("features", batch)))
                    fp32_out.setdefault(("features", batch), ref)
                    rows.append(row)
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
                    if args.ablate:
                        row, _ = compare("features", precision, batch, "no channels_last", stem,
                                         lambda s=stem, xn=xn: s.features(xn), args.repeats,
                                         fast=lambda s=stem: _no_channels_last(s))
                        rows.append(row)
                        print(table(rows[-1:]).splitlines()[-1], flush=True)
                if metric is not None:
                    mstem = metric.clip.visual.stem
                    assert mstem is not None, "clipiqa's default backbone has no stem"
                    row, ref = compare("clipiqa", precision, batch, "all", mstem,
                                       lambda m=metric, x=x: m(x), args.repeats,
                                       fp32=fp32_out.get(("clipiqa", batch)))
                    fp32_out.setdefault(("clipiqa", batch), ref)
                    rows.append(row)
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
