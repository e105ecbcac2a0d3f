"""The offline CLIP models side by side: LIVE Challenge dev part, held-out McMaster18, CPU speed and memory.

For each model in --models (default degradation-clip and degradation-clip-v2; a model that cannot be loaded
is reported as missing), one row of one table:

* livec: zero-shot `clipiqa` ("Good photo." / "Bad photo.", default tiles view) on the 400-image LIVE
  Challenge development part, scored by the library's batch runner as `clipiq bench --labels` does: SRCC with
  a bootstrap 95% CI and PLCC after the logistic mapping (`correlation_report`). Then a ridge probe on the
  image embeddings: the mean of the L2-normalised embeddings of exactly the tiles clipiqa scores; features
  standardised on the training part; 10 seeded 80/20 splits; alpha chosen per split by efficient
  leave-one-out cross-validation on the training part only (what scikit-learn's RidgeCV does by default);
  median and range of the test SRCC.
* mcmaster: held-out McMaster18 (never trained on). Synthetic ranking SRCC of clipiqa against severity
  per degradation type and its mean (`synthetic_ranking`, 256 px centre crops, as `clipiq bench
  --synthetic` does); zero-shot type accuracy over the 17 types at levels 3-5 ("a photo with <type
  phrase>", `evaluate_model`, centre crops at the model's input size) and family accuracy (a prediction
  counts when its family matches).
* speed: images/s of the clipiqa metric (default settings) on decoded 500x500 McMaster18 photos, fp32 and
  bf16, 2 torch threads, one warm-up call then the median of timed calls; each model/precision runs in a
  fresh child process that also reports its peak RSS (VmHWM: on Linux `getrusage`'s ru_maxrss carries the
  parent's peak across fork and exec, so it would report the parent's).

Usage: python benchmarks/bench_offline_clip.py [--models a,b] [--parts livec,mcmaster,speed] [--json OUT]
       [--quick] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import clipiq
from clipiq.clip.tokenizer import tokenize
from clipiq.data.io import list_images, load_image
from clipiq.data.labels import read_labels
from clipiq.data.runner import BatchRunner
from clipiq.degrade import DEGRADATIONS
from clipiq.eval.correlation import correlation_report, srcc
from clipiq.eval.probe import ALPHAS, RidgeProbe
from clipiq.synth.ranking import synthetic_ranking
from clipiq.train.degradation_clip import degraded_eval_set, evaluate_model, type_prompt

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data"))
LIVEC = SHARED / "iqa" / "livec-dev"
MCMASTER = SHARED / "photos" / "mcmaster18"
PARTS = ("livec", "mcmaster", "speed")
TYPE_LEVELS = (3, 4, 5)
RANK_CROP = 256  # the default of `clipiq bench --synthetic`


def log(msg: str) -> None:
    """Progress line on stderr, so that stdout holds only the table."""
    print(msg, file=sys.stderr, flush=True)


def load_metric(name: str, precision: str = "fp32"):
    """The clipiqa metric on `name`, or the reason it cannot be loaded (a missing model is not a crash)."""
    try:
        return clipiq.create_metric("clipiqa", model=name, device="cpu", precision=precision), None
    except (ValueError, LookupError, OSError) as e:
        return None, f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- LIVE Challenge


def ridge_probe(feats: np.ndarray, mos: np.ndarray, splits: int, seed: int) -> dict:
    """Test SRCC of a ridge read-out over seeded 80/20 splits; alpha chosen on each training part only."""
    out, alphas = [], []
    for k in range(splits):
        perm = np.random.default_rng([seed, k]).permutation(len(mos))
        n_test = len(mos) // 5
        test, train = perm[:n_test], perm[n_test:]
        probe = RidgeProbe.fit(feats[train], mos[train], ALPHAS)
        out.append(srcc(probe.predict(feats[test]), mos[test]))
        alphas.append(probe.alpha)
    return {"ridge_srcc_median": float(np.median(out)), "ridge_srcc_min": float(min(out)),
            "ridge_srcc_max": float(max(out)), "ridge_srcc": out, "ridge_alphas": alphas,
            "ridge_alpha_at_grid_edge": sum(a in (ALPHAS[0], ALPHAS[-1]) for a in alphas)}


def tile_embeddings(metric, paths: list[Path]) -> np.ndarray:
    """Mean L2-normalised image embedding over the tiles (or view) the clipiqa metric scores, per image."""

    @torch.inference_mode()
    def embed(prepared: list[torch.Tensor]) -> list[np.ndarray]:
        x = torch.stack(prepared)
        n = len(x)
        if x.ndim == 5:  # (N, tiles, 3, s, s), as clipiqa's tiles view prepares it
            x = x.flatten(0, 1)
        x = metric.preprocess.normalize(x.to(metric.device, metric.clip.dtype))
        e = metric.clip.encode_image(x, normalize=True).float()
        e = e.view(n, -1, e.shape[-1])
        return list(e.mean(1).numpy())

    # The library's runner, so decoding and `prepare` overlap the model as in the scoring pass.
    runner = BatchRunner(embed, prepare=metric.prepare, batch_size=metric.batch_size)
    rows: dict[int, np.ndarray] = {}
    for r in tqdm(runner.run(paths), total=len(paths), desc="livec embeddings", unit="img", file=sys.stderr):
        rows[r.index] = r.unwrap()
    return np.stack([rows[i] for i in range(len(paths))]).astype(np.float64)


def livec_part(metric, n_images: int | None, splits: int, seed: int) -> dict:
    """Zero-shot clipiqa correlation with MOS, and the ridge probe on tile embeddings."""
    labels = read_labels(LIVEC / "labels.csv", image_root=LIVEC / "images")[:n_images]
    paths = [s.path for s in labels]
    mos = np.array([s.score for s in labels], dtype=np.float64)
    pred = np.empty(len(paths))
    with tqdm(total=len(paths), desc="livec clipiqa", unit="img", file=sys.stderr) as bar:
        for r in metric.iter_results(paths):
            pred[r.index] = r.unwrap()["score"]
            bar.update(1)
    if metric.lower_better != labels.lower_is_better:
        pred = -pred  # agreement reads positive whatever the directions, as in `clipiq bench`
    rep = correlation_report(pred, mos, bootstrap=1000, seed=seed)
    out = {"n_images": len(paths), "srcc": rep.srcc, "srcc_ci_low": rep.srcc_ci_low,
           "srcc_ci_high": rep.srcc_ci_high, "plcc": rep.plcc, "plcc_raw": rep.plcc_raw, "krcc": rep.krcc}
    feats = tile_embeddings(metric, paths)
    out["embed_dim"] = int(feats.shape[1])
    out.update(ridge_probe(feats, mos, splits, seed))
    return out


# ---------------------------------------------------------------- McMaster18


@torch.no_grad()
def type_predictions(model, preprocess, degraded, names: list[str]) -> list[tuple[str, str]]:
    """(true, predicted) type per degraded image at TYPE_LEVELS, by the same prompts as `evaluate_model`."""
    txt = F.normalize(model.encode_text(tokenize([type_prompt(n) for n in names])), dim=-1)
    pairs = []
    for per_photo in degraded:
        for ti, batch in enumerate(per_photo):
            sel = batch[[lv - 1 for lv in TYPE_LEVELS]]
            feats = F.normalize(model.encode_image(preprocess.normalize(sel.to(model.dtype))), dim=-1).float()
            pairs += [(names[ti], names[int(p)]) for p in (feats @ txt.float().t()).argmax(-1)]
    return pairs


def centre_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop to at most size x size."""
    h, w = img.shape[-2:]
    s = min(size, h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return img[:, y : y + s, x : x + s]


def mcmaster_part(metric, photos: list[Path], seed: int) -> dict:
    """Synthetic ranking SRCC per type, and zero-shot type and family accuracy, on held-out photos."""
    names = list(DEGRADATIONS)
    rank = synthetic_ranking(metric, photos, names, seed=seed, crop=RANK_CROP, batch_size=metric.batch_size,
                             lower_better=metric.lower_better)
    model, pre = metric.clip, metric.preprocess
    # Crops at the model's own input size, so each model classifies its native pixel scale.
    images = [centre_crop(load_image(p), pre.image_size) for p in tqdm(photos, desc="type crops", file=sys.stderr)]
    log(f"  degrading {len(images)} crops x {len(names)} types x 5 levels for the type accuracy")
    degraded = degraded_eval_set(images, names, seed=seed)
    ev = evaluate_model(model, pre, degraded, levels=TYPE_LEVELS, names=names)
    pairs = type_predictions(model, pre, degraded, names)
    acc = float(np.mean([t == p for t, p in pairs]))
    if abs(acc - ev["type_acc"]) > 1e-9:
        log(f"  warning: type accuracy from the predictions {acc:.4f} != evaluate_model {ev['type_acc']:.4f}")
    fam = float(np.mean([DEGRADATIONS[t].family == DEGRADATIONS[p].family for t, p in pairs]))
    return {"n_photos": len(photos), "rank_srcc_mean": rank.mean, "rank_srcc_per_type": rank.per_type,
            "type_acc": ev["type_acc"], "type_acc_per_type": ev["per_type_acc"], "family_acc": fam,
            "n_types": len(names), "n_families": len({DEGRADATIONS[n].family for n in names})}


# ---------------------------------------------------------------- speed and memory


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB: VmHWM, since ru_maxrss keeps the parent's peak across fork and exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is


def speed_child(cfg: dict) -> dict:
    """In a fresh process: images/s of the clipiqa metric on decoded photos, and the process's peak RSS."""
    torch.set_num_threads(cfg["threads"])
    metric, err = load_metric(cfg["model"], cfg["precision"])
    if metric is None:
        return {"missing": err}
    photos = sorted(list_images([cfg["photos"]]))[: cfg["images"]]
    batch = torch.stack([load_image(p) for p in photos])  # decoding is left out of the timing
    rss_loaded = peak_rss_mib()
    metric(batch)  # warm-up: first-call allocations and oneDNN kernel selection
    times = []
    for _ in range(cfg["rounds"]):
        t0 = time.perf_counter()
        metric(batch)
        times.append(time.perf_counter() - t0)
    return {"images": len(photos), "size": list(batch.shape[-2:]), "rounds": cfg["rounds"],
            "images_per_s": len(photos) / float(np.median(times)), "images_per_s_best": len(photos) / min(times),
            "seconds": times, "peak_rss_mib_after_load": rss_loaded,
            "peak_rss_mib": peak_rss_mib()}


def speed_part(name: str, images: int, rounds: int) -> dict:
    """Run `speed_child` for fp32 and bf16, each in its own process so peak RSS belongs to that row alone."""
    out = {}
    for precision in ("fp32", "bf16"):
        cfg = {"model": name, "precision": precision, "photos": str(MCMASTER), "images": images,
               "rounds": rounds, "threads": 2}
        log(f"  speed {name} {precision}: {images} images, 1 warm-up + {rounds} timed calls")
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"speed child {name} {precision} failed:\n{proc.stderr[-3000:]}")
        out[precision] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------- report


