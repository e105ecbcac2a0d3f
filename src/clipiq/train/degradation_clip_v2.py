"""degradation-clip-v2: a CLIP on the frozen ImageNet EfficientNet-Lite0 stem, trained on cached stem features.

What changes from v1 (whose losses, descriptions and antonym pairs are imported, not copied):

* data: 224 px native-scale crops of Kodak24, Sun-Hays80, T91 and BSD200; each crop is kept clean and
  degraded several times (singles, composed pairs and the camera-pipeline composites of
  ``clipiq.degrade.CAMERA_RECIPES``); a seeded fraction of the photos is the validation part;
* labels: the quality pair's target is the SSIM of the variant against its clean crop (a full-reference
  label); the attribute pairs keep v1's targets from the degradation types and levels;
* text: the stem's own ImageNet class of the clean crop becomes a content word ("a photo of a church with
  strong motion blur"), so scene words in prompts mean something;
* compute: the stem is frozen, so its maps and stage statistics are computed once per variant (fp16, cached
  under ``data.cache_dir``, keyed by the data config and seed) and training runs the transformer and text
  tower only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clipiq import degrade
from clipiq.clip.config import CLIPConfig, get_architecture
from clipiq.clip.efficientnet import imagenet_classes, load_lite0
from clipiq.clip.model import CLIP
from clipiq.clip.tokenizer import tokenize
from clipiq.clip.vocabulary import DEGRADATION_PHRASES, describe
from clipiq.core.errors import CheckpointError
from clipiq.core.tensors import load_tensors, save_tensors
from clipiq.data.io import load_image
from clipiq.train import parallel
from clipiq.train.degradation_clip import (
    ANTONYM_PAIRS,
    Batch,
    antonym_targets,
    clip_losses,
    draw_plain_recipe,
    photo_paths,
    random_crops,
)
from clipiq.train.engine import step_rng, train_defaults

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "root": "../shared/data",
        "train_dirs": ["photos/kodak24", "photos/sunhays80", "sr/train/T91", "sr/train/BSD200"],
        "val_fraction": 0.1,  # of the photos, by a seeded draw: the validation part (model selection)
        "crops": 800,  # clean crops drawn from the training photos
        "val_crops": 80,  # clean crops drawn from the validation photos
        "variants": 5,  # per crop: the clean crop plus variants - 1 degraded versions
        "crop": 224,
        "p_camera": 0.35,  # of the degraded versions: a camera-pipeline composite
        "p_composed": 0.3,  # of the other degraded versions: two composed degradations (else one)
        "degradations": None,  # types for singles and pairs; None: every type with a description
        "p_level_word": 0.7,
        "p_content": 0.6,  # how often a description names the crop's ImageNet class
        "content_min_prob": 0.2,  # classes the stem is less sure of are never named
        "grid_sizes": [8, 10, 14, 14],  # sub-grids (stride-16 cells, even) of the cached maps, one per batch
        "workers": 2,
        "cache_dir": "runs/data",
        "cache": True,
    },
    # An architecture name and, where not None, replacements for its sizes and stem statistics.
    "model": {"arch": "degradation-clip-v2", "name": "degradation-clip-v2", "stem_stats": None,
              "embed_dim": None, "vision_width": None, "vision_layers": None, "vision_heads": None,
              "text_width": None, "text_layers": None, "text_heads": None},
    "loss": {
        "contrastive_weight": 1.0,
        "antonym_weight": 1.0,
        "quality_label": "ssim",  # ssim (full reference) or level (v1's severity target)
        "use_camera": True,  # train on the camera composites (False: drop them from the batches)
        "use_content": True,  # name the crop's content in descriptions
    },
    "train": train_defaults(steps=500, batch_size=96, lr=5e-4, weight_decay=0.2, warmup=50, grad_clip=1.0,
                            eval_every=125, ckpt_every=50, monitor="val_srcc"),
}

def architecture(mcfg: Mapping[str, Any]) -> CLIPConfig:
    """The CLIP config named by ``model.arch`` with any size replacements of the model section."""
    base = get_architecture(str(mcfg["arch"]))
    mcfg = {k: v for k, v in mcfg.items() if v is not None}
    if base.vision.stem is None:
        raise ValueError(f"model.arch {base.name!r} has no convolutional stem; v2 trains on stem features")
    v, t = base.vision, base.text
    vision = type(v)(v.image_size, v.patch_size, int(mcfg.get("vision_width", v.width)),
                     int(mcfg.get("vision_layers", v.layers)), int(mcfg.get("vision_heads", v.heads)), v.mlp_ratio,
                     v.stem, bool(mcfg.get("stem_stats", v.stem_stats)))
    text = type(t)(t.context_length, t.vocab_size, int(mcfg.get("text_width", t.width)),
                   int(mcfg.get("text_layers", t.layers)), int(mcfg.get("text_heads", t.heads)), t.mlp_ratio)
    return base.replace(name=str(mcfg.get("name", "degradation-clip-v2")), vision=vision, text=text,
                        embed_dim=int(mcfg.get("embed_dim", base.embed_dim)), random=False)


# ----------------------------------------------------------------------------------------------------
# Data: clean + degraded variants of native-scale crops, as cached stem features with their labels.


def split_photos(paths: Sequence[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """A seeded split of the photos into (training, validation); crops of one photo never cross it."""
    order = np.random.default_rng([seed, 7]).permutation(len(paths))
    n_val = max(1, round(fraction * len(paths))) if fraction > 0 else 0
    val = sorted(paths[int(i)] for i in order[:n_val])
    return sorted(paths[int(i)] for i in order[n_val:]), val


def draw_recipe(rng: np.random.Generator, names: Sequence[str], p_camera: float,
                p_composed: float) -> tuple[list[tuple[str, int]], str]:
    """A degradation recipe and its kind: a camera composite ('camera:NAME') or v1's single/composed draw."""
    if rng.random() < p_camera:
        name = list(degrade.CAMERA_RECIPES)[int(rng.integers(len(degrade.CAMERA_RECIPES)))]
        return degrade.camera_recipe(name, rng), f"camera:{name}"
    recipe = draw_plain_recipe(rng, names, 0.0, p_composed)
    return recipe, "composed" if len(recipe) > 1 else "single"


