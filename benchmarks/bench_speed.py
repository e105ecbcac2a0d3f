#!/usr/bin/env python
"""Speed and peak memory of CLIP-IQA scoring on CPU: clipiq against transformers' CLIPModel.

Both implementations run ViT-B-32 at 224 px with the *same* random weights: a random
``transformers.CLIPModel`` is saved with ``save_pretrained`` and clipiq loads that folder through
``clipiq.load_clip(weights=...)``. Each is timed in fp32 and bf16 in the same process, interleaved
batch by batch (the implementation order rotates every round) so that the load of a shared machine
hits all of them alike; ratios are taken within each round, then the median over rounds is reported.

What is timed: image features of a prepared (resized, normalised) batch plus the CLIP-IQA head
(fp32 softmax of the scaled cosine against the text features of "Good photo." / "Bad photo.").
Text features are computed once per model, outside the timing, as the metric does at construction.

The inputs are views (whole-photo resizes, CLIP centre crops and random square crops) of the photos
in ../shared/data/photos, so the bf16-vs-fp32 rank correlation (SRCC) of the scores is measured on
real image content. Without that folder the script falls back to random images and says so.

Peak memory is measured per implementation and precision in a fresh subprocess (one model only):
RSS after loading the model and computing the text features, then the peak RSS while scoring
(the kernel's high-water mark is reset after loading, so loading transients do not count).

``--experimental`` also times patched private copies of clipiq's model (oneDNN-prepacked linears,
an fp32 residual stream in bf16); the main table always uses the real clipiq code.

    python benchmarks/bench_speed.py                 # default run (about 4-5 minutes on 2 cores)
    python benchmarks/bench_speed.py --quick         # about a minute or two, for smoke checks
    python benchmarks/bench_speed.py --markdown out.md --json out.json
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import functools
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger("bench_speed")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("CLIPIQ_SHARED_DATA", REPO.parent / "shared" / "data"))
PROMPTS = ("Good photo.", "Bad photo.")
ARCH = "ViT-B-32"
IMAGE_SIZE = 224
# (implementation, precision) in the order of the table; the first fp32 entry of transformers is the
# reference for the speed ratios.
IMPLEMENTATIONS: tuple[tuple[str, str], ...] = (
    ("clipiq", "fp32"),
    ("transformers", "fp32"),
    ("clipiq", "bf16"),
    ("transformers", "bf16"),
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GOAL_FP32_RATIO = 1.0
GOAL_BF16_SPEEDUP = 1.8
GOAL_SRCC = 0.999


# --------------------------------------------------------------------------------------------------
# The shared weights


def hf_vitb32_config() -> Any:
    """transformers.CLIPConfig of OpenAI's ViT-B/32 (QuickGELU, 224 px, 512-d joint space)."""
    import transformers

    return transformers.CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=0),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=IMAGE_SIZE, patch_size=32, hidden_act="quick_gelu"),
        projection_dim=512,
    )


def write_random_weights(folder: Path, seed: int) -> None:
    """Save a seeded random ViT-B-32 CLIPModel as a Hugging Face folder (config.json + safetensors)."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.CLIPModel(hf_vitb32_config()).eval()
    model.save_pretrained(folder)


# --------------------------------------------------------------------------------------------------
# Implementations under test


@dataclass
class Runner:
    """One implementation at one precision: image features plus the CLIP-IQA head."""

    impl: str
    precision: str
    features: Callable[[Tensor], Tensor]
    text_features: Tensor  # (2, D) float32, normalised
    logit_scale: float
    text_features_native: Tensor  # (2, D) in the model dtype, for the model-dtype head variant
    attention: str = "sdpa"
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)  # process CPU time (all threads) per batch
    feats: list[Tensor] = field(default_factory=list)
    scores: list[Tensor] = field(default_factory=list)

    @property
    def label(self) -> str:
        """'impl precision'."""
        return f"{self.impl} {self.precision}"

    def score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Image features and CLIP-IQA scores (probability of the first prompt) of a prepared batch."""
        f = self.features(x)
        img = F.normalize(f.float(), dim=-1)
        probs = (self.logit_scale * img @ self.text_features.t()).softmax(dim=-1)[:, 0]
        return f, probs


