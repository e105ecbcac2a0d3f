"""IQADataset: image/score items, transforms, reference loading, DataLoader workers and bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from clipiq.data.datasets import IQADataset, skip_bad_collate
from clipiq.data.io import ImageLoadError
from clipiq.data.labels import read_csv_labels


def _tiny_set(tmp_path: Path, n: int = 6, corrupt: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    lines = ["image,ref,mos"]
    for i in range(n):
        arr = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"img{i}.png")
        Image.fromarray(255 - arr).save(tmp_path / f"ref{i}.png")
        lines.append(f"img{i}.png,ref{i}.png,{i * 0.5}")
    if corrupt is not None:
        (tmp_path / f"img{corrupt}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage, not a real png")
    f = tmp_path / "labels.csv"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_items_match_pil(tmp_path: Path) -> None:
    labels = read_csv_labels(_tiny_set(tmp_path))
    ds = IQADataset(labels)
    assert len(ds) == 6
    item = ds[3]
    expected = np.asarray(Image.open(tmp_path / "img3.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), expected, atol=1e-7)
    assert item["score"].dtype == torch.float32 and float(item["score"]) == 1.5
    assert item["index"] == 3 and item["path"] == str(tmp_path / "img3.png")
    assert "ref" not in item


def test_transform_and_reference_share_randomness(tmp_path: Path) -> None:
    labels = read_csv_labels(_tiny_set(tmp_path))
    ds = IQADataset(labels, transform=lambda x: x[..., 2:10, 4:12], load_ref=False)
    assert ds[0]["image"].shape == (3, 8, 8)
    calls = []

    def random_flip(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return x.flip(-1)

    pair = IQADataset(labels, transform=random_flip, load_ref=True)[2]
    assert calls == [(2, 3, 12, 16)]  # one call on the stack, so random choices are shared
    raw = np.asarray(Image.open(tmp_path / "img2.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(pair["image"].permute(1, 2, 0).numpy(), raw[:, ::-1], atol=1e-7)
    np.testing.assert_allclose(pair["ref"].permute(1, 2, 0).numpy(), 1 - raw[:, ::-1], atol=1e-6)


def test_load_ref_needs_refs_and_equal_sizes(tmp_path: Path) -> None:
    f = tmp_path / "l.csv"
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (9, 8)).save(tmp_path / "r.png")
    f.write_text("image,ref,mos\na.png,r.png,1\n")
    with pytest.raises(ImageLoadError, match=r"a\.png: size differs from its reference .*r\.png"):
        IQADataset(read_csv_labels(f), load_ref=True)[0]
    f.write_text("image,mos\na.png,1\n")
    with pytest.raises(ValueError, match="load_ref=True but 1 records have no reference"):
        IQADataset(read_csv_labels(f), load_ref=True)


def test_dataloader_with_workers(tmp_path: Path) -> None:
    ds = IQADataset(read_csv_labels(_tiny_set(tmp_path)))
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert [b["image"].shape for b in batches] == [(4, 3, 12, 16), (2, 3, 12, 16)]
    scores = torch.cat([b["score"] for b in batches])
    torch.testing.assert_close(scores, torch.arange(6, dtype=torch.float32) * 0.5)


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    ds = IQADataset(read_csv_labels(_tiny_set(tmp_path, corrupt=4)))
    bad = str(tmp_path / "img4.png")
    with pytest.raises(ImageLoadError) as info:
        ds[4]
    assert info.value.path == bad and bad in str(info.value)
    # through worker processes torch re-raises with the original message (and so the file name)
    with pytest.raises((RuntimeError, ImageLoadError), match="img4.png"):
        list(DataLoader(ds, batch_size=2, num_workers=2))


def test_skip_bad_logs_and_drops(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = IQADataset(read_csv_labels(_tiny_set(tmp_path, corrupt=1)), skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="clipiq.data.datasets"):
        assert ds[1] is None
    assert "img1.png" in caplog.text and "skipping item 1" in caplog.text
    batches = list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=skip_bad_collate))
    assert [b["index"].tolist() for b in batches] == [[0, 2], [3, 4, 5]]
    assert skip_bad_collate([None, None]) is None
