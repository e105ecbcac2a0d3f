"""What the stem statistics on the class token are worth to the prompt-learning methods on degradation-clip-v2.

Untrained GRMP-IQA (the offline LIVE Challenge settings of configs/grmp-iqa/livec-offline.yaml: fresh prompts
from "a photo of a", and from the meta-prompts when --meta-init exists) and untrained CLIP-DQA (zero-shot
prompts, merged global and local input, stride 128) score every 4th image of the LIVE Challenge development part
(100 images) with ``model.stem_stats`` off and on; SRCC with MOS. No training, so nothing here is tuned.

    python benchmarks/bench_stem_stats.py            # about 4 minutes on the 2-core CPU
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from clipiq.clip import StemCache, use_stem_cache
from clipiq.data.io import load_image
from clipiq.data.labels import read_labels
from clipiq.eval.correlation import srcc
from clipiq.iqa.clip_dqa import build_model as build_dqa
from clipiq.iqa.grmp_iqa import build_model as build_grmp

REPO = Path(__file__).resolve().parents[1]
LIVEC = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data")) / "iqa" / "livec-dev"
GRMP = {"backbone": "degradation-clip-v2", "ctx_init": "a photo of a", "vpt_length": 16, "tune_blocks": 1,
        "train_resize": 500, "test_resize": 500, "test_crops": 5}
DQA = {"backbone": "degradation-clip-v2", "patch_stride": 128}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meta-init", type=Path, default=REPO / "runs" / "grmp-pretrain" / "v2" / "meta_init.safetensors")
    ap.add_argument("--every", type=int, default=4, help="score every n-th image")
    args = ap.parse_args()
    if not (LIVEC / "labels.csv").is_file():
        print(f"skipped: the LIVE Challenge dev part is not at {LIVEC}")
        return 0
    labels = read_labels(LIVEC / "labels.csv", LIVEC / "images", "csv")
    idx = list(range(0, len(labels), args.every))
    images = [load_image(labels[i].path) for i in idx]
    mos = np.array([labels[i].score for i in idx])
    cache = StemCache(3072)
    rows = []
    for stats in (False, True):
        variants = [("GRMP-IQA, fresh prompts", {**GRMP, "stem_stats": stats})]
        if args.meta_init.is_file():
            variants.append(("GRMP-IQA, meta-prompts", {**GRMP, "stem_stats": stats, "meta_init": str(args.meta_init)}))
        for name, cfg in variants:
            model = build_grmp(cfg, None).eval()
            use_stem_cache(model, cache)
            pred = torch.cat([model.predict(images[i : i + 10]) for i in range(0, len(images), 10)])
            rows.append((name, stats, srcc(pred.numpy(), mos)))
        dqa = build_dqa({**DQA, "stem_stats": stats}).eval()
        use_stem_cache(dqa, cache)
        with torch.no_grad():
            pred = np.array([float(dqa.score_image(im, 128)) for im in images])
        rows.append(("CLIP-DQA, zero-shot prompts", stats, srcc(pred, mos)))
    print(f"Untrained methods on degradation-clip-v2, {len(idx)} LIVE Challenge dev images (SRCC with MOS):\n")
    print("| method | stem statistics off | on |\n|---|---:|---:|")
    for name in dict.fromkeys(r[0] for r in rows):
        off, on = (next(r[2] for r in rows if r[0] == name and r[1] is s) for s in (False, True))
        print(f"| {name} | {off:.3f} | {on:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