def _hf_image_features(model: Any) -> Callable[[Tensor], Tensor]:
    def run(x: Tensor) -> Tensor:
        out = model.get_image_features(pixel_values=x)
        # transformers 5 returns a model output whose pooler_output is the projected embedding.
        return out if isinstance(out, Tensor) else out.pooler_output

    return run


def load_hf(folder: Path, precision: str) -> tuple[Any, str]:
    """transformers.CLIPModel from the folder, cast to the precision; SDPA attention where supported."""
    import transformers

    try:
        model = transformers.CLIPModel.from_pretrained(folder, attn_implementation="sdpa")
    except (TypeError, ValueError) as err:
        log.warning("transformers refused attn_implementation='sdpa' (%s); using its default", err)
        model = transformers.CLIPModel.from_pretrained(folder)
    model = model.to(DTYPES[precision]).eval()
    attention = getattr(model.config, "_attn_implementation", None) or "unknown"
    return model, attention


def make_runner(impl: str, precision: str, folder: Path) -> Runner:
    """Load one implementation and compute its prompt features (untimed, as at metric construction)."""
    import clipiq

    tokens = clipiq.tokenize(list(PROMPTS))
    with torch.inference_mode():
        if impl == "clipiq":
            model, _ = clipiq.load_clip(None, weights=folder, device="cpu", precision=precision)
            txt = model.encode_text(tokens, normalize=True)
            scale = model.logit_scale.exp().float().item()
            return Runner(impl, precision, model.encode_image, txt.float(), scale, txt, attention="sdpa")
        if impl == "transformers":
            model, attention = load_hf(folder, precision)
            out = model.get_text_features(input_ids=tokens)
            txt = F.normalize(out if isinstance(out, Tensor) else out.pooler_output, dim=-1)
            scale = model.logit_scale.exp().float().item()
            return Runner(impl, precision, _hf_image_features(model), txt.float(), scale, txt, attention=attention)
    raise ValueError(f"unknown implementation {impl!r}")


# --------------------------------------------------------------------------------------------------
# Inputs


def clip_preprocess() -> Any:
    """OpenAI CLIP preprocessing at 224 px (mean/std, bicubic), as load_clip returns for these weights."""
    from clipiq.clip import Preprocess, PreprocessConfig

    return Preprocess(PreprocessConfig(IMAGE_SIZE), patch_size=32)


def photo_views(photos_dir: Path, n: int, seed: int) -> list[Tensor]:
    """n prepared (3,224,224) views of the photos: whole-photo resize, centre crop, then random crops."""
    from clipiq.data.io import list_images, load_image

    pre = clip_preprocess()
    paths = sorted(list_images([photos_dir], recursive=True))
    if not paths:
        raise FileNotFoundError(f"no images under {photos_dir}")
    if n < len(paths):  # spread a small sample over every photo collection
        paths = [paths[round(i * len(paths) / n)] for i in range(n)]
    gen = torch.Generator().manual_seed(seed)
    views: dict[int, Tensor] = {}
    for i, path in enumerate(paths):
        x = load_image(path).unsqueeze(0)
        h, w = x.shape[-2:]
        for j in range(i, n, len(paths)):
            kind = j // len(paths)
            if kind == 0:
                v = pre.prepare(x, "resize", IMAGE_SIZE)
            elif kind == 1:
                v = pre.prepare(x, "center_crop", IMAGE_SIZE)
            else:
                side = int(torch.randint(min(IMAGE_SIZE, h, w), min(h, w) + 1, (1,), generator=gen))
                top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
                left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
                v = pre.prepare(x[..., top : top + side, left : left + side], "resize", IMAGE_SIZE)
            views[j] = v[0]
    return [views[j] for j in range(n)]


