"""The ``mllm`` region describer: a multimodal LLM of transformers asked about each region once.

Per region, the model sees the region's bounding-box crop with the pixels outside the region set to mid grey
(0.5), upscaled (nearest) to at least :data:`MIN_SIDE` pixels a side, and the fixed question :data:`PROMPT`.
The answer is parsed by :func:`parse_answer` ("colour: good; noise: poor; ..."; case, spacing, separators and
order do not matter). Dimensions that are missing or unparsable are taken from the ``clip`` describer
(:class:`clipiq.segment.describe.ClipDescriber`, computed once per image, only when needed) and logged.

Supported models (``config.model_type``): ``qwen2_vl`` and ``qwen2_5_vl`` (Qwen2-VL / Qwen2.5-VL) and ``llava``.
The prompt is built without the combined ``AutoProcessor`` (Qwen2.5-VL's imports torchvision, which clipiq does
not use): the crop goes through the PIL backend of the model's image processor (``Qwen2VLImageProcessorPil``,
``CLIPImageProcessorPil``; neither imports torchvision) and the token ids are assembled here, with the image
placeholder token repeated once per visual token (Qwen: ``grid_t * grid_h * grid_w / spatial_merge_size**2``
between ``<|vision_start|>`` and ``<|vision_end|>``; LLaVA: ``(image_size / patch_size)**2``, +1 with the
``full`` feature strategy). Greedy decoding, ``max_new_tokens`` (default 48).

Weights: ``weights=FOLDER`` written by ``save_pretrained`` (config, safetensors, tokenizer and
``preprocessor_config.json``), e.g. a copy of Qwen/Qwen2.5-VL-3B-Instruct or llava-hf/llava-1.5-7b-hf.
Only safetensors are loaded and no code from the folder runs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clipiq.core.device import resolve_device
from clipiq.core.errors import ConfigError, WeightsError
from clipiq.segment.base import check_option
from clipiq.segment.describe import (
    DIMENSIONS,
    LEVELS,
    ClipDescriber,
    RegionDescriber,
    RegionDescription,
    sentence,
)

__all__ = ["MIN_SIDE", "PROMPT", "SUPPORTED_MODEL_TYPES", "MllmDescriber", "parse_answer", "region_crop"]

log = logging.getLogger(__name__)

PROMPT = (
    "The image is one region of a photo; grey pixels are outside the region. Rate the region's quality on five "
    "dimensions: colour, noise, compression artifacts, blur and overall quality, each as one of excellent, good, "
    "fair, poor, bad. Also name what the region shows in one word. Answer in exactly this format: "
    "colour: <level>; noise: <level>; artifacts: <level>; blur: <level>; overall: <level>; content: <word>"
)

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "llava")

#: Smallest crop side handed to the image processor (Qwen2-VL needs at least 28 px).
MIN_SIDE = 28

# Words an answer may use for each dimension (matched as whole words, case-insensitive).
_DIMENSION_WORDS = {
    "colour": r"colou?rs?|colou?rfulness",
    "noise": r"noise|noisiness",
    "artifacts": r"(?:compression\s+)?artifacts?|(?:compression\s+)?artefacts?|compression",
    "blur": r"blur|blurriness|sharpness",
    "overall": r"overall(?:\s+quality)?|quality",
}
_LEVEL = "|".join(LEVELS)
_ITEM = re.compile(
    rf"\b(?P<dim>{'|'.join(f'(?P<{d}>{w})' for d, w in _DIMENSION_WORDS.items())})\s*[:=\-]?\s*"
    rf"(?P<level>{_LEVEL})\b",
    re.IGNORECASE,
)
_CONTENT = re.compile(r"\bcontent\s*[:=\-]\s*(?P<word>[A-Za-z][A-Za-z \-]{0,30}?)\s*(?:[;,.\n]|$)", re.IGNORECASE)


def parse_answer(text: str) -> tuple[dict[str, int], str | None]:
    """Levels found in an answer (dimension -> index into LEVELS; missing dimensions absent) and the content.

    Tolerant to case, spacing, ``:``/``=``/``-`` separators and order; the first mention of a dimension wins.
    """
    levels: dict[str, int] = {}
    for m in _ITEM.finditer(text or ""):
        dim = next(d for d in DIMENSIONS if m.group(d))
        levels.setdefault(dim, LEVELS.index(m.group("level").lower()))
    found = _CONTENT.search(text or "")
    content = found.group("word").strip().lower() if found else None
    if content in LEVELS or content in ("<word>", ""):
        content = None
    return levels, content


def region_crop(image: Tensor, mask: Tensor, *, grey: float = 0.5, min_side: int = MIN_SIDE) -> Tensor:
    """The bounding-box crop (3,h,w) of ``mask`` (H,W) in ``image`` (3,H,W), pixels outside the mask grey."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        raise ValueError("empty region mask")
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    crop = image[:, top:bottom, left:right]
    crop = torch.where(mask[top:bottom, left:right][None], crop, torch.full_like(crop, grey))
    h, w = crop.shape[-2:]
    if min(h, w) < min_side:
        scale = min_side / min(h, w)
        crop = F.interpolate(crop[None], size=(max(min_side, round(h * scale)), max(min_side, round(w * scale))),
                             mode="nearest")[0]
    return crop


