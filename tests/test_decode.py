"""Decoding as an image viewer shows the image; only regular files are read, and none of them can hang."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import clipiq
from clipiq.core.errors import ImageLoadError
from clipiq.data.io import BACKGROUND, displayed, list_images, load_image, open_image, read_image
from clipiq.data.runner import BatchRunner

PILLOW_DEFAULT_MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)


@pytest.fixture(scope="module")
def metric():
    return clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", batch_size=4)


def _ramp16(width: int = 256, height: int = 8) -> np.ndarray:
    """A horizontal 16-bit ramp over the full 0..65535 range (mean 0.5 of full scale)."""
    return np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))


def _frames(tmp_path: Path, suffix: str) -> Path:
    """A 3-frame animation (red, green, blue) in the format of ``suffix``."""
    frames = [Image.new("RGB", (24, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    p = tmp_path / f"anim{suffix}"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return p


# ---- as a viewer shows it ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str):
    im = Image.new("RGB", (40, 20), (200, 30, 30))
    im.paste((30, 30, 200), (0, 0, 10, 20))  # a blue left edge: on top after a 90 degree clockwise turn
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    p = tmp_path / f"rotated{suffix}"
    im.save(p, exif=exif.tobytes())
    x = load_image(p)
    assert x.shape == (3, 40, 20), "the decoded size must swap as a viewer shows it"
    assert x[2, :5].mean() > 0.6 and x[2, -5:].mean() < 0.3


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path: Path):
    p = tmp_path / "ramp16.png"
    Image.fromarray(_ramp16()).save(p)
    assert Image.open(p).mode == "I;16"
    x = load_image(p)
    assert abs(float(x.mean()) - 0.5) < 0.01, "a 16-bit ramp decoded almost white: clipped, not scaled"
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # The other wide greyscale modes take the same road.
    for im in (Image.fromarray(_ramp16().astype(">u2")), Image.fromarray(_ramp16().astype(np.int32), "I")):
        rgb = np.asarray(displayed(im).image, dtype=np.float64) / 255
        assert abs(rgb.mean() - 0.5) < 0.01, im.mode


def test_16bit_rgb_keeps_its_range(tmp_path: Path):
    arr = (np.linspace(0, 1, 64 * 3).reshape(8, 8, 3) * 65535).astype(">u2")
    p = tmp_path / "rgb48.png"
    p.write_bytes(_png48(arr))  # Pillow reads 48-bit PNGs but cannot write them
    x = load_image(p).permute(1, 2, 0).numpy()
    assert abs(x.mean() - arr.mean() / 65535) < 0.01


def _png48(arr: np.ndarray) -> bytes:
    """A minimal 16-bit-per-channel RGB PNG of a (H,W,3) big-endian uint16 array."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in arr)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["RGBA", "LA", "P"])
def test_transparency_is_composited_over_the_background(tmp_path: Path, kind: str):
    if kind == "RGBA":
        im = Image.new("RGBA", (16, 8), (255, 0, 0, 0))  # fully transparent red
        im.putpixel((0, 0), (255, 0, 0, 255))  # one opaque red pixel
    elif kind == "LA":
        im = Image.new("LA", (16, 8), (0, 0))
        im.putpixel((0, 0), (0, 255))
    else:
        im = Image.new("P", (16, 8), 1)
        im.putpalette([255, 0, 0] * 2 + [0] * 762)
        im.info["transparency"] = 1
        im.putpixel((0, 0), 0)
    p = tmp_path / f"{kind}.png"
    im.save(p)
    rgb = np.asarray(open_image(p))
    assert tuple(rgb[4, 8]) == BACKGROUND, "hidden pixels must not be scored"
    assert tuple(rgb[0, 0]) == ((255, 0, 0) if kind != "LA" else (0, 0, 0))


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_animated_images_take_the_first_frame_and_say_so(tmp_path: Path, suffix: str):
    p = _frames(tmp_path, suffix)
    decoded = read_image(p)
    assert decoded.note == "animated image (3 frames): first frame scored"
    rgb = np.asarray(decoded.image)[8, 12].astype(int)
    assert rgb[0] > 240 and rgb[1] < 16 and rgb[2] < 16
    still = tmp_path / "still.png"
    Image.new("RGB", (24, 16)).save(still)
    assert read_image(still).note is None


def test_the_runner_and_the_metric_carry_the_note(tmp_path: Path, metric):
    anim, still = _frames(tmp_path, ".gif"), tmp_path / "still.png"
    Image.new("RGB", (24, 16), (9, 9, 9)).save(still)
    out = BatchRunner(lambda b: [float(x.mean()) for x in b]).run_ordered([anim, still])
    assert out[0].note == "animated image (3 frames): first frame scored" and out[1].note is None
    assert out[0].output == pytest.approx(255 / 3 / 255, abs=0.01)  # red only
    results = sorted(metric.iter_results([anim, still]), key=lambda r: r.index)
    assert [r.ok for r in results] == [True, True]
    assert "first frame" in results[0].note and results[1].note is None
    # A PIL image given to the API is shown the same way as its file.
    with Image.open(anim) as im:
        from_pil = BatchRunner(lambda b: [x.clone() for x in b]).run_ordered([im])[0]
    assert from_pil.note == out[0].note
    torch.testing.assert_close(from_pil.output, load_image(anim))


