"""A flat name -> spec registry behind ``create_metric`` (each method adds an entry, not a branch)."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from clipiq.core.device import resolve_device, resolve_precision
from clipiq.iqa.base import QualityMetric

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is and how to build it."""

    name: str
    factory: Callable[..., QualityMetric]
    description: str
    lower_better: bool = False
    score_range: tuple[float, float] = (0.0, 1.0)
    default_model: str | None = "ViT-B-32/openai"
    needs_checkpoint: bool = False
    paper: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)


METRICS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add a metric to the registry (names are unique)."""
    if spec.name in METRICS:
        raise ValueError(f"metric {spec.name!r} is already registered")
    METRICS[spec.name] = spec
    return spec


def list_metrics() -> list[str]:
    """Names of all registered metrics."""
    return sorted(METRICS)


def get_metric_spec(name: str) -> MetricSpec:
    """The spec of a metric, with close-match suggestions for unknown names."""
    key = name.lower()
    if key not in METRICS:
        close = difflib.get_close_matches(key, list(METRICS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown metric {name!r}; available: {', '.join(list_metrics())}.{hint}")
    return METRICS[key]


def create_metric(
    name: str,
    model: str | None = None,
    weights: str | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> QualityMetric:
    """Build a metric by name; ``model`` takes the same names as ``load_clip``."""
    spec = get_metric_spec(name)
    dev = resolve_device(device)
    precision = options.pop("precision", "fp32")
    resolve_precision(precision, dev)  # fail early, before any weights are read
    kwargs = {**spec.defaults, **options}
    metric = spec.factory(model=model or spec.default_model, weights=weights, device=dev, precision=precision,
                          **kwargs)
    metric.eval()
    return metric
