"""Quality metrics: the registry, the shared inference wrapper and the methods."""

from clipiq.iqa import clip_dqa as _clip_dqa  # noqa: F401  (registers the metric)
from clipiq.iqa import clipiqa as _clipiqa  # noqa: F401  (registers the metric)
from clipiq.iqa import grmp_iqa as _grmp_iqa  # noqa: F401  (registers the metric)
from clipiq.iqa.base import QualityMetric
from clipiq.iqa.registry import METRICS, MetricSpec, create_metric, get_metric_spec, list_metrics, register_metric

__all__ = [
    "METRICS",
    "MetricSpec",
    "QualityMetric",
    "create_metric",
    "get_metric_spec",
    "list_metrics",
    "register_metric",
]
