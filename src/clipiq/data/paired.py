"""Paired restoration data: degraded/target image pairs from disk or synthesised from clean photos.

Items are dicts with ``lq`` (the degraded or low-resolution input) and ``gt`` (the target), both float
tensors (3,H,W) in [0,1], plus ``index`` and the file path(s). For super-resolution ``gt`` is ``scale``
times larger than ``lq``. Random crops, flips and 90-degree rotations are drawn per item from
``(seed, epoch, index)``, so a run is reproducible whatever the worker count; call :meth:`set_epoch`
each epoch for fresh crops.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipiq.data.io import ImageLoadError, is_image_file, list_images, load_image

logger = logging.getLogger(__name__)

__all__ = [
    "ImagePair",
    "PairedImageDataset",
    "SyntheticPairDataset",
    "draw_augment",
    "find_div2k_pairs",
    "find_pairs",
    "find_srf_pairs",
    "mod_crop",
    "paired_augment",
    "paired_random_crop",
    "write_srf_pairs",
]

PathLike = str | os.PathLike
#: Super-resolution scales of synthesised pairs (``imresize`` by 1/scale): those CDASR trains.
SR_SCALES = (2, 3, 4, 8, 16)
PAIR_KINDS = ("sr", "lowlight_blur", "lowlight", "deblur")
#: The low-light kinds and the part of clipiq.degrade.lowlight_blur_pair each one teaches.
_LOWLIGHT_PARTS = {"lowlight_blur": "both", "lowlight": "lowlight", "deblur": "blur"}

_SRF_NAME = re.compile(r"^(?P<stem>.+)_SRF_(?P<scale>\d+)_(?P<kind>HR|LR)\.(?P<ext>\w+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ImagePair:
    """A degraded (low-resolution) image file and its target file."""

    lq: Path
    gt: Path


def _item_seed(seed: int, epoch: int, index: int, stream: int) -> int:
    """A 32-bit seed for one (seed, epoch, index) item and one random stream (crop/flip or degradation)."""
    return int(np.random.SeedSequence([seed, epoch, index, stream]).generate_state(1)[0])


def find_srf_pairs(folder: PathLike, scale: int) -> list[ImagePair]:
    """Pairs in the Set5/Set14 layout ``image_SRF_{s}/img_NNN_SRF_{s}_{HR,LR}.png``.

    ``folder`` is the set's folder (holding ``image_SRF_{s}``) or the ``image_SRF_{s}`` folder itself.
    """
    root = Path(folder)
    sub = root / f"image_SRF_{scale}"
    d = sub if sub.is_dir() else root
    if not d.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(d.iterdir()):
        m = _SRF_NAME.match(p.name)
        if m and int(m["scale"]) == scale:
            found.setdefault(m["stem"], {})[m["kind"].upper()] = p
    pairs = []
    for stem, kinds in sorted(found.items()):
        if set(kinds) != {"HR", "LR"}:
            raise FileNotFoundError(f"{d}: {stem} has only {sorted(kinds)} for scale {scale}, not HR and LR")
        pairs.append(ImagePair(lq=kinds["LR"], gt=kinds["HR"]))
    if not pairs:
        raise FileNotFoundError(f"{d}: no *_SRF_{scale}_HR / *_SRF_{scale}_LR image pairs")
    return pairs


def write_srf_pairs(hr_images: PathLike | Iterable[PathLike], folder: PathLike, scale: int) -> list[ImagePair]:
    """Write Set5-layout pairs ``folder/image_SRF_{s}/{stem}_SRF_{s}_{HR,LR}.png`` from HR images (a folder or files)
    for :func:`find_srf_pairs`, e.g. the x8/x16 pairs of Set5 or Urban100: the HR cropped to a multiple of the scale,
    the LR its MATLAB-bicubic :func:`clipiq.degrade.imresize` by 1/scale, both 8-bit PNG. A ``*_SRF_{k}_HR`` source
    keeps its stem (``img_001_SRF_4_HR.png`` -> ``img_001_SRF_8_HR.png``) and a ``*_SRF_{k}_LR`` one is skipped, so a
    Set5-layout folder can be the source. Returns the pairs written."""
    from clipiq import degrade
    from clipiq.data.io import save_image

    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
    items = [hr_images] if isinstance(hr_images, (str, os.PathLike)) else list(hr_images)
    paths = list(list_images(items))
    if not paths:
        raise FileNotFoundError(f"no images found in {items}")
    out = Path(folder) / f"image_SRF_{scale}"
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for p in paths:
        m = _SRF_NAME.match(p.name)
        if m and m["kind"].upper() == "LR":  # a Set5-layout folder: only its HR files are sources
            continue
        stem = m["stem"] if m else p.stem
        hr = mod_crop(load_image(p), scale)
        if min(hr.shape[-2:]) < scale:
            raise ValueError(f"{p}: smaller than the scale {scale}")
        pair = ImagePair(lq=out / f"{stem}_SRF_{scale}_LR.png", gt=out / f"{stem}_SRF_{scale}_HR.png")
        save_image(hr, pair.gt)
        save_image(degrade.imresize(hr, 1 / scale).clamp_(0, 1), pair.lq)
        pairs.append(pair)
    return pairs


def find_div2k_pairs(
    root: PathLike, scale: int, split: str = "train", degradation: str = "bicubic"
) -> list[ImagePair]:
    """DIV2K pairs: ``DIV2K_{split}_HR/0001.png`` and ``DIV2K_{split}_LR_{degradation}/X{s}/0001x{s}.png``."""
    base = Path(root)
    hr_dir = base / f"DIV2K_{split}_HR"
    lr_dir = base / f"DIV2K_{split}_LR_{degradation}" / f"X{scale}"
    for d in (hr_dir, lr_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: folder not found (expected the DIV2K layout under {base})")
    pairs = []
    for hr in sorted(p for p in hr_dir.iterdir() if is_image_file(p)):
        lr = lr_dir / f"{hr.stem}x{scale}{hr.suffix}"
        if not lr.is_file():
            raise FileNotFoundError(f"{lr}: low-resolution partner of {hr} not found")
        pairs.append(ImagePair(lq=lr, gt=hr))
    if not pairs:
        raise FileNotFoundError(f"{hr_dir}: no images")
    return pairs


def find_pairs(root: PathLike, scale: int, split: str = "train") -> list[ImagePair]:
    """Super-resolution pairs under ``root`` in either the Set5/Set14 (SRF) or the DIV2K layout."""
    base = Path(root)
    if (base / f"DIV2K_{split}_HR").is_dir():
        return find_div2k_pairs(base, scale, split=split)
    return find_srf_pairs(base, scale)


def paired_random_crop(
    lq: torch.Tensor, gt: torch.Tensor, patch_size: int, scale: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop a ``patch_size`` patch of ``lq`` and the ``patch_size*scale`` patch of ``gt`` covering it."""
    h, w = lq.shape[-2:]
    if gt.shape[-2:] != (h * scale, w * scale):
        raise ValueError(f"gt must be {scale}x the size of lq {(h, w)}, got {tuple(gt.shape[-2:])}")
    if patch_size > min(h, w):
        raise ValueError(f"patch_size {patch_size} is larger than the lq image {h}x{w}")
    top = int(torch.randint(0, h - patch_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - patch_size + 1, (1,), generator=generator))
    g = patch_size * scale
    lq_patch = lq[..., top : top + patch_size, left : left + patch_size]
    gt_patch = gt[..., top * scale : top * scale + g, left * scale : left * scale + g]
    return lq_patch, gt_patch


