"""Segment Anything (SAM) as a segmenter: automatic mask generation from a grid of point prompts.

Kirillov et al., *Segment Anything*, ICCV 2023. The model is transformers' ``SamModel``; the preprocessing is
done here in torch (``SamImageProcessor`` needs torchvision): resize the longest side to the encoder's input
size (1024 for the released models), normalise with the ImageNet mean/std, pad bottom-right with zeros.

Automatic masks, as in the authors' ``SamAutomaticMaskGenerator`` (one crop):

1. the image embedding is computed once;
2. a ``points_per_side`` x ``points_per_side`` grid of single-point prompts goes through the prompt encoder
   and mask decoder in batches of ``points_per_batch``, three masks per point;
3. masks are kept when their predicted IoU exceeds ``pred_iou_thresh`` and their stability score (IoU of the
   mask thresholded at +-``stability_score_offset`` logits) exceeds ``stability_score_thresh``;
4. greedy non-maximum suppression on the masks' boxes (``box_nms_thresh``, plain torch);
5. the masks become a partition (:func:`clipiq.segment.masks.masks_to_partition`): larger masks first,
   smaller ones paint over, uncovered pixels take the nearest region; then regions under ``min_area``
   (default 0.1% of the image) are merged into a neighbour.

Weights: ``weights=FOLDER``, a folder written by ``SamModel.save_pretrained`` (``config.json`` and
``model.safetensors``), for example a copy of https://huggingface.co/facebook/sam-vit-base (Apache-2.0).
Without ``weights`` the hub record :data:`SAM_CHECKPOINTS` ``["sam-vit-base"]`` is resolved through
:func:`clipiq.core.hub.resolve`: its sha256 is not recorded yet, so it needs ``allow_unverified=True``, and it
downloads only where the network allows (not in clipiq's offline test and benchmark environments, where SAM is
exercised with a tiny random ``SamConfig`` only). Only safetensors are loaded; nothing in the folder runs code.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from clipiq.core.device import resolve_device
from clipiq.core.errors import ConfigError, WeightsError
from clipiq.core.hub import HubFile, WeightsUnavailableError, resolve
from clipiq.segment.base import Segmenter, check_option
from clipiq.segment.masks import box_nms, mask_boxes, masks_to_partition

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SAM_CHECKPOINTS", "SamSegmenter", "SamWeights", "load_sam_model",
           "point_grid", "preprocess"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class SamWeights(HubFile):
    """One file of a SAM checkpoint folder on the Hugging Face hub."""

    kind: ClassVar[str] = "SAM weights"

    def local_copy_hint(self) -> str:
        return "create_segmenter('sam', weights=FOLDER), FOLDER written by SamModel.save_pretrained"

    def offline_alternatives(self) -> str:
        return "Offline segmenters that need no weights: slic (the default), felzenszwalb and grid."


def _sam_files(repo: str, description: str) -> tuple[SamWeights, SamWeights]:
    # Both files under one record name share one cache folder (cache_dir()/weights/<name>/), which
    # SamModel.from_pretrained then reads. The sha256s are not recorded yet (no copy was available to hash).
    base = SamWeights(name=repo.split("/")[-1], sha256=None, hf_repo=repo, hf_filename="config.json",
                      license="Apache-2.0", description=description)
    return base, dataclasses.replace(base, hf_filename="model.safetensors")


#: Named SAM checkpoints: (config.json, model.safetensors) records.
SAM_CHECKPOINTS: dict[str, tuple[SamWeights, SamWeights]] = {
    "sam-vit-base": _sam_files("facebook/sam-vit-base", "SAM ViT-B (Meta AI, 2023), 94M parameters, 1024 px input"),
}


def _weights_folder(weights: str | Path | None, checkpoint: str, allow_unverified: bool) -> Path:
    if weights is not None:
        folder = Path(weights).expanduser()
        if not folder.exists():
            raise WeightsUnavailableError(
                f"SAM weights folder {folder} does not exist; pass weights= a folder written by "
                f"SamModel.save_pretrained (config.json and model.safetensors), e.g. a copy of facebook/sam-vit-base"
            )
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise WeightsError(f"SAM weights {folder} must be a folder with config.json and model.safetensors "
                               "(as written by SamModel.save_pretrained)")
        return folder
    if checkpoint not in SAM_CHECKPOINTS:
        raise ConfigError(f"segmenter sam: unknown checkpoint {checkpoint!r}; known: {', '.join(SAM_CHECKPOINTS)}")
    paths = [resolve(record, allow_unverified=allow_unverified) for record in SAM_CHECKPOINTS[checkpoint]]
    if paths[0].parent == paths[1].parent:
        return paths[0].parent
    folder = Path(tempfile.mkdtemp(prefix="clipiq-sam-"))  # files cached apart (keyed by sha256): link them
    for p in paths:
        (folder / p.name).symlink_to(p.resolve())
    return folder


def load_sam_model(weights: str | Path | None = None, *, checkpoint: str = "sam-vit-base",
                   allow_unverified: bool = False) -> Any:
    """A ``transformers.SamModel`` in eval mode from a save_pretrained folder, or the hub record ``checkpoint``."""
    folder = _weights_folder(weights, checkpoint, allow_unverified)
    from transformers import SamModel

    try:
        model = SamModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"SAM weights in {folder} could not be loaded: {exc}") from exc
    return model.eval()


def preprocess(image: Tensor, size: int) -> tuple[Tensor, tuple[int, int]]:
    """The model input (1,3,size,size) for an image (3,H,W) in [0,1], and the resized (h, w) inside the padding."""
    h, w = image.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    x = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x.clamp(0.0, 1.0) - mean) / std
    return F.pad(x, (0, size - nw, 0, size - nh)), (nh, nw)


def point_grid(points_per_side: int, height: int, width: int) -> Tensor:
    """(n*n, 2) prompt points (x, y) at the centres of an n x n grid over a height x width image."""
    t = (torch.arange(points_per_side, dtype=torch.float32) + 0.5) / points_per_side
    ys, xs = torch.meshgrid(t * height, t * width, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)


class SamSegmenter(Segmenter):
    """Segment Anything automatic masks merged into a partition; see the module docstring for the steps."""

    name: ClassVar[str] = "sam"

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        checkpoint: str = "sam-vit-base",
        allow_unverified: bool = False,
        points_per_side: int = 8,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        mask_threshold: float = 0.0,
        device: str | torch.device | None = "cpu",
        min_area: int | float = 0.001,
    ) -> None:
        super().__init__(min_area=min_area)
        n = self.name
        self.points_per_side = check_option(n, "points_per_side", points_per_side, kind=int, low=1)
        self.points_per_batch = check_option(n, "points_per_batch", points_per_batch, kind=int, low=1)
        self.pred_iou_thresh = float(check_option(n, "pred_iou_thresh", pred_iou_thresh, kind=(int, float)))
        self.stability_score_thresh = float(check_option(n, "stability_score_thresh", stability_score_thresh,
                                                         kind=(int, float), high=1.0))
        self.stability_score_offset = float(check_option(n, "stability_score_offset", stability_score_offset,
                                                         kind=(int, float), low=0))
        self.box_nms_thresh = float(check_option(n, "box_nms_thresh", box_nms_thresh, kind=(int, float), low=0,
                                                 high=1.0))
        self.mask_threshold = float(check_option(n, "mask_threshold", mask_threshold, kind=(int, float)))
        self.device = resolve_device(device)
        self.weights = weights
        self._model = load_sam_model(weights, checkpoint=checkpoint, allow_unverified=allow_unverified).to(self.device)
        self.input_size = int(self._model.config.vision_config.image_size)

    @torch.no_grad()
    def masks(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Kept binary masks (M,H,W) and their predicted IoUs (M,) for one image (3,H,W), after NMS."""
        h, w = image.shape[-2:]
        pixels, (nh, nw) = preprocess(image, self.input_size)
        model = self._model
        embedding = model.get_image_embeddings(pixels.to(self.device))
        points = point_grid(self.points_per_side, h, w) * torch.tensor([nw / w, nh / h])
        all_masks, all_scores = [], []
        for start in range(0, len(points), self.points_per_batch):
            chunk = points[start:start + self.points_per_batch].to(self.device)
            out = model(image_embeddings=embedding, input_points=chunk[None, :, None, :], multimask_output=True)
            logits = out.pred_masks[0].flatten(0, 1)  # (P*3, h_lr, w_lr)
            iou = out.iou_scores[0].flatten()
            keep = iou > self.pred_iou_thresh
            masks, scores = self._upscale_and_filter(logits[keep], iou[keep], (nh, nw), (h, w))
            if len(masks):
                k = box_nms(mask_boxes(masks), scores, self.box_nms_thresh)
                all_masks.append(masks[k])
                all_scores.append(scores[k])
        if not all_masks:
            return torch.zeros((0, h, w), dtype=torch.bool), torch.zeros(0)
        masks, scores = torch.cat(all_masks), torch.cat(all_scores)
        k = box_nms(mask_boxes(masks), scores, self.box_nms_thresh)
        return masks[k], scores[k]

    def _upscale_and_filter(self, logits: Tensor, iou: Tensor, resized: tuple[int, int],
                            size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        # Low-res logits -> padded input size -> crop the image part -> original size (as SAM's post-processing),
        # a few masks at a time to bound memory; then the stability filter and empty masks out.
        kept_masks, kept_scores = [], []
        s = self.input_size
        for start in range(0, len(logits), 16):
            lg = logits[start:start + 16, None].float()
            lg = F.interpolate(lg, size=(s, s), mode="bilinear", align_corners=False)
            lg = lg[..., : resized[0], : resized[1]]
            lg = F.interpolate(lg, size=size, mode="bilinear", align_corners=False)[:, 0]
            inter = (lg > self.mask_threshold + self.stability_score_offset).flatten(1).sum(1)
            union = (lg > self.mask_threshold - self.stability_score_offset).flatten(1).sum(1)
            stability = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter, dtype=torch.float))
            masks = lg > self.mask_threshold
            ok = (stability >= self.stability_score_thresh) & masks.flatten(1).any(1)
            kept_masks.append(masks[ok].cpu())
            kept_scores.append(iou[start:start + 16][ok].float().cpu())
        if not kept_masks:
            return torch.zeros((0, *size), dtype=torch.bool), torch.zeros(0)
        return torch.cat(kept_masks), torch.cat(kept_scores)

    def segment_one(self, image: Tensor) -> Tensor:
        masks, _ = self.masks(image)
        return masks_to_partition(masks)

    def __repr__(self) -> str:
        return (f"SamSegmenter(weights={self.weights!r}, points_per_side={self.points_per_side}, "
                f"pred_iou_thresh={self.pred_iou_thresh}, stability_score_thresh={self.stability_score_thresh}, "
                f"min_area={self.min_area!r})")