def _make_crops(args: tuple[list[Path], int, int, Mapping[str, Any], list[str], int, int]) -> dict[str, Any]:
    """One worker's share: crops start..start+count, each clean plus degraded variants, through the stem."""
    from clipiq.eval import ssim

    paths, start, count, dcfg, names, seed, salt = args
    torch.set_num_threads(1)
    size, n_var = int(dcfg["crop"]), int(dcfg["variants"])
    images = [im for im in (load_image(p) for p in paths) if min(im.shape[-2:]) >= size]
    stem = load_lite0().eval()
    maps: list[list[Tensor]] = [[], [], []]
    labels: dict[str, list[Any]] = {"ssim": [], "recipe": [], "kind": [], "crop": [], "cls": [], "cls_prob": []}
    for c in range(start, start + count):
        rng = np.random.default_rng([seed, salt, c])
        clean = random_crops(images, 1, size, rng)
        variants, recipes, kinds = [clean], [[]], ["clean"]
        for _ in range(n_var - 1):
            recipe, kind = draw_recipe(rng, names, float(dcfg["p_camera"]), float(dcfg["p_composed"]))
            variants.append(degrade.compose(recipe, seed=int(rng.integers(2**31)))(clean).clamp(0, 1))
            recipes.append(recipe)
            kinds.append(kind)
        # Stored as uint8 would be: the stem sees what a saved image would give.
        x = torch.cat(variants).mul(255).round().div(255)
        with torch.no_grad():
            s16, s32, stats = stem.features(x * 2 - 1)
            probs = stem.classify(s32[:1]).softmax(-1)[0]
        labels["ssim"] += ssim(x, x[:1].expand_as(x)).tolist()
        for m, t in zip(maps, (s16, s32, stats)):
            m.append(t.half())
        labels["recipe"] += recipes
        labels["kind"] += kinds
        labels["crop"] += [c] * n_var
        labels["cls"] += [int(probs.argmax())] * n_var
        labels["cls_prob"] += [float(probs.max())] * n_var
    return {"s16": torch.cat(maps[0]), "s32": torch.cat(maps[1]), "stats": torch.cat(maps[2]), **labels}


