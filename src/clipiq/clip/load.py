"""``load_clip``: one entry point from a name and/or a weights file to a ready model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from clipiq.clip import weights as wreg
from clipiq.clip.config import ARCHITECTURES, CLIPConfig, PreprocessConfig, get_architecture
from clipiq.clip.convert import infer_config, read_checkpoint, to_internal
from clipiq.clip.efficientnet import load_lite0
from clipiq.clip.model import CLIP, build_model
from clipiq.clip.preprocess import Preprocess
from clipiq.core.device import resolve_device, resolve_precision
from clipiq.core.errors import CheckpointError

log = logging.getLogger(__name__)

TEST_TINY_SEED = 0
#: What ``load_clip()`` loads when given neither a name nor a weights file.
DEFAULT_MODEL = "ViT-B-32/openai"


def file_architecture(sd: dict[str, torch.Tensor]) -> str:
    """What an internal-layout state dict's shapes say it is, e.g. 'a ViT-B-16-like model (width 768, ...)'."""
    try:
        v = infer_config(sd).vision
    except (KeyError, IndexError, ValueError):  # a layout whose shapes infer_config cannot read (e.g. a CNN stem)
        return "a model of an unrecognised shape"
    like = next((a.name for a in ARCHITECTURES.values()
                 if (a.vision.width, a.vision.patch_size, a.vision.layers) == (v.width, v.patch_size, v.layers)), None)
    return f"{f'a {like}-like' if like else 'a ViT'} model (width {v.width}, patch {v.patch_size}, {v.layers} layers)"


def _load_state(model: CLIP, sd: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if not (missing or unexpected or bad):
        model.load_state_dict(sd, strict=True, assign=True)
        return
    if missing or unexpected:
        why = (f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
               f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    else:
        why = f"tensor {bad[0]} has shape {tuple(sd[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}"
    raise CheckpointError(
        f"{source}: does not fit architecture {model.cfg.name} ({why}); the file holds {file_architecture(sd)} "
        "(without a model name, a weights file loads as the architecture it holds)"
    )


def model_from_file(path: str | Path, arch: str | CLIPConfig | None = None, act: str | None = None) -> CLIP:
    """Build a fp32 CPU model from any supported checkpoint file or folder."""
    sd, meta = read_checkpoint(path)
    sd, layout = to_internal(sd)
    if isinstance(arch, CLIPConfig):
        cfg = arch
    elif arch is not None:
        cfg = get_architecture(arch)
        if act is not None:
            cfg = cfg.replace(act=act)
    else:
        if act is None and (layout == "openai" and meta.get("torchscript")):
            act = "quick_gelu"
        cfg = infer_config(sd, meta, act=act)
    log.info("loading %s (%s layout) as %s", path, layout, cfg.name)
    # Built on the meta device and filled by assignment, so the weights are held in memory once.
    with torch.device("meta"):
        model = CLIP(cfg)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    if model.visual.stem is not None and not any(k.startswith("visual.stem.") for k in sd):
        # A file without the frozen stem (degradation-clip-v2): it comes from its sha256-pinned package record.
        sd.update({f"visual.stem.{k}": v for k, v in load_lite0().state_dict().items()})
    _load_state(model, sd, str(path))
    return model


def load_clip(
    name: str | None = None,
    *,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> tuple[CLIP, Preprocess]:
    """Load a CLIP model by weights name (e.g. 'ViT-B-32/openai'), architecture plus file, or file alone.

    With ``weights`` and no ``name`` the architecture is read from the file; with neither, the model is
    :data:`DEFAULT_MODEL`. Returns the model in eval mode and the preprocessing that belongs to its weights.
    ``test-tiny`` is a random, seeded model for tests and smoke runs only.
    """
    if not name and weights is None:
        name = DEFAULT_MODEL
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    record = None
    # A weights entry may share its architecture's name (degradation-clip-v2): the weights win.
    if name and (name not in ARCHITECTURES or name in wreg.list_weights()) and not name.endswith("-quickgelu"):
        record = wreg.get_weights(name)  # raises a helpful error for unknown names
    if record is not None:
        # A local copy is checked against the registered sha256 when it is the registry's own file.
        path = wreg.resolve_weights(record, local=weights)
        sha = record.sha256 if weights is None or record.checks_copy(path) else _sha_or_none(path)
        # clipiq's own checkpoints carry their architecture and preprocessing in the file's metadata;
        # for the others the record supplies them, so normalisation cannot drift from the weights.
        arch = None if record.layout == "clipiq" else get_architecture(record.arch).replace(
            act=record.act,
            preprocess=PreprocessConfig(record.image_size, tuple(record.mean), tuple(record.std),
                                        record.interpolation),
        )
        model = model_from_file(path, arch=arch)
        model.weights_name, model.weights_sha256 = record.name, sha
    elif weights is not None:
        model = model_from_file(weights, arch=name or None)
        model.weights_name, model.weights_sha256 = str(weights), _sha_or_none(Path(weights))
    else:
        cfg = get_architecture(name)
        if not cfg.random:
            named = wreg.list_weights(arch=cfg.name)
            raise ValueError(
                f"architecture {name!r} needs weights: pass weights=FILE (--weights FILE), or a named weights "
                f"entry such as {', '.join(named) or 'ViT-B-32/openai'}"
            )
        model = build_model(cfg, seed=TEST_TINY_SEED)
        model.weights_name, model.weights_sha256 = f"{cfg.name} (random, seed {TEST_TINY_SEED})", None
        log.warning("%s has random weights: its scores mean nothing (tests and smoke runs only)", cfg.name)
    model = model.to(device=dev, dtype=dtype).eval()
    return model, Preprocess(model.cfg.preprocess, model.cfg.vision.patch_size)


def _sha_or_none(path: Path) -> str | None:
    return wreg.sha256_file(path) if path.is_file() else None
