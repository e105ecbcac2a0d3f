"""degradation-clip: a small CLIP trained from scratch on degradations of real photos.

Images are native-scale crops of clean photos degraded by ``clipiq.degrade`` (single and composed
recipes, levels 1-5, plus clean crops). Texts are generated from the recipe. Two losses:

* a contrastive loss in which crops with identical descriptions are positives of each other (many
  crops share a description, so ordinary InfoNCE would push true matches apart);
* graded supervision of CLIP-IQA's antonym prompt pairs ("Good photo." / "Bad photo.", "Sharp photo." /
  "Blurry photo.", ...), whose softmax is trained towards the known severity, so zero-shot ``clipiqa``
  works with this model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clipiq import degrade
from clipiq.clip.config import CLIPConfig, PreprocessConfig, TextConfig, VisionConfig
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import Preprocess
from clipiq.clip.tokenizer import tokenize
from clipiq.clip.vocabulary import (
    ATTRIBUTE_OF_DEGRADATION,
    ATTRIBUTE_PROMPTS,
    DEGRADATION_PHRASES,
    describe,
)
from clipiq.core.errors import CheckpointError
from clipiq.core.tensors import load_tensors, load_trainable_state, save_tensors
from clipiq.data.io import list_images, load_image
from clipiq.train import parallel
from clipiq.train.engine import read_trainer_checkpoint, step_rng, train_defaults

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "root": "../shared/data/photos",
        "train_dirs": ["kodak24", "sunhays80"],
        "heldout_dirs": ["mcmaster18"],
        "pool_size": 9600,
        "store_crop": 128,
        "crop_sizes": [64, 96, 128],
        "p_clean": 0.1,
        "p_composed": 0.3,
        "p_level_word": 0.7,
        "degradations": None,
        "workers": 2,
        "cache": True,
    },
    "model": {
        "embed_dim": 256,
        "image_size": 128,
        "patch_size": 16,
        "vision_width": 128,
        "vision_layers": 4,
        "vision_heads": 2,
        "text_width": 128,
        "text_layers": 4,
        "text_heads": 4,
    },
    "loss": {"antonym_weight": 1.0},
    "train": train_defaults(steps=4500, batch_size=96, lr=5e-4, weight_decay=0.05, warmup=150, grad_clip=1.0,
                            eval_every=500, ckpt_every=250, monitor="type_acc"),
    "eval": {"photos": 4, "crop": 128, "levels": [3, 4, 5]},
}

# CLIP-IQA antonym pairs trained with graded targets.
ANTONYM_PAIRS: dict[str, tuple[str, str]] = {
    k: ATTRIBUTE_PROMPTS[k] for k in ("quality", "sharpness", "noisiness", "brightness", "colorfulness", "contrast")
}
Recipe = list[tuple[str, int]]


def antonym_targets(recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """Target probabilities of the positive prompt of each pair and a mask of which pairs apply."""
    names = list(ANTONYM_PAIRS)
    target = np.zeros(len(names), np.float32)
    mask = np.zeros(len(names), np.float32)
    worst = max((lv for _, lv in recipe), default=0)
    target[0] = 1.0 - 0.18 * worst - 0.06 * max(0, len(recipe) - 1)
    mask[0] = 1.0
    if not recipe:
        for a in ("sharpness", "noisiness"):
            target[names.index(a)], mask[names.index(a)] = 1.0, 1.0
    for name, level in recipe:
        attr = ATTRIBUTE_OF_DEGRADATION.get(name)
        if attr is None:
            continue
        i = names.index(attr)
        if name == "over_exposure":
            target[i] = 0.5 + 0.1 * level
        elif name == "low_light":
            target[i] = 0.5 - 0.1 * level
        else:
            target[i] = 1.0 - 0.18 * level
        mask[i] = 1.0
    return np.clip(target, 0.02, 0.98), mask


def architecture(mcfg: Mapping[str, Any], name: str = "degradation-clip") -> CLIPConfig:
    """The CLIP config of a degradation-clip model from the config's model section."""
    return CLIPConfig(
        name=name,
        embed_dim=int(mcfg["embed_dim"]),
        vision=VisionConfig(int(mcfg["image_size"]), int(mcfg["patch_size"]), int(mcfg["vision_width"]),
                            int(mcfg["vision_layers"]), int(mcfg["vision_heads"])),
        text=TextConfig(77, 49408, int(mcfg["text_width"]), int(mcfg["text_layers"]), int(mcfg["text_heads"])),
        act="gelu",
        preprocess=PreprocessConfig(image_size=int(mcfg["image_size"])),
    )


