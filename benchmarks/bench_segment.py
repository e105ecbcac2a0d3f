#!/usr/bin/env python
"""Seconds per 500x500 image and region counts of the segmenters in clipiq.segment, on CPU.

Five Kodak photos (``--data``, default ``../shared/data/photos/kodak24``: kodim01, 05, 09, 13, 23) are resized
so the short side is 500 and centre-cropped to 500x500. Each segmenter (default options) labels the first
photo once untimed, then every photo in ``--rounds`` timed passes (SAM: one); the table gives the mean seconds
per image and the median (min-max) region count. SAM runs only with a tiny random ``SamConfig`` (real weights
cannot be downloaded here), with the IoU and stability thresholds off, so its row measures the pipeline's
overhead (8x8 prompts, upscaling, NMS, merge) and its regions mean nothing.

    python benchmarks/bench_segment.py                 # about 30 s on 2 busy CPU cores
    python benchmarks/bench_segment.py --markdown out.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from clipiq.core.image import pil_to_tensor
from clipiq.segment import create_segmenter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "photos" / "kodak24"
PHOTOS = ("kodim01.png", "kodim05.png", "kodim09.png", "kodim13.png", "kodim23.png")
SIZE = 500


def load_photos(folder: Path) -> list[torch.Tensor]:
    out = []
    for name in PHOTOS:
        im = Image.open(folder / name).convert("RGB")
        s = SIZE / min(im.size)
        im = im.resize((max(SIZE, round(im.width * s)), max(SIZE, round(im.height * s))), Image.BICUBIC)
        left, top = (im.width - SIZE) // 2, (im.height - SIZE) // 2
        out.append(pil_to_tensor(im.crop((left, top, left + SIZE, top + SIZE))))
    return out


def tiny_sam(folder: Path) -> Path:
    """A seeded random SAM (64 px input, 2-layer 32-wide encoder) written with save_pretrained."""
    from transformers import SamConfig, SamModel

    cfg = SamConfig(
        vision_config=dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=64,
                           num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    torch.manual_seed(0)
    SamModel(cfg).save_pretrained(folder)
    return folder


def measure(segmenter, photos: list[torch.Tensor], rounds: int) -> tuple[float, list[int]]:
    segmenter(photos[0])  # warm-up (lazy imports, first allocations)
    counts = []
    start = time.perf_counter()
    for r in range(rounds):
        for x in photos:
            labels = segmenter(x)
            if r == 0:
                counts.append(int(labels.max()) + 1)
    return (time.perf_counter() - start) / (rounds * len(photos)), counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with kodim01.png .. kodim24.png")
    ap.add_argument("--rounds", type=int, default=2, help="timed passes over the photos")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--no-sam", action="store_true", help="skip the tiny random SAM row")
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    missing = [n for n in PHOTOS if not (args.data / n).is_file()]
    if missing:
        print(f"skipped: Kodak photos not found in {args.data} (missing {', '.join(missing)}); "
              "pass --data FOLDER", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)
    photos = load_photos(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("slic", "slic", {}), ("felzenszwalb", "felzenszwalb", {}), ("grid", "grid", {})]
        if not args.no_sam:
            cases.append(("sam (tiny random model, 8x8 points)", "sam",
                          {"weights": tiny_sam(Path(tmp)), "pred_iou_thresh": -1e9, "stability_score_thresh": 0.0}))
        for label, name, options in cases:
            rounds = 1 if name == "sam" else args.rounds  # the slow row: one pass
            seconds, counts = measure(create_segmenter(name, **options), photos, rounds)
            rows.append(f"| {label} | {seconds:.3f} | {statistics.median(counts):g} ({min(counts)}-{max(counts)}) |")
            print(rows[-1], flush=True)
    table = "\n".join([f"| segmenter (default options) | s / {SIZE}x{SIZE} image | regions: median (min-max) |",
                       "|---|---|---|", *rows])
    print(f"\n{table}")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
