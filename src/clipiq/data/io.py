"""Image decoding with clear, per-file errors."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from clipiq.core.errors import ImageLoadError
from clipiq.core.image import pil_to_tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_MAX_PIXELS = 64_000_000

# PIL's own bomb check raises a warning or a generic error; we apply our own limit with a clear message.
Image.MAX_IMAGE_PIXELS = None


def open_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file as RGB, raising ImageLoadError on any failure."""
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(p, "file does not exist")
    if p.is_dir():
        raise ImageLoadError(p, "is a directory, not an image file")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageLoadError(p, f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
            im.load()
            rgb = im.convert("RGB")
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(p, "not a recognised image format") from None
    except PermissionError:
        raise ImageLoadError(p, "permission denied") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise ImageLoadError(p, f"corrupt or truncated image ({e})") from None
    if rgb.width == 0 or rgb.height == 0:
        raise ImageLoadError(p, "image has zero size")
    return rgb


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Load an image file as a float tensor (3,H,W) in [0,1]."""
    return pil_to_tensor(open_image(path, max_pixels=max_pixels))


def save_image(image: torch.Tensor, path: str | os.PathLike, quality: int = 95) -> None:
    """Save a (3,H,W) float tensor in [0,1] to an image file (format from the suffix)."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects a (3,H,W) or (1,H,W) tensor, got shape {tuple(image.shape)}")
    arr = image.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    arr = arr.permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    kw = {"quality": quality} if str(path).lower().endswith((".jpg", ".jpeg")) else {}
    Image.fromarray(arr).save(path, **kw)


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has a known image extension."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def list_images(paths: Iterable[str | os.PathLike], recursive: bool = False) -> Iterator[Path]:
    """Expand files and folders into image paths; explicit files are kept whatever their extension."""
    for item in paths:
        p = Path(item)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            yield from sorted(q for q in it if q.is_file() and is_image_file(q))
        else:
            yield p
