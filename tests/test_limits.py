"""Bounded work per input: extreme aspect ratios are refused, resized views are capped, memory stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipiq
from clipiq.cli.main import main
from clipiq.clip.preprocess import MAX_ASPECT_RATIO, MAX_RESIZED_PIXELS, interpolate, longer_side_at_most, shrink_to
from clipiq.data.runner import BatchRunner, InputFailedError
from clipiq.iqa.grmp_iqa import resize_image


@pytest.fixture(scope="module")
def metric():
    return clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", batch_size=4)


def _save(path: Path, h: int, w: int) -> Path:
    rng = np.random.default_rng(h * 7 + w)
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_a_sliver_is_refused_naming_the_aspect_ratio(tmp_path: Path, metric):
    # Small enough that a regression only costs a few hundred MB here; the subprocess test below takes the
    # real 1x100000 case under a memory cap.
    sliver = _save(tmp_path / "sliver.png", 2, 2000)
    with pytest.raises(InputFailedError, match=r"sliver.png: .*aspect ratio 1:1000, beyond the limit of 1:20"):
        metric(sliver)
    results = list(BatchRunner(metric.score_batch, prepare=metric.prepare).run([sliver, tmp_path / "sliver.png"]))
    assert len(results) == 2 and not any(r.ok for r in results)
    assert all("aspect ratio 1:1000" in r.error and "MAX_ASPECT_RATIO" in r.error for r in results)
    assert all(r.source.endswith("sliver.png") for r in results)


@pytest.mark.parametrize("view", ["tiles", "center_crop", "shortest", "resize", "native"])
def test_every_view_refuses_extreme_aspect_ratios(view: str):
    m = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", view=view)
    with pytest.raises(ValueError, match="aspect ratio 1:100"):
        m.prepare(torch.rand(3, 300, 3))
    assert m.prepare(torch.rand(3, 30, 600)).shape[-3] == 3  # 1:20 exactly is allowed


def test_moderately_elongated_images_still_score_within_max_tiles(tmp_path: Path, metric):
    paths = [_save(tmp_path / f"strip{k}.png", h, w) for k, (h, w) in enumerate([(20, 300), (4, 80), (20, 400)])]
    scores = metric(paths)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    # The tile grid is counted on the upscaled canvas, so a 1:20 strip gets at most max_tiles tiles.
    for p in paths:
        assert metric.prepare(clipiq.data.load_image(p)).shape[0] <= metric.max_tiles


def test_the_limit_is_per_preprocess_and_resized_views_are_capped(metric):
    pre = metric.preprocess
    assert pre.max_aspect_ratio == MAX_ASPECT_RATIO == 20
    x = torch.rand(1, 3, 4, 200)
    with pytest.raises(ValueError, match="aspect ratio 1:50"):
        pre.patches(x)
    with pytest.raises(ValueError, match="aspect ratio 1:50"):
        resize_image(x[0], 244)
    # Nothing this large is ever allocated: the size is refused before resizing.
    side = int(MAX_RESIZED_PIXELS**0.5) + 1
    with pytest.raises(ValueError, match="MAX_RESIZED_PIXELS"):
        interpolate(x[..., :4], (side, side))
    with pytest.raises(ValueError, match="MAX_RESIZED_PIXELS"):
        pre.resize(x[..., :4], "resize", size=side)
    huge = torch.zeros(1, 3, 1, 1).expand(1, 3, side, side)  # a view: no memory behind it
    with pytest.raises(ValueError, match="MAX_RESIZED_PIXELS"):
        pre.resize(huge, "native")


_PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    # A cap on the address space, so a regression fails to allocate instead of taking the machine's memory.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    import clipiq
    from clipiq.data.runner import BatchRunner
    metric = clipiq.create_metric("clipiqa", model="test-tiny", device="cpu")
    metric(sys.argv[1])  # warm up on a normal image: what is left is the cost of the slivers
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    slivers = sys.argv[2:]
    api = []
    for p in slivers:
        try:
            api.append(float(metric(p)))
        except Exception as e:
            api.append(str(e))
    runner = BatchRunner(metric.score_batch, prepare=metric.prepare).run_ordered(slivers)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"api": api, "runner": [r.error for r in runner], "grew_kib": after - before}))
""")


def test_peak_memory_for_tiny_slivers_stays_bounded(tmp_path: Path):
    normal = _save(tmp_path / "normal.png", 64, 64)
    slivers = []
    for h, w in [(1, 100_000), (4, 40_000), (100_000, 1)]:
        p = tmp_path / f"sliver_{h}x{w}.png"
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(p)  # a few hundred bytes of PNG
        slivers.append(p)
    assert max(p.stat().st_size for p in slivers) < 2000
    run = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(normal), *map(str, slivers)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(isinstance(e, str) and "aspect ratio" in e for e in out["api"]), out["api"]
    assert all(e and "aspect ratio" in e for e in out["runner"]), out["runner"]
    assert out["grew_kib"] < 1.5 * 2**20, f"peak RSS grew by {out['grew_kib'] / 2**20:.2f} GiB on three slivers"


@pytest.mark.parametrize("command", ["score", "restore"])
@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_max_pixels_below_one_is_a_usage_error(tmp_path: Path, command: str, value: str, capsys):
    img = _save(tmp_path / "img.png", 16, 16)
    extra = ["--model", "test-tiny"] if command == "score" else ["--method", "dcp", "-o", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as e:
        main([command, str(img), *extra, "--device", "cpu", "--max-pixels", value])
    assert e.value.code == 2
    assert "--max-pixels" in capsys.readouterr().err


def test_longer_side_at_most_shrinks_keeping_the_aspect_and_never_enlarges():
    assert longer_side_at_most(1000, 500, 768) == (768, 384)
    assert longer_side_at_most(300, 1200, 600) == (150, 600)
    assert longer_side_at_most(100, 80, 768) == (100, 80)  # small images stay as they are
    assert longer_side_at_most(4000, 3, 100) == (100, 1)  # never below one pixel
    x = torch.rand(1, 3, 40, 80)
    assert shrink_to(x, 0) is x and shrink_to(x, None) is x and shrink_to(x, 80) is x
    y = shrink_to(x, 20, "bilinear")
    assert y.shape == (1, 3, 10, 20) and float(y.min()) >= 0 and float(y.max()) <= 1
