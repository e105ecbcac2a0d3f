"""clipiq.segment: partitions from slic / felzenszwalb / grid / sam, the registry, NMS and the mask merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from clipiq.core.errors import ClipIQError, ConfigError, UnknownNameError, WeightsError
from clipiq.core.image import pil_to_tensor
from clipiq.segment import (
    box_nms,
    create_segmenter,
    fill_unlabelled,
    grid_labels,
    list_segmenters,
    mask_boxes,
    masks_to_partition,
    merge_small_regions,
    relabel_consecutive,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kodak-kodim23.png"


def assert_partition(labels: torch.Tensor, shape: tuple[int, ...]) -> int:
    """dtype, shape, and labels exactly 0..K-1 in every image; returns K (of the last image)."""
    assert labels.dtype == torch.int64
    assert tuple(labels.shape) == shape
    for one in labels.reshape(-1, *shape[-2:]):
        k = int(one.max()) + 1
        assert int(one.min()) == 0
        assert torch.equal(torch.unique(one), torch.arange(k))
    return k


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    im = Image.open(EXAMPLE).convert("RGB")
    return pil_to_tensor(im.resize((im.width // 2, im.height // 2), Image.BICUBIC))  # 192x128


def two_halves(h: int = 48, w: int = 64) -> torch.Tensor:
    x = torch.empty(3, h, w)
    x[:, :, : w // 2] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    x[:, :, w // 2 :] = torch.tensor([0.1, 0.2, 0.9]).view(3, 1, 1)
    return x


def test_registry_lists_and_is_light():
    assert list_segmenters() == ["slic", "felzenszwalb", "grid", "sam"]
    assert list_segmenters("s*") == ["slic", "sam"]


@pytest.mark.parametrize("name", ["slic", "felzenszwalb", "grid"])
def test_partition_on_a_photo(name, photo):
    seg = create_segmenter(name)
    k = assert_partition(seg(photo), tuple(photo.shape[-2:]))
    assert k >= 2 if name != "grid" else k == 4


@pytest.mark.parametrize("name", ["slic", "felzenszwalb"])
def test_flat_halves_are_separated(name):
    labels = create_segmenter(name)(two_halves())
    left, right = labels[:, :32], labels[:, 32:]
    assert not set(left.unique().tolist()) & set(right.unique().tolist())


def test_batch_input_labels_each_image(photo):
    batch = torch.stack([photo, photo.flip(-1)])
    labels = create_segmenter("slic", n_segments=8)(batch)
    assert_partition(labels, (2, *photo.shape[-2:]))
    assert torch.equal(labels[0], create_segmenter("slic", n_segments=8)(photo))


def test_min_area_merges_small_regions(photo):
    labels = create_segmenter("slic", n_segments=60, min_area=0.05)(photo)
    assert_partition(labels, tuple(photo.shape[-2:]))
    assert torch.bincount(labels.flatten()).min() >= 0.05 * photo.shape[-1] * photo.shape[-2]


def test_grid_rectangles_exact():
    labels = create_segmenter("grid", rows=2, cols=3)(torch.zeros(3, 4, 6))
    expected = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2)
    assert torch.equal(labels, expected)
    assert torch.equal(create_segmenter("grid")(torch.zeros(3, 2, 2)), torch.tensor([[0, 1], [2, 3]]))


def test_grid_not_divisible_and_too_many_rows():
    labels = grid_labels(5, 7, 2, 3)
    assert torch.equal(labels[:, 0], torch.tensor([0, 0, 0, 3, 3]))  # rows of 3 and 2
    assert torch.equal(labels[0], torch.tensor([0, 0, 0, 1, 1, 2, 2]))  # columns of 3, 2, 2
    labels = create_segmenter("grid", rows=5, cols=1)(torch.zeros(3, 3, 2))
    assert_partition(labels, (3, 2))
    assert int(labels.max()) == 2


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.rand(1, 8, 8), "image must have 3"),
        (torch.rand(8, 8), "image must have shape"),
        (torch.rand(3, 8, 8) * 2, r"image values must lie in \[0,1\]"),
        ((torch.rand(3, 8, 8) * 255).to(torch.uint8), "image must be a float"),
        (torch.rand(3, 8, 8).numpy(), "image must be a torch.Tensor"),
    ],
)
def test_bad_input_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        create_segmenter("grid")(bad)


def test_unknown_name_and_option_errors():
    with pytest.raises(UnknownNameError, match="Did you mean slic") as info:
        create_segmenter("slc")
    assert isinstance(info.value, ClipIQError)
    with pytest.raises(ConfigError, match="unknown option.*n_segment'.*known: compactness, min_area, n_segments"):
        create_segmenter("slic", n_segment=10)
    with pytest.raises(ConfigError, match="option rows must be >= 1"):
        create_segmenter("grid", rows=0)
    with pytest.raises(ConfigError, match="option n_segments must be int"):
        create_segmenter("slic", n_segments=2.5)


def test_relabel_fill_and_merge():
    assert torch.equal(relabel_consecutive(torch.tensor([[7, 3], [3, 9]])), torch.tensor([[1, 0], [0, 2]]))
    filled = fill_unlabelled(torch.tensor([[0, -1, -1, 1]]))
    assert torch.equal(filled, torch.tensor([[0, 0, 1, 1]]))
    assert torch.equal(fill_unlabelled(torch.full((2, 2), -1)), torch.zeros(2, 2, dtype=torch.int64))
    labels = torch.zeros(6, 6, dtype=torch.int64)
    labels[:, 3:] = 1
    labels[2, 1] = 2  # a 1-pixel island inside region 0
    labels[0, 5] = 3  # a 1-pixel corner of region 1
    merged = merge_small_regions(labels, 2)
    expected = torch.zeros(6, 6, dtype=torch.int64)
    expected[:, 3:] = 1
    assert torch.equal(merged, expected)


def test_box_nms_suppression_and_order():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9], [21, 20, 30, 30.0]])
    scores = torch.tensor([0.5, 0.9, 0.3, 0.8, 0.95])
    # 4 (0.95) keeps and suppresses 2; 1 (0.9) keeps and suppresses 0 (IoU .81) and 3 (IoU .72)
    assert box_nms(boxes, scores, 0.7).tolist() == [4, 1]
    # at 0.85 nothing overlaps enough except 0 and 3 (IoU .9): 3 outscores 0
    assert box_nms(boxes, scores, 0.85).tolist() == [4, 1, 3]
    assert box_nms(boxes, scores, 1.0).tolist() == [4, 1, 3, 0, 2]
    assert box_nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_mask_boxes():
    masks = torch.zeros(2, 5, 6, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert mask_boxes(masks).tolist() == [[2, 1, 5, 3], [0, 0, 0, 0]]


def test_masks_to_partition():
    masks = torch.zeros(3, 6, 6, dtype=torch.bool)
    masks[0, :, :4] = True  # large, left
    masks[1, 1:3, 1:3] = True  # small, inside 0: paints over it
    masks[2, :, :] = False  # empty: disappears
    labels = masks_to_partition(masks)
    assert_partition(labels, (6, 6))
    assert int(labels.max()) == 1
    assert (labels[1:3, 1:3] == labels[1, 1]).all() and labels[1, 1] != labels[0, 0]
    assert (labels[:, 4:] == labels[0, 0]).all()  # uncovered pixels join the nearest region
    assert torch.equal(masks_to_partition(torch.zeros(0, 3, 4, dtype=torch.bool)), torch.zeros(3, 4, dtype=torch.long))


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.SamConfig(
        vision_config=dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=64,
                           num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sam-tiny")
    transformers.SamModel(cfg).save_pretrained(folder)
    return folder


def test_sam_end_to_end_on_tiny_random_model(tiny_sam, photo):
    seg = create_segmenter("sam", weights=tiny_sam, points_per_side=4, pred_iou_thresh=-1e9,
                           stability_score_thresh=0.0, box_nms_thresh=1.0, min_area=0)
    masks, scores = seg.masks(photo)
    assert masks.dtype == torch.bool and masks.shape[1:] == photo.shape[-2:] and len(scores) == len(masks)
    assert len(masks) == 4 * 4 * 3  # no threshold and no suppression: every point's three masks
    assert assert_partition(seg(photo), tuple(photo.shape[-2:])) > 1
    assert_partition(seg(torch.stack([photo, photo])), (2, *photo.shape[-2:]))
    # default thresholds keep nothing from a random model: still one valid region
    strict = create_segmenter("sam", weights=tiny_sam, points_per_side=2)
    assert_partition(strict(photo), tuple(photo.shape[-2:]))


def test_sam_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_segmenter("sam", weights=tmp_path / "absent")
    with pytest.raises(WeightsError, match="config.json"):
        create_segmenter("sam", weights=tmp_path)
    with pytest.raises(WeightsError, match="no known sha256"):
        create_segmenter("sam")
