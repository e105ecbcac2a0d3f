#!/usr/bin/env python
"""Peak memory of the Python API over many paths: streamed through the batch runner, against decode-all-first.

``metric(paths)`` decodes in worker threads a bounded window ahead of the model and keeps only each image's
scores, so its peak memory should not grow with the number of paths. This script writes ``--count`` copies of
one ``--size`` x ``--size`` photo crop to a temporary folder and scores them with clipiqa on ``degradation-clip``
(CPU, default options; ``--batch-size`` sets the metric's) in a fresh subprocess per case:

- ``api``: ``metric(paths)`` over the first 100 paths, then over all of them;
- ``naive``: every path decoded first (``[load_image(p) for p in paths]``), then ``metric(tensors)``: what a
  caller who collects the images before scoring pays.

Each subprocess loads the metric, scores one image (so the model's first-batch allocations count as loading),
resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), scores, and reports the peak RSS (``VmHWM``).
All cases must give the same scores.

    python benchmarks/bench_api_memory.py                 # 1,000 paths: about 3-4 minutes on 2 CPU cores
    python benchmarks/bench_api_memory.py --count 300     # a quicker check
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "kodak-kodim23.png"


def _mem_mib(key: str) -> float:
    """'VmRSS' (current) or 'VmHWM' (peak) of this process in MiB, from /proc (Linux)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+)", text, re.M).group(1)) / 1024


def worker(mode: str, folder: Path, count: int, batch_size: int) -> dict[str, Any]:
    """Inside a fresh process: load, warm up, reset the peak mark, score ``count`` paths, report memory."""
    import clipiq
    from clipiq.data.io import load_image

    paths = sorted(folder.glob("*.jpg"))[:count]
    metric = clipiq.create_metric("clipiqa", model="degradation-clip", device="cpu", batch_size=batch_size)
    metric(paths[0])
    rec: dict[str, Any] = {"mode": mode, "count": len(paths), "after_load_mib": _mem_mib("VmRSS")}
    # The peak while scoring only, not the loading transients (VmHWM, not ru_maxrss, which survives exec).
    Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    if mode == "api":
        scores = metric(paths)
    elif mode == "naive":
        images = [load_image(p) for p in paths]
        rec["decoded_mib"] = sum(x.numel() * x.element_size() for x in images) / 2**20
        scores = metric(images)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    rec["seconds"] = time.perf_counter() - t0
    rec["peak_mib"] = _mem_mib("VmHWM")
    rec["increase_mib"] = rec["peak_mib"] - rec["after_load_mib"]
    rec["scores"] = scores.tolist()
    return rec


def measure(mode: str, folder: Path, count: int, batch_size: int) -> dict[str, Any]:
    """Run :func:`worker` in a fresh subprocess and return its record."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, str(folder), str(count), str(batch_size)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"{mode} x {count} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def write_copies(folder: Path, count: int, size: int) -> int:
    """``count`` copies of a centre crop of the example photo as JPEG; returns the bytes of one."""
    from PIL import Image

    with Image.open(PHOTO) as im:
        w, h = im.size
        s = min(size, w, h)
        crop = im.convert("RGB").crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        if s < size:
            crop = crop.resize((size, size), Image.BICUBIC)
    first = folder / "img00000.jpg"
    crop.save(first, quality=95)
    for i in range(1, count):
        shutil.copyfile(first, folder / f"img{i:05d}.jpg")
    return first.stat().st_size


def main(argv: list[str] | None = None) -> int:
    """Write the copies, run the three cases, print the table (and optionally the JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="paths in the large cases (default 1000)")
    ap.add_argument("--small", type=int, default=100, help="paths in the small API case (default 100)")
    ap.add_argument("--size", type=int, default=500, help="side of the square image in pixels (default 500)")
    ap.add_argument("--batch-size", type=int, default=32, help="the metric's images per forward (default 32)")
    ap.add_argument("--json", type=Path, help="also write every number here")
    ap.add_argument("--worker", nargs=4, metavar=("MODE", "FOLDER", "COUNT", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        mode, folder, count, batch = args.worker
        print(json.dumps(worker(mode, Path(folder), int(count), int(batch))))
        return 0

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clipiq-api-mem-") as tmp:
        folder = Path(tmp)
        nbytes = write_copies(folder, args.count, args.size)
        print(f"{args.count} copies of a {args.size}x{args.size} JPEG ({nbytes / 1024:.0f} KiB each) in {folder}",
              file=sys.stderr)
        cases = [("api", args.small), ("api", args.count), ("naive", args.count)]
        records = []
        for mode, count in cases:
            print(f"running {mode} x {count} ...", file=sys.stderr)
            records.append(measure(mode, folder, count, args.batch_size))
    small = records[0]["scores"]
    same = all(r["scores"][: len(small)] == small for r in records) and records[1]["scores"] == records[2]["scores"]

    print(f"\nclipiqa on degradation-clip, CPU, batch size {args.batch_size}, default view (tiles); "
          f"{args.size}x{args.size} JPEG inputs\n")
    print("| case | paths | peak RSS MiB | increase over loaded MiB | decoded images MiB | s | images/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in records:
        label = "`metric(paths)`" if r["mode"] == "api" else "decode all, then `metric(tensors)`"
        decoded = f"{r['decoded_mib']:.0f}" if "decoded_mib" in r else ""
        print(f"| {label} | {r['count']} | {r['peak_mib']:.0f} | {r['increase_mib']:.0f} | {decoded} | "
              f"{r['seconds']:.1f} | {r['count'] / r['seconds']:.1f} |")
    print(f"\nscores identical across cases: {same}; wall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"records": records, "same_scores": same}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
