"""Quality metrics: the registry, the shared inference wrapper and the methods.

The method modules (clipiqa, clip_dqa, grmp_iqa) are imported when a metric is first built.
"""

from clipiq.iqa.base import QualityMetric
from clipiq.iqa.registry import METRICS, create_metric, get_metric_spec, list_metrics, register_metric
from clipiq.iqa.spec import MetricSpec

__all__ = [
    "METRICS",
    "MetricSpec",
    "QualityMetric",
    "create_metric",
    "get_metric_spec",
    "list_metrics",
    "register_metric",
]
