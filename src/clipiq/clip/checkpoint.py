"""Small checkpoints for methods that train a few tensors on top of a frozen (or partly tuned) CLIP.

A method checkpoint is a safetensors file holding only the tensors that trained, plus metadata: the
method name, the full experiment config, and the backbone it was trained on (load name, weights file
and a fingerprint). Loading refuses a backbone whose fingerprint differs, because prompts trained on
one CLIP mean nothing on another. The trainer's ``best.safetensors`` / ``last.safetensors`` are read too
(their ``payload`` is a method checkpoint). Only safetensors are read: unpickling a file can run code.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipiq.clip.load import load_clip
from clipiq.clip.model import CLIP
from clipiq.clip.preprocess import Preprocess
from clipiq.core.errors import CheckpointError
from clipiq.core.tensors import join_tensors, load_tensors, save_tensors

FORMAT = "clipiq-method/1"


@dataclass
class MethodCheckpoint:
    """What a method checkpoint holds."""

    method: str
    state: dict[str, torch.Tensor]
    config: dict[str, Any]
    backbone: dict[str, Any]
    source: str = ""


def backbone_fingerprint(clip: CLIP) -> str:
    """The weights' file sha256 when known, else a sha256 over the tensors (random or in-memory models).

    The tensors are hashed rounded to bf16, so one backbone loaded in fp32 or bf16 has one fingerprint
    (a checkpoint trained in fp32 can score in bf16).
    """
    if clip.weights_sha256:
        return clip.weights_sha256
    cached = getattr(clip, "_tensor_digest", None)
    if cached:
        return cached
    h = hashlib.sha256()
    for k, v in sorted(clip.state_dict().items()):
        h.update(k.encode())
        v = v.detach().cpu().contiguous()
        if v.is_floating_point():
            v = v.to(torch.bfloat16).view(torch.int16)  # numpy has no bf16; hash the bits
        h.update(v.numpy().tobytes())
    digest = "tensors:" + h.hexdigest()
    clip._tensor_digest = digest
    return digest


def backbone_record(clip: CLIP, name: str | None, weights: str | None = None) -> dict[str, Any]:
    """How to reload and recognise a backbone: load name, weights file, fingerprint and architecture."""
    return {"name": name, "weights": weights, "sha256": backbone_fingerprint(clip), "arch": clip.cfg.name,
            "weights_name": clip.weights_name}


def check_backbone(ck: MethodCheckpoint, clip: CLIP) -> None:
    """Raise CheckpointError when ``clip`` is not the backbone the checkpoint was trained on."""
    want, have = ck.backbone.get("sha256"), backbone_fingerprint(clip)
    if want != have:
        raise CheckpointError(
            f"{ck.source}: trained on backbone {ck.backbone.get('name') or ck.backbone.get('weights_name')!r} "
            f"(sha256 {want}), but the loaded backbone {clip.weights_name!r} has sha256 {have}; prompts "
            "trained on one CLIP do not transfer to another (load the checkpoint's own backbone)"
        )


def save_method_checkpoint(path: str | os.PathLike, method: str, state: dict[str, torch.Tensor],
                           config: dict[str, Any], backbone: dict[str, Any]) -> Path:
    """Write a method checkpoint as safetensors (atomically); returns the path."""
    return save_tensors(path, state, {"format": FORMAT, "method": method, "config": config, "backbone": backbone})


def payload(method: str, state: dict[str, torch.Tensor], config: dict[str, Any],
            backbone: dict[str, Any]) -> dict[str, Any]:
    """The trainer-checkpoint form of a method checkpoint (``payload`` in best/last.safetensors)."""
    return {"format": FORMAT, "method": method, "state": {k: v.detach().cpu() for k, v in state.items()},
            "config": config, "backbone": backbone}


def _is_safetensors(path: Path) -> bool:
    # A safetensors file starts with its header's length (8 bytes, little-endian) and then the JSON header.
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def read_method_checkpoint(path: str | os.PathLike, method: str | None = None) -> MethodCheckpoint:
    """Read a method checkpoint (or a trainer's best/last.safetensors); check the method name.

    Whatever the file's name, only safetensors content is accepted: nothing in it can run code.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if not _is_safetensors(p):
        raise CheckpointError(
            f"checkpoint {p} is not a safetensors file: clipiq method checkpoints are safetensors, and pickled "
            "files (.pt, .bin) are never loaded because unpickling can run code. Use the checkpoint.safetensors "
            "a clipiq training run writes (meta_init.safetensors for grmp-pretrain), or re-save trusted "
            "tensors with clipiq.clip.checkpoint.save_method_checkpoint")
    state, meta = load_tensors(p)
    if isinstance(meta.get("payload"), dict):  # a trainer checkpoint: its payload is the method checkpoint
        meta = join_tensors(meta["payload"], state, str(p))
        state = meta.pop("state", None)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"checkpoint {p}: its payload lacks the 'state' tensors")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {p} is not a clipiq method checkpoint (no {FORMAT!r} metadata)")
    missing = [k for k in ("method", "config", "backbone") if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {p}: metadata lacks {', '.join(missing)}")
    ck = MethodCheckpoint(str(meta["method"]), state, meta["config"], meta["backbone"], str(p))
    if method is not None and ck.method != method:
        raise CheckpointError(f"checkpoint {p} is for method {ck.method!r}, not {method!r}")
    return ck


def open_with_backbone(checkpoint: str | os.PathLike, method: str, model: str | None = None,
                       weights: str | None = None, device: torch.device | str | None = None,
                       precision: str = "fp32") -> tuple[MethodCheckpoint, CLIP, Preprocess, str | None, str | None]:
    """Read a method checkpoint and load the backbone it names (or ``model``/``weights``), refusing another.

    Returns the checkpoint, the backbone, its preprocessing, and the load name and weights file used.
    """
    ck = read_method_checkpoint(checkpoint, method)
    name = model or ck.backbone.get("name")
    w = weights or ck.backbone.get("weights")
    clip, preprocess = load_clip(name, weights=w, device=device, precision=precision)
    check_backbone(ck, clip)
    return ck, clip, preprocess, name, w


__all__ = [
    "CheckpointError",
    "MethodCheckpoint",
    "backbone_fingerprint",
    "backbone_record",
    "check_backbone",
    "open_with_backbone",
    "payload",
    "read_method_checkpoint",
    "save_method_checkpoint",
]
