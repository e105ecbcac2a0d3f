"""Explain one image's quality: its score and CLIP-IQA attributes, dense maps, worst-first regions, a restoration.

:class:`Explainer` builds the models once (the metric, the zero-shot CLIP-IQA head for attributes and maps, the
segmenter, the describer and the restorer), so a folder of images pays for loading only once; :func:`explain`
is the one-image shortcut. Every map comes from the frozen offline CLIP's dense features
(:func:`clipiq.clip.dense_maps`): the heatmap is the per-place probability of "Bad photo." (CLIP-IQA's quality
pair, so 1 is the worst), and the degradation maps are the probabilities of "Dark photo.", "Blurry photo." and
"Noisy photo." (the pairs :mod:`clipiq.restore.dap_led` is guided by).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from clipiq.clip.dense import dense_maps
from clipiq.clip.preprocess import shrink_to
from clipiq.clip.vocabulary import ATTRIBUTE_PROMPTS
from clipiq.core.errors import ClipIQError, ConfigError, ImageLoadError
from clipiq.data.io import DEFAULT_MAX_PIXELS
from clipiq.data.runner import ImageInput, decode
from clipiq.explain.result import DEGRADATION_MAPS, Explanation, RegionExplanation
from clipiq.iqa.base import QualityMetric
from clipiq.iqa.clipiqa import CLIPIQA
from clipiq.iqa.registry import create_metric
from clipiq.iqa.rsfiqa import create_region_describer
from clipiq.restore.base import Restorer
from clipiq.restore.registry import create_restorer
from clipiq.segment.base import Segmenter
from clipiq.segment.describe import LEVELS, RegionDescriber, region_means
from clipiq.segment.registry import create_segmenter

__all__ = ["DEFAULT_MAX_SIDE", "MAP_PAIRS", "Explainer", "explain", "load_input"]

#: The longer side, in pixels, images are downscaled to before explaining (maps and labels refer to that image).
DEFAULT_MAX_SIDE = 768

#: The ATTRIBUTE_PROMPTS pair behind each map: "quality" is the heatmap, the rest are DEGRADATION_MAPS in order.
MAP_PAIRS: dict[str, str] = {"heatmap": "quality", "dark": "brightness", "blurry": "sharpness", "noisy": "noisiness"}
assert tuple(MAP_PAIRS)[1:] == DEGRADATION_MAPS  # the result's keys and the prompt pairs must not drift apart


def _input_name(image: Any, source: str) -> str:
    if source:
        return source
    if isinstance(image, str | os.PathLike):
        return str(image)
    return "PIL image" if isinstance(image, Image.Image) else "image tensor"


def load_input(image: ImageInput, source: str = "", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """A path, PIL image or (3,H,W) / (1,3,H,W) [0,1] tensor as a float (3,H,W) CPU tensor; ImageLoadError names it."""
    name = _input_name(image, source)
    if isinstance(image, Tensor) and image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    try:
        x = decode(image, max_pixels=max_pixels, name=name)
    except ClipIQError:
        raise  # already names the input (files: their path)
    except ValueError as e:
        # Tensor checks raise plain ValueErrors "<name> must ..."; one clipiq error type lets a folder run
        # report and go on, and the name is not repeated.
        reason = str(e)
        reason = reason[len(name) + 1:] if reason.startswith(name + " ") else reason
        raise ImageLoadError(name, reason) from None
    return x.detach().to("cpu", torch.float32).clamp(0.0, 1.0)


def _backbone_source(metric: QualityMetric) -> dict[str, str]:
    """``model=`` or ``weights=`` that loads the metric's own backbone for the zero-shot CLIP-IQA head."""
    clip = getattr(metric, "clip", None)
    name = getattr(clip, "weights_name", None)
    if not name:
        raise ConfigError(f"metric {metric.name!r} has no CLIP backbone to read attributes and maps from; "
                          "pass model= to name one")
    # A backbone loaded from a file records the file's path as its name.
    return {"weights": name} if Path(name).is_file() else {"model": name}


