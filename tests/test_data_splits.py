"""Split protocols: official split, random splits by content group, repeated splits and few-shot draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipiq.data.labels import IQASample
from clipiq.data.splits import Split, few_shot, official_split, repeated_splits, split_by_group


def _grouped(n_groups: int = 40, seed: int = 0) -> list[IQASample]:
    """Records in groups of 1..12 images each, interleaved so groups are not contiguous."""
    rng = np.random.default_rng(seed)
    samples = []
    for g in range(n_groups):
        for j in range(int(rng.integers(1, 13))):
            samples.append(IQASample(Path(f"s{g}_{j}.png"), float(j), ref=Path(f"ref{g}.png")))
    order = rng.permutation(len(samples))
    return [samples[i] for i in order]


def _parts_groups(samples: list[IQASample], split: Split) -> list[set[str]]:
    return [{str(samples[i].ref) for i in part} for part in (split.train, split.val, split.test)]


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.7, 0.3)])
def test_split_by_group_no_leak_and_ratios(ratios: tuple[float, ...]) -> None:
    samples = _grouped()
    n = len(samples)
    split = split_by_group(samples, ratios, seed=3)
    parts = [split.train, split.val, split.test]
    # a partition of all indices
    assert sorted(i for p in parts for i in p) == list(range(n))
    groups = _parts_groups(samples, split)
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    full = (ratios[0], 0.0, ratios[1]) if len(ratios) == 2 else ratios
    largest = max(sum(1 for s in samples if s.ref == r) for r in {s.ref for s in samples})
    for part, r in zip(parts, full, strict=True):
        # midpoint assignment: each of a part's two boundaries moves by at most half a group
        assert abs(len(part) - r * n) <= largest, (len(part), r * n)
    if len(ratios) == 2:
        assert split.val == ()


def test_split_by_group_deterministic_and_order_free() -> None:
    samples = _grouped()
    a = split_by_group(samples, seed=7)
    assert a == split_by_group(samples, seed=7)
    assert a != split_by_group(samples, seed=8)
    # the same records in another order give the same groups in each part
    rev = samples[::-1]
    b = split_by_group(rev, seed=7)
    assert _parts_groups(samples, a) == _parts_groups(rev, b)


def test_split_by_group_explicit_keys() -> None:
    samples = [IQASample(Path(f"{i}.png"), 1.0, scene=f"sc{i % 5}") for i in range(50)]
    split = split_by_group(samples, (0.6, 0.2, 0.2), seed=0, group="scene")
    scenes = [{samples[i].scene for i in p} for p in (split.train, split.val, split.test)]
    assert [len(s) for s in scenes] == [3, 1, 1]
    by_len = split_by_group(samples, (0.5, 0.5), seed=1, group=lambda s: len(s.path.name))
    assert {len(samples[i].path.name) for i in by_len.train}.isdisjoint(
        {len(samples[i].path.name) for i in by_len.test}
    )
    with pytest.raises(ValueError, match="group='ref' but some records have no ref"):
        split_by_group(samples, group="ref")
    with pytest.raises(ValueError, match="group must be"):
        split_by_group(samples, group="colour")


def test_split_every_part_gets_a_group_when_possible() -> None:
    samples = [IQASample(Path(f"{i}.png"), 1.0, scene=f"s{i // 10}") for i in range(30)]  # 3 groups
    split = split_by_group(samples, (0.8, 0.1, 0.1), seed=0)
    assert all(len(p) == 10 for p in (split.train, split.val, split.test))


@pytest.mark.parametrize("ratios", [(0.5, 0.6), (0.5, -0.1, 0.6), (1.0,), (0.2, 0.2, 0.2, 0.4)])
def test_split_bad_ratios(ratios: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="ratios"):
        split_by_group(_grouped(5), ratios)


def test_repeated_splits_use_consecutive_seeds() -> None:
    samples = _grouped(20)
    splits = repeated_splits(samples, n=4, ratios=(0.8, 0.2), seed=10)
    assert [s.seed for s in splits] == [10, 11, 12, 13]
    for k, s in enumerate(splits):
        assert s == split_by_group(samples, (0.8, 0.2), seed=10 + k)
    assert len({s.test for s in splits}) == 4
    with pytest.raises(ValueError, match="n must be at least 1"):
        repeated_splits(samples, n=0)


def test_few_shot_size_subset_determinism_nesting() -> None:
    samples = _grouped()
    split = split_by_group(samples, seed=0)
    k50 = few_shot(split, 50, seed=2)
    assert len(k50) == 50 == len(set(k50))
    assert set(k50) <= set(split.train)
    assert k50 == few_shot(list(split.train)[::-1], 50, seed=2)  # order of the pool does not matter
    assert k50 != few_shot(split, 50, seed=3)
    assert set(few_shot(split, 25, seed=2)) <= set(k50)
    with pytest.raises(ValueError, match="k must be between 1 and the train size"):
        few_shot(split, len(split.train) + 1)
    with pytest.raises(ValueError, match="k must be between"):
        few_shot(split, 0)


def test_official_split() -> None:
    names = ["train", "val", "test", "train", "test"]
    samples = [IQASample(Path(f"{i}.jpg"), 1.0, extra={"split": n}) for i, n in enumerate(names)]
    split = official_split(samples)
    assert (split.train, split.val, split.test) == ((0, 3), (1,), (2, 4))
    assert split.parts()["test"] == (2, 4) and len(split) == 5
    with pytest.raises(ValueError, match="no official split"):
        official_split([IQASample(Path("a.jpg"), 1.0)])
