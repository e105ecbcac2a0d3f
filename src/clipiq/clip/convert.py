"""Read the checkpoint layouts people have and convert them to clipiq's internal layout.

Layouts: OpenAI ``.pt`` (TorchScript archive or plain state dict), open_clip state dicts (same key
names as OpenAI's), Hugging Face transformers ``CLIPModel`` folders (config.json plus safetensors or
bin), and clipiq's own safetensors (architecture in the file's metadata).

Nothing read here runs code: plain ``.pt``/``.bin`` files go through ``torch.load(weights_only=True)``, and
TorchScript archives are read as data by :class:`_ArchiveUnpickler` instead of ``torch.jit.load`` (which
would run the archive's TorchScript code).
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from clipiq.clip.config import ARCHITECTURES, CLIPConfig, PreprocessConfig, TextConfig, VisionConfig
from clipiq.core.errors import CheckpointError

log = logging.getLogger(__name__)

StateDict = dict[str, Tensor]
CONFIG_METADATA_KEY = "clipiq_config"

# OpenAI / open_clip block names -> ours (the rest of the key is identical).
_OPENAI_BLOCK = {
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.out.weight",
    "attn.out_proj.bias": "attn.out.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_OPENAI_TOP = {
    "visual.conv1.weight": "visual.patch_embed.weight",
    "visual.class_embedding": "visual.cls_token",
    "visual.positional_embedding": "visual.pos_embed",
    "visual.proj": "visual.proj",
    "token_embedding.weight": "text.token_embed.weight",
    "positional_embedding": "text.pos_embed",
    "text_projection": "text.proj",
    "logit_scale": "logit_scale",
}
_OPENAI_NORMS = {"visual.ln_pre": "visual.ln_pre", "visual.ln_post": "visual.ln_post", "ln_final": "text.ln_final"}
# Scalars and buffers some checkpoints carry that have no parameter in the model.
_IGNORED = re.compile(r"(^|\.)(input_resolution|context_length|vocab_size|attn_mask|position_ids)$")

_HF_BLOCK = {
    "self_attn.out_proj": "attn.out",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def detect_layout(sd: Mapping[str, Tensor]) -> str:
    """Name the key layout of a state dict: 'openai' (also open_clip), 'hf' or 'clipiq'."""
    keys = set(sd)
    if "visual.patch_embed.weight" in keys and "text.token_embed.weight" in keys:
        return "clipiq"
    if "vision_model.embeddings.patch_embedding.weight" in keys:
        return "hf"
    if "visual.conv1.weight" in keys and "token_embedding.weight" in keys:
        if "visual.class_embedding" not in keys:
            raise CheckpointError(
                "this looks like a ModifiedResNet (RN50-family) CLIP checkpoint, which clipiq does not support"
            )
        return "openai"
    sample = ", ".join(sorted(keys)[:6])
    raise CheckpointError(f"unrecognised CLIP state dict layout (first keys: {sample})")


def _unwrap(obj: object, source: str) -> StateDict:
    if isinstance(obj, Mapping):
        for k in ("state_dict", "model", "module"):
            inner = obj.get(k)
            if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
                obj = inner
                break
        sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
        if not sd:
            raise CheckpointError(f"{source}: holds no tensors")
        if all(k.startswith("module.") for k in sd):
            sd = {k[len("module.") :]: v for k, v in sd.items()}
        return sd
    raise CheckpointError(f"{source}: expected a state dict, got {type(obj).__name__}")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_TYPED_LISTS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist")
_CONVERT_HINT = (
    "If you trust the file, convert it once in a trusted environment: `import torch; from safetensors.torch "
    "import save_file; save_file(torch.jit.load(PATH, map_location='cpu').state_dict(), 'weights.safetensors')`, "
    "then pass the .safetensors file"
)


class _StorageType:
    """What ``torch.FloatStorage`` and its kin unpickle to: only the element type."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _ScriptObject:
    """Stands in for a TorchScript module or class: records the state the archive holds, runs none of its code."""

    def __init__(self, *args: object):
        self.state: object = None

    def __setstate__(self, state: object) -> None:
        self.state = state


