"""What a ``clipiq serve`` process is configured with (plain data: importing it needs no web framework)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clipiq.clip.preprocess import MAX_ASPECT_RATIO
from clipiq.data.io import DEFAULT_MAX_PIXELS

MIB = 1 << 20


@dataclass
class ServeSettings:
    """The service's model, batching and limits (see docs/security.md, "The web service").

    ``metric``/``model``/``weights``/``checkpoint``/``device``: what scores (as ``clipiq score`` takes them).
    ``restore``: the restorers ``/v1/restore`` may run (and ``/v1/explain`` lists), by registry name.
    ``batch_size``, ``max_wait_ms``: a batch of images from concurrent requests is scored once it holds
    ``batch_size`` images or its first image has waited ``max_wait_ms``. ``queue_size``: images waiting at
    most (more: 503 at once). ``timeout_s``: how long a request waits for its scores (then 504).
    ``max_upload_bytes`` (per file), ``max_pixels``, ``max_aspect``, ``max_files`` (per request): input limits.
    ``api_key``: when set, every ``/v1/*`` endpoint and ``/metrics`` need ``Authorization: Bearer <key>``.
    ``explain_*``: the segmenter, describer (``None``: no descriptions) and working size of ``/v1/explain``.
    ``metric_options``: the metric's own options (e.g. ``{"attributes": "all"}`` for clipiqa).
    """

    metric: str = "clipiqa"
    model: str | None = None
    weights: str | None = None
    checkpoint: str | None = None
    device: str | None = None
    restore: tuple[str, ...] = ()
    batch_size: int = 16
    max_wait_ms: float = 5.0
    queue_size: int = 64
    timeout_s: float = 30.0
    max_upload_bytes: int = 20 * MIB
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_aspect: float = MAX_ASPECT_RATIO
    max_files: int = 32
    api_key: str | None = field(default=None, repr=False)
    explain_segmenter: str = "slic"
    explain_describer: str | None = "clip"
    explain_max_side: int = 512
    metric_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.restore = tuple(self.restore)
        for name in ("batch_size", "queue_size", "max_upload_bytes", "max_pixels", "max_files", "explain_max_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServeSettings.{name} must be an integer >= 1, got {value!r}")
        for name in ("max_wait_ms", "timeout_s", "max_aspect"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"ServeSettings.{name} must be a non-negative number, got {value!r}")
        if self.max_aspect < 1:
            raise ValueError(f"ServeSettings.max_aspect must be at least 1, got {self.max_aspect!r}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("ServeSettings.api_key must not be empty (None: no key)")