# ----------------------------------------------------------------------------------------------------
# Data: a pool of degraded native-scale crops, generated once per (config, seed) and cached.


def photo_paths(root: Path, dirs: Sequence[str]) -> list[Path]:
    """The image files in each of ``dirs`` under ``root`` (a missing folder or no photo at all is an error)."""
    out: list[Path] = []
    for d in dirs:
        p = root / d
        if not p.is_dir():
            raise FileNotFoundError(f"photo folder {p} does not exist (set data.root to the shared/data/photos folder)")
        out.extend(list_images([p]))
    if not out:
        raise FileNotFoundError(f"no photos found under {root} in {list(dirs)}")
    return out


def random_crops(images: Sequence[Tensor], n: int, size: int, rng: np.random.Generator) -> Tensor:
    """``n`` random ``size`` crops (N,3,size,size) of randomly chosen images, at native pixel scale."""
    crops = []
    for _ in range(n):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[-2:]
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        c = img[:, y : y + size, x : x + size]
        if rng.random() < 0.5:
            c = c.flip(-1)
        crops.append(c)
    return torch.stack(crops)


def draw_plain_recipe(rng: np.random.Generator, names: Sequence[str], p_clean: float, p_composed: float) -> Recipe:
    """A training recipe: clean with ``p_clean``, else one degradation or, with ``p_composed``, two."""
    if rng.random() < p_clean:
        return []
    n_ops = 2 if rng.random() < p_composed else 1
    return [(str(n), int(lv)) for n, lv in degrade.sample_recipe(rng, max_ops=n_ops, min_ops=n_ops, names=names)]


def _make_groups(args: tuple[list[Path], int, int, int, float, float, list[str], int]) -> list[dict[str, Any]]:
    paths, start, count, size, p_clean, p_comp, names, seed = args
    torch.set_num_threads(1)
    images = [load_image(p) for p in paths]
    images = [im for im in images if min(im.shape[-2:]) >= size]
    out = []
    for g in range(start, start + count):
        rng = np.random.default_rng([seed, g])
        recipe = draw_plain_recipe(rng, names, p_clean, p_comp)
        crops = random_crops(images, GROUP, size, rng)
        if recipe:
            crops = degrade.compose(recipe, seed=int(rng.integers(2**31)))(crops)
        out.append({"images": (crops.clamp(0, 1) * 255).round().to(torch.uint8), "recipe": recipe})
    return out


GROUP = 8


