"""DAP-LED (restorer ``dap-led``) against its baselines, all rows in one resumable run; see docs/methods/dap-led.md.

Parts (``--parts``, default all; a part whose data is missing under ``../shared/data`` (``CLIPIQ_SHARED_DATA``)
is skipped with the reason, and so is a row whose checkpoint was not given):

* ``mcmaster``: held-out McMaster18 (never trained on), degraded by :func:`clipiq.degrade.lowlight_blur_pair` at
  three severities (``--levels``, default 2,3,4) with a fixed seed per (level, image); the degraded input is
  rounded to 8-bit levels as a saved file would be, and so is every output. PSNR and SSIM on RGB, no border crop
  (:mod:`clipiq.eval`). Rows: the degraded input; the classic pipeline (:func:`classic_restore`); enhance-then-
  deblur (``--enhance-checkpoint`` then ``--deblur-checkpoint``, the same network trained on each task alone);
  DAP-LED ``--no-clip`` (``--no-clip-checkpoint``); DAP-LED (``--checkpoint``, default the shipped weights).
  A contact sheet (input | classic | DAP-LED | ground truth) of the middle level is written to the output folder.
* ``real``: the real low-light photos (``real-degraded/lowlight``, no ground truth): zero-shot ``clipiqa`` and
  its ``brightness`` and ``sharpness`` attributes (the probability of "Bright photo." against "Dark photo." and
  of "Sharp photo." against "Blurry photo.") before and after, and a contact sheet (input | DAP-LED).
* ``levin``: Levin et al. 2009 (``deblur/levin09``, greyscale real camera shake with its fitted kernels): PSNR of
  the blurred input, Richardson-Lucy with the true kernel, and DAP-LED (grey replicated to RGB, the output's
  channel mean), each against the sharp image over ``[15:-15]`` at the best integer shift up to 10 px (Levin's
  ``comp_upto_shift``, as the folder's ``SOURCE.md`` describes). Levin's images are not dark: this only checks
  that the network deblurs real camera shake and does not wreck normally exposed input.
* ``speed``: seconds and peak memory per megapixel of DAP-LED on the CPU, fp32 and bf16, 2 threads, a 1152x864
  input (1 MP), one warm-up then the median of ``--speed-rounds`` calls; each precision in a fresh child process
  that reports its peak RSS (``bench_offline_clip.peak_rss_mib``) and the peak growth over what it held before
  the timed calls (``clipiq.restore.evaluate.peak_memory``).

Resume: every finished number is kept in ``OUT/state.json`` under a key naming the part, the row, the
checkpoint's sha256 and the input, so a rerun skips what is done (``--fresh`` starts over). ``OUT/results.md``
holds the tables (also printed); ``--json PATH`` writes every number.

``--quick``: a smoke run of a few minutes: two tiny checkpoints (CLIP and no-CLIP) trained for 2 steps on the
random ``test-tiny`` backbone in ``OUT/quick-checkpoints`` stand in for every missing checkpoint (the CLIP one
also for both enhance-then-deblur stages), 2 McMaster photos (128 px centre crops), 2 real photos, 2 Levin
pairs, a 256x256 speed input and 1 timed round. Its numbers mean nothing.

Usage: python benchmarks/bench_dap_led.py [--checkpoint C] [--no-clip-checkpoint C] [--enhance-checkpoint C
       --deblur-checkpoint C] [--out runs/bench-dap-led] [--json OUT.json] [--parts mcmaster,real,levin,speed]
       [--quick] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipiq.core.errors import WeightsError
from clipiq.data.io import list_images, load_image
from clipiq.degrade import lowlight_blur_pair
from clipiq.eval import psnr, ssim
from clipiq.iqa.registry import get_metric_spec
from clipiq.restore import Restorer, create_restorer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import restore_bench_common as common  # noqa: E402  (helpers shared with bench_cdasr.py)
from bench_offline_clip import peak_rss_mib  # noqa: E402  (VmHWM, the peak RSS helper the speed benchmarks share)
from restore_bench_common import REPO, SHARED, State, file_sha, fmt, log, quantise, save_png  # noqa: E402

MCMASTER = SHARED / "photos" / "mcmaster18"
REAL_LOWLIGHT = SHARED / "real-degraded" / "lowlight"
LEVIN = SHARED / "deblur" / "levin09"
PARTS = ("mcmaster", "real", "levin", "speed")
METHODS = ("input", "classic", "enhance-then-deblur", "dap-led-no-clip", "dap-led")

# The classic pipeline's constants, chosen on Kodak24 crops (training photos), never on McMaster18.
#: Target mean sRGB value of the gamma enhancement: Kodak24's mean (0.419).
CLASSIC_TARGET_MEAN = 0.42
#: Richardson-Lucy iterations: few, the only regularisation of the noise the gamma lifts (on 12 Kodak crops at
#: levels 2-4, 5, 10 and 15 iterations gave 14.71, 14.72 and 14.67 dB: 5 is the cheapest).
CLASSIC_RL_ITERATIONS = 5
#: Levin: Richardson-Lucy iterations with the true kernel (the images are almost noise-free).
LEVIN_RL_ITERATIONS = 30


# ---------------------------------------------------------------- the classic pipeline


def estimate_kernel(grey: np.ndarray, radius: int = 20, threshold: float = 0.3) -> np.ndarray:
    """A normalised anisotropic Gaussian blur kernel estimated from a greyscale image's gradient autocorrelation.

    For a blur k of a scene whose gradients are roughly uncorrelated, the autocorrelation of the blurred gradients
    is about k correlated with itself, whose covariance is twice k's. So: the autocorrelation of the x and y
    differences (by FFT), its zero lag (where noise sits) replaced by its neighbours' mean, the main lobe kept
    (values above ``threshold`` of the peak, within ``radius`` lags); half that lobe's second-moment matrix is the
    kernel's covariance. It reads the blur's extent and main direction only roughly: a camera-shake path is not
    a Gaussian, and texture with a dominant direction biases it.
    """
    g = np.asarray(grey, dtype=np.float64)
    g = g - g.mean()
    dx, dy = np.diff(g, axis=1)[:-1], np.diff(g, axis=0)[:, :-1]
    power = np.abs(np.fft.rfft2(dx)) ** 2 + np.abs(np.fft.rfft2(dy)) ** 2
    a = np.fft.fftshift(np.fft.irfft2(power, s=dx.shape))
    cy, cx = a.shape[0] // 2, a.shape[1] // 2
    r = min(radius, cy - 1, cx - 1)
    a = a[cy - r : cy + r + 1, cx - r : cx + r + 1].copy()
    a[r, r] = (a[r - 1, r] + a[r + 1, r] + a[r, r - 1] + a[r, r + 1]) / 4
    w = np.clip(a - threshold * a.max(), 0, None)
    w = w / w.sum() if w.sum() > 0 else np.zeros_like(w)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    cov = 0.5 * np.array([[(w * yy * yy).sum(), (w * yy * xx).sum()], [(w * yy * xx).sum(), (w * xx * xx).sum()]])
    # A floor of 0.25 px^2 per axis keeps the kernel a proper (invertible) Gaussian on a sharp image.
    ev, vec = np.linalg.eigh(cov)
    ev = np.clip(ev, 0.25, None)
    inv = (vec / ev) @ vec.T
    half = int(math.ceil(3 * math.sqrt(float(ev.max()))))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    k = np.exp(-0.5 * (inv[0, 0] * yy * yy + 2 * inv[0, 1] * yy * xx + inv[1, 1] * xx * xx))
    return k / k.sum()


def gamma_enhance(image: np.ndarray, target_mean: float = CLASSIC_TARGET_MEAN) -> np.ndarray:
    """Gamma correction (``skimage.exposure.adjust_gamma``) taking the (H,W,3) image's mean to ``target_mean``."""
    from skimage import exposure

    m = float(np.clip(np.mean(image), 1e-3, 0.999))
    gamma = math.log(target_mean) / math.log(m)
    return exposure.adjust_gamma(np.clip(image, 0, 1), gamma)


