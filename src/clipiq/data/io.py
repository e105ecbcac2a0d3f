"""Image decoding as an image viewer shows the image, with clear per-file errors and local limits.

Decoding never changes a process-wide setting: Pillow's decompression-bomb guard
(``PIL.Image.MAX_IMAGE_PIXELS``) stays as the host program set it, and clipiq's own ``max_pixels`` limit is
checked against the size in the file's header before any pixel is decoded. Only regular files are opened:
a named pipe, device or socket given as an input is refused without being opened, so it cannot block.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from clipiq.core.errors import ImageLoadError
from clipiq.core.files import atomic_write
from clipiq.core.image import pil_to_tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: Images above this many pixels (width x height, from the file's header) are refused before decoding: a
#: decoded image costs 3 bytes a pixel as 8-bit RGB and 12 as the float tensor the models take, so one input
#: at this limit holds about 1 GB once decoded. ``max_pixels=None`` lifts it (Pillow's own guard still applies).
DEFAULT_MAX_PIXELS = 64_000_000

#: What transparent pixels are composited over, as a viewer on a white page shows them (8-bit RGB).
BACKGROUND = (255, 255, 255)

# Colour modes carrying an alpha band; palette and plain images may also carry a transparent colour
# ("transparency" in their info), which Pillow turns into alpha on conversion to RGBA.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Integer greyscale modes wider than 8 bits: scaled down to 8 bits, never clipped at 255.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})

# How the note names a file of several images, by format (default: an animation).
_FRAME_WORDS = {"TIFF": ("multi-page image", "page"), "MPO": ("multi-picture JPEG", "image")}

_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class _ModeError(ValueError):
    """The image decoded but cannot be shown as RGB (its reason is the whole message)."""


@dataclass(frozen=True)
class DecodedImage:
    """An 8-bit RGB image as a viewer shows it, and a note on what decoding chose (animated files)."""

    image: Image.Image
    note: str | None = None


def check_pixels(name: str | os.PathLike, width: int, height: int, max_pixels: int | None) -> None:
    """Raise ImageLoadError naming the input when width x height is above ``max_pixels`` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(name, f"image is {width}x{height} = {width * height} pixels, "
                                   f"above the limit of {max_pixels}")


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URI (``s3://bucket/a.jpg``, ``file:///x.png``) rather than a local path."""
    return isinstance(path, str) and bool(_URI.match(path))


def read_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a regular image file as a viewer shows it (see :func:`displayed`); ImageLoadError on any failure.

    A URI is read through pyarrow's filesystems (``s3://``, ``gs://``, ``hdfs://``, ``file://`` ...).
    """
    if is_uri(path):
        with _open_uri(str(path)) as f:
            return _decode_open(f, str(path), max_pixels)
    p = Path(path)
    with _open_regular_file(p) as f:
        return _decode_open(f, p, max_pixels)


@contextmanager
def _open_uri(uri: str) -> Iterator[BinaryIO]:
    try:
        from pyarrow import fs
    except ImportError:
        raise ImageLoadError(uri, "reading URIs needs pyarrow (pip install pyarrow)") from None
    local: Path | None = None
    data = b""
    try:
        filesystem, inner = fs.FileSystem.from_uri(uri)
        if isinstance(filesystem, fs.LocalFileSystem):
            local = Path(inner)
        else:
            with filesystem.open_input_file(inner) as f:
                data = f.read()
    except FileNotFoundError:
        raise ImageLoadError(uri, "file does not exist") from None
    except (OSError, ValueError) as e:  # pyarrow's errors (ArrowInvalid, ArrowIOError) derive from these
        raise ImageLoadError(uri, f"cannot read it ({e})") from None
    if local is not None:
        # A local file by URI is held to the local checks (a FIFO or device is refused, never opened).
        with _open_regular_file(local) as f:
            yield f
    else:
        yield io.BytesIO(data)


def _decode_open(f: BinaryIO, p: str | Path, max_pixels: int | None) -> DecodedImage:
    """Decode an open image file named ``p`` in errors (see :func:`read_image`)."""
    try:
        im = Image.open(f)
    except Image.DecompressionBombError as e:
        # Pillow's process-wide guard is the host program's setting; clipiq reports it and leaves it alone.
        raise ImageLoadError(p, f"refused by Pillow's decompression-bomb guard ({e}); "
                                "PIL.Image.MAX_IMAGE_PIXELS is the program's setting to raise") from None
    except UnidentifiedImageError:
        raise ImageLoadError(p, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(p, f"corrupt or truncated image ({e})") from None
    with im:
        # The header's size, before a single pixel is decoded.
        check_pixels(p, *im.size, max_pixels)
        try:
            return displayed(im)  # the first frame: Image.open leaves a multi-frame file there
        except _ModeError as e:
            raise ImageLoadError(p, str(e)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageLoadError(p, f"corrupt or truncated image ({e})") from None


def open_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file as 8-bit RGB as a viewer shows it, raising ImageLoadError on any failure."""
    return read_image(path, max_pixels).image


def load_image(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Load an image file as a float tensor (3,H,W) in [0,1]."""
    return pil_to_tensor(open_image(path, max_pixels=max_pixels))


def displayed(im: Image.Image) -> DecodedImage:
    """A PIL image as a viewer shows it, as 8-bit RGB (a lazily opened image is loaded here).

    The EXIF orientation is applied; integer images wider than 8 bits are scaled down to 8 bits;
    transparency is composited over :data:`BACKGROUND`; CMYK, palette and other modes are converted to
    RGB. Of an animated or multi-page image, the current frame is taken and the note says so.
    """
    note = _frame_note(im)  # before loading: counting frames seeks through the file and back
    im.load()
    if _orientation(im) in range(2, 9):
        im = ImageOps.exif_transpose(im)
    if im.mode in _WIDE_GREY_MODES:
        im = _grey_to_8bit(im)
    try:
        if im.mode in _ALPHA_MODES or "transparency" in im.info:
            rgba = im.convert("RGBA")
            rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
        else:
            rgb = im if im.mode == "RGB" else im.convert("RGB")
    except ValueError as e:  # a mode Pillow cannot convert to RGB (LAB, HSV ...)
        raise _ModeError(f"cannot show colour mode {im.mode} as RGB ({e})") from None
    if rgb.width == 0 or rgb.height == 0:
        raise _ModeError("image has zero size")
    return DecodedImage(rgb, note)


def _frame_note(im: Image.Image) -> str | None:
    frames = getattr(im, "n_frames", 1)
    if frames <= 1:
        return None
    kind, unit = _FRAME_WORDS.get(im.format or "", ("animated image", "frame"))
    which = "first" if im.tell() == 0 else f"number {im.tell() + 1}"
    return f"{kind} ({frames} {unit}s): {which} {unit} scored"


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except (OSError, SyntaxError, ValueError, TypeError):  # a broken EXIF block: viewers show the image as stored
        return 1


def _grey_to_8bit(im: Image.Image) -> Image.Image:
    # Pillow's own conversion clips these at 255, turning a 16-bit image almost white; the full 16-bit
    # range maps onto 0..255 instead ("I" holds 16-bit files decoded as 32-bit integers).
    wide = np.asarray(im).astype(np.int32).clip(0, 65535)  # x 255 still fits in 32 bits
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")


@contextmanager
def _open_regular_file(p: Path) -> Iterator[BinaryIO]:
    """The open file at ``p`` when it is a regular file (links followed); ImageLoadError naming what it is otherwise."""
    # Checked before opening: opening a FIFO blocks until a writer comes, and opening a device can act.
    _check_regular(p, _stat(p))
    try:
        # Non-blocking, so a path swapped for a FIFO after the check cannot hang the open either.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except PermissionError:
        raise ImageLoadError(p, "permission denied") from None
    except OSError as e:
        raise ImageLoadError(p, f"cannot open the file ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        _check_regular(p, os.fstat(fd))
        yield f


def _stat(p: Path) -> os.stat_result:
    try:
        return os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise ImageLoadError(p, f"broken link: it points to {os.readlink(p)}, which does not exist") from None
        raise ImageLoadError(p, "file does not exist") from None
    except PermissionError:
        raise ImageLoadError(p, "permission denied") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageLoadError(p, "symlink loop: the link never reaches a file") from None
        raise ImageLoadError(p, f"cannot read the file ({e.strerror})") from None


def _check_regular(p: Path, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(p, "is a directory, not an image file")
    kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "a special file")
    raise ImageLoadError(p, f"is {kind}, not a regular file: only regular image files are read")


def save_image(image: torch.Tensor, path: str | os.PathLike, quality: int = 95) -> None:
    """Save a (3,H,W) float tensor in [0,1] to an image file (format from the suffix), atomically.

    The image is encoded in memory and replaces ``path`` through a fresh temporary file, so an interrupted
    writer never leaves a half-written image and two writers never share a temporary name.
    """
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image file extension {Path(path).suffix!r}")
    atomic_write(path, encode_image(image, fmt, quality))


def encode_image(image: torch.Tensor, fmt: str = "PNG", quality: int = 95) -> bytes:
    """A (3,H,W) or (1,H,W) float tensor in [0,1] encoded as 8-bit image bytes (Pillow's format name; JPEG quality)."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"encode_image expects a (3,H,W) or (1,H,W) tensor, got shape {tuple(image.shape)}")
    arr = image.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    arr = arr.permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    kw = {"quality": quality} if fmt == "JPEG" else {}
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


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
