"""clipiq: CLIP for image quality assessment and restoration."""

from clipiq.clip import load_clip, tokenize
from clipiq.iqa import create_metric, list_metrics
from clipiq.restore import create_restorer, list_restorers

__version__ = "0.1.0"


def __getattr__(name: str):
    """``clipiq.explain`` (callable: ``clipiq.explain(image, metric=...)``) and ``clipiq.report`` load on first use,
    so ``import clipiq`` stays light."""
    if name in ("explain", "report"):
        import importlib

        return importlib.import_module(f"clipiq.{name}")
    raise AttributeError(f"module 'clipiq' has no attribute {name!r}")


__all__ = ["__version__", "create_metric", "create_restorer", "list_metrics", "list_restorers", "load_clip",
           "tokenize"]
