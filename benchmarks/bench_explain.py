"""``clipiq explain``: does the quality heatmap find a localised degradation, and what does a report cost?

Parts (``--parts``, default both; skipped with the reason when ``../shared/data`` (``CLIPIQ_SHARED_DATA``) lacks
the photos):

* ``localise``: held-out McMaster18 photos with one half (left or right, drawn per photo from ``--seed``)
  degraded by each of ``--degradations`` (clipiq.degrade names, level ``--level``), the other half clean. The
  explainer (default metric and backbone, no regions: the maps are what is measured) gives the heatmap ("Bad
  photo." per place) and the degradation maps. A case is a **hit** when the heatmap's worst area falls on the
  degraded half: the worst cell of the heatmap averaged over a ``--cells`` x ``--cells`` grid lies in that half.
  Also reported: how often the degraded half's mean heatmap is the higher (a softer test), and the same two for
  the degradation map that names the damage (blurry for blurs, noisy for noise, dark for low light). Goal: hits
  in >= 80% of cases.
* ``cost``: ``clipiq score`` and ``clipiq explain`` on the same folder (the first ``--images`` Kodak24 photos), each
  timed in a fresh process after one warm-up process (whole commands: model loading included, as a user waits),
  the report's size per image, and the ratio. Goal: explain <= 2x score's time, <= 300 KB per image.

Usage: python benchmarks/bench_explain.py [--parts localise,cost] [--out runs/bench-explain] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from clipiq.data.io import list_images, load_image
from clipiq.degrade import apply
from clipiq.explain import Explainer

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data"))
MCMASTER = SHARED / "photos" / "mcmaster18"
KODAK = SHARED / "photos" / "kodak24"
# The map of clipiq.explain.DEGRADATION_MAPS that names each degradation's damage.
NAMED_MAP = {"gaussian_blur": "blurry", "motion_blur": "blurry", "defocus_blur": "blurry",
             "gaussian_noise": "noisy", "poisson_gaussian_noise": "noisy", "low_light": "dark"}


def half_degraded(photo: torch.Tensor, name: str, level: int, left: bool, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """The photo with one half degraded, and the boolean mask of that half."""
    bad = apply(photo, name, level, seed=seed).clamp(0, 1)
    w = photo.shape[-1]
    mask = np.zeros(photo.shape[-2:], bool)
    if left:
        mask[:, : w // 2] = True
    else:
        mask[:, w // 2 :] = True
    out = photo.clone()
    m = torch.from_numpy(mask)
    out[:, m] = bad[:, m]
    return out.mul(255).round().div(255), mask


def worst_cell_hit(values: torch.Tensor, mask: np.ndarray, cells: int) -> bool:
    """Whether the worst cell of ``values`` averaged on a cells x cells grid lies in the masked half."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(values[None, None].float(), cells)[0, 0]
    i = int(pooled.argmax())
    r, c = divmod(i, cells)
    h, w = mask.shape
    return bool(mask[min(h - 1, int((r + 0.5) * h / cells)), min(w - 1, int((c + 0.5) * w / cells))])


def localise(args: argparse.Namespace) -> dict:
    photos = sorted(list_images([str(MCMASTER)]))[: args.photos or None]
    explainer = Explainer(segmenter="grid", describer=None, max_side=args.max_side)
    rng = np.random.default_rng(args.seed)
    sides = rng.random(len(photos)) < 0.5
    rows: dict[str, dict[str, float]] = {}
    for name in args.degradations.split(","):
        hits = soft = map_hits = map_soft = 0
        for i, (path, left) in enumerate(zip(photos, sides)):
            image, mask = half_degraded(load_image(path), name, args.level, bool(left), args.seed + i)
            ex = explainer(image, source=str(path))
            h, w = ex.heatmap.shape
            m = torch.from_numpy(np.asarray(
                torch.nn.functional.interpolate(torch.from_numpy(mask)[None, None].float(), size=(h, w))[0, 0] > 0.5))
            hits += worst_cell_hit(ex.heatmap, m.numpy(), args.cells)
            soft += bool(ex.heatmap[m].mean() > ex.heatmap[~m].mean())
            named = ex.degradation_maps.get(NAMED_MAP.get(name, ""))
            if named is not None:
                map_hits += worst_cell_hit(named, m.numpy(), args.cells)
                map_soft += bool(named[m].mean() > named[~m].mean())
            print(f"  {name} {Path(path).name} ({'left' if left else 'right'}): heatmap degraded/clean "
                  f"{float(ex.heatmap[m].mean()):.3f}/{float(ex.heatmap[~m].mean()):.3f}", flush=True)
        n = len(photos)
        rows[name] = {"cases": n, "worst_area_hit": hits / n, "half_mean_higher": soft / n,
                      "named_map": NAMED_MAP.get(name, ""),
                      "named_map_worst_area_hit": map_hits / n if name in NAMED_MAP else None,
                      "named_map_half_mean_higher": map_soft / n if name in NAMED_MAP else None}
    total = sum(r["cases"] for r in rows.values())
    rows["all"] = {"cases": total,
                   "worst_area_hit": sum(r["worst_area_hit"] * r["cases"] for r in rows.values()) / total,
                   "half_mean_higher": sum(r["half_mean_higher"] * r["cases"] for r in rows.values()) / total}
    return rows


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=False, capture_output=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return time.perf_counter() - t0


def cost(args: argparse.Namespace) -> dict:
    folder = args.out / "cost-images"
    folder.mkdir(parents=True, exist_ok=True)
    for p in sorted(list_images([str(KODAK)]))[: args.images]:
        target = folder / Path(p).name
        if not target.exists():
            target.symlink_to(Path(p).resolve())
    py = [sys.executable, "-m", "clipiq"]
    score = [*py, "score", str(folder)]
    report = args.out / "cost-report"

    def explain() -> list[str]:
        shutil.rmtree(report, ignore_errors=True)
        return [*py, "explain", str(folder), "-o", str(report)]

    _timed(score)  # warm the file cache and the weights' checksum markers
    t_score = min(_timed(score) for _ in range(args.rounds))
    t_explain = min(_timed(explain()) for _ in range(args.rounds))
    size = sum(f.stat().st_size for f in report.rglob("*") if f.is_file())
    n = args.images
    return {"images": n, "score_s": t_score, "explain_s": t_explain, "ratio": t_explain / t_score,
            "report_kb_per_image": size / 1024 / n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="localise,cost")
    ap.add_argument("--degradations", default="gaussian_blur,motion_blur,gaussian_noise,jpeg,low_light")
    ap.add_argument("--level", type=int, default=4)
    ap.add_argument("--cells", type=int, default=4)
    ap.add_argument("--max-side", type=int, default=768)
    ap.add_argument("--photos", type=int, default=0, help="localise: the first N McMaster photos (0: all 18)")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=1, help="timed runs of each command (the fastest is kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-explain")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    parts = args.parts.split(",")
    if "localise" in parts:
        if MCMASTER.is_dir():
            results["localise"] = localise(args)
        else:
            print(f"localise: skipped, {MCMASTER} is missing")
    if "cost" in parts:
        if KODAK.is_dir():
            results["cost"] = cost(args)
        else:
            print(f"cost: skipped, {KODAK} is missing")
    text = json.dumps(results, indent=1)
    print(text)
    (args.out / "results.json").write_text(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
