"""Binary masks to a partition: mask boxes, greedy box non-maximum suppression (plain torch), and painting.

These are the post-processing steps of automatic mask generation (:mod:`clipiq.segment.sam`), kept apart so
they can be tested on hand-made masks and reused by other mask-producing segmenters.
"""

from __future__ import annotations

import torch
from torch import Tensor

from clipiq.segment.regions import fill_unlabelled, relabel_consecutive

__all__ = ["box_iou", "box_nms", "mask_boxes", "masks_to_partition"]


def mask_boxes(masks: Tensor) -> Tensor:
    """Boxes (M,4) as (x0, y0, x1, y1), pixel edges (x1, y1 exclusive), of binary masks (M,H,W); empty: zeros."""
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (M,H,W), got {tuple(masks.shape)}")
    masks = masks.bool()
    m, h, w = masks.shape
    if m == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    rows, cols = masks.any(2), masks.any(1)  # (M,H), (M,W)
    ys, xs = torch.arange(h, device=masks.device), torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ys, h).amin(1)
    y1 = torch.where(rows, ys, -1).amax(1) + 1
    x0 = torch.where(cols, xs, w).amin(1)
    x1 = torch.where(cols, xs, -1).amax(1) + 1
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    return torch.where(rows.any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union (A,B) of boxes (A,4) and (B,4) given as (x0, y0, x1, y1)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def box_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    Boxes are visited by decreasing score (ties: lower index first); a box is kept unless its IoU with an
    already kept box exceeds ``iou_threshold``. Same result as ``torchvision.ops.nms``, without torchvision.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"boxes must be (M,4) and scores (M,), got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order].float(), boxes[order].float())
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    over = (iou > iou_threshold).cpu()
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]


def masks_to_partition(masks: Tensor) -> Tensor:
    """A partition (H,W) int64 0..K-1 from binary masks (M,H,W) that may overlap or leave gaps.

    Masks are painted largest first, so a smaller mask paints over the larger ones it lies in (an object over
    the background behind it); masks painted over entirely disappear. Pixels no mask covers take the label
    of the nearest covered pixel. No mask at all gives one region.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (M,H,W), got {tuple(masks.shape)}")
    masks = masks.bool().cpu()
    labels = torch.full(masks.shape[1:], -1, dtype=torch.int64)
    if masks.shape[0]:
        areas = masks.flatten(1).sum(1)
        for i in torch.sort(areas, descending=True, stable=True).indices.tolist():
            labels[masks[i]] = i
    return relabel_consecutive(fill_unlabelled(labels))