def random_views(n: int, seed: int) -> list[Tensor]:
    """Fallback: smooth random images (upsampled noise), normalised like CLIP input."""
    pre = clip_preprocess()
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 28, 28, generator=gen)
    x = F.interpolate(low, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return list(pre.normalize(x))


# --------------------------------------------------------------------------------------------------
# Timing


def time_interleaved(runners: Sequence[Runner], batches: Sequence[Tensor], warmup: int) -> None:
    """Warm up every runner, then one batch per runner per round, rotating the order each round."""
    with torch.inference_mode():
        for w in range(warmup):
            for r in runners:
                t0 = time.perf_counter()
                r.score(batches[w % len(batches)])
                log.info("warm-up %d %-18s %.2f s", w + 1, r.label, time.perf_counter() - t0)
        for i, batch in enumerate(batches):
            k = i % len(runners)
            for r in list(runners[k:]) + list(runners[:k]):
                c0, t0 = time.process_time(), time.perf_counter()
                f, s = r.score(batch)
                r.times.append(time.perf_counter() - t0)
                r.cpu_times.append(time.process_time() - c0)
                r.feats.append(f)
                r.scores.append(s)
                log.info("round %d/%d %-18s %6.2f img/s", i + 1, len(batches), r.label, len(batch) / r.times[-1])


def paired_ratio(a: Runner, b: Runner) -> tuple[float, float, float]:
    """Median, min and max over rounds of (a's images/s) / (b's images/s) within the same round."""
    ratios = [tb / ta for ta, tb in zip(a.times, b.times, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def robust_ratios(a: Runner, b: Runner) -> dict[str, float]:
    """Speed ratio a/b by two estimates that contention biases less than the median wall-clock ratio.

    'best': fastest round of each (contention only ever slows a batch down);
    'cpu': median CPU time per batch (time spent descheduled does not count; OpenMP spin-waits do).
    """
    return {"best": min(b.times) / min(a.times),
            "cpu": statistics.median(b.cpu_times) / statistics.median(a.cpu_times)}


# --------------------------------------------------------------------------------------------------
# Peak memory (subprocess)


def _mem_mib(key: str) -> float:
    """'VmRSS' (current) or 'VmHWM' (peak) of this process in MiB; the lifetime peak where /proc is missing."""
    try:
        text = Path("/proc/self/status").read_text()
        return int(re.search(rf"^{key}:\s+(\d+)", text, re.M).group(1)) / 1024
    except (OSError, AttributeError):
        import resource

        # ru_maxrss is in KiB on Linux, bytes on macOS.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024**2 if sys.platform == "darwin" else 1024)


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_worker(impl: str, precision: str, folder: Path, batch: int, n_batches: int) -> dict[str, Any]:
    """Inside a fresh process: RSS after loading, then the peak RSS while scoring.

    The first batch is reported separately from the later ones: it also pages in weights that the
    loaders leave memory-mapped from the safetensors file, and it grows the allocator's pools.
    VmHWM is used rather than ru_maxrss, which carries the parent's peak across fork + exec.
    """
    import gc

    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    runner = make_runner(impl, precision, folder)
    gc.collect()
    rec: dict[str, Any] = {"load_peak_rss_mib": _mem_mib("VmHWM")}
    reset = _reset_hwm()
    rec["hwm_reset"] = reset
    # Without a reset, the best baseline left is the high-water mark of loading.
    rec["post_load_rss_mib"] = _mem_mib("VmRSS") if reset else rec["load_peak_rss_mib"]
    with torch.inference_mode():
        runner.score(x)
        first_peak = _mem_mib("VmHWM")
        rec["warm_rss_mib"] = _mem_mib("VmRSS")
        steady_reset = reset and _reset_hwm()
        for _ in range(max(0, n_batches - 1)):
            runner.score(x)
        later_peak = _mem_mib("VmHWM")
    rec["scoring_peak_rss_mib"] = max(first_peak, later_peak)
    rec["scoring_increase_mib"] = rec["scoring_peak_rss_mib"] - rec["post_load_rss_mib"]
    if steady_reset and n_batches > 1:
        rec["steady_batch_increase_mib"] = later_peak - rec["warm_rss_mib"]
    return rec


def measure_memory(impl: str, precision: str, folder: Path, batch: int, n_batches: int) -> dict[str, Any]:
    """Run memory_worker in a subprocess; returns its record, or {'error': ...}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", f"{impl}:{precision}",
           "--weights", str(folder), "--batch-size", str(batch), "--memory-batches", str(n_batches)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        log.error("memory worker %s %s failed: %s", impl, precision, " | ".join(tail))
        return {"error": " | ".join(tail) or f"exit status {proc.returncode}"}
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    log.info("memory %-12s %s: peak %.0f MiB, +%.0f MiB over post-load (%.0f s)", impl, precision,
             rec["scoring_peak_rss_mib"], rec["scoring_increase_mib"], time.perf_counter() - t0)
    return rec


# --------------------------------------------------------------------------------------------------
# Report


def cpu_model() -> str:
    """CPU model name from lscpu (or platform as a fallback)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        if m:
            return m.group(1).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation (scipy)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a.double().numpy(), b.double().numpy()).statistic)


def model_dtype_head(r: Runner) -> Tensor:
    """CLIP-IQA scores with the similarity head in the model's dtype instead of fp32 (for comparison)."""
    out = []
    for f in r.feats:
        img = F.normalize(f, dim=-1)
        logits = torch.tensor(r.logit_scale, dtype=f.dtype) * img @ r.text_features_native.t()
        out.append(logits.float().softmax(dim=-1)[:, 0])
    return torch.cat(out)


def summarise(runners: dict[tuple[str, str], Runner], memory: dict[tuple[str, str], dict[str, Any]],
              batch: int) -> dict[str, Any]:
    """Per-row numbers and goal verdicts."""
    ref = runners[("transformers", "fp32")]
    rows = []
    for key in IMPLEMENTATIONS:
        r = runners[key]
        ips = [batch / t for t in r.times]
        ratio, lo, hi = paired_ratio(r, ref)
        fp32 = runners[(r.impl, "fp32")]
        s, s32 = torch.cat(r.scores), torch.cat(fp32.scores)
        row = {
            "implementation": r.impl, "precision": r.precision, "attention": r.attention,
            "images_per_s_median": statistics.median(ips), "images_per_s_best": max(ips),
            "images_per_s_all": ips, "cpu_s_per_image_median": statistics.median(r.cpu_times) / batch,
            "ratio_vs_transformers_fp32": ratio, "ratio_min": lo, "ratio_max": hi,
            "ratio_vs_transformers_fp32_robust": robust_ratios(r, ref),
            "srcc_vs_fp32": spearman(s, s32), "max_abs_score_diff_vs_fp32": float((s - s32).abs().max()),
            "memory": memory.get(key, {}),
        }
        if r.precision == "bf16":
            row["srcc_vs_fp32_model_dtype_head"] = spearman(model_dtype_head(r), s32)
        rows.append(row)
    c32, h32, c16 = runners[("clipiq", "fp32")], ref, runners[("clipiq", "bf16")]
    r32 = paired_ratio(c32, h32)
    r16 = paired_ratio(c16, c32)
    srcc = spearman(torch.cat(c16.scores), torch.cat(c32.scores))
    feat_diff = max(float((a - b).abs().max()) for a, b in zip(c32.feats, h32.feats, strict=True))
    scores32 = torch.cat(c32.scores)
    goals = [
        {"goal": f"clipiq fp32 >= {GOAL_FP32_RATIO:.1f}x transformers fp32", "value": r32[0],
         "range": [r32[1], r32[2]], "robust": robust_ratios(c32, h32), "met": r32[0] >= GOAL_FP32_RATIO},
        {"goal": f"clipiq bf16 >= {GOAL_BF16_SPEEDUP:.1f}x clipiq fp32", "value": r16[0],
         "range": [r16[1], r16[2]], "robust": robust_ratios(c16, c32), "met": r16[0] >= GOAL_BF16_SPEEDUP},
        {"goal": f"SRCC(clipiq bf16 scores, clipiq fp32 scores) >= {GOAL_SRCC}", "value": srcc,
         "met": srcc >= GOAL_SRCC},
    ]
    checks = {
        "max_abs_feature_diff_clipiq_vs_transformers_fp32": feat_diff,
        "srcc_clipiq_vs_transformers_fp32": spearman(scores32, torch.cat(h32.scores)),
        "fp32_score_mean": float(scores32.mean()), "fp32_score_std": float(scores32.std()),
    }
    return {"rows": rows, "goals": goals, "checks": checks}


def _fmt_mem(m: dict[str, Any], key: str) -> str:
    return f"{m[key]:.0f}" if key in m else "n/a"


def render_markdown(result: dict[str, Any]) -> str:
    """The results table, the goal verdicts and the run's environment as markdown."""
    env, cfg, summary = result["environment"], result["config"], result["summary"]
    lines = [
        f"ViT-B-32 at {IMAGE_SIZE} px, random weights (seed {cfg['seed']}), batch {cfg['batch_size']}, "
        f"{cfg['rounds']} timed rounds after {cfg['warmup']} warm-up, {cfg['images']} images "
        f"({cfg['image_source']}), {env['threads']} torch threads.",
        "",
        "| implementation | precision | attention | images/s median (best) | vs transformers fp32 | "
        "peak RSS scoring MiB | increase over post-load MiB | SRCC vs own fp32 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        m = row["memory"]
        srcc = "reference" if row["precision"] == "fp32" else f"{row['srcc_vs_fp32']:.5f}"
        lines.append(
            f"| {row['implementation']} | {row['precision']} | {row['attention']} | "
            f"{row['images_per_s_median']:.2f} ({row['images_per_s_best']:.2f}) | "
            f"{row['ratio_vs_transformers_fp32']:.2f}x ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) | "
            f"{_fmt_mem(m, 'scoring_peak_rss_mib')} | {_fmt_mem(m, 'scoring_increase_mib')} | {srcc} |"
        )
    lines += [
        "",
        "Speed ratios: median over rounds of the within-round ratio, min-max over rounds in brackets. "
        "Cross-checks less sensitive to other load on the machine: 'best' compares the fastest round of each, "
        "'CPU' the median process CPU time per batch.",
        "",
    ]
    for g in summary["goals"]:
        verdict = "met" if g["met"] else "NOT met"
        if "range" in g:
            rb = g["robust"]
            val = (f"{g['value']:.3f}x (rounds {g['range'][0]:.2f}-{g['range'][1]:.2f}; best {rb['best']:.3f}x, "
                   f"CPU {rb['cpu']:.3f}x)")
        else:
            val = f"{g['value']:.5f}"
        lines.append(f"- {g['goal']}: **{verdict}**, {val}")
    c = summary["checks"]
    lines += [
        "",
        "Checks: max |clipiq - transformers| fp32 image feature "
        f"{c['max_abs_feature_diff_clipiq_vs_transformers_fp32']:.2e}, "
        f"score SRCC clipiq vs transformers fp32 {c['srcc_clipiq_vs_transformers_fp32']:.5f}; "
        f"fp32 scores mean {c['fp32_score_mean']:.4f}, std {c['fp32_score_std']:.4f}.",
    ]
    for row in summary["rows"]:
        if "srcc_vs_fp32_model_dtype_head" in row:
            lines.append(f"SRCC vs fp32 if the similarity head (cosine, scale, softmax) ran in bf16 too, "
                         f"{row['implementation']}: {row['srcc_vs_fp32_model_dtype_head']:.5f}.")
    if any(row["memory"] for row in summary["rows"]):
        lines += [
            "",
            "Memory, one fresh process per row (MiB): peak while loading, RSS after loading (text features "
            "included), RSS after the first batch, and the peak of the later batches over the RSS before them.",
            "",
            "| implementation | precision | load peak | after load | after first batch | later batch increase |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for row in summary["rows"]:
            m = row["memory"]
            if "error" in m:
                lines.append(f"| {row['implementation']} | {row['precision']} | failed: {m['error']} | | | |")
                continue
            lines.append(f"| {row['implementation']} | {row['precision']} | {_fmt_mem(m, 'load_peak_rss_mib')} | "
                         f"{_fmt_mem(m, 'post_load_rss_mib')} | {_fmt_mem(m, 'warm_rss_mib')} | "
                         f"{_fmt_mem(m, 'steady_batch_increase_mib')} |")
    lines += [
        "",
        f"Environment: {env['date']}, CPU {env['cpu']} ({env['logical_cpus']} logical CPUs), "
        f"torch {env['torch']} ({env['threads']} threads), transformers {env['transformers']}, "
        f"Python {env['python']}, oneDNN bf16 {'supported' if env['mkldnn_bf16'] else 'not supported'}; "
        f"load average (1, 5, 15 min) before the run {env['loadavg_before']}, after {env['loadavg_after']}; "
        f"wall time {env['wall_s']:.0f} s.",
        f"Command: `{env['command']}`",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default 32; 16 with --quick)")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed rounds, one batch per implementation each (default 8; 3 with --quick); "
                        "the SRCC uses rounds x batch-size images")
    p.add_argument("--warmup", type=int, default=1, help="warm-up rounds (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="about a minute on an idle machine: batch 16, 3 rounds, one memory batch")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "photos",
                   help="folder of photos for the inputs (default ../shared/data/photos)")
    p.add_argument("--weights", type=Path, help="reuse a Hugging Face CLIP folder instead of a fresh random one")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and crops")
    p.add_argument("--memory-batches", type=int, default=None,
                   help="batches scored per memory subprocess (default 2: the first and one steady batch; "
                        "1 with --quick)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--markdown", type=Path, help="also write the markdown report to this file")
    p.add_argument("--json", type=Path, help="write all numbers (per-round timings included) as JSON")
    p.add_argument("--experimental", action="store_true",
                   help="also time a patched private copy of clipiq (see benchmarks/README.md)")
    p.add_argument("--memory-worker", metavar="IMPL:PRECISION", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="log every round")
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or (16 if args.quick else 32)
    args.rounds = args.rounds or (3 if args.quick else 8)
    args.memory_batches = args.memory_batches or (1 if args.quick else 2)
    if args.batch_size < 1 or args.rounds < 2 or args.warmup < 0:
        p.error("--batch-size must be >= 1, --rounds >= 2 and --warmup >= 0")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the result record."""
    import transformers

    load_before = os.getloadavg()
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clipiq-bench-") as tmp:
        folder = args.weights
        if folder is None:
            folder = Path(tmp) / "vitb32-random"
            log.info("writing random ViT-B-32 weights (seed %d) to %s", args.seed, folder)
            write_random_weights(folder, args.seed)

        n = args.batch_size * args.rounds
        if args.data.is_dir():
            views = photo_views(args.data, n, args.seed)
            source = f"views of the photos in {args.data}"
        else:
            log.warning("%s not found: falling back to RANDOM images; the SRCC is then not measured on "
                        "real content", args.data)
            views = random_views(n, args.seed)
            source = "random images (photos not found)"
        batches = [torch.stack(views[i : i + args.batch_size]) for i in range(0, n, args.batch_size)]

        memory: dict[tuple[str, str], dict[str, Any]] = {}
        if not args.no_memory:
            for key in IMPLEMENTATIONS:
                memory[key] = measure_memory(*key, folder, args.batch_size, args.memory_batches)

        runners = {key: make_runner(*key, folder) for key in IMPLEMENTATIONS}
        timed = [runners[key] for key in IMPLEMENTATIONS]
        experimental: list[Runner] = []
        if args.experimental:
            experimental = experimental_runners(folder, args.batch_size)
            timed += experimental
        log.info("timing %d rounds of batch %d (+%d warm-up) on %d threads", args.rounds, args.batch_size,
                 args.warmup, torch.get_num_threads())
        time_interleaved(timed, batches, args.warmup)

    summary = summarise(runners, memory, args.batch_size)
    if experimental:
        summary["experimental"] = summarise_experimental(experimental, runners, args.batch_size)
    env = {
        "date": started,
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(),
        "mkldnn_bf16": bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "loadavg_before": ", ".join(f"{v:.2f}" for v in load_before),
        "loadavg_after": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "wall_s": time.perf_counter() - t_start,
        "command": " ".join(["python", "benchmarks/bench_speed.py", *sys.argv[1:]]),
    }
    cfg = {"arch": ARCH, "image_size": IMAGE_SIZE, "batch_size": args.batch_size, "rounds": args.rounds,
           "warmup": args.warmup, "images": n, "image_source": source, "seed": args.seed,
           "memory_batches": args.memory_batches, "prompts": list(PROMPTS)}
    return {"environment": env, "config": cfg, "summary": summary}


def _quiet_transformers(verbose: bool) -> None:
    """Hide transformers' per-load progress bars (they would interleave with the report on stderr)."""
    if verbose:
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    if args.memory_worker:
        impl, _, precision = args.memory_worker.partition(":")
        if impl == "transformers":  # importing it elsewhere would inflate the other rows' baseline
            _quiet_transformers(False)
        print(json.dumps(memory_worker(impl, precision, args.weights, args.batch_size, args.memory_batches)))
        return 0
    log.setLevel(logging.INFO)  # our own progress lines; library chatter stays at WARNING unless -v
    _quiet_transformers(args.verbose)
    result = run(args)
    md = render_markdown(result)
    if "experimental" in result["summary"]:
        md += render_experimental(result["summary"]["experimental"])
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


# --------------------------------------------------------------------------------------------------
# --experimental: patches tried on a private copy of the model (the main numbers never use them)


def _ln_fp32(ln: nn.LayerNorm, x: Tensor) -> Tensor:
    return F.layer_norm(x.float(), ln.normalized_shape, ln.weight.float(), ln.bias.float(), ln.eps)


def _blocks_fp32_residual(transformer: nn.Module, h: Tensor, dtype: torch.dtype, is_causal: bool) -> Tensor:
    # The residual stream and the LayerNorms stay fp32; only the matmul branches run in the weights' dtype.
    for blk in transformer.blocks:
        h = h + blk.attn(_ln_fp32(blk.ln_1, h).to(dtype), is_causal=is_causal)
        h = h + blk.mlp(_ln_fp32(blk.ln_2, h).to(dtype))
    return h


def image_fp32_residual(model: nn.Module, x: Tensor) -> Tensor:
    """clipiq's image tower (ViT at its native grid) with an fp32 residual stream around bf16 matmuls."""
    vt, dtype = model.visual, model.dtype
    t = vt.patch_embed(x.to(dtype)).flatten(2).transpose(1, 2).float() + vt.pos_embed[1:].float()
    cls = (vt.cls_token.float() + vt.pos_embed[0].float()).expand(t.shape[0], 1, -1)
    h = _ln_fp32(vt.ln_pre, torch.cat([cls, t], dim=1))
    h = _blocks_fp32_residual(vt.transformer, h, dtype, is_causal=False)
    return _ln_fp32(vt.ln_post, h[:, 0]) @ vt.proj.float()


def text_fp32_residual(model: nn.Module, tokens: Tensor) -> Tensor:
    """clipiq's text tower with an fp32 residual stream around bf16 matmuls."""
    tt, dtype = model.text, model.dtype
    h = tt.embed(tokens).float() + tt.pos_embed[: tokens.shape[1]].float()
    h = _ln_fp32(tt.ln_final, _blocks_fp32_residual(tt.transformer, h, dtype, is_causal=True))
    return h[torch.arange(len(tokens)), tokens.argmax(dim=-1)] @ tt.proj.float()


class PackedLinear(nn.Module):
    """nn.Linear with its weight reordered once for oneDNN, optionally fused with a unary op."""

    def __init__(self, weight: Tensor, bias: Tensor, rows_hint: int, attr: str = "none"):
        super().__init__()
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(weight, rows_hint))
        self.register_buffer("bias", bias)
        self.attr = attr

    def forward(self, x: Tensor) -> Tensor:
        """y = attr(x W^T + b)."""
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, self.attr, [], "")


