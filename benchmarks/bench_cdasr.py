"""CDASR (restorer ``cdasr``): classic SR benchmarks, few-shot domain adaptation and cost, in one resumable run.

See docs/methods/cdasr.md. Parts (``--parts``, default all; a part whose data is missing under ``../shared/data``
(``CLIPIQ_SHARED_DATA``) is skipped with the reason, and so is a row whose checkpoint was not given):

* ``sets``: Set5 and Set14 at x2/x3/x4 (``sr/Set5``, ``sr/Set14``: HR and MATLAB-bicubic LR files), PSNR and SSIM
  on Y with the border cropped by the scale, each output rounded to 8-bit levels
  (:func:`clipiq.restore.evaluate.evaluate_restorer`). Rows: bicubic (MATLAB ``imresize`` of the LR file), CDASR
  (``--checkpoints x2=PATH,x3=PATH,x4=PATH``), CDASR ``--no-clip`` (``--no-clip-checkpoints`` likewise), and the
  published SRCNN, FSRCNN and VDSR figures read from ``../shared/data/README.md`` (marked *published*; PSNR only).
* ``adapt``: the domain-adaptation table at ``--adapt-scale`` (default 4). For each target domain
  (:data:`clipiq.degrade.TARGET_DOMAINS`) and K in ``--shots`` (default 5,10,20): K support pairs made from a few
  photos (``--support-photos``, default 5 Kodak photos, never trained on: K crops of ``--support-crop`` HR pixels,
  round-robin over the photos, crop positions and LR recipe seeded by (seed, domain, i)); the test set is Set14's HR
  images of that scale with LR made by the same recipe (seeded by (seed, domain, image)). Rows: no adaptation (the
  source checkpoint), naive fine-tuning (:func:`clipiq.train.cdasr_adapt.adapt` from the source), meta-initialised
  adaptation (the same from ``--meta-checkpoint``), and the same without CLIP (``--meta-no-clip-checkpoint``); every
  adaptation with the same ``--steps``, ``--lr``, batch and crops. PSNR / SSIM on Y, border cropped by the scale.
* ``cost``: parameters of the SR network (the frozen CLIP counted apart), CPU seconds and peak memory per 1 MP
  *output* (inputs of 1000/scale pixels a side), fp32 and bf16, ``--threads`` threads (default 2), one warm-up
  then the median of ``--rounds`` calls, each (scale, precision) in a fresh child process. Without a checkpoint
  for a scale, an untrained network of the default size on degradation-clip-v2 stands in (cost does not depend on
  the weights).

Resume: every finished number is kept in ``OUT/state.json`` under a key naming the part, the row, the checkpoints'
sha256 and the settings; adapted checkpoints are kept in ``OUT/adapt/``. A rerun skips what is done (``--fresh``
starts over). ``OUT/results.md`` holds the tables (also printed); ``--json PATH`` writes every number.

``--quick``: a smoke run of about 2-3 minutes: tiny x2 checkpoints (CLIP and no-CLIP, 2 steps on the random
``test-tiny`` backbone) and tiny meta-initialisations (1 outer step) in ``OUT-quick/checkpoints`` stand in for
missing checkpoints; Set5 x2 only, one domain with K=5, 3 adaptation steps and 2 Set14 images; cost on a
256x256 output. Its numbers mean nothing.

Usage: python benchmarks/bench_cdasr.py --checkpoints x2=A,x3=B,x4=C [--no-clip-checkpoints x2=..,x4=..]
       [--meta-checkpoint M] [--meta-no-clip-checkpoint N] [--parts sets,adapt,cost] [--out runs/bench-cdasr]
       [--json OUT.json] [--quick] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipiq.data.io import list_images, load_image
from clipiq.data.paired import find_srf_pairs
from clipiq.degrade import TARGET_DOMAINS, get_sr_domain, imresize
from clipiq.eval import psnr, ssim
from clipiq.restore import create_restorer
from clipiq.restore.evaluate import evaluate_restorer
from clipiq.train.cdasr_adapt import ADAPT_DEFAULTS, SRPair, adapt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import restore_bench_common as common  # noqa: E402  (helpers shared with bench_dap_led.py)
from restore_bench_common import KODAK, REPO, SHARED, State, file_sha, fmt, log, quantise  # noqa: E402

SR = SHARED / "sr"
PARTS = ("sets", "adapt", "cost")
SETS = ("Set5", "Set14")
PUBLISHED = ("SRCNN", "FSRCNN", "VDSR")
ADAPT_ROWS = ("none", "naive", "meta", "meta-no-clip")


def parse_scaled(text: str | None, flag: str) -> dict[int, str]:
    """``x2=PATH,x4=PATH`` -> {2: PATH, 4: PATH}."""
    out: dict[int, str] = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        key, eq, path = item.partition("=")
        m = re.fullmatch(r"x?([234])", key.strip().lower())
        if not eq or not m:
            raise SystemExit(f"{flag}: expected x2=PATH,x3=PATH,x4=PATH, got {item!r}")
        if not Path(path).is_file():
            raise SystemExit(f"{flag}: {path} not found")
        out[int(m[1])] = path
    return out


def fidelity(out: torch.Tensor, gt: torch.Tensor, scale: int) -> tuple[float, float]:
    """PSNR and SSIM on Y, border cropped by the scale, the output rounded to 8-bit levels."""
    out = quantise(out)
    return (float(psnr(out, gt, crop_border=scale, y_channel=True)),
            float(ssim(out, gt, crop_border=scale, y_channel=True)))


# ---------------------------------------------------------------- Set5 / Set14


def published_figures(readme: Path) -> dict[str, dict[str, float]]:
    """{method: {"Set5 x2": psnr, ...}} from the reference table of ../shared/data/README.md."""
    out: dict[str, dict[str, float]] = {}
    if not readme.is_file():
        return out
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in PUBLISHED:
            vals = [v.strip() for c in cells[1:] for v in c.split("/")]
            if len(vals) == 6:
                keys = [f"{s} x{k}" for s in SETS for k in (2, 3, 4)]
                out[cells[0]] = dict(zip(keys, map(float, vals)))
    return out


def sets_part(state: State, cks: dict[str, dict[int, str]], sets: Sequence[str], scales: Sequence[int],
              limit: int | None) -> dict[str, Any]:
    """Mean PSNR/SSIM (Y) per row, set and scale."""
    res: dict[str, Any] = {"rows": {}, "published": published_figures(SHARED / "README.md")}
    for name in ("bicubic", "cdasr", "cdasr-no-clip"):
        row: dict[str, Any] = {}
        for s in scales:
            path = cks.get(name, {}).get(s)
            if name != "bicubic" and path is None:
                row[f"x{s}"] = {"skipped": f"no {'--no-clip-checkpoints' if 'no-clip' in name else '--checkpoints'}"
                                          f" x{s}"}
                continue
            fp = "bicubic" if path is None else file_sha(path)
            for set_name in sets:
                key = f"sets/{name}/{fp}/{set_name}/x{s}/l{limit}"
                if state.get(key) is None:
                    pairs = find_srf_pairs(SR / set_name, s)[:limit]
                    log(f"  {name} {set_name} x{s} ({len(pairs)} images)")
                    if path is None:
                        vals = []
                        for p in pairs:
                            lq = load_image(p.lq)
                            gt = load_image(p.gt)[..., : lq.shape[-2] * s, : lq.shape[-1] * s]
                            vals.append(fidelity(imresize(lq, s), gt, s))
                        state.put(key, {"psnr": statistics.fmean(v[0] for v in vals),
                                        "ssim": statistics.fmean(v[1] for v in vals), "images": len(vals)})
                    else:
                        r = create_restorer("cdasr", scale=s, weights=path, device="cpu")
                        summ = evaluate_restorer(r, pairs).summary()
                        state.put(key, {"psnr": summ["psnr_y"], "ssim": summ["ssim_y"], "images": summ["pairs"],
                                        "failed": summ["failed"]})
                row[f"{set_name} x{s}"] = state.get(key)
        res["rows"][name] = row
    return res


# ---------------------------------------------------------------- domain adaptation


def support_pairs(photos: Sequence[Path], domain: str, k: int, scale: int, crop: int, seed: int) -> list[SRPair]:
    """K (LR, HR) crops of the support photos, round-robin, LR by the domain's recipe; seeded by (seed, domain, i)."""
    d = TARGET_DOMAINS.index(domain) if domain in TARGET_DOMAINS else 99
    crop -= crop % scale
    images = [load_image(p) for p in photos]
    pairs = []
    for i in range(k):
        img = images[i % len(images)]
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, d, i]).generate_state(1)[0]))
        h, w = img.shape[-2:]
        c = min(crop, h - h % scale, w - w % scale)
        top = int(torch.randint(0, h - c + 1, (), generator=gen))
        left = int(torch.randint(0, w - c + 1, (), generator=gen))
        hr = img[:, top : top + c, left : left + c]
        pairs.append(SRPair(f"{Path(photos[i % len(photos)]).stem}-{i}", get_sr_domain(domain)(hr, scale, gen), hr))
    return pairs


