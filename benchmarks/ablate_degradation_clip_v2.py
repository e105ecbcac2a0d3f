"""degradation-clip-v2 ablations: short runs on the cached stem features, scored on the validation part only.

Each row retrains from scratch with one ingredient removed (same seed, data and steps) and reports the
validation part's SRCC of clipiqa's quality with SSIM (all variants and camera composites) and the mean
within-crop SRCC. No test set is involved: this is what the recipe's choices were judged on.

Usage: python benchmarks/ablate_degradation_clip_v2.py [--steps 150] [--markdown out.md] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from clipiq.cli.main import main as cli

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "degradation-clip-v2" / "default.yaml"

#: name -> config overrides (on top of the short-run settings).
ABLATIONS: dict[str, list[str]] = {
    "full recipe": [],
    "no stage-statistics token": ["model.stem_stats=false"],
    "severity label instead of SSIM": ["loss.quality_label=level"],
    "no camera composites": ["loss.use_camera=false"],
    "no content words": ["loss.use_content=false"],
    "no antonym-pair supervision": ["loss.antonym_weight=0"],
}


def main() -> None:
    """Run the ablations and print (and optionally write) a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--run-root", type=Path, default=REPO / "runs" / "v2-ablations")
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--only", nargs="*", help="ablation names to run (default: all)")
    args = ap.parse_args()
    short = [f"train.steps={args.steps}", f"train.eval_every={args.steps}", f"train.ckpt_every={args.steps}",
             "train.warmup=30", "data.grid_sizes=[8]"]
    rows = []
    for i, (name, overrides) in enumerate(ABLATIONS.items()):
        if args.only and name not in args.only:
            continue
        run_dir = args.run_root / f"{i}"
        t0 = time.time()
        rc = cli(["train", "degradation-clip-v2", "--config", str(CONFIG), "--run-dir", str(run_dir), "--device",
                  "cpu", "--no-resume", *short, *overrides])
        if rc != 0:
            raise SystemExit(f"{name}: training failed ({rc})")
        last = json.loads((run_dir / "summary.json").read_text())["last_eval"]
        rows.append((name, overrides, last, time.time() - t0))
        print(f"{name}: {last} ({time.time() - t0:.0f} s)", flush=True)
    lines = [f"Validation part, {args.steps} steps each (`{' '.join(short)}`):", "",
             "| run | overrides | val SRCC (SSIM) | camera SRCC | within-crop SRCC |", "|---|---|---:|---:|---:|"]
    lines += [f"| {n} | `{' '.join(o) or '-'}` | {r['val_srcc']:.3f} | {r['val_camera_srcc']:.3f} | "
              f"{r['val_within_crop']:.3f} |" for n, o, r, _ in rows]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
