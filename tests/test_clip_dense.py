"""Dense CLIP maps: shapes, polarity, exact tiling, locality, batching, precision, errors, and real blur maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import clipiq
from clipiq.clip import DenseMaps, dense_features, dense_maps, pair_probabilities
from clipiq.clip.dense import default_radius, pair_text_features, resolve_pairs
from clipiq.core.errors import ClipIQError, UnknownNameError
from clipiq.core.image import pil_to_tensor
from clipiq.degrade import apply

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return clipiq.load_clip("test-tiny", device="cpu")


@pytest.fixture(scope="module")
def trained():
    return clipiq.load_clip("degradation-clip", device="cpu")


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ shapes and values


def test_feature_shapes_cover_the_whole_image(tiny):
    clip, pre = tiny
    feats = dense_features(clip, pre, _rand(2, 3, 100, 70))
    # 100x70 is padded to 112x80: every pixel lies under a cell.
    assert feats.shape == (2, clip.cfg.embed_dim, 7, 5) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(2, 7, 5))
    # A single (3,H,W) image and one smaller than a patch both work.
    assert dense_features(clip, pre, _rand(3, 32, 48)).shape == (1, clip.cfg.embed_dim, 2, 3)
    assert dense_features(clip, pre, _rand(1, 3, 10, 12)).shape == (1, clip.cfg.embed_dim, 1, 1)


def test_map_shapes_names_and_sizes(tiny):
    clip, pre = tiny
    pairs = ["quality", "sharpness", ("Crisp photo.", "Smeared photo.")]
    out = dense_maps(clip, pre, _rand(2, 3, 100, 70), pairs)
    assert isinstance(out, DenseMaps)
    assert out.maps.shape == (2, 3, 100, 70) and out.grid.shape == (2, 3, 7, 5)
    assert out.names == ("quality", "sharpness", "Crisp photo. / Smeared photo.")
    assert out.pairs[1] == ("Sharp photo.", "Blurry photo.") and out.patch_size == 16
    assert float(out.maps.min()) >= 0.0 and float(out.maps.max()) <= 1.0
    torch.testing.assert_close(out["sharpness"], out.maps[:, 1])
    assert dense_maps(clip, pre, _rand(2, 3, 100, 70), "noisiness", size="grid").maps.shape == (2, 1, 7, 5)
    assert dense_maps(clip, pre, _rand(2, 3, 100, 70), "noisiness", size=(50, 35)).maps.shape == (2, 1, 50, 35)


def test_probability_is_the_negative_prompts_softmax(tiny):
    """Polarity: each cell holds softmax(logit_scale * cos)[negative], computed by hand here."""
    clip, pre = tiny
    x = _rand(1, 3, 64, 96)
    feats = dense_features(clip, pre, x)
    with torch.no_grad():
        text = clip.encode_text(clipiq.tokenize(["Sharp photo.", "Blurry photo."]), normalize=True)
        logits = clip.logit_scale.exp() * torch.einsum("ndhw,jd->njhw", feats, text)
    expected = logits.softmax(dim=1)[:, 1:]
    torch.testing.assert_close(pair_probabilities(clip, feats, "sharpness"), expected)
    torch.testing.assert_close(dense_maps(clip, pre, x, "sharpness").grid, expected)


def test_upsampled_map_puts_each_cell_at_its_patch_centre(tiny):
    clip, pre = tiny
    out = dense_maps(clip, pre, _rand(1, 3, 64, 96), "quality")
    # A cell's centre (16i+8, 16j+8) falls between pixels 16i+7 and 16i+8; bilinear averages to the cell there.
    for i, j in [(1, 1), (2, 4), (1, 3)]:
        centre = out.maps[0, 0, 16 * i + 7 : 16 * i + 9, 16 * j + 7 : 16 * j + 9].mean()
        torch.testing.assert_close(centre, out.grid[0, 0, i, j])


# ----------------------------------------------------------------------------- tiling, locality and batching


def test_tiling_is_exact(tiny):
    clip, pre = tiny
    x = _rand(2, 3, 128, 160)
    whole = dense_features(clip, pre, x, radius=2, max_tokens=100_000)
    tiled = dense_features(clip, pre, x, radius=2, max_tokens=30)  # one cell per tile: (5x5 halo) + 1
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_each_cell_sees_only_its_neighbourhood(tiny):
    """With radius r and L layers a cell depends on patches within L*r cells; further changes leave it untouched."""
    clip, pre = tiny
    r, layers = 1, clip.cfg.vision.layers
    x = _rand(1, 3, 64, 160)
    y = x.clone()
    y[..., 112:] = _rand(1, 3, 64, 48, seed=1)  # columns 7..9 of a 10-cell-wide grid
    fx = dense_features(clip, pre, x, radius=r)
    fy = dense_features(clip, pre, y, radius=r)
    reach = 7 - layers * r
    torch.testing.assert_close(fy[..., :reach], fx[..., :reach], atol=1e-6, rtol=1e-6)
    assert (fy[..., reach:7] - fx[..., reach:7]).abs().amax() > 1e-4  # the neighbourhood does change


def test_an_image_alone_equals_it_inside_a_batch(tiny):
    clip, pre = tiny
    x = _rand(3, 3, 80, 112)
    batched = dense_maps(clip, pre, x, ["quality", "brightness"], batch_size=8)
    for i in range(3):
        alone = dense_maps(clip, pre, x[i], ["quality", "brightness"])
        torch.testing.assert_close(alone.maps[0], batched.maps[i], atol=1e-5, rtol=1e-5)
    chunked = dense_maps(clip, pre, x, ["quality", "brightness"], batch_size=2)
    torch.testing.assert_close(chunked.grid, batched.grid, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------- precision, device, gradients


def test_input_dtype_and_model_precision(tiny):
    clip, pre = tiny
    x = _rand(1, 3, 48, 64)
    ref = dense_maps(clip, pre, x, "quality")
    torch.testing.assert_close(dense_maps(clip, pre, x.double(), "quality").maps, ref.maps)
    clip16, pre16 = clipiq.load_clip("test-tiny", device="cpu", precision="bf16")
    low = dense_maps(clip16, pre16, x, "quality")
    assert low.maps.dtype == torch.float32 and low.maps.device == clip16.device
    assert (low.grid - ref.grid).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_the_models_device():
    clip, pre = clipiq.load_clip("test-tiny", device="cuda")
    out = dense_maps(clip, pre, _rand(1, 3, 48, 64), "quality")
    assert out.maps.device.type == "cuda"
    cpu = dense_maps(*clipiq.load_clip("test-tiny", device="cpu"), _rand(1, 3, 48, 64), "quality")
    torch.testing.assert_close(out.grid.cpu(), cpu.grid, atol=1e-4, rtol=1e-4)


def test_inference_builds_no_graph(tiny):
    clip, pre = tiny
    x = _rand(1, 3, 48, 64).requires_grad_(True)
    with torch.enable_grad():
        out = dense_maps(clip, pre, x, "quality")
        feats = dense_features(clip, pre, x)
    for t in (out.maps, out.grid, feats):
        assert not t.requires_grad and t.grad_fn is None
    # Plain tensors, not inference-mode ones: callers may use them as training targets.
    assert not torch.is_inference(out.maps)


def test_text_embeddings_are_cached_and_follow_weight_changes():
    clip, _ = clipiq.load_clip("test-tiny", device="cpu")
    first = pair_text_features(clip, ["quality", "sharpness"])
    assert first.shape == (2, 2, clip.cfg.embed_dim)
    assert pair_text_features(clip, ["quality", "sharpness"]) is first
    with torch.no_grad():
        clip.text.proj.mul_(-1.0)  # an in-place update, as an optimiser step makes
    again = pair_text_features(clip, ["quality", "sharpness"])
    torch.testing.assert_close(again, -first)


# ------------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.rand(2, 4, 32, 32), ValueError, "3 \\(RGB\\) channels"),
        (torch.rand(32, 32), ValueError, "shape"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), ValueError, "float"),
        (torch.full((1, 3, 32, 32), 2.0), ValueError, "\\[0,1\\]"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images_are_refused(tiny, images, error, match):
    clip, pre = tiny
    with pytest.raises(error, match=match):
        dense_maps(clip, pre, images, "quality")


def test_bad_pairs_and_options_are_refused(tiny, trained):
    clip, pre = tiny
    x = _rand(1, 3, 32, 32)
    with pytest.raises(UnknownNameError, match="unknown prompt pair 'sharpnes'.*Did you mean sharpness"):
        dense_maps(clip, pre, x, ["quality", "sharpnes"])
    with pytest.raises(ClipIQError):
        resolve_pairs("blurriness")
    with pytest.raises(ValueError, match="two non-empty strings"):
        resolve_pairs([("Sharp photo.",)])
    with pytest.raises(ValueError, match="no prompt pairs"):
        resolve_pairs([])
    with pytest.raises(ValueError, match="radius"):
        dense_features(clip, pre, x, radius=0)
    with pytest.raises(ValueError, match="max_tokens=10 is too small"):
        dense_features(clip, pre, _rand(1, 3, 128, 128), radius=2, max_tokens=10)
    with pytest.raises(ValueError, match="max_tokens must be"):
        dense_features(clip, pre, x, max_tokens=0)
    with pytest.raises(ValueError, match="size"):
        dense_maps(clip, pre, x, "quality", size="full")
    with pytest.raises(ValueError, match="does not belong"):
        dense_features(clip, trained[1], x)
    with pytest.raises(ValueError, match="features must be"):
        pair_probabilities(clip, torch.zeros(1, 7, 2, 2), "quality")
    with pytest.raises(KeyError, match="no map named 'noisiness'"):
        dense_maps(clip, pre, x, "quality")["noisiness"]


# ------------------------------------------------------------------------- the trained model on real photos


def _photo(path: Path) -> torch.Tensor:
    return pil_to_tensor(Image.open(path))


def _left_right_gap(prob: torch.Tensor) -> float:
    half = prob.shape[-1] // 2
    return float(prob[..., :half].mean() - prob[..., half:].mean())


def _degrade_left_half(x: torch.Tensor, name: str, level: int) -> torch.Tensor:
    half = x.shape[-1] // 2
    out = x.clone()
    out[..., :half] = apply(x[..., :half], name, level, seed=0)
    return out


def _kodak(shared_dir: Path) -> Path:
    path = shared_dir / "kodak24" / "kodim01.png"
    if not path.exists():
        pytest.skip(f"{path} not found (needs ../shared/data/photos)")
    return path


@pytest.mark.parametrize("source", ["examples", "kodak24"])
def test_blur_map_finds_the_blurred_half(trained, request, source):
    """P("Blurry photo.") per patch: a strongly blurred left half stands out; the clean photo's halves do not."""
    clip, pre = trained
    if source == "examples":
        path = REPO / "examples" / "kodak-kodim05.png"
    else:
        path = _kodak(request.getfixturevalue("photos_dir"))
    clean = _photo(path)
    blurred = _degrade_left_half(clean, "gaussian_blur", 5)
    assert default_radius(clip) == 3
    out = dense_maps(clip, pre, torch.stack([clean, blurred]), "sharpness")
    blur_map = out["sharpness"]
    clean_gap, blurred_gap = _left_right_gap(blur_map[0]), _left_right_gap(blur_map[1])
    # Measured: kodim05 0.60 (blurred) vs -0.01 (clean); over 29 photos at least 0.29 vs at most 0.19.
    assert blurred_gap > 0.25, f"blurred left half only {blurred_gap:.3f} above the right"
    assert abs(clean_gap) < 0.1, f"clean photo's halves already differ by {clean_gap:.3f}"
    assert blurred_gap > abs(clean_gap) + 0.2
    # The blurred half reads blurry in itself, not only relative to the sharp half.
    half = clean.shape[-1] // 2
    assert float(blur_map[1, :, :half].mean()) > float(blur_map[0, :, :half].mean()) + 0.25


def test_noise_map_finds_the_noisy_half(trained):
    clip, pre = trained
    clean = _photo(REPO / "examples" / "kodak-kodim05.png")
    noisy = _degrade_left_half(clean, "gaussian_noise", 4)
    out = dense_maps(clip, pre, torch.stack([clean, noisy]), ["noisiness", "sharpness"])
    # Measured over 29 photos: at least 0.50 (noisy) vs at most 0.06 (clean).
    assert _left_right_gap(out["noisiness"][1]) > 0.35
    assert abs(_left_right_gap(out["noisiness"][0])) < 0.1
