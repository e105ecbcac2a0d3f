"""CLIP-DQA here: accuracy on synthetic dehazed data, inference speed and stride sensitivity.

Three parts, each selectable:

* ``accuracy``: trains CLIP-DQA's prompts on the degradation-clip backbone with
  ``configs/clip-dqa/synthetic.yaml`` (n rounds, splits by scene) and compares, on each round's
  validation and test scenes, with zero-shot ``clipiqa`` on the same backbone and images, and with
  three rows that explain the result (same val/test images, each image scored once, reused by every round):

  - ``untrained CLIP-DQA (merged input)``: fresh prompts (the zero-shot prompt, zero vision prompts), patch grid.
  - ``local patches only (zero-shot)``: plain backbone, each grid patch alone, mean P("good photo").
  - ``ridge on embeddings``: ridge (alpha by LOO) on [global embedding, mean patch embedding], fit on train.
* ``speed``: seconds per 1024x768 image on CPU for the ViT-B-32 architecture at 224 (random weights: the
  cost does not depend on their values), fp32 and bf16, at strides 64 and 128, against a naive loop
  that runs each patch alone and re-embeds the global view every time.
* ``stride``: SRCC between stride-64 and stride-128 scores of the trained model on the test scenes.

    python benchmarks/bench_clip_dqa.py                      # all three (about 30-40 min on 2 cores)
    python benchmarks/bench_clip_dqa.py --parts speed --speed-images 1
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from clipiq.clip.config import get_architecture  # noqa: E402
from clipiq.clip.model import build_model  # noqa: E402
from clipiq.clip.preprocess import Preprocess  # noqa: E402
from clipiq.clip.prompts import prompt_probabilities  # noqa: E402
from clipiq.core.config import load_config  # noqa: E402
from clipiq.data.io import load_image  # noqa: E402
from clipiq.eval.correlation import plcc, srcc  # noqa: E402
from clipiq.eval.probe import RidgeProbe  # noqa: E402
from clipiq.iqa import create_metric  # noqa: E402
from clipiq.iqa.clip_dqa import CLIPDQAModel, load_model  # noqa: E402
from clipiq.iqa.clip_dqa import build_model as build_dqa_model  # noqa: E402
from clipiq.train import clip_dqa as task  # noqa: E402
from clipiq.train.protocol import ImageCache, load_iqa_labels, normalised_targets, predict_indices, round_split  # noqa: E402

log = logging.getLogger("bench_clip_dqa")

#: Row key prefix -> label, in table order (the accuracy part's methods).
METHODS = {
    "clip_dqa": "CLIP-DQA (trained)",
    "clipiqa": "clipiqa (zero-shot)",
    "untrained": "untrained CLIP-DQA (merged input)",
    "local_zs": "local patches only (zero-shot)",
    "ridge": "ridge on embeddings (upper bound of a linear read-out)",
}


def _plain_embeddings(model: CLIPDQAModel, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised embeddings by the plain backbone (no prompts): global view (D,), grid patches (P,D)."""
    clip, pre = model.clip, model.preprocess

    def enc(x: torch.Tensor) -> torch.Tensor:
        return clip.encode_image(pre.normalize(x.to(clip.device, clip.dtype)), normalize=True).float()

    g = enc(model.global_view(image)[None])[0]
    patches = pre.patches(image[None], model.size, model.patch_stride)[0]
    p = torch.cat([enc(patches[i : i + model.patch_batch]) for i in range(0, len(patches), model.patch_batch)])
    return g, p


def local_zero_shot(model: CLIPDQAModel, patch_embeddings: torch.Tensor) -> float:
    """Mean over patches of P("good photo"): softmax of logit_scale * cosine to the untrained class prompts."""
    probs = prompt_probabilities(patch_embeddings, model.text_features(), model.clip.logit_scale)
    return float(probs[:, 1].mean())


def _add(row: dict, name: str, part: str, pred: np.ndarray, target: np.ndarray) -> None:
    row[f"{name}_{part}_srcc"] = srcc(pred, target)
    row[f"{name}_{part}_plcc"] = plcc(pred, target)