def _attribute_names(attributes: Sequence[str] | str) -> list[str]:
    """The CLIP-IQA attribute names an ``attributes`` option means (as :class:`CLIPIQA` reads it)."""
    if attributes == "all":
        return [a for a in ATTRIBUTE_PROMPTS if a != "quality"]
    if isinstance(attributes, str):
        return [a.strip() for a in attributes.split(",") if a.strip()]
    return list(attributes)


class Explainer:
    """Explains images one by one with models built once: ``Explainer(...)(image)`` -> :class:`Explanation`.

    ``metric``: a registered metric name (or a built :class:`QualityMetric`) giving ``score``; ``rsfiqa`` also
    gives the regions, scores and descriptions itself (its own segmenter and describer; ``segmenter`` and
    ``describer`` are then unused). ``model``: the backbone name for ``create_metric`` (default: the metric's; with a
    built metric, the backbone of the zero-shot head); attributes and maps always come from zero-shot CLIP-IQA
    (``attributes``: its attribute names, or "all") on the metric's backbone. ``segmenter`` /
    ``describer``: names (or built objects) of :mod:`clipiq.segment`; ``describer=None`` leaves descriptions
    empty. ``restore``: a restorer name (or a built :class:`Restorer`) whose output is scored by the same
    metric. ``max_side``: the longer side images are downscaled to first (None or 0: never).
    """

    def __init__(
        self,
        metric: str | QualityMetric = "clipiqa",
        *,
        segmenter: str | Segmenter = "slic",
        describer: str | RegionDescriber | None = "clip",
        restore: str | Restorer | None = None,
        restore_options: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
        model: str | None = None,
        metric_options: Mapping[str, Any] | None = None,
        segmenter_options: Mapping[str, Any] | None = None,
        describer_options: Mapping[str, Any] | None = None,
        attributes: Sequence[str] | str = "all",
    ) -> None:
        if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 0):
            raise ConfigError(f"max_side must be a non-negative integer (pixels) or None, got {max_side!r}")
        self.max_side = max_side
        if isinstance(metric, QualityMetric):
            if metric_options:
                raise ConfigError("metric_options= apply to a metric given by name, not to a built metric")
            self.metric = metric.eval()
        else:
            opts = dict(metric_options or {})
            if str(metric).lower() == "clipiqa":
                opts.setdefault("attributes", attributes)  # one forward pass gives the score and the attributes
            self.metric = create_metric(metric, model=model, device=device, **opts)
        self.metric_name = self.metric.name
        self.uses_regions = self.metric_name.lower() == "rsfiqa"
        if type(self.metric) is CLIPIQA and (not isinstance(metric, QualityMetric)
                                             or set(_attribute_names(attributes)) <= set(self.metric.attributes)):
            self.zero_shot = self.metric
        else:
            # Attributes and maps always come from zero-shot CLIP-IQA, on the backbone the metric scores with.
            source = {"model": model} if model is not None else _backbone_source(self.metric)
            self.zero_shot = create_metric("clipiqa", device=self.metric.device, attributes=attributes, **source)
        assert isinstance(self.zero_shot, CLIPIQA)
        self.clip, self.preprocess = self.zero_shot.clip, self.zero_shot.preprocess
        self.segmenter: Segmenter | None = None
        self.describer: RegionDescriber | None = None
        if not self.uses_regions:
            self.segmenter = (segmenter if isinstance(segmenter, Segmenter)
                              else create_segmenter(segmenter, **dict(segmenter_options or {})))
            if isinstance(describer, str):
                # The clip describer shares the backbone already loaded rather than loading its own.
                describer = create_region_describer(describer, self.clip, self.preprocess, describer_options)
            self.describer = describer
        self.restorer: Restorer | None = None
        if isinstance(restore, Restorer):
            if restore_options:
                raise ConfigError("restore_options= apply to a restorer given by name, not to a built restorer")
            self.restorer = restore.eval()
        elif restore is not None:
            self.restorer = create_restorer(restore, device=device, **dict(restore_options or {}))

    def maps(self, image: Tensor) -> dict[str, Tensor]:
        """The (H,W) [0,1] heatmap and degradation maps of one (3,H,W) image, by name of :data:`MAP_PAIRS`."""
        out = dense_maps(self.clip, self.preprocess, image[None], list(MAP_PAIRS.values()))
        return {name: out.maps[0, i].detach().float().cpu() for i, name in enumerate(MAP_PAIRS)}

    def _score(self, image: Tensor) -> float:
        return float(self.metric.score_with_outputs(image)["score"][0])

    def _regions(self, image: Tensor, heatmap: Tensor) -> tuple[float | None, Tensor, list[RegionExplanation]]:
        """(the metric's score when it scored the regions itself, labels (H,W), regions worst first)."""
        if self.uses_regions:
            r = self.metric.score_regions(image)  # type: ignore[operator]
            labels = r["labels"].to("cpu", torch.int64)
            k = len(r["region_scores"])
            scores, descs = r["region_scores"], r["descriptions"]
            dims = [{d: LEVELS[lv] for d, lv in levels.items()} for levels in r["dimensions"]]
            own_score: float | None = float(r["score"])
        else:
            assert self.segmenter is not None
            labels = self.segmenter(image).to("cpu", torch.int64)
            k = int(labels.max()) + 1
            # A region's quality is the complement of its mean "bad photo" probability: the heatmap's own scale.
            scores = (1.0 - region_means(heatmap[None], labels, k)[:, 0]).clamp(0.0, 1.0).tolist()
            if self.describer is None:
                descs, dims = [""] * k, [{} for _ in range(k)]
            else:
                found = self.describer(image, labels)
                descs, dims = [d.sentence for d in found], [d.level_names for d in found]
            own_score = None
        areas = torch.bincount(labels.reshape(-1), minlength=k).double() / labels.numel()
        regions = [RegionExplanation(label=i, score=float(scores[i]), area=float(areas[i]), description=str(descs[i]),
                                     dimensions=dict(dims[i])) for i in range(k)]
        regions.sort(key=lambda r: (r.score, r.label))
        return own_score, labels, regions

    @torch.inference_mode()
    def __call__(self, image: ImageInput, source: str = "") -> Explanation:
        """Explain one image (path, PIL image or (3,H,W) / (1,3,H,W) [0,1] tensor)."""
        if not source and isinstance(image, str | os.PathLike):
            source = str(image)
        full = load_input(image, source)
        x = shrink_to(full[None], self.max_side, "bilinear")[0]
        maps = self.maps(x)
        heatmap = maps["heatmap"]
        region_score, labels, regions = self._regions(x, heatmap)
        outputs = self.zero_shot.score_with_outputs(x)
        attributes = {a: float(outputs[a][0]) for a in self.zero_shot.attributes}
        if region_score is not None:
            score = region_score
        elif self.zero_shot is self.metric:
            score = float(outputs["score"][0])
        else:
            score = self._score(x)
        restored = restored_score = None
        if self.restorer is not None:
            restored = self.restorer(x).detach().float().cpu().clamp(0.0, 1.0)
            restored_score = self._score(restored)
        return Explanation(
            metric=self.metric_name, score=score, image=x, attributes=attributes, heatmap=heatmap,
            degradation_maps={k: maps[k] for k in DEGRADATION_MAPS}, labels=labels, regions=regions,
            restorer=None if self.restorer is None else self.restorer.name, restored=restored,
            restored_score=restored_score, source=source, original_size=(int(full.shape[-2]), int(full.shape[-1])),
        )

    def __repr__(self) -> str:
        return (f"Explainer(metric={self.metric_name!r}, segmenter={self.segmenter!r}, describer={self.describer!r}, "
                f"restorer={None if self.restorer is None else self.restorer.name!r}, max_side={self.max_side})")


def explain(image: ImageInput, metric: str | QualityMetric = "clipiqa", *, source: str = "",
            **options: Any) -> Explanation:
    """Explain one image's quality: ``Explainer(metric, **options)(image, source=source)`` (see :class:`Explainer`)."""
    return Explainer(metric, **options)(image, source=source)