def test_cmyk_jpeg_and_palette_png_convert_to_their_colours(tmp_path: Path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(cmyk)  # no cyan, full magenta and yellow: red
    r, g, b = np.asarray(open_image(cmyk))[8, 8].astype(int)
    assert r > 240 and g < 16 and b < 16
    pal = tmp_path / "palette.png"
    im = Image.new("P", (16, 16), 2)
    im.putpalette([0, 0, 0, 10, 20, 30, 40, 160, 80] + [0] * 759)
    im.save(pal)
    assert tuple(np.asarray(open_image(pal))[3, 3]) == (40, 160, 80)
    grey = tmp_path / "grey.png"
    Image.new("L", (8, 8), 77).save(grey)
    assert tuple(np.asarray(open_image(grey))[0, 0]) == (77, 77, 77)


def test_folder_scans_and_direct_paths_treat_gif_webp_tif_alike(tmp_path: Path):
    for suffix in (".gif", ".webp", ".tif", ".png"):
        Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / f"a{suffix}")
    (tmp_path / "notes.txt").write_text("not an image")
    found = sorted(p.name for p in list_images([tmp_path]))
    assert found == ["a.gif", "a.png", "a.tif", "a.webp"]
    for p in found:
        assert load_image(tmp_path / p).shape == (3, 8, 8)


# ---- Pillow's guard stays as it was --------------------------------------------------------------------


def test_import_clipiq_leaves_pillows_bomb_guard_alone():
    assert clipiq is not None
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_MAX_IMAGE_PIXELS


def test_pillows_guard_is_reported_as_a_load_error(tmp_path: Path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the host program's setting, which clipiq respects
    with pytest.raises(ImageLoadError, match="decompression-bomb guard"):
        load_image(p, max_pixels=None)


def test_max_pixels_is_checked_on_the_header_and_on_pil_images(tmp_path: Path, metric):
    p = tmp_path / "img.png"
    Image.new("RGB", (30, 20)).save(p)
    with pytest.raises(ImageLoadError, match="30x20 = 600 pixels, above the limit of 599"):
        load_image(p, max_pixels=599)
    assert load_image(p, max_pixels=600).shape == (3, 20, 30)
    inputs = [p, Image.new("RGB", (30, 20)), torch.rand(3, 20, 30)]
    results = sorted(metric.iter_results(inputs, max_pixels=599), key=lambda r: r.index)
    assert [r.ok for r in results] == [False, False, False]
    assert all("above the limit of 599" in r.error for r in results)
    with pytest.raises(ValueError, match="max_pixels must be at least 1"):
        BatchRunner(lambda b: b, max_pixels=0)


# ---- only regular files, and nothing that can hang -----------------------------------------------------


def _within(seconds: int, fn: Callable[[], Any], unblock: Path | None = None) -> Any:
    """Run ``fn`` in this thread and fail (rather than hang) if it takes longer than ``seconds``."""
    def alarm(*_):
        raise TimeoutError(f"still running after {seconds} s: reading the input blocked")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        if unblock is not None:
            # A regression may have left a decoding thread blocked opening the FIFO: a writer releases it.
            with contextlib.suppress(OSError):
                os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_a_named_pipe_is_refused_at_once(tmp_path: Path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="named pipe"):
        _within(10, lambda: load_image(fifo), unblock=fifo)
    out = _within(10, lambda: BatchRunner(lambda b: [0.0] * len(b)).run_ordered([fifo]), unblock=fifo)
    assert not out[0].ok and "named pipe (FIFO), not a regular file" in out[0].error


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_a_device_is_refused():
    with pytest.raises(ImageLoadError, match="character device"):
        _within(10, lambda: load_image("/dev/null"))


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_links_say_what_is_wrong(tmp_path: Path):
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    with pytest.raises(ImageLoadError, match="symlink loop"):
        load_image(loop)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    os.symlink(b, a)
    os.symlink(a, b)
    with pytest.raises(ImageLoadError, match="symlink loop"):
        load_image(a)
    broken = tmp_path / "broken.png"
    os.symlink(tmp_path / "gone.png", broken)
    with pytest.raises(ImageLoadError, match="broken link: it points to .*gone.png, which does not exist"):
        load_image(broken)
    with pytest.raises(ImageLoadError, match="file does not exist"):
        load_image(tmp_path / "never-was.png")
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 6)).save(good)
    os.symlink(good, tmp_path / "link.png")
    assert load_image(tmp_path / "link.png").shape == (3, 6, 8)
