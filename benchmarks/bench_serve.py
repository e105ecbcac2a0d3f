#!/usr/bin/env python
"""A bounded load test of ``clipiq serve``: throughput, latency, memory over many requests, and overload.

The server runs in a subprocess on 127.0.0.1 (``python -m clipiq serve``; where that command is not there yet,
the same app under uvicorn from a ``python -c`` snippet), and the script waits for ``/readyz``. The inputs are
``--images`` copies of the Kodak24 photos (``../shared/data/photos/kodak24`` or ``$CLIPIQ_SHARED_DATA``; cycled
with flips to make more than 24, downscaled to ``--max-side``), written as JPEGs to a temporary folder.

- **Levels**: 1, 8 and 32 concurrent clients (threads, one ``httpx.Client`` each), one image per request to
  ``POST /v1/score``; each level is bounded by ``--level-requests`` and ``--level-seconds``. Reported:
  images/s, p50/p95/p99 latency, and the ratio to ``python -m clipiq score <folder>`` timed on the same images in
  the same run (its images/s net of start-up: the folder minus one image, over the time difference).
- **Memory**: ``--requests`` requests (8 clients) while the server's VmRSS is sampled from /proc; the peaks over
  the first and the last ``min(500, requests / 4)`` requests, and the server's VmHWM (its peak since start).
- **Overload**: a second server with ``--overload-queue-size`` (tiny) hit by ``--overload-clients`` clients at
  once, no retries: it must answer some 503s (``queue_full``, with Retry-After), and every request sent must get
  exactly one answer (sent = 200 + 503 + other; lost = none), and still score afterwards.

    python benchmarks/bench_serve.py --quick --model test-tiny          # a smoke run: about a minute
    python benchmarks/bench_serve.py --json runs/bench_serve.json       # default model, 64 images, 2000 requests

Exit status 1 when a check fails (errors at a level, a lost request, no 503 under overload).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data"))
KODAK = SHARED / "photos" / "kodak24"


# --------------------------------------------------------------------------------------------------- inputs


def write_images(folder: Path, count: int, max_side: int) -> list[Path]:
    """``count`` JPEGs from Kodak24: photo ``i % 24``, flipped by ``i // 24`` (none, h, v, both), downscaled."""
    from PIL import Image, ImageOps

    sources = sorted(KODAK.glob("*.png"))
    if not sources:
        raise FileNotFoundError(f"no Kodak24 photos in {KODAK} (set CLIPIQ_SHARED_DATA to the shared/data folder)")
    paths = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as im:
            img = im.convert("RGB")
        variant = (i // len(sources)) % 4
        if variant & 1:
            img = ImageOps.mirror(img)
        if variant & 2:
            img = ImageOps.flip(img)
        if max_side and max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.BICUBIC)
        path = folder / f"img{i:04d}.jpg"
        img.save(path, quality=92)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_flags() -> set[str] | None:
    """The options of ``python -m clipiq serve``, or None where the command does not exist (yet)."""
    run = subprocess.run([sys.executable, "-m", "clipiq", "serve", "--help"], capture_output=True, text=True,
                         check=False)
    if run.returncode != 0:
        return None
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", run.stdout))


@dataclass
class Server:
    proc: subprocess.Popen
    base: str
    log: Path
    how: str

    def status(self, key: str) -> float:
        """VmRSS / VmHWM of the server process in MiB."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"^{key}:\s+(\d+)", text, re.M).group(1)) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(args, log: Path, queue_size: int | None = None) -> Server:
    """The server in a subprocess; returns once ``/readyz`` answers 200 (or raises, with its log's tail)."""
    import httpx

    port = free_port()
    options = {"metric": args.metric, "model": args.model, "device": args.device, "batch_size": args.batch_size,
               "queue_size": queue_size, "attributes": args.attributes}
    options = {k: v for k, v in options.items() if v is not None}
    flags = serve_flags()
    if flags is not None:
        cmd = [sys.executable, "-m", "clipiq", "serve", "--host", "127.0.0.1", "--port", str(port)]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if flag not in flags:
                raise SystemExit(f"`clipiq serve` has no {flag} option (its options: {sorted(flags)})")
            cmd += [flag, str(value)]
        how = "python -m clipiq serve"
    else:
        snippet = ("import sys, json, uvicorn; from clipiq.serve import ServeSettings, create_app; "
                   "o = json.loads(sys.argv[1]); a = o.pop('attributes', None); "
                   "o['metric_options'] = {'attributes': a} if a else {}; "
                   "uvicorn.run(create_app(ServeSettings(**o)), host='127.0.0.1', port=int(sys.argv[2]), "
                   "log_level='warning')")
        cmd = [sys.executable, "-c", snippet, json.dumps(options), str(port)]
        how = "uvicorn + create_app (no `clipiq serve` command yet)"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    server = Server(proc, f"http://127.0.0.1:{port}", log, how)
    deadline = time.monotonic() + args.start_timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}) before it was ready:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"/readyz not 200 within {args.start_timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