def paired_augment(
    images: Sequence[torch.Tensor], hflip: bool, vflip: bool, rot90: bool
) -> list[torch.Tensor]:
    """Apply the same flips and transpose (a 90-degree rotation with the flips) to every image."""
    out = []
    for x in images:
        if hflip:
            x = x.flip(-1)
        if vflip:
            x = x.flip(-2)
        if rot90:
            x = x.transpose(-2, -1)
        out.append(x.contiguous())
    return out


def draw_augment(generator: torch.Generator) -> tuple[bool, bool, bool]:
    """Draw (hflip, vflip, rot90) for :func:`paired_augment` from ``generator`` (three fair bits)."""
    bits = torch.randint(0, 2, (3,), generator=generator).tolist()
    return bool(bits[0]), bool(bits[1]), bool(bits[2])


def mod_crop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right of ``x`` so its height and width are multiples of ``scale``."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


class _PairBase(torch.utils.data.Dataset):
    def __init__(self, patch_size: int | None, augment: bool, seed: int, skip_bad: bool):
        if patch_size is not None and patch_size < 1:
            raise ValueError(f"patch_size must be positive or None, got {patch_size}")
        self.patch_size = patch_size
        self.augment = augment
        self.seed = int(seed)
        self.skip_bad = skip_bad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the random crops/augmentations (and synthetic degradations) for a new epoch."""
        self.epoch = int(epoch)

    def _generator(self, index: int, stream: int, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(_item_seed(self.seed, epoch, index, stream))

    def _crop_and_augment(
        self, lq: torch.Tensor, gt: torch.Tensor, scale: int, index: int, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Crop first, then flips, from one stream: the crop is the same with or without augmentation.
        gen = self._generator(index, 0, epoch)
        if self.patch_size is not None:
            lq, gt = paired_random_crop(lq, gt, self.patch_size, scale, gen)
        if self.augment:
            lq, gt = paired_augment([lq, gt], *draw_augment(gen))
        return lq, gt

    def _load(self, index: int, epoch: int) -> dict[str, Any]:
        raise NotImplementedError

    def item(self, index: int, epoch: int) -> dict[str, Any] | None:
        """Item ``index`` as epoch ``epoch`` draws it, whatever :meth:`set_epoch` says: safe from several threads."""
        try:
            return self._load(index, int(epoch))
        except ImageLoadError as e:
            if not self.skip_bad:
                raise
            logger.warning("skipping item %d: %s", index, e)
            return None

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        return self.item(index, self.epoch)


class PairedImageDataset(_PairBase):
    """Degraded/target pairs read from disk (see :func:`find_pairs`), with aligned crops and flips.

    ``scale`` is the size ratio gt/lq (1 for same-size restoration pairs). A gt up to ``scale-1``
    pixels larger than ``scale`` times lq (DIV2K's odd sizes) is cropped at the bottom/right; any other
    mismatch raises a ValueError naming both files.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        scale: int = 1,
        patch_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        skip_bad: bool = False,
    ):
        super().__init__(patch_size, augment, seed, skip_bad)
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.pairs = list(pairs)
        self.scale = int(scale)

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int, epoch: int) -> dict[str, Any]:
        pair = self.pairs[index]
        lq, gt = load_image(pair.lq), load_image(pair.gt)
        h, w = lq.shape[-2:]
        gh, gw = gt.shape[-2:]
        s = self.scale
        if not (h * s <= gh < (h + 1) * s and w * s <= gw < (w + 1) * s):
            raise ValueError(
                f"{pair.gt} is {gw}x{gh} but {pair.lq} is {w}x{h}; expected {s}x ({w * s}x{h * s})"
            )
        gt = gt[..., : h * s, : w * s]
        lq, gt = self._crop_and_augment(lq, gt, s, index, epoch)
        return {"lq": lq, "gt": gt, "index": index, "lq_path": str(pair.lq), "gt_path": str(pair.gt)}


