"""A memory-bounded cache of a frozen convolutional stem's maps, keyed by the pixels of each image.

Training a method on a hybrid backbone (``VisionConfig.stem``) runs the frozen EfficientNet stem on every
view, and on CPU the stem costs far more than the small transformer after it. When views repeat (a fixed
global view, crops from a fixed grid, the same validation images every evaluation), the stem's maps can be
reused. The key is a hash of each image's bytes, shape, dtype and device plus a fingerprint of the stem's
weights, so a cache is correct for any caller that hands it the same pixels, and one cache can be shared by
several models on the same stem (the protocol's rounds, a benchmark's rows).

Entries are evicted least recently used first once ``budget_mb`` is exceeded. The cache is consulted only
when the stem is frozen and the input needs no gradient (see ``VisionTower.stem_features``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from clipiq.clip.efficientnet import StemMaps

_Entry = tuple[Tensor, ...]


def _digest(x: Tensor) -> bytes:
    """A content hash of one tensor (bytes, shape, dtype and device)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(x.shape)}|{x.dtype}|{x.device}".encode())
    h.update(x.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    return h.digest()


def tensor_digest(x: Tensor) -> bytes:
    """A 16-byte content hash of one tensor (its bytes, shape, dtype and device): a cache key for per-image work."""
    return _digest(x)


def stem_fingerprint(stem: nn.Module) -> bytes:
    """A hash of a stem's weights and buffers: two stems share cache entries only when these agree."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(stem.state_dict().items()):
        h.update(name.encode())
        h.update(_digest(t))
    return h.digest()


class StemCache:
    """Per-image stem maps (see :class:`~clipiq.clip.efficientnet.StemMaps`), LRU-evicted within ``budget_mb``."""

    def __init__(self, budget_mb: float = 2048):
        if not budget_mb > 0:
            raise ValueError(f"a stem cache needs a positive budget in MB, got {budget_mb!r}")
        self.budget = int(budget_mb * 2**20)
        self._store: OrderedDict[bytes, _Entry] = OrderedDict()
        self._fingerprints: dict[int, tuple[int, bytes]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        self._store.clear()
        self.bytes = 0

    def _fingerprint(self, stem: nn.Module) -> bytes:
        # Weights of a frozen stem do not change; the version counters catch an in-place load all the same.
        version = sum(p._version for p in stem.state_dict().values())
        known = self._fingerprints.get(id(stem))
        if known is None or known[0] != version:
            known = (version, stem_fingerprint(stem))
            self._fingerprints[id(stem)] = known
        return known[1]

    def features(self, x: Tensor, stem: nn.Module, compute: Callable[[Tensor], StemMaps]) -> StemMaps:
        """The maps of images x (N,3,H,W): cached ones reused, the others computed in one batch and stored."""
        prefix = self._fingerprint(stem)
        keys = [prefix + _digest(xi) for xi in x]
        todo: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self._store and k not in todo:
                todo[k] = i
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        fresh: dict[bytes, _Entry] = {}
        if todo:
            with torch.no_grad():
                maps = compute(x[list(todo.values())])
            for j, k in enumerate(todo):
                # Clones, so an entry does not keep the whole batch's storage alive.
                fresh[k] = tuple(m[j].clone() for m in maps if m is not None)
        entries = [fresh.get(k) or self._store[k] for k in keys]
        for k in keys:
            if k in self._store:
                self._store.move_to_end(k)
        for k, e in fresh.items():
            self._store[k] = e
            self.bytes += sum(t.numel() * t.element_size() for t in e)
        while self.bytes > self.budget and self._store:
            _, old = self._store.popitem(last=False)
            self.bytes -= sum(t.numel() * t.element_size() for t in old)
        return StemMaps(*(torch.stack(parts) for parts in zip(*entries)))

    def __deepcopy__(self, memo: dict) -> StemCache:
        # A copied model shares its cache: the entries depend only on pixels and the stem's weights.
        return self

    def __repr__(self) -> str:
        return (f"StemCache({len(self)} images, {self.bytes / 2**20:.0f}/{self.budget / 2**20:.0f} MB, "
                f"{self.hits} hits, {self.misses} misses)")


def use_stem_cache(module: nn.Module, cache: StemCache | None) -> int:
    """Attach ``cache`` (None detaches) to every hybrid image tower inside ``module``; returns how many."""
    n = 0
    for m in module.modules():
        if getattr(m, "stem", None) is not None and hasattr(m, "stem_cache"):
            m.stem_cache = cache
            n += 1
    return n


__all__ = ["StemCache", "stem_fingerprint", "tensor_digest", "use_stem_cache"]