# --------------------------------------------------------------------------------------------------- clients


@dataclass
class Tally:
    """What a run of requests got back."""

    sent: int = 0
    ok: int = 0                       # 200 with a score and no per-file error
    file_errors: int = 0              # 200 whose result row holds an error
    status: dict[int, int] = field(default_factory=dict)
    lost: int = 0                     # no answer (connection error, timeout)
    latencies: list[float] = field(default_factory=list)  # seconds, of the 200s
    retry_after_missing: int = 0      # 503s without Retry-After
    codes_503: dict[str, int] = field(default_factory=dict)
    lost_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies) * 1000
        pct = {f"p{q}_ms": (float(np.percentile(lat, q)) if lat.size else None) for q in (50, 95, 99)}
        return {"sent": self.sent, "ok": self.ok, "file_errors": self.file_errors,
                "status": {str(k): v for k, v in sorted(self.status.items())}, "lost": self.lost,
                "seconds": self.seconds, "images_per_s": self.ok / self.seconds if self.seconds else None,
                **pct, "retry_after_missing": self.retry_after_missing, "codes_503": self.codes_503,
                "lost_errors": self.lost_errors[:5]}


def run_clients(base: str, payloads: list[tuple[str, bytes]], clients: int, count: int, seconds: float,
                timeout: float, on_done=None) -> Tally:
    """``clients`` threads sending one image per request until ``count`` are sent or ``seconds`` have passed."""
    import httpx

    tally = Tally()
    issued = iter(range(count))
    issue_lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds
    barrier = threading.Barrier(clients)

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=timeout) as client:
            barrier.wait()
            while True:
                with issue_lock:
                    i = next(issued, None)
                if i is None or time.perf_counter() > deadline:
                    return
                name, data = payloads[i % len(payloads)]
                with tally.lock:
                    tally.sent += 1
                t0 = time.perf_counter()
                try:
                    resp = client.post("/v1/score", files={"files": (name, data, "image/jpeg")})
                except httpx.HTTPError as e:
                    with tally.lock:
                        tally.lost += 1
                        tally.lost_errors.append(f"{type(e).__name__}: {e}")
                    continue
                dt = time.perf_counter() - t0
                with tally.lock:
                    tally.status[resp.status_code] = tally.status.get(resp.status_code, 0) + 1
                    if resp.status_code == 200:
                        rows = resp.json().get("results", [])
                        if len(rows) == 1 and not rows[0].get("error") and rows[0].get("score") is not None:
                            tally.ok += 1
                            tally.latencies.append(dt)
                        else:
                            tally.file_errors += 1
                    elif resp.status_code == 503:
                        if "retry-after" not in resp.headers:
                            tally.retry_after_missing += 1
                        try:
                            code = resp.json()["error"]["code"]
                        except (ValueError, KeyError, TypeError):
                            code = "(not the error JSON)"
                        tally.codes_503[code] = tally.codes_503.get(code, 0) + 1
                    if on_done is not None:
                        on_done()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.seconds = time.perf_counter() - start
    return tally


def time_cli(args, folder: Path, paths: list[Path]) -> dict[str, Any]:
    """``python -m clipiq score`` on the folder and on one image: wall seconds, and images/s net of start-up."""
    def once(target: Path, out: Path) -> float:
        cmd = [sys.executable, "-m", "clipiq", "score", str(target), "--metric", args.metric, "-o", str(out)]
        if args.model:
            cmd += ["--model", args.model]
        if args.device:
            cmd += ["--device", args.device]
        if args.batch_size:
            cmd += ["--batch-size", str(args.batch_size)]
        if args.attributes:
            cmd += ["--attributes", args.attributes]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr[-3000:]}")
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="clipiq-bench-cli-") as tmp:
        one = once(paths[0], Path(tmp) / "one.jsonl")
        full = once(folder, Path(tmp) / "all.jsonl")
    n = len(paths)
    net = (n - 1) / (full - one) if full > one and n > 1 else None
    return {"images": n, "seconds": full, "seconds_one_image": one, "images_per_s_wall": n / full,
            "images_per_s_net": net}


# --------------------------------------------------------------------------------------------------- cases


def measure_levels(args, server: Server, payloads) -> list[dict[str, Any]]:
    rows = []
    for clients in args.concurrency:
        print(f"  {clients} client(s) ...", file=sys.stderr)
        tally = run_clients(server.base, payloads, clients, args.level_requests, args.level_seconds, args.timeout)
        rows.append({"clients": clients, **tally.summary()})
    return rows


