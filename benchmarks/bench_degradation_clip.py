"""degradation-clip on held-out photos: zero-shot degradation-type accuracy and clipiqa ranking SRCC.

Runs the shipped `degradation-clip` and the random `test-tiny` (the floor) on McMaster18, which
degradation-clip never saw in training:

* type accuracy: each photo degraded by every `clipiq.degrade` type at levels 3-5, classified by
  argmax cosine over the prompts "a photo with <type phrase>";
* ranking: `clipiqa` ("Good photo." vs "Bad photo.") on the synthetic ranking benchmark
  (the same code as `clipiq bench --synthetic`), mean SRCC over types and per type.

Usage: python benchmarks/bench_degradation_clip.py [--crop 128] [--markdown out.md] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import clipiq
from clipiq.clip.vocabulary import DEGRADATION_PHRASES
from clipiq.data.io import list_images, load_image
from clipiq.degrade import DEGRADATIONS
from clipiq.synth.ranking import synthetic_ranking
from clipiq.train.degradation_clip import degraded_eval_set, evaluate_model

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "photos" / "mcmaster18"


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    s = min(size, h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return img[:, y : y + s, x : x + s]


def run(model_name: str, photos: list[Path], crop: int, seed: int) -> dict:
    model, pre = clipiq.load_clip(model_name, device="cpu")
    images = [centre_crop(load_image(p), crop) for p in photos]
    names = [n for n in DEGRADATIONS if n in DEGRADATION_PHRASES]
    t0 = time.perf_counter()
    types = evaluate_model(model, pre, degraded_eval_set(images, names, seed=seed), levels=(3, 4, 5), names=names)
    metric = clipiq.create_metric("clipiqa", model=model_name, device="cpu", view="native")
    rank = synthetic_ranking(metric, images, names, seed=seed, progress=False)
    return {
        "model": model_name,
        "type_acc": types["type_acc"],
        "per_type_acc": types["per_type_acc"],
        "rank_srcc": rank.mean,
        "per_type_srcc": dict(rank.per_type),
        "seconds": time.perf_counter() - t0,
    }


def markdown(results: list[dict], n_photos: int, crop: int) -> str:
    lines = [
        f"Held-out McMaster18 ({n_photos} photos, centre crop {crop} px); type accuracy over "
        f"{len(results[0]['per_type_acc'])} types at levels 3-5 (chance {1 / len(results[0]['per_type_acc']):.3f}); "
        "ranking = SRCC of clipiqa (Good/Bad photo) against severity, levels 1-5.",
        "",
        "| model | type accuracy | ranking SRCC (mean over types) |",
        "|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['model']} | {r['type_acc']:.3f} | {r['rank_srcc']:.3f} |")
    lines += ["", "| type | " + " | ".join(f"{r['model']} acc | {r['model']} SRCC" for r in results) + " |",
              "|---|" + "---|---|" * len(results)]
    for t in results[0]["per_type_acc"]:
        cells = " | ".join(f"{r['per_type_acc'][t]:.2f} | {r['per_type_srcc'].get(t, float('nan')):.3f}"
                           for r in results)
        lines.append(f"| {t} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=PHOTOS)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--max-photos", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="degradation-clip,test-tiny")
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.photos.is_dir():
        print(f"skipped: held-out photos not found at {args.photos}", file=sys.stderr)
        return 0
    photos = list(list_images([args.photos]))[: args.max_photos]
    results = [run(m, photos, args.crop, args.seed) for m in args.models.split(",")]
    md = markdown(results, len(photos), args.crop)
    print(md)
    if args.markdown:
        args.markdown.write_text(md + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