def prepack_image_tower(model: nn.Module, dtype: torch.dtype, rows_hint: int) -> nn.Module:
    """Copy of an fp32 clipiq model in ``dtype`` with every image-tower Linear prepacked for oneDNN.

    QuickGELU(h) = SiLU(1.702 h) / 1.702, so with fc1 scaled by 1.702 and fc2's weight by 1/1.702 the
    activation becomes oneDNN's fused 'swish' post-op (one pass less than x * sigmoid(1.702 x) x 3).
    """
    m = copy.deepcopy(model)
    for blk in m.visual.transformer.blocks:
        a = blk.attn
        a.qkv = PackedLinear(a.qkv.weight.detach().to(dtype), a.qkv.bias.detach().to(dtype), rows_hint)
        a.out = PackedLinear(a.out.weight.detach().to(dtype), a.out.bias.detach().to(dtype), rows_hint)
        fc1, fc2 = blk.mlp.fc1, blk.mlp.fc2
        if m.cfg.act == "quick_gelu":
            s = 1.702
            blk.mlp.fc1 = PackedLinear((fc1.weight.detach() * s).to(dtype), (fc1.bias.detach() * s).to(dtype),
                                       rows_hint, attr="swish")
            blk.mlp.act = nn.Identity()
            blk.mlp.fc2 = PackedLinear((fc2.weight.detach() / s).to(dtype), fc2.bias.detach().to(dtype), rows_hint)
        else:
            blk.mlp.fc1 = PackedLinear(fc1.weight.detach().to(dtype), fc1.bias.detach().to(dtype), rows_hint)
            blk.mlp.fc2 = PackedLinear(fc2.weight.detach().to(dtype), fc2.bias.detach().to(dtype), rows_hint)
    return m.to(dtype)


