"""Safe tensor files: what trained, saved and loaded as safetensors plus JSON metadata (never pickle)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from clipiq.core.errors import CheckpointError
from clipiq.core.files import atomic_path


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
    with atomic_path(p) as tmp:
        save_file(data, str(tmp), metadata=meta)
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


TENSOR_REF = "__tensor__"


def split_tensors(tree: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Split nested dicts/lists into (JSON skeleton, flat tensors) for :func:`save_tensors`.

    Each tensor becomes ``{"__tensor__": name}``, named by its path (``optimizer.state.0.exp_avg``); one
    tensor reached twice (a view of the same memory, e.g. a payload that shares the model's parameters)
    is stored once. Tuples come back as lists, as JSON has no tuple.
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu()
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
            if t.numel() and key in seen:
                return {TENSOR_REF: seen[key]}
            if t.numel() and key[0] in storages:  # safetensors refuses partly shared memory: store a copy
                t = t.clone()
            if path in tensors:
                raise ValueError(f"two tensors would be stored as {path!r}")
            tensors[path] = t
            if t.numel():
                seen[key] = path
                storages.add(key[0])
            return {TENSOR_REF: path}
        if isinstance(obj, Mapping):
            bad = [k for k in obj if not isinstance(k, str)]
            if bad:
                raise TypeError(f"{path or 'tree'}: keys must be strings for JSON, got {bad[0]!r}")
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(obj)]
        return obj

    return walk(dict(tree), ""), tensors


def join_tensors(skeleton: Any, tensors: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Any:
    """Inverse of :func:`split_tensors`; a referenced tensor that is absent is a CheckpointError naming it."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {TENSOR_REF}:
            name = skeleton[TENSOR_REF]
            if name not in tensors:
                raise CheckpointError(f"{source}: tensor {name!r} is missing")
            return tensors[name]
        return {k: join_tensors(v, tensors, source) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [join_tensors(v, tensors, source) for v in skeleton]
    return skeleton


__all__ = ["join_tensors", "load_tensors", "load_trainable_state", "save_tensors", "split_tensors",
           "trainable_state"]
