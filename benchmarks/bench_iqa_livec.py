"""Every IQA method side by side on real human opinion scores: the LIVE Challenge development part.

All rows run on the same offline backbone (default degradation-clip-v2) and on the same seeded rounds: each
round is an 80/20 split of the 400 images, with a validation part (a tenth of the 80 %) carved from training
only (``clipiq.train.protocol.round_split``, seed ``--seed + round``); few-shot rows draw k = ``--shots``
images from the rest of the 80 % with the same seed, so every few-shot variant sees the same shots. The
test part of a round is the same 80 images for every row.

Rows:

* ``clipiqa``: zero-shot CLIP-IQA ("Good photo." / "Bad photo.", the library's default tiles view); no
  training, scored once and read on each round's test part.
* ``ridge``: a ridge probe on the image embeddings (the mean of the L2-normalised embeddings of the tiles
  clipiqa scores), fitted on the round's training and validation parts, penalty by leave-one-out error on
  them (``clipiq.eval.probe``): what a linear read-out of the frozen backbone reaches with 320 labels.
* ``clipiqa+``: CLIP-IQA+ prompts trained on the round's training part (``configs/clipiqa-plus/livec.yaml``).
  This is the cross-validated figure; the shipped prompts are trained on all 400 images.
* ``grmp-*``: GRMP-IQA fine-tuned on k shots (``configs/grmp-iqa/livec-offline.yaml``), from the
  meta-prompts (``meta``, ``--meta-init``, made by ``configs/grmp-iqa/pretrain-v2.yaml``) or from fresh
  prompts (``fresh``), with the gradient regulariser (lambda 5, ``reg``) or without it (lambda 0).
* ``clip-dqa``: CLIP-DQA's prompts trained on the round's training part (``configs/clip-dqa/livec-offline.yaml``).
* BRISQUE and NIQE are not rows: see ``CLASSIC`` below for why, and the published figures.

Each trained row runs the shared IQA protocol (``clipiq train``'s, with early stopping on the validation part)
in ``OUT/<row>``; finished rounds are reused when the script is run again, so a long run resumes. One decoded
image cache and one stem cache (``clipiq.clip.stem_cache``) serve every row. Prints a markdown table: per row
the median, mean and standard deviation of the test SRCC and PLCC over rounds, the range of the SRCC, the
median paired gain over zero-shot clipiqa, and the seconds per round; ``--json`` writes every number.

Full run (CPU; see benchmarks/README.md for the wall time here):
  python benchmarks/bench_iqa_livec.py --json runs/bench-livec/results.json --markdown runs/bench-livec/results.md
Smoke run (the first 60 images, 2 rounds, 16 shots, a few epochs; a few minutes):
  python benchmarks/bench_iqa_livec.py --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import clipiq
from clipiq.clip.stem_cache import StemCache
from clipiq.core.config import load_config
from clipiq.data.labels import read_labels
from clipiq.eval.probe import RidgeProbe
from clipiq.train import TRAINING_TASKS
from clipiq.train.protocol import ImageCache, correlations, normalised_targets, round_split, run_protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_offline_clip import tile_embeddings  # noqa: E402  (the probe's features, as that benchmark takes them)

log = logging.getLogger("bench_iqa_livec")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data"))
LIVEC = SHARED / "iqa" / "livec-dev"
CONFIGS = REPO / "configs"
DEFAULT_META = REPO / "runs" / "grmp-pretrain" / "v2" / "meta_init.safetensors"

#: Trained rows: (training task, config, overrides); "{meta}" is replaced by the meta-prompt checkpoint.
TRAINED: dict[str, tuple[str, Path, list[str]]] = {
    "clipiqa+": ("clipiqa-plus", CONFIGS / "clipiqa-plus" / "livec.yaml", []),
    "grmp-meta-reg": ("grmp-finetune", CONFIGS / "grmp-iqa" / "livec-offline.yaml", ["model.meta_init={meta}"]),
    "grmp-meta": ("grmp-finetune", CONFIGS / "grmp-iqa" / "livec-offline.yaml",
                  ["model.meta_init={meta}", "regularization.lambda=0"]),
    "grmp-fresh-reg": ("grmp-finetune", CONFIGS / "grmp-iqa" / "livec-offline.yaml", []),
    "grmp-fresh": ("grmp-finetune", CONFIGS / "grmp-iqa" / "livec-offline.yaml", ["regularization.lambda=0"]),
    "clip-dqa": ("clip-dqa", CONFIGS / "clip-dqa" / "livec-offline.yaml", []),
    "rsfiqa": ("rsfiqa", CONFIGS / "rsfiqa" / "livec.yaml", []),
    "rsfiqa-no-rsa": ("rsfiqa", CONFIGS / "rsfiqa" / "livec.yaml", ["model.rsa_layers=0"]),
    "rsfiqa-no-desc": ("rsfiqa", CONFIGS / "rsfiqa" / "livec.yaml", ["model.describer=none"]),
    "rsfiqa-grid": ("rsfiqa", CONFIGS / "rsfiqa" / "livec.yaml",
                    ["model.segmenter=grid", "model.segmenter_options={rows: 3, cols: 3}"]),
}
ROWS = ("clipiqa", "ridge", *TRAINED)
QUICK_IMAGES = 60
QUICK = {"clipiqa-plus": ["train.epochs=2"], "grmp-finetune": ["train.epochs=4", "train.eval_every=2"],
         "clip-dqa": ["train.epochs=2", "train.min_epochs=1", "protocol.train_eval=0"]}

#: Why the classic references are not rows, and what was published or measured elsewhere.
CLASSIC = (
    "BRISQUE and NIQE are not rows. The `brisque` package needs numpy < 2.4 and this environment has numpy 2.4, so "
    "it does not run here without downgrading numpy; in a separate environment with an older numpy it scored SRCC "
    "0.407 on these 400 images (`../shared/data/iqa/livec-dev/README.md`). No maintained NIQE package runs here: "
    "pyiqa needs torchvision, which does not import with torch 2.13, and scikit-image has no NIQE."
)


def round_parts(labels, pcfg: Mapping[str, Any], seed: int, rounds: int) -> list[dict[str, list[int]]]:
    """The train/val/test indices of every round, as the protocol draws them."""
    out = []
    for r in range(rounds):
        sp = round_split(labels, pcfg, seed + r)
        out.append({"train": list(sp.train), "val": list(sp.val), "test": list(sp.test)})
    return out


def zero_shot_and_probe(backbone: str, labels, parts: Sequence[Mapping[str, list[int]]], targets: np.ndarray,
                        out: Path) -> dict[str, list[dict[str, float]]]:
    """Per-round test correlations of zero-shot clipiqa and of the ridge probe on its tile embeddings.

    The scores and embeddings are saved in ``out`` and reused by a later run on the same images.
    """
    paths = [s.path for s in labels]
    saved = out / f"zero-shot-{backbone}.npz"
    names = np.array([str(p) for p in paths])
    if saved.is_file() and np.array_equal(np.load(saved)["paths"], names):
        z = np.load(saved)
        pred, feats, t_score, t_embed = z["pred"], z["feats"], float(z["t_score"]), float(z["t_embed"])
    else:
        metric = clipiq.create_metric("clipiqa", model=backbone, device="cpu")
        t0 = time.perf_counter()
        pred = np.empty(len(paths))
        for r in metric.iter_results(paths):
            pred[r.index] = r.unwrap()["score"]
        t_score = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats = tile_embeddings(metric, paths)
        t_embed = time.perf_counter() - t0
        out.mkdir(parents=True, exist_ok=True)
        np.savez(saved, paths=names, pred=pred, feats=feats, t_score=t_score, t_embed=t_embed)
    # A picture beside the numbers: zero-shot predictions against MOS over all the images.
    from clipiq.eval import srcc
    from clipiq.report.figures import scatter_png

    (out / f"scatter-clipiqa-{backbone}.png").write_bytes(scatter_png(
        pred, targets, xlabel=f"zero-shot clipiqa ({backbone})", ylabel="MOS (normalised)",
        title=f"LIVE Challenge dev, {len(pred)} images: SRCC {float(srcc(pred, targets)):.3f}"))
    zs, ridge = [], []
    for r, part in enumerate(parts):
        test = part["test"]
        zs.append({"round": r, **correlations(pred[test], targets[test]), "seconds": round(t_score / len(parts), 1)})
        t0 = time.perf_counter()
        fit_idx = part["train"] + part["val"]
        probe = RidgeProbe.fit(feats[fit_idx], targets[fit_idx])
        res = correlations(probe.predict(feats[test]), targets[test])
        ridge.append({"round": r, **res, "alpha": probe.alpha, "alpha_at_grid_edge": probe.alpha_at_grid_edge,
                      "seconds": round(t_embed / len(parts) + time.perf_counter() - t0, 1)})
    return {"clipiqa": zs, "ridge": ridge}


def trained_row(name: str, args: argparse.Namespace, labels, images: ImageCache, stem_cache: StemCache,
                parts: Sequence[Mapping[str, list[int]]]) -> list[dict[str, Any]]:
    """Run one trained row's protocol (resuming finished rounds); its per-round results."""
    task, config, overrides = TRAINED[name]
    mod = TRAINING_TASKS.get(task)
    extra = [o.replace("{meta}", str(args.meta_init)) for o in overrides]
    extra += [f"seed={args.seed}", f"protocol.rounds={args.rounds}", f"model.backbone={args.backbone}"]
    if "shots" in mod.DEFAULTS["protocol"] and task == "grmp-finetune":
        extra.append(f"protocol.shots={args.shots}")
    if args.quick:
        extra += QUICK.get(task, [])
    cfg = load_config(config, extra, defaults=mod.DEFAULTS)
    cfg["data"].update({"labels": str(args.labels_file), "root": str(LIVEC / "images"), "format": "csv"})
    for key in ("ratios", "val_fraction"):
        if cfg["protocol"][key] != args.protocol[key]:
            raise ValueError(f"{config}: protocol.{key} {cfg['protocol'][key]} differs from the benchmark's "
                             f"{args.protocol[key]}; the rows would not share their splits")
    run_dir = args.out / name
    build: Callable | None = getattr(mod, "build", None)
    if args.report_only:
        pass
    elif build is not None:  # the shared protocol with the benchmark's image and stem caches
        run_protocol(cfg, run_dir, torch.device("cpu"), build, labels=labels, images=images,
                     stem_cache=stem_cache, progress=False)
    else:  # a task with its own caches around the protocol (clipiqa+: its image-feature cache)
        mod.run(cfg, run_dir, torch.device("cpu"), progress=False)
    rows = []
    for r in range(args.rounds):
        done = run_dir / f"round{r:02d}" / "result.json"
        if args.report_only and not done.is_file():
            continue
        row = json.loads(done.read_text())
        if row["n_test"] != len(parts[r]["test"]):
            raise RuntimeError(f"{name} round {r}: {row['n_test']} test images, the benchmark's split has "
                               f"{len(parts[r]['test'])}")
        rows.append(row)
    return rows


