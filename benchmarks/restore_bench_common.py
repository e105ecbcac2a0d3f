"""Helpers the restorer benchmarks (``bench_cdasr.py``, ``bench_dap_led.py``) share: paths, resume state, child runs."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from clipiq.core.files import atomic_write
from clipiq.data.io import list_images, load_image
from clipiq.restore.evaluate import peak_memory

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data"))
KODAK = SHARED / "photos" / "kodak24"


def log(msg: str) -> None:
    """Progress on stderr (the tables go to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def file_sha(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a file's sha256 (the resume keys name checkpoints by content, not by path)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class State:
    """Finished numbers by key, in a JSON file rewritten atomically after every addition (resume)."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() and not fresh else {}

    def get(self, key: str) -> Any:
        """The stored value, or None."""
        return self.data.get(key)

    def put(self, key: str, value: Any) -> Any:
        """Store and save at once."""
        self.data[key] = value
        atomic_write(self.path, json.dumps(self.data, indent=0))
        return value


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels, as a saved image is."""
    return x.clamp(0, 1).mul(255).round().div(255)


def save_png(x: torch.Tensor, path: Path) -> None:
    """Save a (3,H,W) or (1,H,W) [0,1] tensor as an 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = (x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())
    Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(path)


def quick_photos(folder: Path, count: int, crop: Callable[[torch.Tensor], torch.Tensor]) -> Path:
    """``folder/photos``: ``count`` cropped Kodak photos (smooth random ones without the shared data), made once."""
    photos = folder / "photos"
    if not photos.is_dir():
        photos.mkdir(parents=True)
        sources = sorted(list_images([KODAK]))[:count] if KODAK.is_dir() else []
        for i in range(count):
            if sources:
                x = crop(load_image(sources[i]))
            else:  # smooth random photos when the shared data is missing
                x = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12), size=96, mode="bicubic")[0]
            save_png(x.clamp(0, 1), photos / f"p{i}.png")
    return photos


def cost_input(h: int, w: int) -> torch.Tensor:
    """A (3,h,w) input for a cost measurement: the first Kodak photo resized (random pixels without it)."""
    if KODAK.is_dir():  # real content (the network's cost does not depend on it, CLIP's guidance barely)
        return torch.nn.functional.interpolate(load_image(sorted(list_images([KODAK]))[0])[None], size=(h, w),
                                               mode="bilinear", align_corners=False)[0].clamp(0, 1)
    return torch.rand(3, h, w)


def timed_calls(r: Callable[[torch.Tensor], Any], x: torch.Tensor, rounds: int
                ) -> tuple[list[float], list[float], str]:
    """One warm-up call, then ``rounds`` timed calls: (seconds, peak growth MiB of each, memory kind)."""
    r(x)  # warm-up: first-call allocations and oneDNN kernel selection
    kind, start = peak_memory(torch.device("cpu"))
    times, growth = [], []
    for _ in range(rounds):
        stop = start()
        t0 = time.perf_counter()
        r(x)
        times.append(time.perf_counter() - t0)
        growth.append(stop())
    return times, growth, kind


def run_child(script: str, cfg: dict[str, Any], what: str) -> dict[str, Any]:
    """Run ``script --child CFG`` in a fresh process and return the JSON on its last stdout line."""
    proc = subprocess.run([sys.executable, script, "--child", json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(x: float | None, spec: str = ".2f") -> str:
    """A number, or a dash."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def add_out_args(ap: argparse.ArgumentParser, default_out: Path, out_help: str, parts: tuple[str, ...]) -> None:
    """The ``--out``, ``--json`` and ``--parts`` options."""
    ap.add_argument("--out", type=Path, default=default_out, help=out_help)
    ap.add_argument("--json", type=Path, help="write every number to this file")
    ap.add_argument("--parts", default=",".join(parts))


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """The ``--quick``, ``--fresh`` and hidden ``--child`` options."""
    ap.add_argument("--quick", action="store_true", help="smoke run with tiny stand-in checkpoints (minutes)")
    ap.add_argument("--fresh", action="store_true", help="ignore OUT/state.json and measure everything again")
    ap.add_argument("--child", help=argparse.SUPPRESS)


def parse_parts(ap: argparse.ArgumentParser, text: str, parts: tuple[str, ...]) -> list[str]:
    """The ``--parts`` list, erroring on an unknown part."""
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(parts))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {', '.join(parts)}")
    return chosen


def write_results(results: dict[str, Any], markdown: Callable[[dict[str, Any]], str], out: Path,
                  json_path: Path | None, t_start: float) -> None:
    """Record the total time, print the tables, write OUT/results.md and (with --json) every number."""
    results["seconds"] = time.perf_counter() - t_start
    md = markdown(results)
    print(md)
    atomic_write(out / "results.md", md + "\n")
    print(f"\ntotal time {results['seconds']:.0f} s; tables in {out / 'results.md'}")
    if json_path:
        atomic_write(json_path, json.dumps(results, indent=1))


def part_tables(res: dict[str, Any] | None, title: str, tables: Callable[[dict[str, Any]], list[str]]) -> list[str]:
    """A part's markdown: its tables and a blank line, why it was skipped, or nothing when it did not run."""
    if res and "skipped" not in res:
        return [*tables(res), ""]
    if res:
        return [f"### {title}: skipped ({res['skipped']})", ""]
    return []


def tables_markdown(results: dict[str, Any], quick_note: str,
                    parts: Sequence[tuple[str, str, Callable[[dict[str, Any]], list[str]]]]) -> str:
    """The markdown of every (key, title, tables) part that ran, under ``quick_note`` on a quick run."""
    lines = [quick_note, ""] if results.get("quick") else []
    for key, title, tables in parts:
        lines += part_tables(results.get(key), title, tables)
    return "\n".join(lines)