#: The most a dataset's decoded-photo cache holds (the 291 SR photos take about 100 MB, DIV2K's 800 about 6.6 GB).
PHOTO_CACHE_BYTES = 2 * 1024**3


class SyntheticPairDataset(_PairBase):
    """Pairs synthesised on the fly from clean photos.

    ``task="sr"``: ``gt`` is the photo (cropped to a multiple of ``scale``) and ``lq`` its MATLAB-bicubic
    downscale by ``scale`` (2, 3, 4, 8 or 16), rounded to 8-bit levels as saved LR files are.
    ``task="lowlight_blur"``: ``lq, gt`` come from :func:`clipiq.degrade.lowlight_blur_pair` and have the
    same size; ``"lowlight"`` (enhancement only) and ``"deblur"`` (deblurring only) are its single-task parts,
    for enhance-then-deblur baselines. With ``patch_size`` (in lq pixels)
    the gt patch is cut first and degraded on its own, which is much cheaper than degrading the photo.
    ``cache_photos`` keeps each photo decoded (8-bit, 3 bytes a pixel) after its first use, up to
    :data:`PHOTO_CACHE_BYTES` per dataset: training reads every photo many times, and decoding costs more than
    cutting and degrading a patch.
    """

    def __init__(
        self,
        photos: PathLike | Iterable[PathLike],
        task: str = "sr",
        scale: int = 4,
        patch_size: int | None = None,
        augment: bool = False,
        seed: int = 0,
        skip_bad: bool = False,
        cache_photos: bool = False,
    ):
        super().__init__(patch_size, augment, seed, skip_bad)
        if task not in PAIR_KINDS:
            raise ValueError(f"task must be one of {PAIR_KINDS}, got {task!r}")
        if task == "sr" and scale not in SR_SCALES:
            raise ValueError(f"scale must be one of {SR_SCALES} for task 'sr', got {scale}")
        items = [photos] if isinstance(photos, (str, os.PathLike)) else list(photos)
        self.paths = list(list_images(items, recursive=True))
        if not self.paths:
            raise FileNotFoundError(f"no images found in {items}")
        self.task = task
        self.scale = int(scale) if task == "sr" else 1
        self._cache: dict[int, torch.Tensor] | None = {} if cache_photos else None
        self._cache_bytes = 0

    def __len__(self) -> int:
        return len(self.paths)

    def photo(self, index: int) -> torch.Tensor:
        """Photo ``index`` as a (3,H,W) float tensor in [0,1], decoded once per dataset with ``cache_photos``."""
        if self._cache is None:
            return load_image(self.paths[index])
        kept = self._cache.get(index)
        if kept is None:
            # 8-bit levels hold an 8-bit photo exactly at a quarter of float32's memory.
            kept = load_image(self.paths[index]).mul(255).round_().to(torch.uint8)
            if self._cache_bytes + kept.numel() <= PHOTO_CACHE_BYTES:  # beyond the cap: decoded on every use
                self._cache[index] = kept  # a race only decodes twice: both threads store the same tensor
                self._cache_bytes += kept.numel()
        return kept.float().div_(255)

    def _load(self, index: int, epoch: int) -> dict[str, Any]:
        from clipiq import degrade

        path = self.paths[index]
        photo = self.photo(index)
        s = self.scale
        if self.patch_size is not None:
            g = self.patch_size * s
            h, w = photo.shape[-2:]
            if g > min(h, w):
                raise ValueError(f"{path}: {w}x{h} is smaller than the gt patch {g}x{g}")
            # Crop the gt patch with the lq-grid crop, so positions match PairedImageDataset's.
            gen = self._generator(index, 0, epoch)
            top = int(torch.randint(0, (h - g) // s + 1, (1,), generator=gen)) * s
            left = int(torch.randint(0, (w - g) // s + 1, (1,), generator=gen)) * s
            gt = photo[..., top : top + g, left : left + g]
        else:
            gen = self._generator(index, 0, epoch)
            gt = mod_crop(photo, s)
        if self.task == "sr":
            # The bicubic source domain: rounded to 8-bit levels like LR files on disk (overshoot clipped).
            lq = degrade.make_lr(gt, "bicubic", s)
        else:
            lq, gt = degrade.lowlight_blur_pair(gt, seed=_item_seed(self.seed, epoch, index, 1),
                                                parts=_LOWLIGHT_PARTS[self.task])
        if self.augment:
            lq, gt = paired_augment([lq, gt], *draw_augment(gen))
        return {"lq": lq, "gt": gt, "index": index, "path": str(path)}