def build_pool(dcfg: Mapping[str, Any], seed: int, cache_dir: Path | None = None) -> dict[str, Any]:
    """Generate (or load from cache) the pool of degraded crops: uint8 images and one recipe per crop."""
    names = list(dcfg.get("degradations") or DEGRADATION_PHRASES)
    unknown = [n for n in names if n not in DEGRADATION_PHRASES]
    if unknown:
        raise ValueError(f"data.degradations has types without descriptions: {unknown}")
    paths = photo_paths(Path(dcfg["root"]), dcfg["train_dirs"])
    n_groups = max(1, int(dcfg["pool_size"]) // GROUP)
    size = int(dcfg["store_crop"])
    key = hashlib.sha256(json.dumps([dict(dcfg), seed, [str(p) for p in paths]], sort_keys=True, default=str)
                         .encode()).hexdigest()[:16]
    cache = cache_dir / f"pool-{key}.safetensors" if cache_dir is not None and dcfg.get("cache", True) else None
    # With a cache on disk, rank 0 of a data-parallel run makes it and the others then load it.
    with parallel.main_first(cache is not None):
        if cache is not None and cache.exists():
            log.info("loading crop pool from %s", cache)
            tensors, meta = load_tensors(cache)
            missing = [k for k in ("recipes", "names") if k not in meta] + ([] if "images" in tensors else ["images"])
            if missing:
                raise CheckpointError(f"{cache}: crop pool cache lacks {', '.join(missing)} (delete it to rebuild)")
            # JSON keeps a recipe's (name, level) steps as lists: give back what a fresh pool holds.
            recipes = [[(str(n), int(lv)) for n, lv in r] for r in meta["recipes"]]
            return {"images": tensors["images"], "recipes": recipes, "names": meta["names"]}
        workers = max(1, int(dcfg.get("workers", 1)))
        chunks = np.array_split(np.arange(n_groups), workers * 4)
        jobs = [(paths, int(c[0]), len(c), size, float(dcfg["p_clean"]), float(dcfg["p_composed"]), names, seed)
                for c in chunks if len(c)]
        log.info("generating %d degraded crops (%d px) from %d photos with %d workers", n_groups * GROUP, size,
                 len(paths), workers)
        if workers > 1:
            with mp.get_context("spawn").Pool(workers) as pool:
                parts = pool.map(_make_groups, jobs)
        else:
            parts = [_make_groups(j) for j in jobs]
        groups = [g for part in parts for g in part]
        pool_data = {
            "images": torch.cat([g["images"] for g in groups]),
            "recipes": [g["recipe"] for g in groups for _ in range(GROUP)],
            "names": names,
        }
        if cache is not None:
            save_tensors(cache, {"images": pool_data["images"]},
                         {"recipes": pool_data["recipes"], "names": pool_data["names"]})
        return pool_data


# ----------------------------------------------------------------------------------------------------
# The task


@dataclass
class Batch:
    """One training batch."""

    images: Tensor
    texts: list[str]
    targets: Tensor
    mask: Tensor


class DegradationCLIPTask:
    """Contrastive + antonym-pair training of a small CLIP on the crop pool (see the module docstring)."""

    def __init__(self, cfg: Mapping[str, Any], device: torch.device, run_dir: Path | None = None,
                 pool: Mapping[str, Any] | None = None):
        self.cfg = cfg
        self.device = device
        self.seed = int(cfg["seed"])
        torch.manual_seed(self.seed)
        self.arch = architecture(cfg["model"])
        self.model = CLIP(self.arch).to(device)
        self.preprocess = Preprocess(self.arch.preprocess, self.arch.vision.patch_size)
        self.pool = pool if pool is not None else build_pool(cfg["data"], self.seed, run_dir)
        self.batch_size = int(cfg["train"]["batch_size"])
        self.crop_sizes = [int(c) for c in cfg["data"]["crop_sizes"]]
        self.p_level_word = float(cfg["data"]["p_level_word"])
        self._token_cache: dict[str, Tensor] = {}
        pairs = [t for pair in ANTONYM_PAIRS.values() for t in pair]
        self._pair_tokens = tokenize(pairs)
        heldout = photo_paths(Path(cfg["data"]["root"]), cfg["data"]["heldout_dirs"])
        self.eval_photos = heldout[: int(cfg["eval"]["photos"])]
        self._eval_images: list[list[Tensor]] | None = None

    def batches(self, start_step: int) -> Iterator[Batch]:
        """Random sub-crops (one size per batch), flips and fresh descriptions; depends on (seed, step)."""
        images, recipes = self.pool["images"], self.pool["recipes"]
        step = start_step
        while True:
            rng = step_rng(self.seed, step)
            idx = rng.integers(0, len(images), size=self.batch_size)
            size = self.crop_sizes[int(rng.integers(len(self.crop_sizes)))]
            full = images.shape[-1]
            ys = rng.integers(0, full - size + 1, size=self.batch_size)
            xs = rng.integers(0, full - size + 1, size=self.batch_size)
            crops = torch.stack([images[i, :, y : y + size, x : x + size] for i, y, x in zip(idx, ys, xs)])
            flip = torch.from_numpy(rng.random(self.batch_size) < 0.5)
            crops = torch.where(flip.view(-1, 1, 1, 1), crops.flip(-1), crops)
            texts, targets, masks = [], [], []
            for i in idx:
                recipe = [tuple(r) for r in recipes[i]]
                texts.append(describe(recipe, rng, self.p_level_word))
                t, m = antonym_targets(recipe)
                targets.append(t)
                masks.append(m)
            yield Batch(crops.float().div_(255), texts, torch.from_numpy(np.stack(targets)),
                        torch.from_numpy(np.stack(masks)))
            step += 1

    def _tokens(self, texts: Sequence[str]) -> Tensor:
        missing = [t for t in texts if t not in self._token_cache]
        if missing:
            for t, tok in zip(missing, tokenize(missing)):
                self._token_cache[t] = tok
        toks = torch.stack([self._token_cache[t] for t in texts])
        # Causal attention: positions after end-of-text never affect it, so trim the padding.
        return toks[:, : int(toks.argmax(-1).max()) + 1]

    def training_step(self, batch: Batch) -> dict[str, Tensor]:
        """Multi-positive contrastive loss plus graded antonym-pair BCE."""
        x = self.preprocess.normalize(batch.images.to(self.device))
        return clip_losses(self.model, self.model.encode_image(x), batch, self._tokens, self._pair_tokens,
                           float(self.cfg["loss"]["antonym_weight"]))

    def _heldout(self) -> list[list[Tensor]]:
        # Degraded once per run: every evaluation scores the same images.
        if self._eval_images is None:
            crop = int(self.cfg["eval"]["crop"])
            ims = []
            for p in self.eval_photos:
                im = load_image(p)
                h, w = im.shape[-2:]
                y, x = (h - crop) // 2, (w - crop) // 2
                ims.append(im[:, y : y + crop, x : x + crop])
            self._eval_images = degraded_eval_set(ims, self.pool["names"], seed=self.seed)
        return self._eval_images

    def evaluate(self) -> dict[str, float]:
        """Zero-shot type accuracy and clipiqa ranking SRCC on held-out photos (a small subset)."""
        res = evaluate_model(self.model, self.preprocess, self._heldout(), levels=self.cfg["eval"]["levels"],
                             names=self.pool["names"])
        return {"type_acc": res["type_acc"], "rank_srcc": res["rank_srcc"]}

    def checkpoint_payload(self) -> dict[str, Any]:
        """The trained model and its architecture."""
        return {"arch": self.arch.to_dict(), "state_dict": {k: v.detach().cpu() for k, v in
                                                            self.model.state_dict().items()}}


def clip_losses(model: CLIP, image_features: Tensor, batch: Batch, tokens: Callable[[Sequence[str]], Tensor],
                pair_tokens: Tensor, antonym_weight: float, contrastive_weight: float = 1.0) -> dict[str, Tensor]:
    """Multi-positive contrastive loss plus graded antonym-pair BCE on a batch's image features (N, D)."""
    dev = image_features.device
    uniq = sorted(set(batch.texts))
    col = torch.tensor([uniq.index(t) for t in batch.texts], device=dev)
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(model.encode_text(tokens(uniq).to(dev)), dim=-1)
    scale = model.logit_scale.exp().clamp(max=100)
    logits = scale * img @ txt.t()  # (B, U)
    loss_i2t = F.cross_entropy(logits, col)
    pos = F.one_hot(col, len(uniq)).float()  # (B, U): crops sharing a description are all positives
    logp_t2i = logits.t().log_softmax(dim=1)  # (U, B)
    loss_t2i = -(logp_t2i * pos.t()).sum(1).div(pos.sum(0)).mean()
    pair_txt = F.normalize(model.encode_text(pair_tokens[:, :8].to(dev)), dim=-1)
    pl = (scale * img @ pair_txt.t()).float().view(len(img), -1, 2).softmax(-1)[..., 0]
    t, m = batch.targets.to(dev), batch.mask.to(dev)
    bce = F.binary_cross_entropy(pl.clamp(1e-6, 1 - 1e-6), t, reduction="none")
    loss_pairs = (bce * m).sum() / m.sum()
    contrastive = 0.5 * (loss_i2t + loss_t2i)
    loss = contrastive_weight * contrastive + antonym_weight * loss_pairs
    return {"loss": loss, "contrastive": contrastive, "antonym": loss_pairs}


def type_prompt(name: str) -> str:
    """The zero-shot prompt of one degradation type."""
    return f"a photo with {DEGRADATION_PHRASES[name]}"


def degraded_eval_set(images: Sequence[Tensor], names: Sequence[str], seed: int = 0) -> list[list[Tensor]]:
    """Each photo degraded by each type at levels 1-5: ``[photo][type] -> (5,3,H,W)``, seeded."""
    return [[torch.stack([degrade.apply(im, name, level, seed=seed * 1000 + pi) for level in range(1, 6)])
             for name in names] for pi, im in enumerate(images)]


@torch.no_grad()
def evaluate_model(model: CLIP, preprocess: Preprocess, degraded: Sequence[Sequence[Tensor]], levels: Sequence[int],
                   names: Sequence[str]) -> dict[str, Any]:
    """Type accuracy (argmax over type prompts, levels in ``levels``) and Good/Bad ranking SRCC over levels 1-5.

    ``degraded`` comes from :func:`degraded_eval_set` with the same ``names``.
    """
    from scipy.stats import spearmanr

    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    type_txt = F.normalize(model.encode_text(tokenize([type_prompt(n) for n in names]).to(dev)), dim=-1)
    qa_txt = F.normalize(model.encode_text(tokenize(list(ANTONYM_PAIRS["quality"])).to(dev)), dim=-1)
    correct = np.zeros(len(names))
    total = np.zeros(len(names))
    srccs: dict[str, list[float]] = {n: [] for n in names}
    for pi in range(len(degraded)):
        for ti, name in enumerate(names):
            lv = list(range(1, 6))
            batch = degraded[pi][ti]
            feats = F.normalize(model.encode_image(preprocess.normalize(batch.to(dev))), dim=-1)
            pred = (feats @ type_txt.t()).argmax(-1).cpu().numpy()
            good = (model.logit_scale.exp() * feats @ qa_txt.t()).softmax(-1)[:, 0].float().cpu().numpy()
            for k, level in enumerate(lv):
                if level in levels:
                    total[ti] += 1
                    correct[ti] += float(pred[k] == ti)
            if np.ptp(good) > 0:
                srccs[name].append(float(spearmanr(good, -np.array(lv))[0]))
            else:
                srccs[name].append(0.0)
    model.train(was_training)
    per_type_acc = {n: float(correct[i] / max(1, total[i])) for i, n in enumerate(names)}
    per_type_srcc = {n: float(np.mean(v)) for n, v in srccs.items()}
    return {
        "type_acc": float(correct.sum() / max(1, total.sum())),
        "rank_srcc": float(np.mean(list(per_type_srcc.values()))),
        "per_type_acc": per_type_acc,
        "per_type_srcc": per_type_srcc,
    }


def export_model(model: CLIP, arch: CLIPConfig, path: Path, metadata: Mapping[str, str] | None = None) -> str:
    """Write fp16 safetensors with the architecture in the metadata; returns its sha256."""
    from clipiq.clip.convert import save_clipiq_checkpoint
    from clipiq.clip.weights import sha256_file

    sd = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}
    save_clipiq_checkpoint(sd, arch, path, extra_metadata=metadata)
    return sha256_file(path)


