"""The batch runner: one result per input, batching by shape, bounded look-ahead, per-input errors, prefetch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipiq
from clipiq.core.errors import ImageLoadError
from clipiq.data.runner import BatchRunner, InputFailedError, RunResult, expand_inputs, prefetch


def _tagged(k: int, shape: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """A (3,H,W) image in [0,1] whose first pixel encodes ``k`` (for telling inputs apart after batching)."""
    x = torch.full((3, *shape), 0.5)
    x[0, 0, 0] = k / 1000
    return x


def _tag(x: torch.Tensor) -> int:
    return round(float(x[0, 0, 0]) * 1000)


def _tags(batch: list[torch.Tensor]) -> list[int]:
    return [_tag(x) for x in batch]


def test_every_input_gets_exactly_one_result_in_order():
    runner = BatchRunner(_tags, batch_size=4, workers=3)
    results = list(runner.run([_tagged(k) for k in range(23)]))
    assert sorted(r.index for r in results) == list(range(23))
    ordered = runner.run_ordered([_tagged(k) for k in range(23)])
    assert [r.output for r in ordered] == list(range(23))
    assert all(r.ok and r.source == f"<Tensor #{r.index}>" for r in ordered)


def test_batches_hold_one_shape_and_at_most_batch_size():
    seen: list[tuple[int, set]] = []

    def process(batch):
        seen.append((len(batch), {tuple(x.shape) for x in batch}))
        return _tags(batch)

    a, b, c = (8, 8), (6, 10), (4, 4)
    shapes = [a, a, a, b, b, a, b, c, a, a, a, b]
    out = BatchRunner(process, batch_size=3, workers=2).run_ordered([_tagged(k, s) for k, s in enumerate(shapes)])
    assert [r.output for r in out] == list(range(len(shapes)))
    assert all(len(s) == 1 for _, s in seen), "a batch mixed shapes"
    assert all(n <= 3 for n, _ in seen) and sum(n for n, _ in seen) == len(shapes)
    # Runs of one shape make full batches; a mix never holds more than a batch's worth back.
    assert seen[0] == (3, {(3, *a)}) and (3, {(3, *a)}) in seen[1:]
    # One rare shape does not shrink every later batch of the common one.
    seen.clear()
    BatchRunner(process, batch_size=4).run_ordered([_tagged(0, b)] + [_tagged(k, a) for k in range(1, 18)])
    assert [n for n, _ in seen] == [1, 4, 4, 4, 4, 1]


@pytest.mark.parametrize("mixed", [False, True])
def test_look_ahead_is_bounded(mixed):
    consumed = 0

    def source():
        nonlocal consumed
        for k in range(200):
            consumed += 1
            yield _tagged(k, (8, 8) if not mixed or k % 3 else (6, 6))

    batch_size, ahead = 4, 6
    runner = BatchRunner(_tags, batch_size=batch_size, workers=2, ahead=ahead)
    yielded = 0
    for _ in runner.run(source()):
        yielded += 1
        assert consumed - yielded <= ahead + batch_size
    assert yielded == consumed == 200


def test_one_bad_file_gives_one_error_row(tmp_path: Path):
    paths = []
    for k in range(5):
        p = tmp_path / f"img{k}.png"
        Image.fromarray(np.full((16, 16, 3), 10 * k, np.uint8)).save(p)
        paths.append(p)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.insert(2, tmp_path / "bad.png")
    out = BatchRunner(lambda b: [float(x.mean()) for x in b], batch_size=2).run_ordered(paths)
    assert [r.ok for r in out] == [True, True, False, True, True, True]
    bad = out[2]
    assert bad.source == str(tmp_path / "bad.png") and "not a recognised image" in bad.error
    assert isinstance(bad.exception, ImageLoadError)
    with pytest.raises(ImageLoadError, match="bad.png"):
        bad.unwrap()
    assert out[3].unwrap() == pytest.approx(20 / 255)


def test_a_batch_failing_for_one_input_fails_only_that_input():
    def process(batch):
        if 3 in _tags(batch):
            raise RuntimeError("model fell over")
        return _tags(batch)

    out = BatchRunner(process, batch_size=4).run_ordered([_tagged(k) for k in range(8)])
    assert [r.ok for r in out] == [k != 3 for k in range(8)]
    assert out[3].error == "RuntimeError: model fell over"
    with pytest.raises(InputFailedError, match=r"<Tensor #3>: RuntimeError: model fell over"):
        out[3].unwrap()


def test_wrong_number_of_outputs_is_an_error():
    # Retried one by one, each single input gets its one output.
    out = BatchRunner(lambda b: [0], batch_size=3).run_ordered([_tagged(k) for k in range(3)])
    assert [r.output for r in out] == [0, 0, 0]
    bad = BatchRunner(lambda b: [], batch_size=2).run_ordered([_tagged(0)])
    assert "returned 0 outputs for 1 inputs" in bad[0].error


def test_pil_tensor_and_batch_inputs():
    arr = (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    inputs = [Image.fromarray(arr), t, torch.stack([t, t])]
    assert len(list(expand_inputs(inputs))) == 4  # an (N,3,H,W) batch is N inputs
    out = BatchRunner(lambda b: [x.clone() for x in b], batch_size=8).run_ordered(inputs)
    assert len(out) == 4 and all(r.ok for r in out)
    for r in out:
        torch.testing.assert_close(r.output, t)
    assert out[0].source == "<Image #0>"


def test_bad_tensors_and_pil_above_the_pixel_limit_are_error_rows():
    inputs = [_tagged(0), torch.rand(3, 8, 8) * 5, Image.new("RGB", (20, 20)), torch.full((3, 4, 4), float("nan"))]
    out = BatchRunner(_tags, max_pixels=100).run_ordered(inputs)
    assert [r.ok for r in out] == [True, False, False, False]
    assert "[0,1]" in out[1].error and "above the limit of 100" in out[2].error and "NaN" in out[3].error
    with pytest.raises(ValueError, match=r"<Tensor #1> values must lie in \[0,1\]"):
        out[1].unwrap()


def test_invalid_input_lists_raise():
    with pytest.raises(TypeError, match="must be paths"):
        list(BatchRunner(_tags).run(42))
    with pytest.raises(TypeError, match=r"images\[1\] must be a path"):
        list(BatchRunner(_tags).run([_tagged(0), 3.5]))
    with pytest.raises(ValueError, match="at least 1"):
        BatchRunner(_tags, batch_size=0)


def test_custom_load_and_raise_errors():
    store = {k: _tagged(k) for k in range(6)}
    seen = []

    def process(batch):
        seen.append(len(batch))
        return _tags(batch)

    runner = BatchRunner(process, load=store.__getitem__, batch_size=4, batch_key=lambda _: None)
    assert [r.output for r in runner.run_ordered(range(6))] == list(range(6))
    assert seen == [4, 2]
    loud = BatchRunner(process, load=store.__getitem__, batch_size=4, raise_errors=True)
    with pytest.raises(KeyError):
        list(loud.run([0, 1, 99]))

    def broken(batch):
        raise FloatingPointError("nan loss")

    with pytest.raises(FloatingPointError, match="nan loss"):
        list(BatchRunner(broken, load=store.__getitem__, raise_errors=True).run([0, 1]))


def test_run_result_unwrap():
    assert RunResult(0, "a", output=3).unwrap() == 3
    with pytest.raises(InputFailedError, match="x.png: broken") as e:
        RunResult(1, "x.png", error="broken").unwrap()
    assert e.value.source == "x.png" and isinstance(e.value, clipiq.core.errors.ClipIQError)


def test_prefetch_keeps_order_and_passes_errors_through():
    def fn(k):
        time.sleep(0.001 * ((7 * k) % 5))  # finish out of order
        if k == 3:
            raise ValueError("three")
        return k * k

    got = list(prefetch(fn, range(10), workers=4, ahead=3))
    assert [item for item, _, _ in got] == list(range(10))
    assert [v for k, v, _ in got if k != 3] == [k * k for k in range(10) if k != 3]
    assert got[3][1] is None and isinstance(got[3][2], ValueError)
    with pytest.raises(ValueError, match="at least 1"):
        list(prefetch(fn, range(3), ahead=0))


def test_prefetch_is_bounded_and_stops_early_without_hanging():
    before = set(threading.enumerate())
    consumed = 0
    started = []

    def source():
        nonlocal consumed
        for k in range(1000):
            consumed += 1
            yield k

    def slow(k):
        started.append(k)
        time.sleep(0.02)
        return k

    t0 = time.perf_counter()
    for k, _, _ in prefetch(slow, source(), workers=2, ahead=4):
        assert consumed <= k + 4
        if k == 2:
            break
    time.sleep(0.05)
    assert time.perf_counter() - t0 < 2
    assert consumed <= 7 and len(started) <= 7  # the rest was never submitted, queued work was cancelled
    # An exception in the consumer ends the stream just as cleanly.
    with pytest.raises(RuntimeError, match="stop"):
        for _ in BatchRunner(_tags, batch_size=2).run(_tagged(k) for k in range(500)):
            raise RuntimeError("stop")
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("clipiq-decode")]


@pytest.fixture(scope="module")
def metric():
    return clipiq.create_metric("clipiqa", model="test-tiny", device="cpu", batch_size=4)


def test_metric_over_many_files_equals_one_by_one(tmp_path: Path, metric):
    rng = np.random.default_rng(1)
    paths = []
    for k in range(9):
        p = tmp_path / f"p{k}.png"
        Image.fromarray((rng.random((40 + 8 * (k % 3), 56, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    together = metric(paths)
    alone = torch.cat([metric(p) for p in paths])
    assert together.shape == (9,)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    streamed = sorted(metric.iter_results(paths, batch_size=2, workers=3), key=lambda r: r.index)
    torch.testing.assert_close(torch.tensor([r.output["score"] for r in streamed]), alone, atol=1e-5, rtol=1e-5)


def test_metric_raises_naming_the_failing_input(tmp_path: Path, metric):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(good)
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(ImageLoadError, match="junk.png"):
        metric([good, tmp_path / "junk.png", good])
    results = sorted(metric.iter_results([good, tmp_path / "junk.png", good]), key=lambda r: r.index)
    assert [r.ok for r in results] == [True, False, True]
    assert set(results[0].output) == {"score"}
