"""The contract every registered metric keeps, on the random ``test-tiny`` backbone.

Metrics are discovered from the registry, so a new one is tested here without editing this file. A
metric that takes a checkpoint (required, or one shipped for another backbone) gets an untrained one,
written by its own method module's ``build_model`` and ``checkpoint_payload`` (the IQA training
protocol's model interface).
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from clipiq.clip.checkpoint import save_method_checkpoint
from clipiq.core.errors import ConfigError
from clipiq.iqa import (
    METRICS,
    MetricSpec,
    QualityMetric,
    create_metric,
    get_metric_spec,
    list_metrics,
    register_metric,
)
from clipiq.iqa.registry import known_options

#: Model settings that fit a method on test-tiny (two layers per tower); methods not named need none.
TINY_SETTINGS: dict[str, dict[str, Any]] = {
    "grmp-iqa": {"vpt_length": 4, "tune_blocks": 1},
    # a small view and a fixed grid of regions; no describer (clipiq.segment.describe is tested on its own)
    "rsfiqa": {"view_size": 64, "segmenter": "grid", "describer": "none"},
}

Builder = Callable[..., QualityMetric]


def _untrained_checkpoint(name: str, folder: Path) -> Path:
    module = importlib.import_module(get_metric_spec(name).load_factory().__module__)
    model_cfg = {"backbone": "test-tiny", **TINY_SETTINGS.get(name, {})}
    torch.manual_seed(0)
    pl = module.build_model(model_cfg, device="cpu").checkpoint_payload({"model": model_cfg})
    return save_method_checkpoint(folder / f"{name}.safetensors", pl["method"], pl["state"], pl["config"],
                                  pl["backbone"])


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Builder:
    """``build(name, device, **options)``: the metric on test-tiny, cached per arguments."""
    cache: dict[tuple, QualityMetric] = {}
    checkpoints: dict[str, Path] = {}

    def make(name: str, device: torch.device, fresh: bool = False, **options: Any) -> QualityMetric:
        key = (name, str(device), tuple(sorted(options.items())))
        if fresh or key not in cache:
            if "checkpoint" in known_options(name):
                if name not in checkpoints:
                    checkpoints[name] = _untrained_checkpoint(name, tmp_path_factory.mktemp(name))
                options = {"checkpoint": checkpoints[name], **options}
            metric = create_metric(name, model="test-tiny", device=device, **options)
            if fresh:
                return metric
            cache[key] = metric
        return cache[key]

    return make


@pytest.fixture(params=list_metrics())
def name(request: pytest.FixtureRequest) -> str:
    """Each registered metric."""
    return request.param


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 224, 256, generator=torch.Generator().manual_seed(seed))


def test_scores_are_float32_finite_and_in_range(name, device, build):
    metric = build(name, device)
    scores = metric(_images())
    assert scores.shape == (3,) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert torch.isfinite(scores).all()
    lo, hi = metric.score_range
    assert ((scores >= lo) & (scores <= hi)).all(), scores
    outputs = metric.score_with_outputs(_images(2))
    assert list(outputs) == list(metric.output_names) and metric.output_names[0] == "score"


def test_metadata_comes_from_the_spec(name, device, build):
    metric = build(name, device)
    spec = get_metric_spec(name)
    assert metric.spec is spec
    assert (metric.name, metric.lower_better, metric.score_range) == (spec.name, spec.lower_better, spec.score_range)
    with pytest.raises(AttributeError):
        metric.lower_better = not spec.lower_better


def test_a_batch_scores_as_its_images_one_by_one(name, device, build):
    metric = build(name, device)
    x = _images(3, seed=1)
    together = metric(x)
    alone = torch.cat([metric(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    # a list of mixed sizes scores each image as it would alone
    mixed = [x[0], torch.rand(3, 240, 230, generator=torch.Generator().manual_seed(2)), x[1]]
    torch.testing.assert_close(metric(mixed), torch.cat([metric(m) for m in mixed]), atol=1e-5, rtol=0)


def test_float64_input_and_bf16_precision(name, device, build):
    metric = build(name, device)
    x = _images(2, seed=3)
    torch.testing.assert_close(metric(x.double()), metric(x), atol=1e-5, rtol=0)
    half = build(name, device, precision="bf16")
    scores = half(x)
    lo, hi = half.score_range
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert ((scores >= lo) & (scores <= hi)).all()
    assert (scores - metric(x)).abs().max() < 0.1  # bf16 tracks fp32 (a loose bound on a random backbone)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ((torch.rand(1, 3, 32, 32) * 255).to(torch.uint8), ValueError, r"images.*float tensor"),
        (torch.rand(2, 4, 32, 32), ValueError, r"images.*\(N,3,H,W\)"),
        (torch.rand(32, 32), ValueError, r"images.*\(N,3,H,W\)"),
        (torch.rand(1, 3, 32, 32) * 3, ValueError, r"images.*\[0,1\]"),
        (torch.full((1, 3, 32, 32), float("nan")), ValueError, r"images.*NaN"),
        ([], ValueError, "no images"),
        (42, TypeError, "images must be"),
        ([torch.rand(3, 32, 32), 4.5], TypeError, r"images\[1\]"),
    ],
    ids=["uint8", "channels", "2d", "range", "nan", "empty", "int", "list-item"],
)
def test_bad_inputs_name_the_input(name, build, bad, error, match):
    with pytest.raises(error, match=match):
        build(name, torch.device("cpu"))(bad)


def test_unknown_and_wrongly_typed_options_raise(name):
    known = known_options(name)
    # Every metric takes batch_size: the CLI passes --batch-size to whichever metric it builds.
    unknown = rf"unknown option\(s\) 'foo' for metric {re.escape(name)}; known: .*batch_size"
    with pytest.raises(ConfigError, match=unknown):
        create_metric(name, model="test-tiny", device="cpu", foo=1)
    assert {"model", "weights", "device", "precision"}.isdisjoint(known)
    with pytest.raises(ConfigError, match=r"Did you mean 'batch_size'"):
        create_metric(name, model="test-tiny", device="cpu", batchsize=4)
    with pytest.raises(ConfigError, match=r"option 'batch_size' must be int, got str '4'"):
        create_metric(name, model="test-tiny", device="cpu", batch_size="4")
    with pytest.raises(ConfigError, match="must be int, got bool"):
        create_metric(name, model="test-tiny", device="cpu", batch_size=True)


def test_device_follows_to(name, device, build):
    metric = build(name, device, fresh=True)
    assert metric.device.type == device.type
    x = _images(1, seed=4)
    before = metric(x)
    if device.type == "cuda":  # move to the CPU and score there (caches must follow)
        metric.to("cpu")
        assert metric.device == torch.device("cpu")
        torch.testing.assert_close(metric(x), before, atol=1e-4, rtol=0)
    metric.to("meta")  # a device every machine has; no scoring there
    assert metric.device == torch.device("meta")


def test_a_spec_registered_under_another_name_names_its_metrics():
    factory = get_metric_spec("clipiqa").factory
    spec = MetricSpec(name="clipiqa-test-alias", factory=factory, description="test", lower_better=True,
                      score_range=(0.0, 1.0), default_model="test-tiny")
    register_metric(spec)
    try:
        metric = create_metric("CLIPIQA-Test-Alias", device="cpu", view="resize")
        assert metric.name == "clipiqa-test-alias" and metric.lower_better is True
        with pytest.raises(ValueError, match="already registered"):
            register_metric(spec)
    finally:
        METRICS.unregister(spec.name)
    assert "clipiqa-test-alias" not in list_metrics()


def test_listing_metrics_imports_no_method_module():
    code = ("import sys, clipiq; from clipiq.cli.main import main; main(['metrics']); "
            "print(sorted(m for m in sys.modules if m.startswith('clipiq.iqa.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = out.strip().splitlines()[-1]
    for module in ("clipiq.iqa.clipiqa", "clipiq.iqa.clipiqa_plus", "clipiq.iqa.clip_dqa", "clipiq.iqa.grmp_iqa",
                   "clipiq.iqa.rsfiqa"):
        assert module not in loaded
    for n in list_metrics():
        assert n in out
