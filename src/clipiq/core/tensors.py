"""Safe tensor files: what trained, saved and loaded as safetensors plus JSON metadata (never pickle)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from clipiq.core.errors import CheckpointError


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train plus all buffers: what a method checkpoint needs (frozen backbones excluded)."""
    params = dict(model.named_parameters())
    # state_dict() holds only persistent buffers, which is what load_state_dict expects back.
    return {k: v.detach() for k, v in model.state_dict(keep_vars=True).items()
            if k not in params or params[k].requires_grad}


def load_trainable_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load a :func:`trainable_state` (or a full state dict) into ``model``; unknown or missing keys are errors."""
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    if unexpected:
        raise CheckpointError(f"{source}: keys not in the model: {', '.join(unexpected[:5])}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    wanted = {k for k, v in model.named_parameters() if v.requires_grad}
    absent = sorted(wanted & set(missing))
    if absent:
        raise CheckpointError(f"{source}: trainable tensors missing: {', '.join(absent[:5])}"
                              f"{' ...' if len(absent) > 5 else ''}")


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, Any] | None = None) -> Path:
    """Write tensors and JSON-able metadata as one safetensors file, atomically; returns the path.

    Each metadata value is stored as JSON text, so nested configs survive the string-only header.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: json.dumps(v, default=str) for k, v in (metadata or {}).items()}
    data = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        save_file(data, tmp, metadata=meta)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a :func:`save_tensors` file: (tensors on CPU, metadata decoded from JSON)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: file does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{p}: not a readable safetensors file ({e})") from None
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v  # written by another tool: plain text
    return tensors, meta


__all__ = ["load_tensors", "load_trainable_state", "save_tensors", "trainable_state"]