def experimental_runners(folder: Path, batch: int) -> list[Runner]:
    """Private copies of clipiq: oneDNN-prepacked linears (fp32, bf16), fp32 residual stream (bf16), both."""
    import clipiq

    model32, _ = clipiq.load_clip(None, weights=folder, device="cpu", precision="fp32")
    model16 = copy.deepcopy(model32).to(torch.bfloat16)
    tokens = clipiq.tokenize(list(PROMPTS))
    scale = model32.logit_scale.exp().float().item()
    rows = batch * ((IMAGE_SIZE // 32) ** 2 + 1)
    variants: list[tuple[str, str, nn.Module, bool]] = [("clipiq+fp32-residual", "bf16", model16, True)]
    if hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and torch.backends.mkldnn.is_available():
        variants.append(("clipiq+onednn-prepack", "fp32", prepack_image_tower(model32, torch.float32, rows), False))
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            packed16 = prepack_image_tower(model32, torch.bfloat16, rows)
            variants += [("clipiq+onednn-prepack", "bf16", packed16, False),
                         ("clipiq+both", "bf16", packed16, True)]
    else:
        log.warning("oneDNN weight prepacking is not available here; skipping the prepacked variants")
    out = []
    with torch.inference_mode():
        for name, precision, model, fp32_residual in variants:
            if fp32_residual:
                txt = F.normalize(text_fp32_residual(model, tokens), dim=-1)
                feats = functools.partial(image_fp32_residual, model)
            else:
                txt = model.encode_text(tokens, normalize=True)
                feats = model.encode_image
            out.append(Runner(name, precision, feats, txt.float(), scale, txt.to(DTYPES[precision])))
    return out


def summarise_experimental(exp: Sequence[Runner], runners: dict[tuple[str, str], Runner],
                           batch: int) -> list[dict[str, Any]]:
    """Speed ratios against unpatched clipiq (same precision), clipiq fp32 and transformers fp32; SRCC."""
    out = []
    ref32, hf32 = runners[("clipiq", "fp32")], runners[("transformers", "fp32")]
    for r in exp:
        base = runners[("clipiq", r.precision)]
        ratio, lo, hi = paired_ratio(r, base)
        out.append({"name": r.impl, "precision": r.precision,
                    "images_per_s_median": statistics.median(batch / t for t in r.times),
                    "images_per_s_best": max(batch / t for t in r.times),
                    "ratio_vs_unpatched": ratio, "ratio_min": lo, "ratio_max": hi,
                    "ratio_vs_unpatched_robust": robust_ratios(r, base),
                    "ratio_vs_clipiq_fp32": paired_ratio(r, ref32)[0],
                    "ratio_vs_clipiq_fp32_robust": robust_ratios(r, ref32),
                    "ratio_vs_transformers_fp32": paired_ratio(r, hf32)[0],
                    "ratio_vs_transformers_fp32_robust": robust_ratios(r, hf32),
                    "srcc_vs_clipiq_fp32": spearman(torch.cat(r.scores), torch.cat(ref32.scores))})
    return out


def render_experimental(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the experimental rows."""
    lines = ["", "Experimental patches (private copies of clipiq's model; not the numbers above). Ratios: "
             "paired median (best, CPU).", "",
             "| variant | precision | images/s median (best) | vs unpatched clipiq | vs clipiq fp32 | "
             "vs transformers fp32 | SRCC vs clipiq fp32 |",
             "|---|---|---:|---:|---:|---:|---:|"]

    def ratio(r: dict[str, Any], key: str) -> str:
        rb = r[f"{key}_robust"]
        return f"{r[key]:.2f}x ({rb['best']:.2f}x, {rb['cpu']:.2f}x)"

    for r in rows:
        lines.append(f"| {r['name']} | {r['precision']} | "
                     f"{r['images_per_s_median']:.2f} ({r['images_per_s_best']:.2f}) | "
                     f"{ratio(r, 'ratio_vs_unpatched')} | {ratio(r, 'ratio_vs_clipiq_fp32')} | "
                     f"{ratio(r, 'ratio_vs_transformers_fp32')} | {r['srcc_vs_clipiq_fp32']:.5f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
