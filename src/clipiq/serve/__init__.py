"""``clipiq serve``: the HTTP service (layer 7, beside :mod:`clipiq.cli`; ``import clipiq`` never loads it).

:class:`ServeSettings` is plain data; :func:`create_app` builds the FastAPI app and needs the ``serve`` extra
(``pip install 'clipiq[serve]'``): FastAPI, uvicorn, python-multipart and prometheus-client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clipiq.serve.settings import ServeSettings

if TYPE_CHECKING:
    from clipiq.serve.app import Models, create_app, load_models

__all__ = ["Models", "ServeSettings", "create_app", "load_models"]


def __getattr__(name: str) -> Any:
    """``create_app`` and friends import the web framework, so only on first use."""
    if name in ("create_app", "load_models", "Models"):
        from clipiq.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'clipiq.serve' has no attribute {name!r}")