def build_features(dcfg: Mapping[str, Any], seed: int, part: str) -> dict[str, Any]:
    """Stem features and labels of the training or validation part, generated once and cached (fp16)."""
    names = list(dcfg.get("degradations") or DEGRADATION_PHRASES)
    unknown = [n for n in names if n not in DEGRADATION_PHRASES]
    if unknown:
        raise ValueError(f"data.degradations has types without descriptions: {unknown}")
    root = Path(dcfg["root"])
    train, val = split_photos(photo_paths(root, dcfg["train_dirs"]), float(dcfg["val_fraction"]), seed)
    paths, n_crops, salt = (train, int(dcfg["crops"]), 0) if part == "train" else (val, int(dcfg["val_crops"]), 1)
    if not paths:
        raise ValueError(f"the {part} part has no photos (data.val_fraction={dcfg['val_fraction']})")
    keyed = {k: v for k, v in dcfg.items() if k not in ("workers", "cache", "cache_dir", "grid_sizes",
                                                         "p_level_word", "p_content", "content_min_prob")}
    key = hashlib.sha256(json.dumps([keyed, seed, part, [str(p) for p in paths]], sort_keys=True, default=str)
                         .encode()).hexdigest()[:16]
    cache = Path(dcfg["cache_dir"]) / f"v2-{part}-{key}.safetensors" if dcfg.get("cache", True) else None
    label_keys = ("ssim", "recipe", "kind", "crop", "cls", "cls_prob")
    # With a cache on disk, rank 0 of a data-parallel run makes it and the others then load it.
    with parallel.main_first(cache is not None):
        if cache is not None and cache.exists():
            log.info("loading cached %s stem features from %s", part, cache)
            tensors, meta = load_tensors(cache)
            missing = [k for k in label_keys if k not in meta] + [k for k in ("s16", "s32", "stats")
                                                                  if k not in tensors]
            if missing:
                raise CheckpointError(f"{cache}: feature cache lacks {', '.join(missing)} (delete it to rebuild)")
            meta["recipe"] = [[(str(n), int(lv)) for n, lv in r] for r in meta["recipe"]]
            return {**tensors, **{k: meta[k] for k in label_keys}, "names": names}
        workers = max(1, min(int(dcfg.get("workers", 1)), n_crops))
        chunks = [c for c in np.array_split(np.arange(n_crops), workers * 2) if len(c)]
        jobs = [(paths, int(c[0]), len(c), dict(dcfg), names, seed, salt) for c in chunks]
        log.info("%s part: %d crops x %d variants of %d px from %d photos through the stem (%d workers)", part, n_crops,
                 int(dcfg["variants"]), int(dcfg["crop"]), len(paths), workers)
        if workers > 1:
            with mp.get_context("spawn").Pool(workers) as pool:
                parts = pool.map(_make_crops, jobs)
        else:
            parts = [_make_crops(j) for j in jobs]
        out: dict[str, Any] = {k: torch.cat([p[k] for p in parts]) for k in ("s16", "s32", "stats")}
        for k in label_keys:
            out[k] = [v for p in parts for v in p[k]]
        if cache is not None:
            save_tensors(cache, {k: out[k] for k in ("s16", "s32", "stats")}, {k: out[k] for k in label_keys})
        return {**out, "names": names}


def with_content(text: str, cls: str) -> str:
    """Name the content after the first 'photo': 'a photo with haze' -> 'a photo of a church with haze'."""
    return text.replace("photo", f"photo of a {cls}", 1)


def quality_target(ssim_value: float) -> float:
    """The quality pair's target from SSIM against the clean crop (1 for the clean crop itself)."""
    return float(np.clip(ssim_value, 0.02, 0.98))


# ----------------------------------------------------------------------------------------------------
# The task