def classic_restore(image: np.ndarray, iterations: int = CLASSIC_RL_ITERATIONS,
                    target_mean: float = CLASSIC_TARGET_MEAN) -> np.ndarray:
    """The classic baseline on an (H,W,3) [0,1] array: gamma enhancement, then Richardson-Lucy per channel with
    the kernel :func:`estimate_kernel` reads from the enhanced image."""
    enhanced = gamma_enhance(image, target_mean)
    k = estimate_kernel(enhanced.mean(axis=-1))
    out = np.stack([richardson_lucy(enhanced[..., c], k, iterations) for c in range(enhanced.shape[-1])], axis=-1)
    return np.clip(out, 0, 1)


def richardson_lucy(grey: np.ndarray, kernel: np.ndarray, iterations: int) -> np.ndarray:
    """``skimage.restoration.richardson_lucy`` on a symmetric padding: its zero padding darkens the borders."""
    from skimage import restoration

    pad = max(kernel.shape)
    padded = np.pad(grey, pad, mode="symmetric")
    return restoration.richardson_lucy(padded, kernel, num_iter=iterations, clip=True)[pad:-pad, pad:-pad]


def rl_true_kernel(blurred: np.ndarray, kernel: np.ndarray, iterations: int = LEVIN_RL_ITERATIONS) -> np.ndarray:
    """Richardson-Lucy of a greyscale image with its known kernel."""
    return richardson_lucy(blurred, kernel, iterations)


