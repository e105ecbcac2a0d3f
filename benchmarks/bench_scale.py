#!/usr/bin/env python
"""Scale-out on one machine: the local runner against Ray Data with 1 and 2 actors, and 1 against 2 training
processes. Two cores cannot show a cluster's speed-up; what this measures is the per-actor (and per-process)
throughput and memory from which a cluster's can be estimated, and what the engine costs over the local runner.

- **Scoring**: ``--images`` crops of ``--size`` px cut from the shared photos (Kodak24, Sun-Hays80; several
  crops per photo), written as PNG to a temporary folder. Each configuration is a fresh ``python -m clipiq score
  <folder> -o <file>.parquet`` process: ``local`` (the batch runner, its default threads), ``ray-1`` (one actor
  with all the cores' threads) and ``ray-2`` (two actors, one thread each). Reported: wall seconds, images/s over
  the whole command (start-up included) and net of start-up (the same command timed on ``--warm`` images is
  subtracted), and peak RSS per process (sampled from /proc every 0.2 s over the command's process tree: the
  driver, each Ray actor, the Ray daemons), and whether the scores agree with the local runner's (max |diff|).
- **Training** (``--train``): ``clipiq train dap-led --config configs/dap-led/tiny.yaml`` (96 px patches, total
  batch 8) for ``--train-steps`` steps with 1 process and with ``--nproc 2`` (same total batch, one thread per
  process); steps/s from each run's summary.

    python benchmarks/bench_scale.py --quick                   # 60 images, small crops: a smoke run
    python benchmarks/bench_scale.py --json runs/bench_scale.json --train
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data"))
PHOTO_SETS = ("kodak24", "sunhays80")


def write_crops(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` PNG crops of ``size`` px from the shared photos, cycling photos and crop positions."""
    import numpy as np
    from PIL import Image

    sources = sorted(p for s in PHOTO_SETS for p in (SHARED / "photos" / s).glob("*") if p.suffix.lower() in
                     (".png", ".jpg", ".jpeg"))
    if not sources:
        raise FileNotFoundError(f"no photos in {SHARED / 'photos'} (set CLIPIQ_SHARED_DATA to shared/data)")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(size, w, h)
            x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            path = folder / f"crop{i:05d}.png"
            im.crop((x, y, x + s, y + s)).save(path)
            out.append(path)
    return out


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _name_and_rss(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None
    if "MetricActor" in cmd:
        name = "ray actor (MetricActor)"
    elif "clipiq score" in cmd or "-m clipiq" in cmd:
        name = "driver (clipiq score)"
    elif cmd.startswith("ray::"):
        name = cmd.split()[0]
    else:
        name = Path(cmd.split()[0]).name if cmd else "?"
    return name, rss


def run_sampled(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, return code, and the peak RSS (MiB) of each process of its tree by kind."""
    peaks: dict[int, tuple[str, int]] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in _tree(proc.pid):
                got = _name_and_rss(pid)
                if got and got[1] > peaks.get(pid, ("", 0))[1]:
                    peaks[pid] = got
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    by_kind: dict[str, list[float]] = {}
    for name, rss in peaks.values():
        by_kind.setdefault(name, []).append(round(rss / 1024, 1))
    return {"seconds": wall, "rc": proc.returncode, "peak_rss_mib": by_kind, "stderr_tail": err[-800:]}


def score_configs(threads: int) -> dict[str, list[str]]:
    """The scoring configurations: extra arguments of ``clipiq score``."""
    return {
        "local": ["--engine", "local", "--workers", "2"],
        "ray-1": ["--engine", "ray", "--actors", "1", "--cpus-per-actor", "1", "--threads-per-actor", str(threads)],
        "ray-2": ["--engine", "ray", "--actors", "2", "--cpus-per-actor", "1", "--threads-per-actor",
                  str(max(1, threads // 2))],
    }


def bench_scoring(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Each configuration on the same images, plus a warm-up-sized run for start-up; scores compared to local."""
    import pyarrow.parquet as pq

    images, warm = work / "images", work / "warm"
    write_crops(images, args.images, args.size)
    write_crops(warm, args.warm, args.size)
    threads = args.threads
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, "-m", "clipiq", "score", "--model", args.model, "--batch-size", str(args.batch_size)]
    results: dict[str, Any] = {}
    scores: dict[str, dict[str, float]] = {}
    for name, extra in score_configs(threads).items():
        startup = run_sampled([*base, str(warm), "-o", str(work / f"{name}-warm.parquet"), *extra], env)
        full = run_sampled([*base, str(images), "-o", str(work / f"{name}.parquet"), *extra], env)
        if full["rc"] not in (0, 1):
            raise RuntimeError(f"{name} failed: {full['stderr_tail']}")
        table = pq.read_table(work / f"{name}.parquet").to_pylist()
        scores[name] = {r["path"]: r["score"] for r in table}
        net = full["seconds"] - startup["seconds"]
        results[name] = {
            "seconds": round(full["seconds"], 2),
            "images_per_s": round(args.images / full["seconds"], 2),
            "net_images_per_s": round((args.images - args.warm) / net, 2) if net > 0 else None,
            "startup_run_seconds": round(startup["seconds"], 2),
            "peak_rss_mib": full["peak_rss_mib"],
            "rows": len(table),
        }
        print(json.dumps({name: results[name]}), flush=True)
    for name in results:
        diffs = [abs(scores[name][p] - s) for p, s in scores["local"].items() if s is not None]
        results[name]["max_abs_diff_vs_local"] = max(diffs) if diffs else None
        rate, rate_local = results[name]["images_per_s"], results["local"]["images_per_s"]
        results[name]["throughput_vs_local"] = round(rate / rate_local, 3)
        net, net_local = results[name]["net_images_per_s"], results["local"]["net_images_per_s"]
        results[name]["net_throughput_vs_local"] = round(net / net_local, 3) if net and net_local else None
    return results


def bench_training(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """1 against 2 training processes on the tiny DAP-LED config: steps/s from the summaries."""
    out: dict[str, Any] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for nproc in (1, 2):
        run_dir = work / f"train-{nproc}"
        cmd = [sys.executable, "-m", "clipiq", "train", "dap-led", "--config", str(REPO / "configs/dap-led/tiny.yaml"),
               "--run-dir", str(run_dir), "--nproc", str(nproc), f"train.steps={args.train_steps}",
               f"train.batch_size={args.train_batch}", f"train.eval_every={args.train_steps}",
               f"train.ckpt_every={args.train_steps}", *args.train_override]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"training with {nproc} process(es) failed: {proc.stderr[-1500:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
        out[f"nproc-{nproc}"] = {"steps": summary.get("steps"), "steps_per_s": summary.get("steps_per_s"),
                                 "wall_seconds": round(wall, 2)}
        print(json.dumps({f"train nproc={nproc}": out[f"nproc-{nproc}"]}), flush=True)
    one, two = out["nproc-1"]["steps_per_s"], out["nproc-2"]["steps_per_s"]
    out["speedup_2_vs_1"] = round(two / one, 3) if one and two else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--warm", type=int, default=16, help="images of the start-up run (subtracted for net rates)")
    ap.add_argument("--size", type=int, default=256, help="crop side in pixels")
    ap.add_argument("--model", default="degradation-clip-v2")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads in all (default: cores)")
    ap.add_argument("--train", action="store_true", help="also time 1 against 2 training processes")
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--train-batch", type=int, default=8, help="the total batch, split over the processes")
    ap.add_argument("--train-override", nargs="*", default=["data.patch_size=96"],
                    help="more config overrides of the training runs (default: 96 px patches)")
    ap.add_argument("--quick", action="store_true", help="60 images of 128 px, test-tiny model")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.images, args.size, args.model, args.warm = 60, 128, "test-tiny", 8
    with tempfile.TemporaryDirectory(prefix="clipiq-bench-scale-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"images": args.images, "size": args.size, "model": args.model,
                                  "cores": os.cpu_count(), "scoring": bench_scoring(args, work)}
        if args.train:
            result["training"] = bench_training(args, work)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
