"""The stem cache: same maps as the stem, reused by pixels, bounded memory, off when the stem trains."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import clipiq
from clipiq.clip.stem_cache import StemCache, stem_fingerprint, use_stem_cache
from clipiq.eval.probe import RidgeProbe, ridge_loo


@pytest.fixture()
def hybrid():
    return clipiq.load_clip("test-tiny-hybrid", device="cpu")


def _images(n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_cached_maps_equal_the_stems_and_repeats_are_hits(hybrid):
    clip, _ = hybrid
    x = _images(3)
    with torch.no_grad():
        ref = clip.visual.stem_features(x)
        cache = StemCache(64)
        assert use_stem_cache(clip, cache) == 1
        first = clip.visual.stem_features(x)
        # A batch mixing seen and unseen images, one of them twice.
        mixed = torch.cat([x[2:], _images(1, seed=1), x[:1], x[:1]])
        again = clip.visual.stem_features(mixed)
    for a, b in zip(ref, first):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(again.s16[0], ref.s16[2])
    torch.testing.assert_close(again.s16[2], ref.s16[0])
    torch.testing.assert_close(again.s16[3], ref.s16[0])
    assert (cache.misses, cache.hits, len(cache)) == (4, 3, 4)
    # The full forward (with the stage statistics) is unchanged by the cache.
    with torch.no_grad():
        cached = clip.visual(x).pooled
        use_stem_cache(clip, None)
        plain = clip.visual(x).pooled
    torch.testing.assert_close(cached, plain)


def test_budget_evicts_least_recently_used(hybrid):
    clip, _ = hybrid
    one = StemCache(1024)
    use_stem_cache(clip, one)
    with torch.no_grad():
        clip.visual.stem_features(_images(1))
    per_image = one.bytes
    small = StemCache(2.5 * per_image / 2**20)  # room for two images
    use_stem_cache(clip, small)
    a, b, c = _images(1, 1), _images(1, 2), _images(1, 3)
    with torch.no_grad():
        for x in (a, b, a, c):  # a is used again, so b is the oldest when c arrives
            clip.visual.stem_features(x)
        assert len(small) == 2 and small.bytes <= small.budget
        clip.visual.stem_features(a)
        assert small.hits == 2  # a twice; b was evicted
        clip.visual.stem_features(b)
    assert small.misses == 4


def test_cache_is_bypassed_when_the_stem_trains_or_input_needs_gradients(hybrid):
    clip, _ = hybrid
    cache = StemCache(64)
    use_stem_cache(clip, cache)
    x = _images(2).requires_grad_(True)
    maps = clip.visual.stem_features(x)
    maps.s16.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and len(cache) == 0
    clip.visual.freeze_stem(False)
    clip.visual.stem_features(_images(2))
    assert len(cache) == 0 and cache.misses == 0


def test_keys_depend_on_the_stem_weights_and_copies_share_the_cache(hybrid):
    clip, _ = hybrid
    cache = StemCache(64)
    use_stem_cache(clip, cache)
    x = _images(1)
    with torch.no_grad():
        before = clip.visual.stem_features(x).s16
        fp = stem_fingerprint(clip.visual.stem)
        clip.visual.stem.stem.conv.weight.mul_(2)  # an in-place load bumps the version: new fingerprint
        assert stem_fingerprint(clip.visual.stem) != fp
        after = clip.visual.stem_features(x).s16
    assert cache.misses == 2 and not torch.allclose(before, after)
    twin = copy.deepcopy(clip)
    assert twin.visual.stem_cache is cache


def test_bad_budget():
    with pytest.raises(ValueError, match="positive budget"):
        StemCache(0)


def test_ridge_probe_recovers_a_linear_signal_and_checks_shapes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20)) * rng.uniform(0.1, 10, size=20)
    w = rng.normal(size=20)
    y = x @ w + 0.01 * rng.normal(size=200)
    probe = RidgeProbe.fit(x[:150], y[:150])
    assert np.corrcoef(probe.predict(x[150:]), y[150:])[0, 1] > 0.99
    noise = RidgeProbe.fit(rng.normal(size=(60, 40)), rng.normal(size=60))
    assert noise.alpha > probe.alpha  # pure noise is penalised harder
    with pytest.raises(ValueError, match="features must be"):
        probe.predict(x[:, :5])
    with pytest.raises(ValueError, match="N >= 3"):
        ridge_loo(x[:2], y[:2])
