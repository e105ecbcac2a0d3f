"""GRMP-IQA on the degradation-clip backbone with held-out photos: zero-shot, few-shot from fresh prompts and
few-shot from the meta-prompts, each fine-tuned with and without the quality-aware gradient regularisation.

1. Meta-prompt pre-training with ``configs/grmp-iqa/pretrain.yaml`` (one Reptile task per clipiq.degrade type,
   made on the fly from Kodak24 and Sun-Hays crops), run or resumed in ``OUT/pretrain``, unless ``--meta-init``
   names a checkpoint.
2. Fine-tuning data from ``configs/grmp-iqa/finetune.yaml``: synthetic distortions of McMaster18, photos that
   pre-training never saw. Each round splits by photo (80/20, validation carved from the training photos)
   and draws k shots from the training part; every variant sees the same splits and shots.
3. Zero-shot rows on each round's test part: the untrained pair "a photo with high quality." / "a photo
   with low quality." on GRMP's own centre crop, and ``clipiqa`` ("Good photo." / "Bad photo.", the prompts
   degradation-clip was trained with, so a strong reference rather than a floor).
4. Four fine-tuned variants under the shared IQA protocol: {fresh, meta} prompts x lambda {5, 0}.

Prints a markdown table (test SRCC/PLCC over rounds, and the paired gain of the meta-prompts per round) and
writes every number as JSON. Runs resume: finished rounds and pre-training are reused.

Full run (CPU, about 1.5-2 h here; the lead runs it):
  python benchmarks/bench_grmp_iqa.py --rounds 5 --shots 50 --json runs/bench-grmp/results.json \\
      --markdown runs/bench-grmp/results.md
Smoke run (tiny settings, a few minutes):
  python benchmarks/bench_grmp_iqa.py --quick
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipiq.clip.load import load_clip
from clipiq.clip.prompts import prompt_probabilities
from clipiq.clip.tokenizer import tokenize
from clipiq.core.config import load_config
from clipiq.core.device import resolve_device
from clipiq.eval.correlation import plcc, srcc
from clipiq.iqa import create_metric
from clipiq.iqa.grmp_iqa import eval_views
from clipiq.train import grmp_finetune as gf
from clipiq.train import grmp_pretrain as gp
from clipiq.train.protocol import ImageCache, load_iqa_labels, normalised_targets, round_split

log = logging.getLogger("bench_grmp_iqa")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "grmp-iqa"
HAND_PROMPTS = ("a photo with high quality.", "a photo with low quality.")

QUICK_PRETRAIN = ["train.epochs=1", "data.max_photos=8", "data.degradations=[gaussian_blur, low_light]",
                  "data.levels=[0, 3, 5]", "meta.inner_steps=1", "meta.inner_batch=8", "meta.eval_max_per_task=8"]
QUICK_FINETUNE = ["data.options={degradations: [gaussian_blur, low_light], levels: [1, 3, 5], crop: 146, "
                  "max_photos: 8}", "train.epochs=4", "train.eval_every=2", "protocol.val_fraction=0.2",
                  "protocol.eval_batch=32"]


def zero_shot(cfg: dict[str, Any], labels, images: ImageCache, rounds: int, device: torch.device) -> dict:
    """SRCC/PLCC per round of the untrained hand prompts and of clipiqa on each round's test part."""
    mcfg = cfg["model"]
    clip, pre = load_clip(mcfg["backbone"], weights=mcfg["weights"], device=device)
    resize = round(pre.image_size * float(mcfg["test_resize"]) / 224)
    with torch.no_grad():
        text = clip.encode_text(tokenize(list(HAND_PROMPTS)).to(device), normalize=True)
    clipiqa = create_metric("clipiqa", model=mcfg["backbone"], weights=mcfg["weights"], device=device)
    targets = normalised_targets(labels)
    out: dict[str, list[dict[str, float]]] = {"hand prompts": [], "clipiqa": []}
    for r in range(rounds):
        test = list(round_split(labels, cfg["protocol"], int(cfg["seed"]) + r).test)
        imgs = [images(i) for i in test]
        hand = []
        with torch.no_grad():
            for i in range(0, len(imgs), 64):
                views = torch.cat([eval_views(im, resize, pre.image_size, 1, mcfg["resize_mode"])
                                   for im in imgs[i : i + 64]])
                feats = clip.encode_image(pre.normalize(views.to(device)))
                hand.append(prompt_probabilities(feats, text, clip.logit_scale)[:, 0].cpu())
        scores = {"hand prompts": torch.cat(hand).numpy(), "clipiqa": clipiqa(imgs).numpy()}
        for name, s in scores.items():
            out[name].append({"round": r, "srcc": srcc(s, targets[test]), "plcc": plcc(s, targets[test])})
    return out


def read_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """Per-round rows of a protocol run (numbers parsed)."""
    with (run_dir / "rounds.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (float(v) if k not in ("checkpoint", "stopped_early") else v) for k, v in r.items()} for r in rows]


def stats(values: list[float]) -> dict[str, float]:
    """Mean, std and median of a list of numbers."""
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "median": statistics.median(values)}


