"""Scale-out: batch scoring on Ray Data (``clipiq score --engine ray``, :func:`score`).

Ray is an optional extra (``pip install 'clipiq[ray]'``): neither ``import clipiq`` nor ``import
clipiq.distributed`` imports it; :func:`score` does, and says how to install it when it is missing.
Data-parallel training lives with the trainer (:mod:`clipiq.train.parallel`).
"""

from __future__ import annotations

from clipiq.distributed.ray_score import RayScoreSummary, require_ray, score

__all__ = ["RayScoreSummary", "require_ray", "score"]