# ---------------------------------------------------------------- helpers


def to_hwc(x: torch.Tensor) -> np.ndarray:
    """(3,H,W) tensor -> (H,W,3) float64 array."""
    return x.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64)


def to_chw(a: np.ndarray) -> torch.Tensor:
    """(H,W,3) array -> (3,H,W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float()


def centre_crop(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central ``size`` x ``size`` crop of (3,H,W) (all of it for None)."""
    if not size:
        return x
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def contact_sheet(rows: Sequence[Sequence[Path]], header: Sequence[str], path: Path, cell: int = 250) -> Path:
    """A grid PNG: one row per item, one column per image, each scaled to ``cell`` px wide; a text header."""
    from PIL import ImageDraw

    thumbs = []
    for row in rows:
        ims = []
        for p in row:
            with Image.open(p) as im:
                im = im.convert("RGB")
                ims.append(im.resize((cell, max(1, round(im.height * cell / im.width))), Image.LANCZOS))
        thumbs.append(ims)
    head = 18
    heights = [max(im.height for im in r) for r in thumbs]
    sheet = Image.new("RGB", (cell * len(header), head + sum(heights)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(header):
        draw.text((j * cell + 4, 3), title, fill="black")
    y = head
    for r, h in zip(thumbs, heights):
        for j, im in enumerate(r):
            sheet.paste(im, (j * cell, y))
        y += h
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# ---------------------------------------------------------------- the network rows


class Row:
    """One method: a name, a fingerprint for the resume keys, and ``restore(x (3,H,W)) -> (3,H,W)`` or a reason."""

    def __init__(self, name: str, fingerprint: str = "", restore: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 skipped: str = "", info: dict[str, Any] | None = None):
        self.name, self.fingerprint, self.restore, self.skipped = name, fingerprint, restore, skipped
        self.info = info or {}


def load_network(path: str | None, name: str) -> tuple[Restorer | None, str, str]:
    """(restorer, sha, reason): a dap-led checkpoint (None: the shipped weights, if any), or why there is none."""
    try:
        r = create_restorer("dap-led", weights=path, device="cpu")
    except WeightsError as e:
        return None, "", f"no weights: {str(e).splitlines()[0]}"
    except FileNotFoundError as e:
        return None, "", f"{name}: {e}"
    return r.eval(), file_sha(path) if path else "shipped", ""


def network_rows(args: argparse.Namespace, quick: dict[str, str]) -> dict[str, Row]:
    """The three network rows and the classic and input rows, each loaded or with the reason it is skipped."""
    rows = {"input": Row("input", "input", lambda x: x),
            "classic": Row("classic", f"classic-t{CLASSIC_TARGET_MEAN}-rl{CLASSIC_RL_ITERATIONS}-sym",
                           lambda x: to_chw(classic_restore(to_hwc(x))))}

    def single(name: str, path: str | None, stand_in: str | None, missing: str
               ) -> tuple[Restorer | None, str, str, str | None]:
        """(restorer, sha, reason skipped, the checkpoint used: None for the shipped weights)."""
        if path is None and stand_in is not None:
            path = stand_in
        if path is None and name != "dap-led":
            return None, "", missing, None
        return (*load_network(path, name), path)

    def wrap(r: Restorer) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: r(x)

    for name, path, stand_in, missing in (
            ("dap-led", args.checkpoint, quick.get("clip"), ""),
            ("dap-led-no-clip", args.no_clip_checkpoint, quick.get("no-clip"), "no --no-clip-checkpoint given")):
        r, sha, why, used = single(name, path, stand_in, missing)
        if r is None:
            rows[name] = Row(name, skipped=why)
        else:
            uses_clip = bool(r.net.use_clip)
            rows[name] = Row(name, sha, wrap(r), info={"uses_clip": uses_clip, "checkpoint": used})
            if uses_clip != (name == "dap-led"):
                log(f"warning: the {name} checkpoint has model.clip={uses_clip}")
    needs = ("needs --enhance-checkpoint and --deblur-checkpoint (the network trained with kind=lowlight and "
             "kind=deblur: see docs/methods/dap-led.md)")
    enh, sha_e, why_e, used_e = single("enhance", args.enhance_checkpoint, quick.get("clip"), needs)
    deb, sha_d, why_d, used_d = single("deblur", args.deblur_checkpoint, quick.get("clip"), needs)
    if enh is None or deb is None:
        rows["enhance-then-deblur"] = Row("enhance-then-deblur", skipped=why_e or why_d)
    else:
        rows["enhance-then-deblur"] = Row(
            "enhance-then-deblur", f"{sha_e}+{sha_d}", lambda x: deb(quantise(enh(x))),
            info={"enhance": used_e, "deblur": used_d})
    return {m: rows[m] for m in METHODS}


# ---------------------------------------------------------------- McMaster18


def mcmaster_part(rows: dict[str, Row], state: State, out: Path, levels: Sequence[int], seed: int,
                  limit: int | None, crop: int | None) -> dict[str, Any]:
    """PSNR/SSIM (RGB) per method, level and photo; a contact sheet of the middle level."""
    photos = sorted(list_images([MCMASTER]))[:limit]
    sheet_level = levels[len(levels) // 2]
    res: dict[str, Any] = {"levels": list(levels), "seed": seed, "photos": [p.name for p in photos],
                           "crop": crop, "sheet_level": sheet_level, "methods": {}}
    for name, row in rows.items():
        if row.skipped:
            res["methods"][name] = {"skipped": row.skipped}
    for li, level in enumerate(levels):
        for i, photo in enumerate(photos):
            gt = centre_crop(load_image(photo), crop)
            # One fixed seed per (level, photo): the same pairs on every run and for every method.
            lq, gt = lowlight_blur_pair(gt, level=level, seed=seed + 1000 * li + i)
            lq = quantise(lq)
            for name, row in rows.items():
                if row.skipped:
                    continue
                key = f"mcmaster/{name}/{row.fingerprint}/L{level}/s{seed}/{photo.name}/c{crop}"
                sheet_file = out / "mcmaster" / f"L{level}" / name / f"{photo.stem}.png"
                keep = level == sheet_level and name in ("classic", "dap-led")
                if state.get(key) is None or (keep and not sheet_file.is_file()):
                    t0 = time.perf_counter()
                    y = quantise(row.restore(lq))
                    seconds = time.perf_counter() - t0
                    state.put(key, {"psnr": float(psnr(y, gt)), "ssim": float(ssim(y, gt)), "seconds": seconds})
                    if keep:
                        save_png(y, sheet_file)
                    log(f"  mcmaster L{level} {photo.name} {name}: {state.get(key)['psnr']:.2f} dB")
                m = res["methods"].setdefault(name, {"per_image": {}})
                m["per_image"].setdefault(f"L{level}", {})[photo.name] = state.get(key)
            if level == sheet_level:
                for what, img in (("input", lq), ("gt", gt)):
                    save_png(img, out / "mcmaster" / f"L{level}" / what / f"{photo.stem}.png")
    for m in res["methods"].values():
        if "per_image" not in m:
            continue
        by_level = {lv: {k: statistics.fmean(r[k] for r in rows_.values()) for k in ("psnr", "ssim")}
                    for lv, rows_ in m["per_image"].items()}
        m["by_level"] = by_level
        m["mean"] = {k: statistics.fmean(v[k] for v in by_level.values()) for k in ("psnr", "ssim")}
    if "per_image" in res["methods"].get("dap-led", {}):
        base = out / "mcmaster" / f"L{sheet_level}"
        cols = ["input", "classic", "dap-led", "gt"]
        res["contact_sheet"] = str(contact_sheet(
            [[base / c / f"{p.stem}.png" for c in cols] for p in photos],
            ["input", "classic", "DAP-LED", "ground truth"], out / f"mcmaster_L{sheet_level}_sheet.png"))
    return res


# ---------------------------------------------------------------- real low-light photos


def real_part(rows: dict[str, Row], state: State, out: Path, limit: int | None, iqa_model: str | None
              ) -> dict[str, Any]:
    """clipiqa and its brightness and sharpness before and after each available method; a contact sheet."""
    import clipiq

    photos = sorted(list_images([REAL_LOWLIGHT]))[:limit]
    metric = clipiq.create_metric("clipiqa", model=iqa_model, device="cpu", attributes=["brightness", "sharpness"])
    res: dict[str, Any] = {"photos": [p.name for p in photos], "methods": {},
                           "iqa_model": iqa_model or f"{get_metric_spec('clipiqa').default_model} (the default)"}
    for name, row in rows.items():
        if row.skipped:
            res["methods"][name] = {"skipped": row.skipped}
            continue
        per = {}
        for photo in photos:
            key = f"real/{name}/{row.fingerprint}/{iqa_model}/{photo.name}"
            path = out / "real" / name / f"{photo.stem}.png"
            if state.get(key) is None or not path.is_file():
                x = load_image(photo)
                y = quantise(row.restore(x))
                save_png(y, path)
                scores = metric.score_with_outputs([load_image(path)])  # scored as saved
                state.put(key, {k: float(v[0]) for k, v in scores.items()})
                log(f"  real {photo.name} {name}: {state.get(key)}")
            per[photo.name] = state.get(key)
        res["methods"][name] = {"per_image": per,
                                "mean": {k: statistics.fmean(v[k] for v in per.values()) for k in next(iter(
                                    per.values()))}}
    base = res["methods"].get("input", {}).get("per_image", {})
    for name, m in res["methods"].items():
        if name != "input" and "per_image" in m:
            m["higher_than_input"] = {k: sum(m["per_image"][p][k] > base[p][k] for p in base)
                                      for k in ("score", "brightness", "sharpness")}
    if "per_image" in res["methods"].get("dap-led", {}):
        res["contact_sheet"] = str(contact_sheet(
            [[out / "real" / c / f"{p.stem}.png" for c in ("input", "dap-led")] for p in photos],
            ["input", "DAP-LED"], out / "real_lowlight_sheet.png", cell=400))
    return res


# ---------------------------------------------------------------- Levin et al. 2009


def shifted_psnr(est: np.ndarray, sharp: np.ndarray, border: int = 15, max_shift: int = 10) -> float:
    """PSNR (``clipiq.eval.psnr``) over ``sharp[border:-border]`` at the best integer shift of ``est`` up to
    ``max_shift`` px (Levin's comp_upto_shift)."""
    h, w = sharp.shape
    ref = torch.from_numpy(sharp[border : h - border, border : w - border]).float()[None]
    e = torch.from_numpy(est).float()
    best = -math.inf
    for dy in range(-max_shift, max_shift + 1):
        crops = torch.stack([e[border + dy : h - border + dy, border + dx : w - border + dx][None]
                             for dx in range(-max_shift, max_shift + 1)])
        best = max(best, float(psnr(crops, ref.expand_as(crops)).max()))
    return best


def levin_part(rows: dict[str, Row], state: State, limit: int | None) -> dict[str, Any]:
    """Shift-tolerant PSNR of the blurred input, Richardson-Lucy with the true kernel, and DAP-LED."""
    blurred = sorted((LEVIN / "blurred").glob("im*_ker*.png"))[:limit]
    methods: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] | None] = {
        "input": ("input", lambda b, k: b),
        "rl-true-kernel": (f"rl{LEVIN_RL_ITERATIONS}-sym", rl_true_kernel)}
    res: dict[str, Any] = {"pairs": [p.name for p in blurred], "methods": {}}
    dl = rows["dap-led"]
    if dl.skipped:
        res["methods"]["dap-led"] = {"skipped": dl.skipped}
    else:
        assert dl.restore is not None
        restore = dl.restore

        def network(b: np.ndarray, k: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(b).float()[None].expand(3, -1, -1)
            return quantise(restore(x)).mean(0).double().numpy()

        methods["dap-led"] = (dl.fingerprint, network)
    for name, entry in methods.items():
        if entry is None:
            continue
        fp, fn = entry
        per = {}
        for p in blurred:
            img, ker = p.stem.split("_")
            key = f"levin/{name}/{fp}/{p.name}"
            if state.get(key) is None:
                b = np.asarray(Image.open(p).convert("L"), dtype=np.float64) / 255
                sharp = np.asarray(Image.open(LEVIN / "sharp" / f"{img}.png").convert("L"), dtype=np.float64) / 255
                k = np.load(LEVIN / "kernels" / f"{ker}.npy")
                est = np.clip(fn(b, k), 0, 1)
                state.put(key, shifted_psnr(np.round(est * 255) / 255, sharp))
                log(f"  levin {p.name} {name}: {state.get(key):.2f} dB")
            per[p.name] = state.get(key)
        res["methods"][name] = {"per_image": per, "psnr": statistics.fmean(per.values())}
    base = res["methods"]["input"]["per_image"]
    for m in res["methods"].values():
        if "per_image" in m:
            m["improved"] = sum(m["per_image"][p] > base[p] for p in base)
    return res


# ---------------------------------------------------------------- speed and memory


def speed_child(cfg: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: seconds per call of the restorer at one precision, its peak RSS and peak growth."""
    torch.set_num_threads(cfg["threads"])
    r = create_restorer("dap-led", weights=cfg["checkpoint"], device="cpu", precision=cfg["precision"]).eval()
    h, w = cfg["size"]
    x = common.cost_input(h, w)
    rss_loaded = peak_rss_mib()
    times, growth, kind = common.timed_calls(r, x, cfg["rounds"])
    mp = h * w / 1e6
    return {"size": [h, w], "megapixels": mp, "rounds": cfg["rounds"], "threads": cfg["threads"],
            "seconds": times, "seconds_per_mp": float(np.median(times)) / mp, "peak_rss_mib_after_load": rss_loaded,
            "peak_rss_mib": peak_rss_mib(), "peak_growth_mib": max(growth), "peak_growth_mib_per_mp": max(growth) / mp,
            "memory": kind}


def speed_part(rows: dict[str, Row], state: State, size: tuple[int, int], rounds: int) -> dict[str, Any]:
    """Run :func:`speed_child` for fp32 and bf16, each in its own process."""
    dl = rows["dap-led"]
    if dl.skipped:
        return {"skipped": dl.skipped}
    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        key = f"speed/{dl.fingerprint}/{precision}/{size[0]}x{size[1]}/r{rounds}"
        if state.get(key) is None:
            cfg = {"checkpoint": dl.info["checkpoint"], "precision": precision, "size": list(size), "rounds": rounds,
                   "threads": 2}
            log(f"  speed {precision}: {size[1]}x{size[0]}, 1 warm-up + {rounds} timed calls")
            state.put(key, common.run_child(__file__, cfg, f"speed child {precision}"))
        out[precision] = state.get(key)
    return out


# ---------------------------------------------------------------- quick checkpoints


def quick_checkpoints(folder: Path) -> dict[str, str]:
    """Two tiny dap-led checkpoints (CLIP and no-CLIP) on test-tiny, 2 steps each: stand-ins for a smoke run."""
    from clipiq.core.config import load_config
    from clipiq.train.dap_led import DEFAULTS, run

    photos = common.quick_photos(folder, 4, lambda x: centre_crop(x, 96))
    out = {}
    for name, clip in (("clip", True), ("no-clip", False)):
        ck = folder / name / "checkpoint.safetensors"
        if not ck.is_file():
            cfg = load_config(REPO / "configs" / "dap-led" / "tiny.yaml",
                              [f"data.train=[{photos}]", "train.steps=2", "train.eval_every=2", "train.ckpt_every=2",
                               f"model.clip={str(clip).lower()}"], defaults=DEFAULTS)
            log(f"  quick: training a tiny {name} checkpoint (test-tiny, 2 steps)")
            run(cfg, folder / name, torch.device("cpu"), progress=False)
        out[name] = str(ck)
    return out


# ---------------------------------------------------------------- report


def mcmaster_tables(mc: dict[str, Any]) -> list[str]:
    """The McMaster18 tables: PSNR / SSIM per level and the goals."""
    levels = [f"L{lv}" for lv in mc["levels"]]
    lines = [f"### Held-out McMaster18, lowlight_blur_pair levels {', '.join(map(str, mc['levels']))}: "
             f"PSNR / SSIM on RGB ({len(mc['photos'])} photos{', crop ' + str(mc['crop']) if mc['crop'] else ''},"
             f" seed {mc['seed']})", "",
             "| method | " + " | ".join(levels) + " | mean |", "|---|" + "---:|" * (len(levels) + 1)]
    for name, m in mc["methods"].items():
        if "skipped" in m:
            lines.append(f"| {name} | skipped: {m['skipped']} |" + " |" * len(levels))
            continue
        cells = [f"{fmt(m['by_level'][lv]['psnr'])} / {fmt(m['by_level'][lv]['ssim'], '.3f')}" for lv in levels]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {fmt(m['mean']['psnr'])} / {fmt(m['mean']['ssim'], '.3f')} |")
    dl = mc["methods"].get("dap-led", {})
    if "mean" in dl:
        lines += ["", "| goal (mean PSNR) | DAP-LED minus | target | measured |", "|---|---|---:|---:|"]
        for other, target in (("classic", 5.0), ("enhance-then-deblur", 0.0), ("dap-led-no-clip", 0.3)):
            om = mc["methods"].get(other, {})
            d = dl["mean"]["psnr"] - om["mean"]["psnr"] if "mean" in om else None
            status = "-" if d is None else ("met" if d >= target and (target or d > 0) else "NOT met")
            lines.append(f"| vs {other} | {other} | >= {target:+.1f} dB | {fmt(d, '+.2f')} ({status}) |")
    if mc.get("contact_sheet"):
        lines += ["", f"Contact sheet (level {mc['sheet_level']}): `{mc['contact_sheet']}`"]
    return lines


def real_tables(rl: dict[str, Any]) -> list[str]:
    """The real low-light table: clipiqa and its attributes, overall and per photo."""
    n = len(rl["photos"])
    lines = [f"### Real low-light photos ({n}, no ground truth): clipiqa ({rl['iqa_model']}) mean, and on how "
             f"many photos each is higher than the input's", "",
             "| method | score | brightness | sharpness | higher than input (score / brightness / sharpness) |",
             "|---|---:|---:|---:|---|"]
    for name, m in rl["methods"].items():
        if "skipped" in m:
            lines.append(f"| {name} | skipped: {m['skipped']} | | | |")
            continue
        h = m.get("higher_than_input")
        hs = "-" if h is None else f"{h['score']}/{n} / {h['brightness']}/{n} / {h['sharpness']}/{n}"
        lines.append(f"| {name} | {fmt(m['mean']['score'], '.3f')} | {fmt(m['mean']['brightness'], '.3f')} | "
                     f"{fmt(m['mean']['sharpness'], '.3f')} | {hs} |")
    dl = rl["methods"].get("dap-led", {})
    if "per_image" in dl:
        base = rl["methods"]["input"]["per_image"]
        lines += ["", "| photo | score in -> DAP-LED | brightness | sharpness |", "|---|---|---|---|"]
        for p in rl["photos"]:
            a, b = base[p], dl["per_image"][p]
            lines.append(f"| {p} | " + " | ".join(f"{a[k]:.3f} -> {b[k]:.3f}"
                                                    for k in ("score", "brightness", "sharpness")) + " |")
    if rl.get("contact_sheet"):
        lines += ["", f"Contact sheet: `{rl['contact_sheet']}`"]
    return lines


def levin_tables(lv: dict[str, Any]) -> list[str]:
    """The Levin et al. 2009 table: shifted PSNR and pairs improved."""
    lines = [f"### Levin et al. 2009 ({len(lv['pairs'])} pairs): PSNR over [15:-15] at the best shift <= 10 px",
             "", "| method | PSNR | pairs improved over the input |", "|---|---:|---:|"]
    for name, m in lv["methods"].items():
        if "skipped" in m:
            lines.append(f"| {name} | skipped: {m['skipped']} | |")
        else:
            lines.append(f"| {name} | {fmt(m['psnr'])} | {m['improved']}/{len(lv['pairs'])} |")
    return lines


def speed_tables(sp: dict[str, Any]) -> list[str]:
    """The CPU speed and memory table."""
    lines = ["### DAP-LED on the CPU (2 threads, one image, median of timed calls)", "",
             "| precision | input | s per MP | peak RSS MiB | peak growth MiB per MP |",
             "|---|---|---:|---:|---:|"]
    for precision in ("fp32", "bf16"):
        s = sp[precision]
        lines.append(f"| {precision} | {s['size'][1]}x{s['size'][0]} | {fmt(s['seconds_per_mp'])} | "
                     f"{fmt(s['peak_rss_mib'], '.0f')} | {fmt(s['peak_growth_mib_per_mp'], '.0f')} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The tables of every part that ran."""
    return common.tables_markdown(
        results, "**Quick smoke run: tiny checkpoints on the random test-tiny backbone, a few crops; the numbers mean "
        "nothing.**", (("mcmaster", "McMaster18", mcmaster_tables), ("real", "Real low-light photos", real_tables),
                       ("levin", "Levin et al. 2009", levin_tables), ("speed", "Speed", speed_tables)))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts, print the tables and write OUT/results.md (and --json)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="DAP-LED checkpoint (default: the shipped weights, when there are any)")
    ap.add_argument("--no-clip-checkpoint", help="the --no-clip ablation's checkpoint (model.clip=false)")
    ap.add_argument("--enhance-checkpoint", help="the network trained on low-light enhancement alone")
    ap.add_argument("--deblur-checkpoint", help="the network trained on deblurring alone")
    common.add_out_args(ap, REPO / "runs" / "bench-dap-led", "results, sheets, state", PARTS)
    ap.add_argument("--levels", default="2,3,4", help="lowlight_blur_pair levels of the McMaster pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iqa-model", default=None, help="CLIP model of clipiqa (default: the metric's)")
    ap.add_argument("--speed-rounds", type=int, default=3)
    common.add_run_args(ap)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(speed_child(json.loads(args.child))))
        return 0
    t_start = time.perf_counter()
    parts = common.parse_parts(ap, args.parts, PARTS)
    levels = [int(v) for v in args.levels.split(",")]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    state = State(out / ("state-quick.json" if args.quick else "state.json"), args.fresh)
    quick = quick_checkpoints(out / "quick-checkpoints") if args.quick else {}
    rows = network_rows(args, quick)
    for name, row in rows.items():
        log(f"{name}: " + (f"skipped ({row.skipped})" if row.skipped else f"ready ({row.fingerprint})"))
    limit = 2 if args.quick else None
    results: dict[str, Any] = {"quick": args.quick, "seed": args.seed, "torch": torch.__version__,
                               "shared_data": str(SHARED),
                               "rows": {n: {"skipped": r.skipped} if r.skipped else {"fingerprint": r.fingerprint,
                                                                                     **r.info}
                                        for n, r in rows.items()}}
    folders = {"mcmaster": MCMASTER, "real": REAL_LOWLIGHT, "levin": LEVIN}
    for part in parts:
        folder = folders.get(part)
        if folder is not None and not folder.is_dir():
            results[part] = {"skipped": f"{folder} not found (set CLIPIQ_SHARED_DATA to the shared/data folder)"}
            log(f"skipped part {part}: {results[part]['skipped']}")
            continue
        log(f"== {part}")
        t0 = time.perf_counter()
        if part == "mcmaster":
            results[part] = mcmaster_part(rows, state, out, levels, args.seed, limit, 128 if args.quick else None)
        elif part == "real":
            results[part] = real_part(rows, state, out, limit, args.iqa_model)
        elif part == "levin":
            results[part] = levin_part(rows, state, limit)
        else:
            size = (256, 256) if args.quick else (864, 1152)
            results[part] = speed_part(rows, state, size, 1 if args.quick else args.speed_rounds)
        results[part]["seconds"] = time.perf_counter() - t0
    common.write_results(results, markdown, out, args.json, t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