class DegradationCLIPv2Task:
    """v1's contrastive + antonym-pair training on cached stem features (see the module docstring)."""

    def __init__(self, cfg: Mapping[str, Any], device: torch.device, features: Mapping[str, Any] | None = None,
                 val_features: Mapping[str, Any] | None = None):
        self.cfg = cfg
        self.device = device
        self.seed = int(cfg["seed"])
        torch.manual_seed(self.seed)
        self.arch = architecture(cfg["model"])
        self.model = CLIP(self.arch).to(device)
        self.model.visual.freeze_stem(True)
        self.data = features if features is not None else build_features(cfg["data"], self.seed, "train")
        self.val = val_features if val_features is not None else build_features(cfg["data"], self.seed, "val")
        lcfg = {**DEFAULTS["loss"], **cfg.get("loss", {})}
        self.lcfg = lcfg
        if lcfg["quality_label"] not in ("ssim", "level"):
            raise ValueError(f"loss.quality_label must be ssim or level, got {lcfg['quality_label']!r}")
        keep = [i for i, k in enumerate(self.data["kind"]) if lcfg["use_camera"] or not k.startswith("camera:")]
        self.index = np.array(keep)
        self.batch_size = int(cfg["train"]["batch_size"])
        self.grid_sizes = [int(g) for g in cfg["data"]["grid_sizes"]]
        if any(g % 2 or g < 2 for g in self.grid_sizes):
            raise ValueError(f"data.grid_sizes must be even (stride-32 cells cover two stride-16 cells), "
                             f"got {self.grid_sizes}")
        self.classes = imagenet_classes()
        self._token_cache: dict[str, Tensor] = {}
        self._pair_tokens = tokenize([t for pair in ANTONYM_PAIRS.values() for t in pair])

    def _tokens(self, texts: Sequence[str]) -> Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._token_cache]
        if missing:
            for t, tok in zip(missing, tokenize(missing)):
                self._token_cache[t] = tok
        toks = torch.stack([self._token_cache[t] for t in texts])
        return toks[:, : int(toks.argmax(-1).max()) + 1]  # causal: the padding after end-of-text never matters

    def describe(self, i: int, rng: np.random.Generator) -> str:
        """A fresh description of variant ``i``: v1's, with the crop's ImageNet class named some of the time."""
        dcfg = self.cfg["data"]
        text = describe(self.data["recipe"][i], rng, float(dcfg["p_level_word"]))
        if self.lcfg["use_content"] and self.data["cls_prob"][i] >= float(dcfg["content_min_prob"]) \
                and rng.random() < float(dcfg["p_content"]):
            text = with_content(text, self.classes[self.data["cls"][i]])
        return text

    def targets(self, features: Mapping[str, Any], i: int) -> tuple[np.ndarray, np.ndarray]:
        """Antonym-pair targets of variant ``i``: v1's, with the quality pair's from SSIM when configured."""
        target, mask = antonym_targets(features["recipe"][i])
        if self.lcfg["quality_label"] == "ssim":
            target[0] = quality_target(features["ssim"][i])
        return target, mask

    def batches(self, start_step: int) -> Iterator[tuple[tuple[Tensor, Tensor, Tensor], Batch]]:
        """Random variants and a random even sub-grid of their maps; depends only on (seed, step)."""
        s16, s32, stats = self.data["s16"], self.data["s32"], self.data["stats"]
        full = s16.shape[-1]
        step = start_step
        while True:
            rng = step_rng(self.seed, step)
            idx = self.index[rng.integers(0, len(self.index), size=self.batch_size)]
            g = min(self.grid_sizes[int(rng.integers(len(self.grid_sizes)))], full - full % 2)
            y, x = 2 * int(rng.integers(0, (full - g) // 2 + 1)), 2 * int(rng.integers(0, (full - g) // 2 + 1))
            ii = torch.from_numpy(idx)
            maps = (s16[ii, :, y : y + g, x : x + g], s32[ii, :, y // 2 : (y + g) // 2, x // 2 : (x + g) // 2],
                    stats[ii])
            texts, tgts, masks = [], [], []
            for i in idx:
                texts.append(self.describe(int(i), rng))
                t, m = self.targets(self.data, int(i))
                tgts.append(t)
                masks.append(m)
            targets, mask = torch.from_numpy(np.stack(tgts)), torch.from_numpy(np.stack(masks))
            yield maps, Batch(torch.empty(0), texts, targets, mask)  # the images are the cached maps
            step += 1

    def training_step(self, batch: tuple[tuple[Tensor, Tensor, Tensor], Batch]) -> dict[str, Tensor]:
        """v1's losses on the image features of cached stem maps."""
        maps, b = batch
        maps = tuple(m.to(self.device).float() for m in maps)
        feats = self.model.visual.forward_stem_features(maps).pooled
        return clip_losses(self.model, feats, b, self._tokens, self._pair_tokens, float(self.lcfg["antonym_weight"]),
                           float(self.lcfg["contrastive_weight"]))

    @torch.no_grad()
    def quality_scores(self, features: Mapping[str, Any], batch: int = 256) -> np.ndarray:
        """clipiqa's Good/Bad photo probability of every variant in ``features`` (full cached maps)."""
        was = self.model.training
        self.model.eval()
        txt = self.model.encode_text(tokenize(list(ANTONYM_PAIRS["quality"])).to(self.device), normalize=True)
        out = []
        for s in range(0, len(features["s16"]), batch):
            maps = tuple(features[k][s : s + batch].to(self.device).float() for k in ("s16", "s32", "stats"))
            img = torch.nn.functional.normalize(self.model.visual.forward_stem_features(maps).pooled, dim=-1)
            out.append((self.model.logit_scale.exp() * img @ txt.t()).softmax(-1)[:, 0].cpu())
        self.model.train(was)
        return torch.cat(out).numpy()

    def evaluate(self) -> dict[str, float]:
        """On the validation part: SRCC of clipiqa's quality with SSIM (all variants, camera composites only)
        and the mean within-crop SRCC (ranking a crop's variants)."""
        from scipy.stats import spearmanr

        q = self.quality_scores(self.val)
        s = np.asarray(self.val["ssim"])
        cam = np.array([k.startswith("camera:") or k == "clean" for k in self.val["kind"]])
        crops = np.asarray(self.val["crop"])
        within = [spearmanr(q[crops == c], s[crops == c])[0] for c in np.unique(crops)]
        within = [w for w in within if np.isfinite(w)]
        return {"val_srcc": float(spearmanr(q, s)[0]), "val_camera_srcc": float(spearmanr(q[cam], s[cam])[0]),
                "val_within_crop": float(np.mean(within)) if within else 0.0}

    def checkpoint_payload(self) -> dict[str, Any]:
        """The trained model (without the frozen stem, which loads from its package record) and its architecture."""
        return {"arch": self.arch.to_dict(), "state_dict": trained_state(self.model)}


def trained_state(model: CLIP) -> dict[str, Tensor]:
    """The model's state without the frozen stem's tensors."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("visual.stem.")}


def export_model(model: CLIP, arch: CLIPConfig, path: Path, metadata: Mapping[str, str] | None = None) -> str:
    """Write fp16 safetensors without the stem (``load_clip`` takes it from the package record); returns the sha256."""
    from clipiq.clip.convert import save_clipiq_checkpoint
    from clipiq.clip.weights import sha256_file

    sd = {k: v.to(torch.float16) for k, v in trained_state(model).items()}
    save_clipiq_checkpoint(sd, arch, path, extra_metadata=metadata)
    return sha256_file(path)


def run(cfg: Mapping[str, Any], run_dir: Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Cache the stem features, train, and export ``degradation-clip-v2.safetensors`` (best on validation)."""
    from clipiq.core.tensors import load_trainable_state
    from clipiq.train.engine import Trainer, read_trainer_checkpoint, seed_everything

    seed_everything(int(cfg["seed"]))
    task = DegradationCLIPv2Task(cfg, device)
    trainer = Trainer(task, cfg, run_dir, device, resume=resume, progress=progress)
    summary = trainer.fit()
    if not parallel.is_main_process():  # rank 0 exports the model, scores it and writes the summary
        return summary
    meta = {"clipiq_train_config": json.dumps(cfg, sort_keys=True, default=str)}
    if trainer.best_path.exists():  # selected on the validation part (synthetic labels), never on test data
        ck = read_trainer_checkpoint(trainer.best_path, ("step", "payload"))
        load_trainable_state(task.model, ck["payload"]["state_dict"], str(trainer.best_path))
        meta["clipiq_train_step"] = str(ck["step"])
    out = Path(run_dir) / "degradation-clip-v2.safetensors"
    summary["sha256"] = export_model(task.model, task.arch, out, meta)
    summary["exported_step"] = int(meta.get("clipiq_train_step", summary.get("step", 0)))
    summary["exported_val"] = task.evaluate()
    (Path(run_dir) / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log.info("exported %s (sha256 %s)", out, summary["sha256"])
    return summary


def export_checkpoint(checkpoint: Path, out: Path) -> str:
    """Export the model held in a trainer checkpoint (last or best.safetensors) as a shippable stem-less file."""
    from clipiq.core.tensors import load_trainable_state
    from clipiq.train.engine import read_trainer_checkpoint

    ck = read_trainer_checkpoint(checkpoint, ("step", "config", "payload"))
    payload = ck["payload"]
    if not isinstance(payload, dict) or not {"arch", "state_dict"} <= set(payload):
        raise CheckpointError(f"{checkpoint}: payload lacks arch or state_dict (not a degradation-clip-v2 run?)")
    arch = CLIPConfig.from_dict(payload["arch"])
    model = CLIP(arch)
    load_trainable_state(model, payload["state_dict"], str(checkpoint))
    meta = {"clipiq_train_config": json.dumps(ck["config"], sort_keys=True, default=str),
            "clipiq_train_step": str(ck["step"])}
    return export_model(model, arch, out, meta)
