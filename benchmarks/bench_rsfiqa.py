#!/usr/bin/env python
"""RSFIQA benchmark: real MOS (LIVE Challenge), synthetic local distortions with localisation, and cost.

Parts (``--parts``, comma-separated; default all three):

``livec``
    RSFIQA and its ablations on the LIVE Challenge dev rounds next to zero-shot clipiqa, GRMP-IQA and
    CLIP-DQA. Nothing is duplicated: the rows ``rsfiqa``, ``rsfiqa-no-rsa`` (``model.rsa_layers=0``),
    ``rsfiqa-no-desc`` (``model.describer=none``) and ``rsfiqa-grid`` (``model.segmenter=grid``, 3x3) live
    in ``bench_iqa_livec.TRAINED`` and this part calls ``bench_iqa_livec.main`` twice: once training the
    RSFIQA rows (resuming finished rounds), once ``--report-only`` with the comparison rows, which reads
    whatever rounds the other rows have finished. Its run folder is ``--livec-out`` (default
    ``runs/bench-livec``, bench_iqa_livec's own, so the rows are shared with that benchmark); only its
    table and numbers go under ``--out``.
``local``
    The synthetic local-distortion set (``configs/rsfiqa/local.yaml``: sunhays80 photos degraded inside a
    half, a quadrant or a SLIC superpixel region, scored by SSIM to the clean photo), ``--rounds`` rounds
    split by scene (``clipiq.train.protocol.round_split``, seed ``--seed + round``; every row uses the same
    splits). Rows: ``clipiqa`` (zero-shot CLIP-IQA, ``create_metric("clipiqa", model=backbone)``, scored once),
    ``rsfiqa-zero-shot`` (the untrained RSFIQA model: per-region zero-shot CLIP-IQA, area-weighted and mixed
    with the CLS score), ``rsfiqa-zero-shot-mean`` (the same with regions read out as pooled patch tokens,
    ``model.region_pool=mean``, instead of one class token per region), and the trained rows ``rsfiqa``,
    ``rsfiqa-no-rsa``, ``rsfiqa-no-desc``, ``rsfiqa-grid`` (each through the shared IQA protocol in
    ``OUT/local/<row>``, finished rounds reused).
    Global: SRCC/PLCC on each round's test part. Localisation, on the same test images (every one has a
    degraded region), with the round's checkpoint loaded as a metric
    (``create_metric("rsfiqa", checkpoint=...)``) and ``score_regions(image)``:

    * **top-1 hit rate**: for each region k, ``f_k`` = the fraction of its pixels inside the degraded mask;
      the image is a hit when the worst-scored region (the lowest region score; higher is better) has the
      largest ``f_k`` of all regions (ties with the largest count as hits). ``chance`` is the hit rate of a
      region picked uniformly at random (the share of regions with the largest ``f_k``, averaged), the
      baseline to beat: for a grid and a half-image mask it is high.
    * **pixel AUC**: the ROC AUC separating degraded from clean pixels by ``1 - region score`` painted on each
      region's pixels (rank-based, ties counted half; per image, then averaged).
``cost``
    Seconds per 500x500 image of ``score_regions`` with an untrained model (built with
    ``clipiq.iqa.rsfiqa.build_model``, saved as a checkpoint in a temporary folder and loaded with
    ``create_metric("rsfiqa", checkpoint=...)``): default settings (slic + clip describer), slic without
    descriptions, and a 3x3 grid without descriptions, on five Kodak photos centre-cropped to 500x500
    (``bench_segment.load_photos``). One untimed warm-up image per setting; every timed image is new to the
    model's region cache, so segmentation and description are in the time.

Markdown tables per part are printed (and written to ``OUT/results.md``); ``--json`` writes every number.
Parts whose data is missing under ``../shared/data`` (``CLIPIQ_SHARED_DATA``) are skipped with the reason.

    python benchmarks/bench_rsfiqa.py                                 # everything (hours on CPU)
    python benchmarks/bench_rsfiqa.py --parts local --report-only     # the finished rounds so far
    python benchmarks/bench_rsfiqa.py --quick --parts local,cost      # smoke run: about 2 min from scratch

``--quick``: 4 sunhays80 photos (192 px crops, blur at one level, three region kinds: 12 images), 1 round,
1 epoch, 224 px views; cost on 2 photos; the livec part uses bench_iqa_livec's own ``--quick``. Its output
goes to ``OUT-quick``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import clipiq
from clipiq.clip.checkpoint import save_method_checkpoint
from clipiq.core.config import load_config
from clipiq.data.io import load_image
from clipiq.iqa.rsfiqa import build_model
from clipiq.train import TRAINING_TASKS
from clipiq.train.protocol import (
    ImageCache,
    correlations,
    load_iqa_labels,
    normalised_targets,
    round_split,
    run_protocol,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_iqa_livec  # noqa: E402  (the LIVE Challenge rows live there)
from bench_segment import load_photos  # noqa: E402  (the same five 500x500 Kodak crops)

log = logging.getLogger("bench_rsfiqa")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data"))
CONFIGS = REPO / "configs"
LOCAL_CONFIG = CONFIGS / "rsfiqa" / "local.yaml"
PARTS = ("livec", "local", "cost")
GRID = ["model.segmenter=grid", "model.segmenter_options={rows: 3, cols: 3}"]

#: Trained rows of the local part: overrides of configs/rsfiqa/local.yaml (the same as bench_iqa_livec's).
LOCAL_TRAINED: dict[str, list[str]] = {
    "rsfiqa": [],
    "rsfiqa-no-rsa": ["model.rsa_layers=0"],
    "rsfiqa-no-desc": ["model.describer=none"],
    "rsfiqa-grid": GRID,
}
#: Untrained rows of the local part: model-section changes (region tokens, the default; pooled patch tokens).
ZERO_SHOT: dict[str, dict[str, Any]] = {"rsfiqa-zero-shot": {}, "rsfiqa-zero-shot-mean": {"region_pool": "mean"}}
LOCAL_ROWS = ("clipiqa", *ZERO_SHOT, *LOCAL_TRAINED)
LIVEC_RSFIQA = ("rsfiqa", "rsfiqa-no-rsa", "rsfiqa-no-desc", "rsfiqa-grid")
LIVEC_COMPARE = ("clipiqa", "grmp-meta-reg", "grmp-fresh-reg", "clip-dqa")

#: --quick: a dozen small images, one epoch, small views.
QUICK_LOCAL = ["data.options={crop: 192, max_photos: 4, degradations: [gaussian_blur], levels: [4], "
               "regions: [half, quadrant, superpixel]}", "train.epochs=1", "train.patience=0",
               "protocol.train_eval=0", "model.view_size=224", "data.workers=1"]
QUICK_LIVEC = ["train.epochs=1", "model.view_size=224", "protocol.train_eval=0"]

#: score_regions settings of the cost part (model-section overrides of MODEL_DEFAULTS).
COST_SETTINGS: dict[str, dict[str, Any]] = {
    "slic + clip describer (default)": {},
    "slic, no describer": {"describer": "none"},
    "grid 3x3, no describer": {"segmenter": "grid", "segmenter_options": {"rows": 3, "cols": 3}, "describer": "none"},
}


# ---------------------------------------------------------------------------------------------------------
# livec


def part_livec(args: argparse.Namespace) -> dict[str, Any]:
    """Train the RSFIQA rows of bench_iqa_livec, then report them next to the comparison rows."""
    if not (SHARED / "iqa" / "livec-dev" / "labels.csv").is_file():
        return {"skipped": f"the LIVE Challenge dev part is not at {SHARED / 'iqa' / 'livec-dev'}"}
    bench_iqa_livec.QUICK.setdefault("rsfiqa", QUICK_LIVEC)
    common = ["--rounds", str(args.rounds), "--seed", str(args.seed), "--backbone", args.backbone,
              "--out", str(args.livec_out)]
    if args.quick:
        common.append("--quick")
    if not args.report_only:  # its own table printed here would only be a partial one: kept quiet
        with contextlib.redirect_stdout(io.StringIO()):
            bench_iqa_livec.main(["--rows", ",".join(("clipiqa", *LIVEC_RSFIQA)), *common])
    out = args.out / "livec"
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # printed below, with the other parts
        bench_iqa_livec.main(["--rows", ",".join((*LIVEC_COMPARE, *LIVEC_RSFIQA)), "--report-only", *common,
                              "--json", str(out / "results.json"), "--markdown", str(out / "results.md")])
    res = json.loads((out / "results.json").read_text())
    return {"summary": res["summary"], "meta": res["meta"], "markdown": (out / "results.md").read_text()}


# ---------------------------------------------------------------------------------------------------------
# local: localisation measures


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``positive`` (bool) against the rest: Mann-Whitney U with average ranks."""
    scores, positive = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    rank_sum = float(avg_rank[inverse][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def localisation(labels: np.ndarray, region_scores: Sequence[float], mask: np.ndarray) -> dict[str, float]:
    """Top-1 hit, its chance rate and the pixel AUC of one image (see the module docstring)."""
    labels = np.asarray(labels, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    if labels.shape != mask.shape:
        raise ValueError(f"region labels {labels.shape} and mask {mask.shape} differ in size")
    k = len(region_scores)
    area = np.bincount(labels.ravel(), minlength=k)[:k]
    inside = np.bincount(labels.ravel(), weights=mask.ravel().astype(np.float64), minlength=k)[:k]
    frac = np.where(area > 0, inside / np.maximum(area, 1), -1.0)
    scores = np.asarray(region_scores, dtype=np.float64)
    worst = int(np.argmin(np.where(area > 0, scores, np.inf)))
    best_frac = frac.max()
    top = np.isclose(frac, best_frac) & (area > 0)
    painted = 1.0 - scores[labels]
    return {"hit": float(top[worst]), "chance": float(top.sum() / max(1, (area > 0).sum())),
            "auc": rank_auc(painted, mask), "regions": int((area > 0).sum())}


def read_mask(path: Path) -> np.ndarray:
    """A 0/255 mask PNG as a bool array (H,W), True = degraded."""
    return load_image(path)[0].numpy() > 0.5


# ---------------------------------------------------------------------------------------------------------
# local


def local_config(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    mod = TRAINING_TASKS.get("rsfiqa")
    extra = [*overrides, f"seed={args.seed}", f"protocol.rounds={args.rounds}", f"model.backbone={args.backbone}",
             f"data.cache_dir={args.out / 'data'}"]
    if args.quick:
        extra = [*QUICK_LOCAL, *extra]
    return load_config(LOCAL_CONFIG, extra, defaults=mod.DEFAULTS)


def mask_path(labels, i: int, folder: Path) -> Path:
    return folder / str(labels[i].extra["mask"])


def localise_rows(model_or_metric, labels, images: ImageCache, test: Sequence[int], folder: Path
                  ) -> dict[str, Any]:
    """Mean top-1 hit, chance and pixel AUC over the test images, and the global scores."""
    per, scores = [], []
    t0 = time.perf_counter()
    for i in test:
        out = model_or_metric.score_regions(images(i))
        scores.append(out["score"])
        loc = localisation(out["labels"].numpy(), out["region_scores"], read_mask(mask_path(labels, i, folder)))
        per.append(loc)
    n = max(1, len(per))
    return {"hit": sum(p["hit"] for p in per) / n, "chance": sum(p["chance"] for p in per) / n,
            "auc": statistics.fmean(p["auc"] for p in per if not np.isnan(p["auc"])) if per else float("nan"),
            "regions_median": statistics.median(p["regions"] for p in per) if per else 0,
            "n_images": len(per), "scores": scores, "localisation_seconds": round(time.perf_counter() - t0, 1)}


def part_local(args: argparse.Namespace) -> dict[str, Any]:
    photos = SHARED / "photos" / "sunhays80"
    if not photos.is_dir():
        return {"skipped": f"the clean photos are not at {photos}"}
    base_cfg = local_config(args, [])
    base_cfg["data"]["photos"] = str(photos)
    labels = load_iqa_labels(base_cfg["data"])
    folder = Path(base_cfg["data"]["cache_dir"]) / f"local-{photos.name}"
    targets = normalised_targets(labels)
    images = ImageCache(labels, 2048)
    splits = [round_split(labels, base_cfg["protocol"], args.seed + r) for r in range(args.rounds)]
    out = args.out / "local"
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.strip() for r in args.local_rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - set(LOCAL_ROWS))
    if unknown:
        raise SystemExit(f"unknown local rows {unknown}; known: {', '.join(LOCAL_ROWS)}")
    per_round: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    test_union = sorted({i for sp in splits for i in sp.test})
    mod = TRAINING_TASKS.get("rsfiqa")

    if "clipiqa" in rows:
        saved = out / f"clipiqa-{args.backbone}.json"
        names = [str(labels[i].path) for i in test_union]
        cached = json.loads(saved.read_text()) if saved.is_file() else {}
        if cached.get("paths") != names:
            metric = clipiq.create_metric("clipiqa", model=args.backbone, device="cpu")
            t0 = time.perf_counter()
            pred = [0.0] * len(names)
            for r in metric.iter_results(names):
                pred[r.index] = float(r.unwrap()["score"])
            cached = {"paths": names, "pred": pred, "seconds": time.perf_counter() - t0}
            saved.write_text(json.dumps(cached))
        by_index = dict(zip(test_union, cached["pred"]))
        per_round["clipiqa"] = [
            {"round": r, **correlations(np.array([by_index[i] for i in sp.test]), targets[list(sp.test)]),
             "seconds": round(cached["seconds"] * len(sp.test) / max(1, len(names)), 1)}
            for r, sp in enumerate(splits)]

    for zname, zmodel in ZERO_SHOT.items():
        if zname not in rows:
            continue
        saved = out / zname
        zrows = []
        model = None
        for r, sp in enumerate(splits):
            done = saved / f"round{r:02d}.json"
            if done.is_file():
                zrows.append(json.loads(done.read_text()))
                continue
            if args.report_only:
                continue
            if model is None:  # fresh tensors: zero-shot per region
                model = mod.build({**base_cfg, "model": {**base_cfg["model"], **zmodel}}, torch.device("cpu")).eval()
            loc = localise_rows(model, labels, images, sp.test, folder)
            row = {"round": r, **correlations(np.array(loc.pop("scores")), targets[list(sp.test)]), **loc,
                   "seconds": loc["localisation_seconds"]}
            saved.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(row, indent=1))
            zrows.append(row)
        if zrows:
            per_round[zname] = zrows
        else:
            skipped[zname] = "no finished round yet"

    for name in rows:
        if name not in LOCAL_TRAINED:
            continue
        cfg = local_config(args, LOCAL_TRAINED[name])
        cfg["data"]["photos"] = str(photos)
        for key in ("ratios", "val_fraction", "group"):
            if cfg["protocol"][key] != base_cfg["protocol"][key]:
                raise ValueError(f"{name}: protocol.{key} differs from the benchmark's; the splits would differ")
        run_dir = out / name
        t0 = time.perf_counter()
        log.info("local row %s ...", name)
        if not args.report_only:
            run_protocol(cfg, run_dir, torch.device("cpu"), mod.build, labels=labels, images=images,
                         progress=False)
        trows = []
        for r, sp in enumerate(splits):
            done = run_dir / f"round{r:02d}" / "result.json"
            if not done.is_file():
                continue
            row = json.loads(done.read_text())
            if row["n_test"] != len(sp.test):
                raise RuntimeError(f"{name} round {r}: {row['n_test']} test images, the benchmark's split has "
                                   f"{len(sp.test)}")
            locf = done.with_name("localisation.json")
            if locf.is_file():
                loc = json.loads(locf.read_text())
            elif args.report_only:
                loc = {}
            else:
                metric = clipiq.create_metric("rsfiqa", model=args.backbone, checkpoint=row["checkpoint"],
                                              device="cpu")
                metric.net.region_cache = mod.region_cache(cfg)  # reuse the run's segmentations and descriptions
                loc = localise_rows(metric, labels, images, sp.test, folder)
                loc.pop("scores")
                locf.write_text(json.dumps(loc, indent=1))
            trows.append({**row, **loc})
        if trows:
            per_round[name] = trows
        else:
            skipped[name] = "no finished round yet"
        log.info("local row %s done in %.1f min", name, (time.perf_counter() - t0) / 60)

    summary = bench_iqa_livec.summarise(per_round)
    for name, rws in per_round.items():
        with_loc = [r for r in rws if "hit" in r]
        if with_loc:
            summary[name].update({
                "hit_mean": statistics.fmean(r["hit"] for r in with_loc),
                "chance_mean": statistics.fmean(r["chance"] for r in with_loc),
                "auc_mean": statistics.fmean(r["auc"] for r in with_loc),
                "auc_median": statistics.median(r["auc"] for r in with_loc),
            })
    meta = {"n_images": len(labels), "n_scenes": len(set(labels.groups())), "rounds": args.rounds,
            "seed": args.seed, "backbone": args.backbone, "data": base_cfg["data"], "protocol": base_cfg["protocol"],
            "test_sizes": [len(sp.test) for sp in splits], "skipped": skipped}
    return {"summary": summary, "meta": meta, "rounds": per_round, "markdown": local_markdown(summary, meta)}


def local_markdown(summary: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    lines = [
        f"Synthetic local distortions ({meta['n_images']} images of {meta['n_scenes']} scenes; target: SSIM to the "
        f"clean photo), backbone `{meta['backbone']}`, {meta['rounds']} round(s) split by scene, test parts of "
        f"{min(meta['test_sizes'])}-{max(meta['test_sizes'])} images. Top-1 hit: the worst-scored region has the "
        "largest share of degraded pixels; chance: a random region's hit rate; pixel AUC: degraded vs clean pixels "
        "by 1 - region score.",
        "",
        "| row | rounds | SRCC median | SRCC mean ± std | PLCC median | gain over zero-shot (median) | top-1 hit | "
        "chance | pixel AUC (mean) | s / round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(s: Mapping[str, Any], key: str) -> str:
        return f"{s[key]:.3f}" if key in s else "-"

    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['rounds']} | {s['srcc_median']:.3f} | {s['srcc_mean']:.3f} ± {s['srcc_std']:.3f} | "
            f"{s['plcc_median']:.3f} | {s['gain_over_zero_shot_median']:+.3f} | {f(s, 'hit_mean')} | "
            f"{f(s, 'chance_mean')} | {f(s, 'auc_mean')} | {s['seconds_per_round']:.0f} |")
    for name, why in meta.get("skipped", {}).items():
        lines.append(f"| {name} | not run: {why} | | | | | | | | |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# cost


def part_cost(args: argparse.Namespace) -> dict[str, Any]:
    kodak = SHARED / "photos" / "kodak24"
    if not kodak.is_dir():
        return {"skipped": f"the Kodak photos are not at {kodak}"}
    photos = load_photos(kodak)[: 2 if args.quick else 5]
    warm = photos[0].flip(-1)  # not one of the timed images, so no timed image hits the region cache
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, opts in COST_SETTINGS.items():
            model = build_model({"backbone": args.backbone, **opts})
            p = model.checkpoint_payload({"method": "rsfiqa", "model": {"backbone": args.backbone, **opts}})
            ck = save_method_checkpoint(Path(tmp) / "untrained.safetensors", p["method"], p["state"], p["config"],
                                        p["backbone"])
            del model
            metric = clipiq.create_metric("rsfiqa", model=args.backbone, checkpoint=ck, device="cpu")
            metric.score_regions(warm)
            times, regions = [], []
            for x in photos:
                t0 = time.perf_counter()
                out = metric.score_regions(x)
                times.append(time.perf_counter() - t0)
                regions.append(len(out["region_scores"]))
            rows[name] = {"seconds_mean": statistics.fmean(times), "seconds": times, "regions": regions}
            log.info("cost %s: %.2f s/image", name, rows[name]["seconds_mean"])
    meta = {"n_photos": len(photos), "size": 500, "backbone": args.backbone, "torch_threads": torch.get_num_threads()}
    lines = [f"`score_regions` on {len(photos)} Kodak photos centre-cropped to 500x500, untrained model, backbone "
             f"`{args.backbone}`, view 448 px, CPU ({torch.get_num_threads()} threads).", "",
             "| setting | s / image (mean) | min-max | regions (median) |", "|---|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['seconds_mean']:.2f} | {min(r['seconds']):.2f}-{max(r['seconds']):.2f} | "
                     f"{statistics.median(r['regions']):.0f} |")
    return {"rows": rows, "meta": meta, "markdown": "\n".join(lines)}


# ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", default="degradation-clip-v2")
    ap.add_argument("--local-rows", default=",".join(LOCAL_ROWS), help=f"subset of {', '.join(LOCAL_ROWS)}")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-rsfiqa")
    ap.add_argument("--livec-out", type=Path, default=REPO / "runs" / "bench-livec",
                    help="bench_iqa_livec's run folder (shared with that benchmark)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--report-only", action="store_true", help="train nothing: report finished rounds")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 round, 1 epoch")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown parts {unknown}; known: {', '.join(PARTS)}")
    if not SHARED.is_dir():
        print(f"skipped: no shared data at {SHARED} (set CLIPIQ_SHARED_DATA)", file=sys.stderr)
        return 0
    if args.quick:
        args.rounds = 1
        args.out = args.out.with_name(args.out.name + "-quick")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    run = {"livec": part_livec, "local": part_local, "cost": part_cost}
    tables = []
    for part in parts:
        t0 = time.perf_counter()
        res = run[part](args)
        res["wall_seconds"] = round(time.perf_counter() - t0, 1)
        results[part] = res
        body = res.get("markdown") or f"skipped: {res['skipped']}"
        tables.append(f"## {part}\n\n{body}\n\nWall time {res['wall_seconds'] / 60:.1f} min.")
        print(tables[-1] + "\n", flush=True)
    report = "\n\n".join(tables) + f"\n\nTotal wall time {(time.perf_counter() - started) / 60:.1f} min" + \
        (" (--quick: smoke run, numbers mean nothing)." if args.quick else ".") + "\n"
    print(report.rsplit("\n\n", 1)[-1], end="")
    (args.out / "results.md").write_text(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "parts": results},
                                        indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