def fmt(x: float | None, spec: str = ".3f") -> str:
    """A number, or a dash when it was not measured."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def caption(results: dict[str, dict], parts: list[str]) -> str:
    """What the columns measured, from the first model that ran."""
    ran = [r for r in results.values() if "missing" not in r]
    if not ran:
        return ""
    r, out = ran[0], []
    if "livec" in parts:
        lc = r["livec"]
        out.append(f"LIVE-C dev: {lc['n_images']} images, clipiqa default tiles view, bootstrap 95% CI "
                   f"(1000 resamples); ridge on the mean tile embedding, {len(lc['ridge_srcc'])} seeded 80/20 "
                   "splits, alpha by leave-one-out on each training part.")
    if "mcmaster" in parts:
        mc = r["mcmaster"]
        out.append(f"McMaster18 (held out): {mc['n_photos']} photos; ranking SRCC over levels 1-5 of "
                   f"{mc['n_types']} types on {RANK_CROP} px crops, mean over types; type accuracy at levels "
                   f"3-5 on crops at the model's input size (chance {1 / mc['n_types']:.3f}); family accuracy "
                   f"over {mc['n_families']} families.")
    if "speed" in parts:
        sp = r["speed"]["fp32"]
        out.append(f"Speed: clipiqa defaults on {sp['images']} decoded {sp['size'][0]}x{sp['size'][1]} photos per "
                   f"call, median of {sp['rounds']} calls after 1 warm-up, 2 torch threads; peak RSS (VmHWM) "
                   "of a fresh process per model and precision.")
    return "\n".join(out)


def markdown(results: dict[str, dict], parts: list[str]) -> str:
    """The one-row-per-model table, then per-type ranking SRCC."""
    head, rule = ["model"], ["---"]
    if "livec" in parts:
        head += ["LIVE-C clipiqa SRCC [95% CI]", "PLCC", "ridge SRCC median (range)"]
    if "mcmaster" in parts:
        head += ["McM18 ranking SRCC", "type acc", "family acc"]
    if "speed" in parts:
        head += ["img/s fp32", "img/s bf16", "peak RSS MiB fp32 / bf16"]
    rule += ["---:"] * (len(head) - 1)
    lines = [caption(results, parts), "", "| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    for name, r in results.items():
        if "missing" in r:
            why = r["missing"].splitlines()[0].split(";")[0]
            why = why if len(why) <= 100 else why[:97] + "..."
            lines.append(f"| {name} | missing: {why} |" + " |" * (len(head) - 2))
            continue
        cells = [name]
        if "livec" in parts:
            lc = r.get("livec", {})
            cells += [f"{fmt(lc.get('srcc'))} [{fmt(lc.get('srcc_ci_low'))}, {fmt(lc.get('srcc_ci_high'))}]",
                      fmt(lc.get("plcc")),
                      f"{fmt(lc.get('ridge_srcc_median'))} ({fmt(lc.get('ridge_srcc_min'))}-"
                      f"{fmt(lc.get('ridge_srcc_max'))})"]
        if "mcmaster" in parts:
            mc = r.get("mcmaster", {})
            cells += [fmt(mc.get("rank_srcc_mean")), fmt(mc.get("type_acc")), fmt(mc.get("family_acc"))]
        if "speed" in parts:
            sp = r.get("speed", {})
            f32, b16 = sp.get("fp32", {}), sp.get("bf16", {})
            cells += [fmt(f32.get("images_per_s"), ".1f"), fmt(b16.get("images_per_s"), ".1f"),
                      f"{fmt(f32.get('peak_rss_mib'), '.0f')} / {fmt(b16.get('peak_rss_mib'), '.0f')}"]
        lines.append("| " + " | ".join(cells) + " |")
    ranked = {n: r["mcmaster"] for n, r in results.items() if "mcmaster" in r}
    if ranked:
        models = list(ranked)
        lines += ["", "| degradation (family) | " + " | ".join(f"{m} SRCC | {m} acc" for m in models) + " |",
                  "|---|" + "---:|---:|" * len(models)]
        for t in DEGRADATIONS:
            cells = [f"{fmt(ranked[m]['rank_srcc_per_type'].get(t))} | "
                     f"{fmt(ranked[m]['type_acc_per_type'].get(t), '.2f')}" for m in models]
            lines.append(f"| {t} ({DEGRADATIONS[t].family}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts on every model and print (and optionally save) the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="degradation-clip,degradation-clip-v2")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--json", type=Path, help="write every number to this file")
    ap.add_argument("--quick", action="store_true", help="small subsets, for a smoke run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speed-images", type=int, default=16, help="images per timed call (default 16)")
    ap.add_argument("--speed-rounds", type=int, default=5, help="timed calls after the warm-up (default 5)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(speed_child(json.loads(args.child))))
        return 0
    t_start = time.perf_counter()
    torch.set_num_threads(2)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    for part, folder in (("livec", LIVEC), ("mcmaster", MCMASTER), ("speed", MCMASTER)):
        if part in parts and not folder.is_dir():
            log(f"skipped part {part}: {folder} not found (set CLIPIQ_SHARED_DATA to the shared/data folder)")
            parts.remove(part)
    n_live = 60 if args.quick else None
    photos = sorted(list_images([MCMASTER]))[: 2 if args.quick else None] if "mcmaster" in parts else []
    speed_images, speed_rounds = (4, 2) if args.quick else (args.speed_images, args.speed_rounds)

    results: dict[str, dict] = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        log(f"== {name}")
        metric, err = load_metric(name)
        if metric is None:
            log(f"  missing: {err}")
            results[name] = {"missing": err}
            continue
        r: dict = {"image_size": metric.preprocess.image_size,
                   "parameters": sum(p.numel() for p in metric.clip.parameters())}
        if "livec" in parts:
            t0 = time.perf_counter()
            r["livec"] = livec_part(metric, n_live, splits=10, seed=args.seed)
            r["livec"]["seconds"] = time.perf_counter() - t0
        if "mcmaster" in parts:
            t0 = time.perf_counter()
            r["mcmaster"] = mcmaster_part(metric, photos, args.seed)
            r["mcmaster"]["seconds"] = time.perf_counter() - t0
        del metric  # the speed children measure their own memory; free this one first
        if "speed" in parts:
            r["speed"] = speed_part(name, speed_images, speed_rounds)
        results[name] = r

    total = time.perf_counter() - t_start
    md = markdown(results, parts)
    print(md)
    print(f"\ntotal time {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"parts": parts, "quick": args.quick, "seed": args.seed,
                                         "torch": torch.__version__, "threads": 2, "seconds": total,
                                         "models": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