def markdown(results: dict[str, Any]) -> str:
    """The results table."""
    s = results["settings"]
    lines = [
        f"GRMP-IQA on {s['backbone']}: {s['shots']}-shot fine-tuning on synthetic distortions of held-out "
        f"{s['photos']} ({s['n_images']} images), {s['rounds']} rounds (splits by photo; test SRCC/PLCC "
        "mean +- std over rounds). Meta-prompts: " + s["meta_init"] + ".",
        "",
        "| method | prompts | lambda | test SRCC | test PLCC | val SRCC | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results["zero_shot"].items():
        sr, pl = stats([r["srcc"] for r in rows]), stats([r["plcc"] for r in rows])
        lines.append(f"| zero-shot {name} | - | - | {sr['mean']:.3f} +- {sr['std']:.3f} | "
                     f"{pl['mean']:.3f} +- {pl['std']:.3f} | - | 0 |")
    for v in results["variants"].values():
        rows = v["rounds"]
        sr, pl = stats([r["srcc"] for r in rows]), stats([r["plcc"] for r in rows])
        val, steps = stats([r["val_srcc"] for r in rows]), stats([r["steps"] for r in rows])
        lines.append(f"| GRMP few-shot | {v['init']} | {v['lambda']:g} | {sr['mean']:.3f} +- {sr['std']:.3f} | "
                     f"{pl['mean']:.3f} +- {pl['std']:.3f} | {val['mean']:.3f} | {steps['mean']:.0f} |")
    lines += ["", "Paired gain of the meta-prompts over fresh prompts (same rounds, test SRCC):", ""]
    for lam, gain in results["meta_gain"].items():
        lines.append(f"- lambda {lam}: {gain['mean']:+.3f} +- {gain['std']:.3f} "
                     f"(meta better in {gain['wins']}/{gain['n']} rounds)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain-config", type=Path, default=CONFIGS / "pretrain.yaml")
    ap.add_argument("--finetune-config", type=Path, default=CONFIGS / "finetune.yaml")
    ap.add_argument("--meta-init", type=Path, help="use this meta-prompt checkpoint instead of pre-training")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shots", type=int, default=50)
    ap.add_argument("--lambdas", default="5,0", help="regularisation strengths to compare (comma list)")
    ap.add_argument("--pretrain", action="append", default=[], metavar="KEY=VALUE", help="pre-training override")
    ap.add_argument("--finetune", action="append", default=[], metavar="KEY=VALUE", help="fine-tuning override")
    ap.add_argument("--quick", action="store_true", help="tiny smoke settings (2 types, 8 photos, 2 rounds)")
    ap.add_argument("--out", type=Path, help="run folder (default runs/bench-grmp, runs/bench-grmp-quick)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device(args.device)
    out = args.out or REPO / "runs" / ("bench-grmp-quick" if args.quick else "bench-grmp")
    rounds, shots = (2, 12) if args.quick else (args.rounds, args.shots)
    t0 = time.perf_counter()

    if args.meta_init is not None:
        if not args.meta_init.is_file():
            print(f"error: --meta-init {args.meta_init}: file not found", file=sys.stderr)
            return 2
        meta_init = args.meta_init
    else:
        pcfg = load_config(args.pretrain_config, [*(QUICK_PRETRAIN if args.quick else []), *args.pretrain],
                           defaults=gp.DEFAULTS)
        photos = Path(pcfg["data"]["photos"])
        if pcfg["data"]["source"] == "synthetic" and not photos.is_dir():
            print(f"skipped: clean photos not found at {photos}", file=sys.stderr)
            return 0
        log.info("meta-prompt pre-training in %s", out / "pretrain")
        meta_init = Path(gp.run(pcfg, out / "pretrain", device, progress=False)["checkpoint"])

    fcfg = load_config(args.finetune_config, [*(QUICK_FINETUNE if args.quick else []), *args.finetune],
                       defaults=gf.DEFAULTS)
    fcfg["protocol"]["rounds"], fcfg["protocol"]["shots"] = rounds, shots
    if fcfg["data"]["source"].startswith("synthetic") and not Path(fcfg["data"]["photos"]).is_dir():
        print(f"skipped: held-out photos not found at {fcfg['data']['photos']}", file=sys.stderr)
        return 0
    labels = load_iqa_labels(fcfg["data"])
    images = ImageCache(labels, fcfg["data"]["cache_mb"])
    zs = zero_shot(fcfg, labels, images, rounds, device)

    variants: dict[str, Any] = {}
    lambdas = [float(x) for x in args.lambdas.split(",")]
    for init in ("fresh", "meta"):
        for lam in lambdas:
            name = f"{init}-lambda{lam:g}"
            cfg = json.loads(json.dumps(fcfg))
            cfg["model"]["meta_init"] = str(meta_init) if init == "meta" else None
            cfg["regularization"]["lambda"] = lam
            log.info("fine-tuning %s", name)
            summary = gf.run(cfg, out / name, device, progress=False)
            variants[name] = {"init": init, "lambda": lam, "summary": summary, "rounds": read_rounds(out / name)}
    gains = {}
    for lam in lambdas:
        fresh = variants[f"fresh-lambda{lam:g}"]["rounds"]
        meta = variants[f"meta-lambda{lam:g}"]["rounds"]
        diff = [m["srcc"] - f["srcc"] for f, m in zip(fresh, meta)]
        gains[f"{lam:g}"] = {**stats(diff), "wins": int(sum(d > 0 for d in diff)), "n": len(diff)}

    results = {
        "settings": {"backbone": fcfg["model"]["backbone"], "photos": Path(str(fcfg["data"].get("photos"))).name,
                     "n_images": len(labels), "rounds": rounds, "shots": shots, "meta_init": str(meta_init),
                     "quick": args.quick, "device": str(device), "seconds": time.perf_counter() - t0,
                     "finetune_config": fcfg},
        "zero_shot": zs,
        "variants": variants,
        "meta_gain": gains,
    }
    md = markdown(results)
    print(md)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(md + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=lambda o: float(o) if isinstance(
            o, np.floating) else str(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