def accuracy(args: argparse.Namespace) -> dict:
    """Train CLIP-DQA (n rounds) and compare with zero-shot clipiqa on the same splits."""
    cfg = load_config(args.config, args.overrides, defaults=task.DEFAULTS)
    run_dir = Path(args.run_dir)
    t0 = time.perf_counter()
    summary = task.run(cfg, run_dir, torch.device("cpu"), resume=True)
    train_s = time.perf_counter() - t0
    labels = load_iqa_labels(cfg["data"])
    targets = normalised_targets(labels)
    images = ImageCache(labels)
    zs = create_metric("clipiqa", model=cfg["model"]["backbone"], device="cpu")
    n_rounds = int(cfg["protocol"]["rounds"])
    splits = [round_split(labels, cfg["protocol"], int(cfg["seed"]) + r) for r in range(n_rounds)]
    # Explanatory rows: every image scored / embedded once, reused by every round.
    untrained = build_dqa_model(cfg["model"], device="cpu").eval()
    scored = {i for s in splits for i in (*s.val, *s.test)}
    embedded = sorted({i for s in splits for i in (*s.train, *s.val, *s.test)})
    untrained_score: dict[int, float] = {}
    local_score: dict[int, float] = {}
    features: dict[int, np.ndarray] = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in tqdm(embedded, desc="explanatory rows", unit="img"):
            img = images(i)
            g, p = _plain_embeddings(untrained, img)
            features[i] = torch.cat([g, p.mean(0)]).numpy()
            if i in scored:
                untrained_score[i] = float(untrained.predict([img], "test")[0])
                local_score[i] = local_zero_shot(untrained, p)
    explain_s = time.perf_counter() - t0
    rows = []
    for r, split in enumerate(splits):
        res = json.loads((run_dir / f"round{r:02d}" / "result.json").read_text())
        model = load_model(res["checkpoint"])
        row = {"round": r, "n_train": res["n_train"], "n_val": len(split.val), "n_test": len(split.test),
               "clip_dqa_val_srcc": res["val_srcc"], "clip_dqa_test_srcc": res["srcc"],
               "clip_dqa_test_plcc": res["plcc"]}
        for part, idx in (("val", split.val), ("test", split.test)):
            z = zs([images(i) for i in idx]).numpy()
            row[f"clipiqa_{part}_srcc"] = srcc(z, targets[list(idx)])
            row[f"clipiqa_{part}_plcc"] = plcc(z, targets[list(idx)])
        # validation SRCC of the selected checkpoint at the test stride, for a like-for-like comparison
        v = predict_indices(model, images, split.val, 16, "test")
        row["clip_dqa_val_srcc_full"] = srcc(v, targets[list(split.val)])
        row["clip_dqa_val_plcc_full"] = plcc(v, targets[list(split.val)])
        probe = RidgeProbe.fit(np.stack([features[i] for i in split.train]), targets[list(split.train)])
        row["ridge_alpha"] = probe.alpha
        for part, idx in (("val", split.val), ("test", split.test)):
            t = targets[list(idx)]
            _add(row, "untrained", part, np.array([untrained_score[i] for i in idx]), t)
            _add(row, "local_zs", part, np.array([local_score[i] for i in idx]), t)
            _add(row, "ridge", part, probe.predict(np.stack([features[i] for i in idx])), t)
        rows.append(row)
        log.info("round %d: %s", r, row)
    keys = [k for k in rows[0] if k.endswith(("srcc", "plcc", "srcc_full", "plcc_full"))]
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    return {"summary": summary, "rounds": rows, "median": med, "train_seconds": train_s,
            "explain_seconds": explain_s, "methods": METHODS,
            "dataset": {"images": len(labels), "scenes": len(set(labels.groups()))}}


def _vit_b32_model(precision: str) -> CLIPDQAModel:
    cfg = get_architecture("ViT-B-32")
    clip = build_model(cfg, seed=0).eval()
    clip.weights_name = "ViT-B-32 (random, speed only)"
    if precision == "bf16":
        clip = clip.to(torch.bfloat16)
    pre = Preprocess(cfg.preprocess, cfg.vision.patch_size)
    return CLIPDQAModel(clip, pre, n_ctx=8, depth=12, patch_batch=64).eval()


@torch.no_grad()
def _naive(model: CLIPDQAModel, image: torch.Tensor, stride: int) -> float:
    # What a straightforward port does: each patch alone, with the global view re-embedded each time.
    patches = model.preprocess.patches(image[None], model.size, stride)[0]
    g = model.global_view(image)[None]
    return float(torch.stack([model(g, p[None])[0] for p in patches]).mean())


def speed(args: argparse.Namespace) -> dict:
    """Seconds per 1024x768 image: batched patch grid vs the naive loop, fp32 and bf16, strides 64/128."""
    photos = sorted(Path(args.speed_photos).iterdir())[: args.speed_images]
    imgs = []
    for p in photos:
        x = load_image(p)
        if x.shape[1] > x.shape[2]:
            x = x.transpose(1, 2)
        imgs.append(torch.nn.functional.interpolate(x[None], size=(768, 1024), mode="bicubic",
                                                    antialias=True, align_corners=False)[0].clamp(0, 1))
    out = {"images": len(imgs), "threads": torch.get_num_threads(), "rows": []}
    for precision in ("fp32", "bf16"):
        model = _vit_b32_model(precision)
        model.score_image(imgs[0][:, :300, :300], 64)  # warm-up
        for stride in (64, 128):
            n_patches = len(model.preprocess.patches(imgs[0][None], 224, stride)[0])
            t0 = time.perf_counter()
            for x in imgs:
                model.score_image(x, stride)
            fast = (time.perf_counter() - t0) / len(imgs)
            row = {"precision": precision, "stride": stride, "patches": n_patches, "batched_s": fast}
            if precision == "fp32" and not args.skip_naive:
                t0 = time.perf_counter()
                _naive(model, imgs[0], stride)
                row["naive_s"] = time.perf_counter() - t0
                row["speedup"] = row["naive_s"] / fast
            out["rows"].append(row)
            log.info("%s", row)
    return out