def domain_test_set(domain: str, scale: int, seed: int, limit: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Set14's HR images of that scale with LR made by the domain's recipe, seeded by (seed, domain, image)."""
    d = TARGET_DOMAINS.index(domain)
    out = []
    for j, pair in enumerate(find_srf_pairs(SR / "Set14", scale)[:limit]):
        hr = load_image(pair.gt)
        h, w = hr.shape[-2:]
        hr = hr[..., : h - h % scale, : w - w % scale]
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 1000 + d, j]).generate_state(1)[0]))
        out.append((get_sr_domain(domain)(hr, scale, gen), hr))
    return out


def score_checkpoint(path: str | os.PathLike, scale: int, test: Sequence[tuple[torch.Tensor, torch.Tensor]]
                     ) -> dict[str, float]:
    """Mean PSNR/SSIM (Y) of a checkpoint on in-memory test pairs."""
    r = create_restorer("cdasr", scale=scale, weights=str(path), device="cpu")
    vals = [fidelity(r(lr), hr, scale) for lr, hr in test]
    return {"psnr": statistics.fmean(v[0] for v in vals), "ssim": statistics.fmean(v[1] for v in vals),
            "images": len(vals)}


def adapt_part(state: State, out: Path, sources: dict[str, str | None], scale: int, domains: Sequence[str],
               shots: Sequence[int], steps: int, lr: float, crop: int, seed: int, photos: Sequence[Path],
               limit: int | None) -> dict[str, Any]:
    """The domain-adaptation table: rows x domains x K."""
    res: dict[str, Any] = {"scale": scale, "steps": steps, "lr": lr, "seed": seed, "support_crop": crop,
                           "support_photos": [p.name for p in photos], "shots": list(shots), "domains": {},
                           "rows": {}}
    init = {"none": sources.get("source"), "naive": sources.get("source"), "meta": sources.get("meta"),
            "meta-no-clip": sources.get("meta-no-clip")}
    why = {"none": "no --checkpoints x{s}", "naive": "no --checkpoints x{s}", "meta": "no --meta-checkpoint",
           "meta-no-clip": "no --meta-no-clip-checkpoint"}
    for row in ADAPT_ROWS:
        res["rows"][row] = {"skipped": why[row].format(s=scale)} if init[row] is None else \
            {"init": init[row], "sha": file_sha(init[row])}
    for domain in domains:
        test = domain_test_set(domain, scale, seed, limit)
        dres: dict[str, Any] = {}
        for row in ADAPT_ROWS:
            if init[row] is None:
                continue
            sha = res["rows"][row]["sha"]
            if row == "none":
                key = f"adapt/none/{sha}/{domain}/x{scale}/s{seed}/l{limit}"
                if state.get(key) is None:
                    log(f"  {domain}: no adaptation")
                    state.put(key, score_checkpoint(init[row], scale, test))
                dres["none"] = {f"k{k}": state.get(key) for k in shots}
                continue
            dres[row] = {}
            for k in shots:
                key = f"adapt/{row}/{sha}/{domain}/x{scale}/k{k}/n{steps}/lr{lr}/c{crop}/s{seed}/l{limit}"
                if state.get(key) is None:
                    pairs = support_pairs(photos, domain, k, scale, crop, seed)
                    ck = out / "adapt" / domain / f"k{k}" / f"{row}-{sha}.safetensors"
                    ck.parent.mkdir(parents=True, exist_ok=True)
                    log(f"  {domain} K={k}: {row} ({steps} steps)")
                    t0 = time.perf_counter()
                    adapted = adapt(init[row], pairs, steps, lr, seed=seed, out=ck,
                                    note={"domain": domain, "bench_row": row})
                    secs = time.perf_counter() - t0
                    state.put(key, {**score_checkpoint(ck, scale, test), "adapt_seconds": secs,
                                    "support_pixel_loss": adapted.config["adapt"]["support_pixel_loss"]})
                dres[row][f"k{k}"] = state.get(key)
        res["domains"][domain] = dres
    return res


# ---------------------------------------------------------------- cost


def cost_child(cfg: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: seconds and peak memory of one restorer call per output megapixel."""
    torch.set_num_threads(cfg["threads"])
    r = create_restorer("cdasr", scale=cfg["scale"], weights=cfg["checkpoint"], device="cpu",
                        precision=cfg["precision"]).eval()
    side = cfg["side"]
    x = common.cost_input(side, side)
    times, growth, _ = common.timed_calls(r, x, cfg["rounds"])
    out_mp = (side * cfg["scale"]) ** 2 / 1e6
    return {"input": side, "output_mp": out_mp, "seconds": times, "s_per_out_mp": float(np.median(times)) / out_mp,
            "peak_mib_per_out_mp": max(growth) / out_mp, "threads": cfg["threads"],
            "network_params": sum(p.numel() for p in r.net.parameters()),
            "clip_params": sum(p.numel() for p in r.clip.parameters())}


def stand_in_checkpoint(folder: Path, scale: int) -> str:
    """An untrained default-size network on degradation-clip-v2 (cost only)."""
    from clipiq.clip.checkpoint import backbone_record, save_method_checkpoint
    from clipiq.clip.load import load_clip
    from clipiq.core.tensors import trainable_state
    from clipiq.restore.cdasr import MODEL_DEFAULTS, build_net

    path = folder / f"untrained-x{scale}.safetensors"
    if not path.is_file():
        clip, _ = load_clip(MODEL_DEFAULTS["backbone"], device="cpu")
        net = build_net({}, scale, clip.cfg.embed_dim)
        folder.mkdir(parents=True, exist_ok=True)
        save_method_checkpoint(path, "cdasr", trainable_state(net), {"scale": scale, "model": dict(MODEL_DEFAULTS)},
                               backbone_record(clip, MODEL_DEFAULTS["backbone"]))
    return str(path)


def cost_part(state: State, out: Path, cks: dict[int, str], scales: Sequence[int], threads: int, rounds: int,
              output_side: int) -> dict[str, Any]:
    """Run :func:`cost_child` for each scale, fp32 and bf16."""
    res: dict[str, Any] = {}
    for s in scales:
        path = cks.get(s) or stand_in_checkpoint(out / "stand-in", s)
        side = round(output_side / s)
        for precision in ("fp32", "bf16"):
            key = f"cost/{file_sha(path)}/x{s}/{precision}/{side}/t{threads}/r{rounds}"
            if state.get(key) is None:
                cfg = {"checkpoint": path, "scale": s, "precision": precision, "side": side, "threads": threads,
                       "rounds": rounds}
                log(f"  cost x{s} {precision}: {side}x{side} -> {side * s}x{side * s}")
                state.put(key, {**common.run_child(__file__, cfg, f"cost child x{s} {precision}"), "trained": s in cks})
            res[f"x{s} {precision}"] = state.get(key)
    return res


# ---------------------------------------------------------------- quick checkpoints


def quick_checkpoints(folder: Path) -> dict[str, str]:
    """Tiny x2 checkpoints on test-tiny (CLIP and no-CLIP, 2 steps) and their meta-initialisations (1 step)."""
    from clipiq.core.config import load_config
    from clipiq.train.cdasr import DEFAULTS, run
    from clipiq.train.cdasr_adapt import DEFAULTS as META_DEFAULTS
    from clipiq.train.cdasr_adapt import run as run_meta

    photos = common.quick_photos(folder, 3, lambda x: x[:, :96, :96])
    out: dict[str, str] = {}
    for name, clip in (("clip", True), ("no-clip", False)):
        ck = folder / name / "checkpoint.safetensors"
        if not ck.is_file():
            cfg = load_config(REPO / "configs" / "cdasr" / "tiny.yaml",
                              [f"data.train=[{photos}]", "data.val=", "train.steps=2", "train.eval_every=2",
                               "train.ckpt_every=2", f"model.clip={str(clip).lower()}"], defaults=DEFAULTS)
            log(f"  quick: training a tiny {name} x2 checkpoint (test-tiny, 2 steps)")
            run(cfg, folder / name, torch.device("cpu"), progress=False)
        out[name] = str(ck)
        meta = folder / f"meta-{name}" / "checkpoint.safetensors"
        if not meta.is_file():
            cfg = load_config(None, [f"data.train=[{photos}]", "data.val=", "data.patch_size=16",
                                     f"meta.source={ck}", "meta.domains=[bicubic,aniso_blur,jpeg]",
                                     "meta.meta_batch=2", "meta.inner_steps=1", "train.steps=1", "train.batch_size=2",
                                     "train.eval_every=1", "train.ckpt_every=1", "loss.semantic_images=1"],
                              defaults=META_DEFAULTS)
            log(f"  quick: meta-initialising the tiny {name} checkpoint (1 outer step)")
            run_meta(cfg, folder / f"meta-{name}", torch.device("cpu"), progress=False)
        out[f"meta-{name}"] = str(meta)
    return out


# ---------------------------------------------------------------- report


def sets_tables(st: dict[str, Any]) -> list[str]:
    """The Set5 / Set14 table: PSNR / SSIM per row, set and scale, and the published figures."""
    cols = [c for c in (f"{s} x{k}" for s in SETS for k in (2, 3, 4))
            if any(c in r for r in st["rows"].values())]
    lines = ["### Set5 / Set14: PSNR / SSIM on Y, border cropped by the scale", "",
             "| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, row in st["rows"].items():
        cells = []
        for c in cols:
            v = row.get(c) or row.get(c.split()[-1])
            cells.append("-" if v is None else f"skipped: {v['skipped']}" if "skipped" in v
                         else f"{fmt(v['psnr'])} / {fmt(v['ssim'], '.4f')}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, vals in st["published"].items():
        lines.append(f"| {name} (published) | " + " | ".join(fmt(vals.get(c)) for c in cols) + " |")
    return lines


def adapt_tables(ad: dict[str, Any]) -> list[str]:
    """The domain-adaptation table: PSNR / SSIM per domain, row and K."""
    ks = [f"k{k}" for k in ad["shots"]]
    lines = [f"### Few-shot domain adaptation, x{ad['scale']}: PSNR / SSIM on Y of Set14 images made with each "
             f"recipe ({ad['steps']} Adam steps at lr {ad['lr']}, support crops of {ad['support_crop']} px from "
             f"{len(ad['support_photos'])} photos)", ""]
    skipped = [f"- {row}: skipped ({info['skipped']})" for row, info in ad["rows"].items() if "skipped" in info]
    lines += [*skipped, ""] if skipped else []
    lines += ["| domain | row | " + " | ".join(f"K={k[1:]}" for k in ks) + " |",
              "|---|---|" + "---:|" * len(ks)]
    for domain, dres in ad["domains"].items():
        for row, vals in dres.items():
            lines.append(f"| {domain} | {row} | " + " | ".join(
                f"{fmt(vals[k]['psnr'])} / {fmt(vals[k]['ssim'], '.4f')}" if k in vals else "-" for k in ks) + " |")
    return lines


def cost_tables(co: dict[str, Any]) -> list[str]:
    """The CPU cost table per output megapixel."""
    lines = ["### Cost on the CPU per 1 MP output (median of timed calls)", "",
             "| scale, precision | weights | network params | CLIP params | threads | s per MP "
             "| peak MiB per MP |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, c in co.items():
        if isinstance(c, dict) and "s_per_out_mp" in c:
            lines.append(f"| {name} | {'trained' if c['trained'] else 'untrained stand-in'} | "
                         f"{c['network_params']:,} | {c['clip_params']:,} | {c['threads']} | "
                         f"{fmt(c['s_per_out_mp'])} | {fmt(c['peak_mib_per_out_mp'], '.0f')} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The tables of every part that ran."""
    return common.tables_markdown(
        results, "**Quick smoke run: tiny checkpoints on the random test-tiny backbone; the numbers mean nothing.**",
        (("sets", "Set5 / Set14", sets_tables), ("adapt", "Domain adaptation", adapt_tables),
         ("cost", "Cost", cost_tables)))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts, print the tables and write OUT/results.md (and --json)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", help="CDASR checkpoints: x2=PATH,x3=PATH,x4=PATH")
    ap.add_argument("--no-clip-checkpoints", help="the --no-clip ablation's checkpoints, same form")
    ap.add_argument("--meta-checkpoint", help="meta-initialised checkpoint at --adapt-scale (clipiq train cdasr-meta)")
    ap.add_argument("--meta-no-clip-checkpoint", help="the same from the --no-clip source")
    common.add_out_args(ap, REPO / "runs" / "bench-cdasr", "results, state, adapted weights", PARTS)
    ap.add_argument("--adapt-scale", type=int, default=4, choices=(2, 3, 4))
    ap.add_argument("--shots", default="5,10,20")
    ap.add_argument("--domains", default=",".join(TARGET_DOMAINS))
    ap.add_argument("--steps", type=int, default=ADAPT_DEFAULTS["steps"], help="adaptation steps (every row)")
    ap.add_argument("--lr", type=float, default=ADAPT_DEFAULTS["lr"], help="adaptation learning rate")
    ap.add_argument("--support-photos", type=int, default=5, help="how many Kodak photos the support pairs come from")
    ap.add_argument("--support-crop", type=int, default=192, help="HR side of each support crop")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="timed calls per cost measurement")
    common.add_run_args(ap)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(cost_child(json.loads(args.child))))
        return 0
    t_start = time.perf_counter()
    parts = common.parse_parts(ap, args.parts, PARTS)
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    for d in domains:
        if d not in TARGET_DOMAINS:
            ap.error(f"--domains: {d!r} is not a target domain ({', '.join(TARGET_DOMAINS)})")
    cks = {"cdasr": parse_scaled(args.checkpoints, "--checkpoints"),
           "cdasr-no-clip": parse_scaled(args.no_clip_checkpoints, "--no-clip-checkpoints")}
    meta, meta_nc = args.meta_checkpoint, args.meta_no_clip_checkpoint
    out: Path = args.out.with_name(args.out.name + "-quick") if args.quick else args.out
    out.mkdir(parents=True, exist_ok=True)
    state = State(out / "state.json", args.fresh)
    shots = [int(k) for k in args.shots.split(",")]
    scales, sets, limit, steps, crop, side = (2, 3, 4), SETS, None, args.steps, args.support_crop, 1000
    adapt_scale = args.adapt_scale
    if args.quick:
        q = quick_checkpoints(out / "checkpoints")
        cks["cdasr"].setdefault(2, q["clip"])
        cks["cdasr-no-clip"].setdefault(2, q["no-clip"])
        meta, meta_nc = meta or q["meta-clip"], meta_nc or q["meta-no-clip"]
        scales, sets, limit, steps, crop, side, adapt_scale = (2,), ("Set5",), 2, 3, 48, 256, 2
        shots, domains = [5], domains[:1]
        args.rounds = 1
    results: dict[str, Any] = {"quick": args.quick, "seed": args.seed, "torch": torch.__version__,
                               "shared_data": str(SHARED), "checkpoints": {k: {f"x{s}": p for s, p in v.items()}
                                                                           for k, v in cks.items()},
                               "meta_checkpoint": meta, "meta_no_clip_checkpoint": meta_nc}
    missing = "not found (set CLIPIQ_SHARED_DATA to the shared/data folder)"
    for part in parts:
        log(f"== {part}")
        t0 = time.perf_counter()
        if part == "sets":
            if not all((SR / s).is_dir() for s in sets):
                results[part] = {"skipped": f"{SR}/Set5 or Set14 {missing}"}
            else:
                results[part] = sets_part(state, cks, sets, scales, limit)
        elif part == "adapt":
            if not (SR / "Set14").is_dir() or not KODAK.is_dir():
                results[part] = {"skipped": f"{SR / 'Set14'} or {KODAK} {missing}"}
            else:
                photos = sorted(list_images([KODAK]))[: args.support_photos]
                sources = {"source": cks["cdasr"].get(adapt_scale), "meta": meta, "meta-no-clip": meta_nc}
                results[part] = adapt_part(state, out, sources, adapt_scale, domains, shots, steps, args.lr, crop,
                                           args.seed, photos, limit)
        else:
            results[part] = cost_part(state, out, cks["cdasr"], scales, args.threads, args.rounds, side)
        if "skipped" in results[part]:
            log(f"skipped part {part}: {results[part]['skipped']}")
        results[part]["seconds"] = time.perf_counter() - t0
    common.write_results(results, markdown, out, args.json, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