def _to_uint8(crop: Tensor) -> np.ndarray:
    return (crop.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


class MllmDescriber(RegionDescriber):
    """A transformers image-text-to-text model asked about each region; see the module docstring.

    ``weights``: the model folder (required). ``fallback_model`` / ``clip`` / ``preprocess``: the backbone of
    the ``clip`` describer used for unparsable answers (loaded on first need).
    """

    name: ClassVar[str] = "mllm"

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        max_new_tokens: int = 48,
        device: str | torch.device | None = "cpu",
        prompt: str = PROMPT,
        fallback_model: str = "degradation-clip-v2",
        clip: Any = None,
        preprocess: Any = None,
    ) -> None:
        n = self.name
        if weights is None:
            raise ConfigError(f"describer {n} needs weights=FOLDER, a model folder written by save_pretrained "
                              f"(model types: {', '.join(SUPPORTED_MODEL_TYPES)})")
        self.max_new_tokens = check_option(n, "max_new_tokens", max_new_tokens, kind=int, low=1)
        self.prompt = check_option(n, "prompt", prompt, kind=str)
        self.fallback_model = check_option(n, "fallback_model", fallback_model, kind=str)
        if (clip is None) != (preprocess is None):
            raise ConfigError(f"describer {n}: pass both clip= and preprocess= or neither")
        self.weights = weights
        self.device = resolve_device(device)
        self._fallback_backbone = (clip, preprocess)
        self._fallback: ClipDescriber | None = None
        self._load(Path(weights).expanduser())

    def _load(self, folder: Path) -> None:
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise WeightsError(f"describer {self.name}: weights {folder} must be a folder with config.json, "
                               "safetensors, tokenizer and preprocessor_config.json (as written by save_pretrained)")
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"describer {self.name}: config in {folder} could not be read: {exc}") from exc
        self.model_type = config.model_type
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"describer {self.name}: model type {self.model_type!r} is not supported; supported: "
                              f"{', '.join(SUPPORTED_MODEL_TYPES)}")
        if self.model_type == "llava":
            from transformers import CLIPImageProcessorPil as ImageProcessor
        else:
            from transformers import Qwen2VLImageProcessorPil as ImageProcessor
        try:
            self._image_processor = ImageProcessor.from_pretrained(folder, local_files_only=True)
            self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"describer {self.name}: model in {folder} could not be loaded: {exc}") from exc
        self._config = config
        self._model = model.to(self.device).eval()

    def _text_ids(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def build_inputs(self, crop: Tensor) -> dict[str, Tensor]:
        """Model inputs (batch of one) for a crop (3,h,w) in [0,1] and :attr:`prompt`."""
        pixels = self._image_processor(images=[_to_uint8(crop)], return_tensors="pt")
        cfg = self._config
        if self.model_type == "llava":
            vision = cfg.vision_config
            count = (vision.image_size // vision.patch_size) ** 2
            count += 1 if getattr(cfg, "vision_feature_select_strategy", "default") == "full" else 0
            image_id = getattr(cfg, "image_token_id", None)
            image_id = getattr(cfg, "image_token_index", None) if image_id is None else image_id
            bos = [self._tokenizer.bos_token_id] if self._tokenizer.bos_token_id is not None else []
            ids = (bos + self._text_ids("USER: ") + [image_id] * count
                   + self._text_ids("\n" + self.prompt + " ASSISTANT:"))
            inputs = {"pixel_values": pixels["pixel_values"]}
        else:
            grid = pixels["image_grid_thw"]
            merge = int(getattr(self._image_processor, "merge_size", 2))
            count = int(grid.prod()) // merge**2
            ids = (self._text_ids("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
                   + [cfg.vision_start_token_id] + [cfg.image_token_id] * count + [cfg.vision_end_token_id]
                   + self._text_ids(self.prompt + "<|im_end|>\n<|im_start|>assistant\n"))
            inputs = {"pixel_values": pixels["pixel_values"], "image_grid_thw": grid}
        input_ids = torch.tensor([ids], dtype=torch.long)
        inputs.update(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        return {k: v.to(self.device) for k, v in inputs.items()}

    @torch.no_grad()
    def ask(self, crop: Tensor) -> str:
        """The model's answer (new tokens only, decoded) for one crop."""
        inputs = self.build_inputs(crop)
        out = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self._tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def fallback(self) -> ClipDescriber:
        """The ``clip`` describer for unparsable answers (built on first use)."""
        if self._fallback is None:
            clip, preprocess = self._fallback_backbone
            if clip is None:
                self._fallback = ClipDescriber(self.fallback_model)
            else:
                self._fallback = ClipDescriber(clip=clip, preprocess=preprocess)
        return self._fallback

    def describe(self, image: Tensor, labels: Tensor, k: int) -> list[RegionDescription]:
        backup: list[RegionDescription] | None = None
        out = []
        for region in range(k):
            answer = self.ask(region_crop(image, labels == region))
            levels, content = parse_answer(answer)
            missing = [d for d in DIMENSIONS if d not in levels]
            if missing:
                log.warning("describer mllm: region %d: no level for %s in the answer %r; using the clip describer",
                            region, ", ".join(missing), answer[:200])
                if backup is None:
                    backup = self.fallback()(image, labels)
                levels.update({d: backup[region].levels[d] for d in missing})
                content = content or backup[region].content
            lv = {d: levels[d] for d in DIMENSIONS}
            out.append(RegionDescription(levels=lv, sentence=sentence(lv, content), content=content))
        return out