class _ArchiveUnpickler(pickle.Unpickler):
    """Rebuilds a TorchScript archive's ``data.pkl`` from tensors, containers and inert module stubs only.

    ``find_class`` admits the tensor rebuild function, storage types, ``OrderedDict`` and TorchScript's typed
    list helpers (all answered by code here, not torch's); ``__torch__.*`` classes become a stub that keeps
    its state; anything else is refused. Storages are read from the archive's ``data/`` entries.
    """

    def __init__(self, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(io.BytesIO(archive.read(prefix + "data.pkl")))
        self.archive, self.prefix, self.source = archive, prefix, source
        self.storages: dict[str, Tensor] = {}
        # A fresh stub class per file: whatever one pickle sets on it ends with that pickle.
        self.stub = type("ScriptObject", (_ScriptObject,), {})

    def find_class(self, module: str, name: str) -> Any:
        """The few names a TorchScript weights pickle needs; a CheckpointError for any other."""
        if module == "__torch__" or module.startswith("__torch__."):
            return self.stub
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self.rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch.jit._pickle" and name in _TYPED_LISTS:
            return list
        if module == "torch.jit._pickle" and name == "restore_type_tag":
            return self.restore_type_tag
        raise CheckpointError(
            f"{self.source}: the TorchScript archive's pickle refers to {module}.{name}, which a weights file "
            f"does not need; clipiq reads TorchScript archives as data and never runs them. {_CONVERT_HINT}")

    def persistent_load(self, pid: Any) -> Tensor:
        """A storage ``('storage', type, key, location, numel)``, read from ``data/<key>`` as a flat tensor."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise CheckpointError(f"{self.source}: unexpected persistent id {pid!r} in the TorchScript archive")
        _, kind, key, _, numel = pid
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            flat = torch.frombuffer(raw, dtype=kind.dtype) if raw else torch.empty(0, dtype=kind.dtype)
            if flat.numel() < numel:
                raise CheckpointError(f"{self.source}: storage data/{key} holds {flat.numel()} values, "
                                      f"the pickle says {numel}")
            self.storages[key] = flat
        return self.storages[key]

    def rebuild_tensor(self, storage: Tensor, offset: int, size: tuple, stride: tuple, *_: object) -> Tensor:
        """A view of a storage (torch's ``_rebuild_tensor_v2``; gradients and hooks do not matter here)."""
        if not (any(storage is s for s in self.storages.values()) and isinstance(offset, int)
                and all(isinstance(v, int) for v in (*size, *stride))):
            raise CheckpointError(f"{self.source}: malformed tensor in the TorchScript archive")
        return storage.as_strided(tuple(size), tuple(stride), offset)

    @staticmethod
    def restore_type_tag(value: object, _type: str) -> object:
        """TorchScript tags typed lists and dicts with their type; the value is all that matters here."""
        return value


def _script_tensors(obj: object, prefix: str, out: StateDict, seen: set[int]) -> None:
    """Collect the tensors of a rebuilt module tree under their attribute paths (``visual.conv1.weight``)."""
    if isinstance(obj, Tensor):
        out[prefix[:-1]] = obj
    elif isinstance(obj, _ScriptObject) and isinstance(obj.state, Mapping) and id(obj) not in seen:
        seen.add(id(obj))  # a pickle can make cycles; a module tree has none
        for k, v in obj.state.items():
            _script_tensors(v, f"{prefix}{k}.", out, seen)


def read_torchscript(path: str | Path) -> StateDict:
    """The tensors of a TorchScript archive by attribute path, read as data (its code never runs)."""
    p = Path(path)
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
        pkl = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
        if not pkl:
            raise CheckpointError(f"{p}: a TorchScript archive without data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in names:
            order = z.read(prefix + "byteorder").decode(errors="replace").strip()
            if order != sys.byteorder:
                raise CheckpointError(f"{p}: archive written {order}-endian, this machine is {sys.byteorder}-endian")
        try:
            root = _ArchiveUnpickler(z, prefix, str(p)).load()
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{p}: the TorchScript archive could not be read as data "
                                  f"({type(e).__name__}: {e}). {_CONVERT_HINT}") from None
    out: StateDict = {}
    _script_tensors(root, "", out, set())
    if not out:
        raise CheckpointError(f"{p}: the TorchScript archive holds no module tensors. {_CONVERT_HINT}")
    return out


def read_checkpoint(path: str | Path) -> tuple[StateDict, dict]:
    """Read tensors and metadata from a file or Hugging Face folder (no model is built)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: weights file or folder does not exist")
    meta: dict = {}
    if p.is_dir():
        cfg_file = p / "config.json"
        if not cfg_file.exists():
            raise CheckpointError(f"{p}: a weights folder must be a Hugging Face CLIP folder with config.json")
        meta["hf_config"] = json.loads(cfg_file.read_text())
        candidates = sorted(p.glob("*.safetensors")) or sorted(p.glob("pytorch_model*.bin"))
        if not candidates:
            raise CheckpointError(f"{p}: no *.safetensors or pytorch_model*.bin next to config.json")
        sd: StateDict = {}
        for f in candidates:
            sd.update(read_checkpoint(f)[0])
        return sd, meta
    try:
        if p.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                meta.update(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118
        if _is_torchscript(p):
            # OpenAI's released .pt files are TorchScript archives.
            return read_torchscript(p), {"torchscript": True}
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{p}: could not be read as a checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), dict | str):
        cfg = obj["config"]
        meta[CONFIG_METADATA_KEY] = cfg if isinstance(cfg, str) else json.dumps(cfg)
    return _unwrap(obj, str(p)), meta


def _count_blocks(sd: Mapping[str, Tensor], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    return max(ids) + 1 if ids else 0


def _heads_for(width: int, known: list[int]) -> int:
    return known[0] if known else max(1, width // 64)


def infer_config(sd: Mapping[str, Tensor], meta: Mapping | None = None, act: str | None = None) -> CLIPConfig:
    """Infer the architecture of an internal-layout state dict from tensor shapes (and metadata)."""
    meta = meta or {}
    if CONFIG_METADATA_KEY in meta:
        return CLIPConfig.from_dict(json.loads(meta[CONFIG_METADATA_KEY]))
    pe = sd["visual.patch_embed.weight"]
    vw, patch = pe.shape[0], pe.shape[-1]
    grid = int(round((sd["visual.pos_embed"].shape[0] - 1) ** 0.5))
    tw = sd["text.ln_final.weight"].shape[0]
    vision = VisionConfig(
        image_size=grid * patch,
        patch_size=patch,
        width=vw,
        layers=_count_blocks(sd, "visual.transformer.blocks."),
        heads=1,
        mlp_ratio=sd["visual.transformer.blocks.0.mlp.fc1.weight"].shape[0] / vw,
    )
    text = TextConfig(
        context_length=sd["text.pos_embed"].shape[0],
        vocab_size=sd["text.token_embed.weight"].shape[0],
        width=tw,
        layers=_count_blocks(sd, "text.transformer.blocks."),
        heads=1,
        mlp_ratio=sd["text.transformer.blocks.0.mlp.fc1.weight"].shape[0] / tw,
    )
    embed = sd["text.proj"].shape[1]
    hf = meta.get("hf_config")
    if hf:
        vh = [hf["vision_config"]["num_attention_heads"]]
        th = [hf["text_config"]["num_attention_heads"]]
        act = act or hf["text_config"].get("hidden_act", "quick_gelu")
    else:
        # Head counts are not visible in shapes: take them from a known architecture of the same shape.
        same = [
            a for a in ARCHITECTURES.values()
            if dataclasses_equal_but_heads(a.vision, vision) and dataclasses_equal_but_heads(a.text, text)
            and a.embed_dim == embed
        ]
        vh = [a.vision.heads for a in same]
        th = [a.text.heads for a in same]
        if act is None and same:
            act = same[0].act
    vision = VisionConfig(**{**vision.__dict__, "heads": _heads_for(vw, vh)})
    text = TextConfig(**{**text.__dict__, "heads": _heads_for(tw, th)})
    name = next(
        (a.name for a in ARCHITECTURES.values() if a.vision == vision and a.text == text and a.embed_dim == embed),
        f"ViT-custom-{vw}-p{patch}",
    )
    return CLIPConfig(
        name=name,
        embed_dim=embed,
        vision=vision,
        text=text,
        act=act or "quick_gelu",
        preprocess=PreprocessConfig(image_size=vision.image_size),
    )


def dataclasses_equal_but_heads(a: VisionConfig | TextConfig, b: VisionConfig | TextConfig) -> bool:
    """Compare two tower configs ignoring the head count (which shapes cannot reveal)."""
    da, db = dict(a.__dict__), dict(b.__dict__)
    da.pop("heads")
    db.pop("heads")
    return da == db


def _from_openai(sd: Mapping[str, Tensor]) -> StateDict:
    out: StateDict = {}
    block = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
    for k, v in sd.items():
        if _IGNORED.search(k):
            continue
        if k in _OPENAI_TOP:
            out[_OPENAI_TOP[k]] = v
            continue
        m = block.match(k)
        if m:
            tower = "visual" if m.group(1) else "text"
            rest = _OPENAI_BLOCK.get(m.group(3), m.group(3))
            out[f"{tower}.transformer.blocks.{m.group(2)}.{rest}"] = v
            continue
        base, _, leaf = k.rpartition(".")
        if base in _OPENAI_NORMS:
            out[f"{_OPENAI_NORMS[base]}.{leaf}"] = v
            continue
        raise CheckpointError(f"unexpected key {k!r} in an OpenAI/open_clip checkpoint")
    return out


def _from_hf(sd: Mapping[str, Tensor]) -> StateDict:
    out: StateDict = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    block = re.compile(r"^(vision_model|text_model)\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
    top = {
        "vision_model.embeddings.class_embedding": "visual.cls_token",
        "vision_model.embeddings.patch_embedding.weight": "visual.patch_embed.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.pos_embed",
        "text_model.embeddings.token_embedding.weight": "text.token_embed.weight",
        "text_model.embeddings.position_embedding.weight": "text.pos_embed",
        "logit_scale": "logit_scale",
    }
    norms = {
        "vision_model.pre_layrnorm": "visual.ln_pre",
        "vision_model.post_layernorm": "visual.ln_post",
        "text_model.final_layer_norm": "text.ln_final",
    }
    for k, v in sd.items():
        if _IGNORED.search(k):
            continue
        if k in top:
            out[top[k]] = v
        elif k == "visual_projection.weight":
            out["visual.proj"] = v.t().contiguous()
        elif k == "text_projection.weight":
            out["text.proj"] = v.t().contiguous()
        elif (m := block.match(k)) is not None:
            tower = "visual" if m.group(1) == "vision_model" else "text"
            prefix = f"{tower}.transformer.blocks.{m.group(2)}"
            name, leaf = m.group(3), m.group(4)
            if name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault(f"{prefix}.attn.qkv.{leaf}", {})[name[-6]] = v
            elif name in _HF_BLOCK:
                out[f"{prefix}.{_HF_BLOCK[name]}.{leaf}"] = v
            else:
                raise CheckpointError(f"unexpected key {k!r} in a Hugging Face CLIP checkpoint")
        elif k.rpartition(".")[0] in norms:
            base, _, leaf = k.rpartition(".")
            out[f"{norms[base]}.{leaf}"] = v
        else:
            raise CheckpointError(f"unexpected key {k!r} in a Hugging Face CLIP checkpoint")
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"incomplete q/k/v projections for {key}")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def to_internal(sd: Mapping[str, Tensor]) -> tuple[StateDict, str]:
    """Convert any supported layout to clipiq's internal keys; returns (state dict, source layout)."""
    layout = detect_layout(sd)
    if layout == "clipiq":
        return dict(sd), layout
    if layout == "hf":
        return _from_hf(sd), layout
    return _from_openai(sd), layout


def save_clipiq_checkpoint(state_dict: Mapping[str, Tensor], cfg: CLIPConfig, path: str | Path,
                           extra_metadata: Mapping[str, str] | None = None) -> None:
    """Write weights as safetensors with the architecture in the metadata."""
    from safetensors.torch import save_file

    meta = {CONFIG_METADATA_KEY: cfg.to_json(), **(extra_metadata or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata=meta)