def run(cfg: Mapping[str, Any], run_dir: Path, device: torch.device, resume: bool = True,
        progress: bool | None = None) -> dict[str, Any]:
    """Train, evaluate on the held-out photos and export ``degradation-clip.safetensors`` into run_dir."""
    from clipiq.train.engine import Trainer, seed_everything

    seed_everything(int(cfg["seed"]))
    task = DegradationCLIPTask(cfg, device, run_dir)
    summary = Trainer(task, cfg, run_dir, device, resume=resume, progress=progress).fit()
    if not parallel.is_main_process():  # rank 0 exports the model and writes the summary
        return summary
    sha = export_model(task.model, task.arch, run_dir / "degradation-clip.safetensors",
                       {"clipiq_train_config": json.dumps(cfg, sort_keys=True, default=str)})
    summary["sha256"] = sha
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log.info("exported %s (sha256 %s)", run_dir / "degradation-clip.safetensors", sha)
    return summary


def export_checkpoint(checkpoint: Path, out: Path) -> str:
    """Export the model held in a trainer checkpoint (last.safetensors or best.safetensors) as shippable safetensors."""
    ck = read_trainer_checkpoint(checkpoint, ("step", "config", "payload"))
    payload = ck["payload"]
    missing = [k for k in ("arch", "state_dict") if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise CheckpointError(f"{checkpoint}: payload lacks {', '.join(missing)} (not a degradation-clip run?)")
    arch = CLIPConfig.from_dict(payload["arch"])
    model = CLIP(arch)
    load_trainable_state(model, payload["state_dict"], str(checkpoint))
    meta = {"clipiq_train_config": json.dumps(ck["config"], sort_keys=True, default=str),
            "clipiq_train_step": str(ck["step"])}
    return export_model(model, arch, out, meta)