def measure_memory(args, server: Server, payloads) -> dict[str, Any]:
    window = max(1, min(500, args.requests // 4))
    done = [0]
    samples: list[tuple[int, float]] = []  # (requests answered so far, VmRSS MiB)
    stop = threading.Event()

    def on_done() -> None:  # called under the tally's lock
        done[0] += 1

    def sampler() -> None:
        while not stop.is_set():
            try:
                samples.append((done[0], server.status("VmRSS")))
            except (OSError, AttributeError):
                return
            stop.wait(0.05)

    rss_before = server.status("VmRSS")
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    tally = run_clients(server.base, payloads, args.memory_clients, args.requests, args.memory_seconds,
                        args.timeout, on_done=on_done)
    stop.set()
    th.join()
    answered = done[0]
    first = [rss for n, rss in samples if n <= window]
    last = [rss for n, rss in samples if n >= answered - window]
    return {"requests": args.requests, "clients": args.memory_clients, "window": window, **tally.summary(),
            "rss_before_mib": rss_before, "peak_first_mib": max(first) if first else None,
            "peak_last_mib": max(last) if last else None, "peak_run_mib": max(r for _, r in samples),
            "vmhwm_mib": server.status("VmHWM"), "samples": len(samples)}


def measure_overload(args, payloads, log: Path) -> dict[str, Any]:
    import httpx

    server = start_server(args, log, queue_size=args.overload_queue_size)
    try:
        tally = run_clients(server.base, payloads, args.overload_clients, args.overload_requests, args.level_seconds,
                            args.timeout)
        after = httpx.post(f"{server.base}/v1/score", files={"files": (payloads[0][0], payloads[0][1])},
                           timeout=args.timeout)
        healthy = after.status_code == 200 and after.json()["results"][0].get("score") is not None
    finally:
        server.stop()
    s = tally.summary()
    answered = sum(tally.status.values())
    n503 = tally.status.get(503, 0)
    checks = {"some_503": n503 > 0, "none_lost": tally.lost == 0, "one_answer_each": answered == tally.sent,
              "retry_after_on_every_503": tally.retry_after_missing == 0,
              "503_code_is_queue_full": set(tally.codes_503) <= {"queue_full"}, "scores_afterwards": healthy}
    return {"queue_size": args.overload_queue_size, "clients": args.overload_clients, **s, "answered": answered,
            "ok_200": tally.status.get(200, 0), "busy_503": n503,
            "other": answered - tally.status.get(200, 0) - n503, "checks": checks}


# --------------------------------------------------------------------------------------------------- report


def fmt(x, digits=1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def report(rec: dict[str, Any]) -> str:
    cli = rec["cli"]
    lines = [f"clipiq serve, {rec['metric']} on {rec['model'] or 'the default model'}, device {rec['device']}, "
             f"attributes {rec['attributes'] or 'default'}, {rec['images']} Kodak24 JPEGs "
             f"(max side {rec['max_side']}), "
             f"server: {rec['server']}; "
             f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", "",
             "| case | clients | requests answered | ok | images/s | p50 ms | p95 ms | p99 ms | vs `clipiq score` |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = cli["images_per_s_net"] or cli["images_per_s_wall"]
    lines.append(f"| `clipiq score <folder>` (net of start-up; wall {cli['seconds']:.1f} s, one image "
                 f"{cli['seconds_one_image']:.1f} s) | | {cli['images']} | {cli['images']} | {fmt(base)} "
                 "| | | | 1.00 |")
    for r in rec["levels"]:
        ratio = r["images_per_s"] / base if r["images_per_s"] and base else None
        lines.append(f"| `POST /v1/score`, 1 image per request | {r['clients']} | {sum(r['status'].values())} | "
                     f"{r['ok']} | {fmt(r['images_per_s'])} | {fmt(r['p50_ms'])} | {fmt(r['p95_ms'])} | "
                     f"{fmt(r['p99_ms'])} | {fmt(ratio, 2)} |")
    m = rec["memory"]
    lines += ["", f"Server memory over {m['sent']} requests ({m['clients']} clients, {m['ok']} ok, "
                  f"{fmt(m['images_per_s'])} images/s; RSS sampled every 50 ms, {m['samples']} samples):", "",
              f"| RSS before MiB | peak over the first {m['window']} requests MiB | peak over the last {m['window']} "
              "MiB | growth MiB | peak of the run MiB | VmHWM since start MiB |",
              "|---:|---:|---:|---:|---:|---:|",
              f"| {fmt(m['rss_before_mib'])} | {fmt(m['peak_first_mib'])} | {fmt(m['peak_last_mib'])} | "
              f"{fmt((m['peak_last_mib'] or 0) - (m['peak_first_mib'] or 0))} | {fmt(m['peak_run_mib'])} | "
              f"{fmt(m['vmhwm_mib'])} |"]
    o = rec["overload"]
    lines += ["", f"Overload: queue size {o['queue_size']}, {o['clients']} clients, no retries:", "",
              "| sent | answered | 200 | 503 | other | lost | p50 ms of the 200s | checks |",
              "|---:|---:|---:|---:|---:|---:|---:|---|",
              f"| {o['sent']} | {o['answered']} | {o['ok_200']} | {o['busy_503']} | {o['other']} | {o['lost']} | "
              f"{fmt(o['p50_ms'])} | " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in o["checks"].items())
              + " |"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 8 images, few requests per case")
    ap.add_argument("--images", type=int, help="distinct input images (default 64; --quick 8)")
    ap.add_argument("--max-side", type=int, default=512, help="downscale the photos to this longer side (0: keep)")
    ap.add_argument("--metric", default="clipiqa")
    ap.add_argument("--model", help="e.g. test-tiny (random, fast); default: the metric's own")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, help="the server's (and `clipiq score`'s) batch size")
    ap.add_argument("--attributes", default="all",
                    help="clipiqa's attribute outputs, for the server and `clipiq score` alike (default all, as "
                         "`clipiq serve` has it; '' for the metric's default)")
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32],
                    help="client counts, comma list (default 1,8,32)")
    ap.add_argument("--level-requests", type=int, help="requests per level at most (default 256; --quick 32)")
    ap.add_argument("--level-seconds", type=float, default=120, help="seconds per level at most (default 120)")
    ap.add_argument("--requests", type=int, help="requests of the memory run (default 2000; --quick 120)")
    ap.add_argument("--memory-clients", type=int, default=8)
    ap.add_argument("--memory-seconds", type=float, default=1800, help="the memory run's time bound (default 1800)")
    ap.add_argument("--overload-queue-size", type=int, default=1)
    ap.add_argument("--overload-clients", type=int, default=48)
    ap.add_argument("--overload-requests", type=int, help="requests of the overload case (default 480; --quick 96)")
    ap.add_argument("--timeout", type=float, default=120, help="client timeout per request in seconds")
    ap.add_argument("--start-timeout", type=float, default=300, help="seconds to wait for /readyz")
    ap.add_argument("--json", type=Path, help="also write every number here")
    args = ap.parse_args(argv)
    q = args.quick
    args.images = args.images or (8 if q else 64)
    args.level_requests = args.level_requests or (32 if q else 256)
    args.requests = args.requests or (120 if q else 2000)
    args.overload_requests = args.overload_requests or (96 if q else 480)
    if args.quick and args.max_side == 512:
        args.max_side = 256

    try:
        import httpx  # noqa: F401
    except ImportError:
        print("skipped: httpx is not installed (pip install '.[serve]' httpx)", file=sys.stderr)
        return 0
    if not KODAK.is_dir():
        print(f"skipped: no Kodak24 photos at {KODAK} (set CLIPIQ_SHARED_DATA to the shared/data folder)",
              file=sys.stderr)
        return 0

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clipiq-bench-serve-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        paths = write_images(folder, args.images, args.max_side)
        payloads = [(p.name, p.read_bytes()) for p in paths]
        print(f"{len(paths)} images in {folder}; timing `clipiq score` ...", file=sys.stderr)
        cli = time_cli(args, folder, paths)
        print("starting the server ...", file=sys.stderr)
        server = start_server(args, tmp / "server.log")
        try:
            warm = run_clients(server.base, payloads, 2, min(8, len(payloads)), 120, args.timeout)  # untimed
            if warm.ok == 0:
                raise RuntimeError(f"warm-up got no score: {warm.summary()}\n{server.log.read_text()[-3000:]}")
            print("levels ...", file=sys.stderr)
            levels = measure_levels(args, server, payloads)
            print(f"memory over {args.requests} requests ...", file=sys.stderr)
            memory = measure_memory(args, server, payloads)
        finally:
            server.stop()
        print("overload ...", file=sys.stderr)
        overload = measure_overload(args, payloads, tmp / "overload.log")
    rec = {"metric": args.metric, "model": args.model, "device": args.device, "attributes": args.attributes,
           "images": len(paths),
           "max_side": args.max_side, "server": server.how, "quick": q, "cli": cli, "levels": levels,
           "memory": memory, "overload": overload, "wall_s": time.perf_counter() - t_start}
    print(report(rec))
    print(f"\nwall time {rec['wall_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rec, indent=1))
    failed = [f"level {r['clients']}: {r['sent'] - r['ok']} of {r['sent']} not ok" for r in levels
              if r["ok"] != r["sent"]]
    failed += [f"memory run: {memory['sent'] - memory['ok']} not ok"] if memory["ok"] != memory["sent"] else []
    failed += [f"overload: {k}" for k, v in overload["checks"].items() if not v]
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