def stride(args: argparse.Namespace, acc: dict | None) -> dict:
    """SRCC between stride-64 and stride-128 scores of the trained model on round 0's test scenes."""
    cfg = load_config(args.config, args.overrides, defaults=task.DEFAULTS)
    run_dir = Path(args.run_dir)
    res = json.loads((run_dir / "round00" / "result.json").read_text())
    labels = load_iqa_labels(cfg["data"])
    split = round_split(labels, cfg["protocol"], int(cfg["seed"]))
    model = load_model(res["checkpoint"])
    images = ImageCache(labels)
    scores = {}
    for s in (64, 128):
        model.patch_stride = s
        t0 = time.perf_counter()
        scores[s] = predict_indices(model, images, split.test, 16, "test")
        scores[f"t{s}"] = (time.perf_counter() - t0) / len(split.test)
    t = normalised_targets(labels)[list(split.test)]
    return {"n": len(split.test), "srcc_64_vs_128": srcc(scores[64], scores[128]),
            "test_srcc_64": srcc(scores[64], t), "test_srcc_128": srcc(scores[128], t),
            "seconds_per_image_64": scores["t64"], "seconds_per_image_128": scores["t128"],
            "image_size": list(images(split.test[0]).shape[1:])}


def _table(result: dict) -> str:
    lines = []
    if "accuracy" in result:
        a = result["accuracy"]
        lines += ["| round | CLIP-DQA val SRCC | clipiqa val SRCC | CLIP-DQA test SRCC | clipiqa test SRCC | "
                  "CLIP-DQA test PLCC | clipiqa test PLCC |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in a["rounds"] + [{"round": "median", **a["median"]}]:
            lines.append(f"| {r['round']} | {r['clip_dqa_val_srcc_full']:.3f} | {r['clipiqa_val_srcc']:.3f} | "
                         f"{r['clip_dqa_test_srcc']:.3f} | {r['clipiqa_test_srcc']:.3f} | "
                         f"{r['clip_dqa_test_plcc']:.3f} | {r['clipiqa_test_plcc']:.3f} |")
        lines.append("")
        # Every method, val and test, per round and median (CLIP-DQA val at the test stride).
        lines += ["| method | round | val SRCC | val PLCC | test SRCC | test PLCC |", "|---|---|---:|---:|---:|---:|"]
        cols = {name: (f"{name}_val_srcc", f"{name}_val_plcc", f"{name}_test_srcc", f"{name}_test_plcc")
                for name in METHODS}
        cols["clip_dqa"] = ("clip_dqa_val_srcc_full", "clip_dqa_val_plcc_full", "clip_dqa_test_srcc",
                            "clip_dqa_test_plcc")
        for name, label in METHODS.items():
            for r in a["rounds"] + [{"round": "median", **a["median"]}]:
                vals = " | ".join(f"{r[k]:.3f}" if k in r else "" for k in cols[name])
                lines.append(f"| {label} | {r['round']} | {vals} |")
        lines.append("")
    if "speed" in result:
        lines += ["| precision | stride | patches | batched s/img | naive s/img | speed-up |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in result["speed"]["rows"]:
            naive = f"{r['naive_s']:.2f}" if "naive_s" in r else ""
            sp = f"{r['speedup']:.2f}x" if "speedup" in r else ""
            lines.append(f"| {r['precision']} | {r['stride']} | {r['patches']} | {r['batched_s']:.2f} | {naive} "
                         f"| {sp} |")
        lines.append("")
    if "stride" in result:
        s = result["stride"]
        lines.append(f"stride 64 vs 128 on {s['n']} test images ({s['image_size'][0]}x{s['image_size'][1]}): "
                     f"SRCC {s['srcc_64_vs_128']:.4f}; test SRCC {s['test_srcc_64']:.3f} (64) vs "
                     f"{s['test_srcc_128']:.3f} (128); {s['seconds_per_image_64']:.3f} vs "
                     f"{s['seconds_per_image_128']:.3f} s/img")
    return "\n".join(lines)


def main() -> None:
    """Run the selected parts and print markdown tables; --json writes everything."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="accuracy,speed,stride")
    ap.add_argument("--config", default=str(REPO / "configs/clip-dqa/synthetic.yaml"))
    ap.add_argument("--run-dir", default=str(REPO / "runs/bench-clip-dqa"))
    ap.add_argument("--speed-photos", default=str(REPO.parent / "shared/data/photos/sunhays80"))
    ap.add_argument("--speed-images", type=int, default=2)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(0)
    np.random.seed(0)
    parts = set(args.parts.split(","))
    result: dict = {"threads": torch.get_num_threads()}
    if "accuracy" in parts:
        result["accuracy"] = accuracy(args)
    if "speed" in parts:
        result["speed"] = speed(args)
    if "stride" in parts:
        result["stride"] = stride(args, result.get("accuracy"))
    print(_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
