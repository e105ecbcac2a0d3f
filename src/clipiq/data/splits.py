"""Train/val/test protocols for IQA data: official splits, leak-free random splits by content, few-shot.

Synthetic IQA sets hold many distorted versions of each reference image; a random split by image would put
the same content in train and test and inflate results. :func:`split_by_group` keeps every content group
(scene, else reference image, else the image itself; see :attr:`IQASample.group`) in one part.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clipiq.data.labels import IQASample

logger = logging.getLogger(__name__)

__all__ = ["Split", "few_shot", "official_split", "repeated_splits", "split_by_group"]

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Indices into a record list for the train, val and test parts (each sorted)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    seed: int | None = None

    def parts(self) -> dict[str, tuple[int, ...]]:
        """The three parts by name."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def __len__(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)


def official_split(samples: Sequence[IQASample]) -> Split:
    """The split a dataset ships with, read from ``extra["split"]`` (KonIQ-10k's ``set`` column)."""
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    unassigned = 0
    for i, s in enumerate(samples):
        part = s.extra.get("split")
        if part in parts:
            parts[part].append(i)
        else:
            unassigned += 1
    if unassigned == len(samples):
        raise ValueError("these records carry no official split (no extra['split']); use split_by_group")
    if unassigned:
        logger.warning("%d of %d records have no official split and are left out", unassigned, len(samples))
    return Split(tuple(parts["train"]), tuple(parts["val"]), tuple(parts["test"]))


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) == 2:
        r = (r[0], 0.0, r[1])
    if len(r) != 3 or any(x < 0 or not math.isfinite(x) for x in r):
        raise ValueError(f"ratios must be 2 or 3 non-negative numbers (train, [val,] test), got {ratios!r}")
    total = sum(r)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {ratios!r} (sum {total:g})")
    return r  # type: ignore[return-value]


def _group_keys(samples: Sequence[IQASample], group: str | Callable[[IQASample], object]) -> list[object]:
    if callable(group):
        return [group(s) for s in samples]
    if group == "auto":
        return [s.group for s in samples]
    if group in ("scene", "ref", "path"):
        keys = [getattr(s, group) for s in samples]
        if any(k is None for k in keys):
            raise ValueError(f"group={group!r} but some records have no {group}")
        return [str(k) for k in keys]
    raise ValueError(f"group must be 'auto', 'scene', 'ref', 'path' or a callable, got {group!r}")


def split_by_group(
    samples: Sequence[IQASample],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    group: str | Callable[[IQASample], object] = "auto",
) -> Split:
    """Random train/val/test split where no content group appears in two parts.

    Groups are shuffled with ``seed`` and laid end to end; each goes to the part its midpoint falls in,
    so item counts follow ``ratios`` up to one group's size. A part with a positive ratio is never left
    empty while another part holds two or more groups.
    """
    r = _check_ratios(ratios)
    keys = _group_keys(samples, group)
    members: dict[object, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    # Sort before shuffling so the result does not depend on record order within the file.
    order = sorted(members, key=str)
    rng = np.random.default_rng(seed)
    order = [order[j] for j in rng.permutation(len(order))]
    bounds = np.cumsum(r) * len(samples)
    assigned: list[list[object]] = [[], [], []]
    start = 0
    for k in order:
        mid = start + len(members[k]) / 2
        part = min(int(np.searchsorted(bounds, mid, side="right")), 2)
        while r[part] == 0:  # only float rounding at the very end lands here; step back to a real part
            part -= 1
        assigned[part].append(k)
        start += len(members[k])
    for p in range(3):
        if r[p] > 0 and not assigned[p]:
            donor = max(range(3), key=lambda q: len(assigned[q]))
            if len(assigned[donor]) > 1:
                assigned[p].append(assigned[donor].pop())
            else:
                logger.warning("too few groups (%d) to fill every part of ratios %s", len(order), ratios)
    parts = [tuple(sorted(i for k in ks for i in members[k])) for ks in assigned]
    return Split(parts[0], parts[1], parts[2], seed=seed)


def repeated_splits(
    samples: Sequence[IQASample],
    n: int = 10,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    group: str | Callable[[IQASample], object] = "auto",
) -> list[Split]:
    """``n`` group splits with seeds ``seed .. seed+n-1`` (the usual report is the median over them)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [split_by_group(samples, ratios, seed=seed + i, group=group) for i in range(n)]


def few_shot(train: Sequence[int] | Split, k: int, seed: int = 0) -> tuple[int, ...]:
    """``k`` labelled indices drawn from the train part with ``seed``.

    Draws are nested: for one seed, the k=25 subset is contained in the k=50 subset.
    """
    pool = sorted(train.train if isinstance(train, Split) else train)
    if not 0 < k <= len(pool):
        raise ValueError(f"k must be between 1 and the train size {len(pool)}, got {k}")
    perm = np.random.default_rng(seed).permutation(len(pool))
    return tuple(sorted(pool[j] for j in perm[:k]))
