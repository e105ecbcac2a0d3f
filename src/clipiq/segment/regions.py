"""Operations on label maps: consecutive relabelling, filling unlabelled pixels, merging small regions."""

from __future__ import annotations

import heapq

import numpy as np
import torch
from torch import Tensor

__all__ = ["fill_unlabelled", "merge_small_regions", "relabel_consecutive"]


def _check_labels(labels: object, name: str = "labels") -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 2 or labels.numel() == 0:
        raise ValueError(f"{name} must be a non-empty (H,W) label map, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must have an integer dtype, got {labels.dtype}")
    return labels


def relabel_consecutive(labels: Tensor) -> Tensor:
    """Map the distinct values of an integer label map to 0..K-1, keeping their order (int64)."""
    labels = _check_labels(labels).to(torch.int64)
    arr = labels.cpu().numpy()
    lo, hi = int(arr.min()), int(arr.max())
    if hi - lo <= 4 * arr.size:  # a lookup table (numpy): linear time, where torch.unique sorts
        shifted = arr - lo if lo else arr
        table = np.cumsum(np.bincount(shifted.ravel(), minlength=hi - lo + 1) > 0) - 1
        return torch.from_numpy(table[shifted]).to(labels.device)
    _, inverse = torch.unique(labels, return_inverse=True)
    return inverse.to(torch.int64).reshape(labels.shape)


def fill_unlabelled(labels: Tensor) -> Tensor:
    """Give every negative (unlabelled) pixel the label of the nearest labelled pixel (Euclidean distance).

    With no labelled pixel at all, the whole map becomes region 0.
    """
    labels = _check_labels(labels).to(torch.int64)
    missing = (labels < 0).numpy()
    if not missing.any():
        return labels.clone()
    if missing.all():
        return torch.zeros_like(labels)
    from scipy import ndimage  # a few hundred ms to import; only needed here

    _, (iy, ix) = ndimage.distance_transform_edt(missing, return_indices=True)
    return torch.from_numpy(labels.numpy()[iy, ix].copy())


def merge_small_regions(labels: Tensor, min_area: int) -> Tensor:
    """Merge every region smaller than ``min_area`` pixels into a neighbour; returns labels 0..K-1 (int64).

    The smallest region goes first, into the neighbour it shares the longest border with (ties: the larger
    neighbour); areas and borders are updated after each merge, so a merged region can grow past the limit.
    A region with no neighbour (the whole image) stays. Regions are 4-connected neighbours.
    """
    labels = relabel_consecutive(labels)
    arr = labels.numpy()
    k = int(arr.max()) + 1
    if min_area <= 1 or k == 1:
        return labels
    area = np.bincount(arr.ravel(), minlength=k).astype(np.int64)
    if area.min() >= min_area:
        return labels
    # Border lengths between regions, counted over 4-neighbour pixel pairs.
    a = np.concatenate([arr[:, :-1].ravel(), arr[:-1, :].ravel()])
    b = np.concatenate([arr[:, 1:].ravel(), arr[1:, :].ravel()])
    diff = a != b
    lo, hi = np.minimum(a[diff], b[diff]), np.maximum(a[diff], b[diff])
    pairs, counts = np.unique(lo * k + hi, return_counts=True)
    border: list[dict[int, int]] = [{} for _ in range(k)]
    for pair, count in zip(pairs.tolist(), counts.tolist(), strict=True):
        i, j = divmod(pair, k)
        border[i][j] = border[j][i] = count
    parent = list(range(k))
    alive = [True] * k
    heap = [(int(area[r]), r) for r in range(k) if area[r] < min_area]
    heapq.heapify(heap)
    while heap:
        size, r = heapq.heappop(heap)
        if not alive[r] or size != area[r] or area[r] >= min_area or not border[r]:
            continue
        target = max(border[r], key=lambda n: (border[r][n], area[n], -n))
        # Fold r into target: its area, and its borders with everyone else.
        alive[r] = False
        parent[r] = target
        area[target] += area[r]
        for n, length in border[r].items():
            del border[n][r]
            if n != target:
                border[n][target] = border[n].get(target, 0) + length
                border[target][n] = border[target].get(n, 0) + length
        border[r] = {}
        if area[target] < min_area:
            heapq.heappush(heap, (int(area[target]), target))
    root = np.arange(k)
    for r in range(k):  # resolve chains of merges
        t = r
        while parent[t] != t:
            t = parent[t]
        root[r] = t
    return relabel_consecutive(torch.from_numpy(root[arr]))