def summarise(per_round: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Median, mean, std and range of SRCC/PLCC per row, the paired gain over zero-shot, seconds per round."""
    base = {r["round"]: r["srcc"] for r in per_round.get("clipiqa", [])}
    out = {}
    for name, rows in per_round.items():
        s = [r["srcc"] for r in rows]
        p = [r["plcc"] for r in rows]
        gains = [r["srcc"] - base[r["round"]] for r in rows if r["round"] in base]
        out[name] = {
            "rounds": len(rows),
            "srcc_median": statistics.median(s), "srcc_mean": statistics.fmean(s),
            "srcc_std": statistics.pstdev(s), "srcc_min": min(s), "srcc_max": max(s),
            "plcc_median": statistics.median(p), "plcc_mean": statistics.fmean(p), "plcc_std": statistics.pstdev(p),
            "gain_over_zero_shot_median": statistics.median(gains) if gains else float("nan"),
            "seconds_per_round": statistics.fmean(float(r.get("seconds", float("nan"))) for r in rows),
        }
    return out


def markdown(summary: Mapping[str, Mapping[str, float]], meta: Mapping[str, Any]) -> str:
    """The results table with its setting."""
    lines = [
        f"LIVE Challenge dev part ({meta['n_images']} images), backbone `{meta['backbone']}`, {meta['rounds']} rounds "
        f"of 80/20 (validation = 10% of the 80%), few-shot k = {meta['shots']}, seed {meta['seed']}; test SRCC/PLCC "
        "over rounds.",
        "",
        "| row | rounds | SRCC median | SRCC mean ± std | SRCC range | PLCC median | PLCC mean ± std | "
        "gain over zero-shot (median, paired) | s / round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['rounds']} | {s['srcc_median']:.3f} | {s['srcc_mean']:.3f} ± {s['srcc_std']:.3f} | "
            f"{s['srcc_min']:.3f}-{s['srcc_max']:.3f} | {s['plcc_median']:.3f} | {s['plcc_mean']:.3f} ± "
            f"{s['plcc_std']:.3f} | {s['gain_over_zero_shot_median']:+.3f} | {s['seconds_per_round']:.0f} |")
    for name, why in meta.get("skipped", {}).items():
        lines.append(f"| {name} | not run: {why} | | | | | | | |")
    lines += ["", f"Total wall time {meta['wall_seconds'] / 60:.1f} min.", "", CLASSIC]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--shots", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", default="degradation-clip-v2")
    ap.add_argument("--meta-init", type=Path, default=DEFAULT_META,
                    help="grmp-pretrain's meta_init.safetensors for the grmp-meta rows")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-livec")
    ap.add_argument("--stem-cache-mb", type=float, default=6144)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: report the rounds each trained row has finished so far")
    ap.add_argument("--quick", action="store_true", help="a smoke run of every row: 60 images, 2 rounds, 16 shots")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if not (LIVEC / "labels.csv").is_file():
        print(f"skipped: the LIVE Challenge dev part is not at {LIVEC} (set CLIPIQ_SHARED_DATA)", file=sys.stderr)
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        ap.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    if args.quick:
        args.rounds, args.shots = min(args.rounds, 2), min(args.shots, 16)
        args.out = args.out.with_name(args.out.name + "-quick")
    args.protocol = {"ratios": [0.8, 0.2], "val_fraction": 0.1, "group": "auto"}
    started = time.perf_counter()
    args.labels_file = LIVEC / "labels.csv"
    if args.quick:  # the first images only, in a label file of their own, which every row reads
        args.out.mkdir(parents=True, exist_ok=True)
        lines = args.labels_file.read_text(encoding="utf-8").splitlines()[: QUICK_IMAGES + 1]
        args.labels_file = args.out / "labels.csv"
        args.labels_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    labels = read_labels(args.labels_file, LIVEC / "images", "csv")
    targets = normalised_targets(labels)
    parts = round_parts(labels, args.protocol, args.seed, args.rounds)
    images = ImageCache(labels, 4096)
    stem_cache = StemCache(args.stem_cache_mb)
    per_round: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    if {"clipiqa", "ridge"} & set(rows):
        zs = zero_shot_and_probe(args.backbone, labels, parts, targets, args.out)
        per_round.update({k: v for k, v in zs.items() if k in rows})
    for name in rows:
        if name not in TRAINED:
            continue
        if name.startswith("grmp-meta") and not args.meta_init.is_file():
            skipped[name] = (f"no meta-prompts at {args.meta_init} (clipiq train grmp-pretrain --config "
                             "configs/grmp-iqa/pretrain-v2.yaml --run-dir runs/grmp-pretrain/v2)")
            continue
        t0 = time.perf_counter()
        log.info("row %s ...", name)
        rows_done = trained_row(name, args, labels, images, stem_cache, parts)
        if rows_done:
            per_round[name] = rows_done
        else:
            skipped[name] = "no finished round yet"
        log.info("row %s done in %.1f min; %s", name, (time.perf_counter() - t0) / 60, stem_cache)
    meta = {"n_images": len(labels), "backbone": args.backbone, "rounds": args.rounds, "shots": args.shots,
            "seed": args.seed, "rows": rows, "skipped": skipped, "wall_seconds": time.perf_counter() - started,
            "torch_threads": torch.get_num_threads(), "quick": args.quick}
    summary = summarise(per_round)
    table = markdown(summary, meta)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "summary": summary, "rounds": per_round}, indent=1,
                                        default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
