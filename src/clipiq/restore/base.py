"""The one inference wrapper every restorer shares: inputs, padding, tiling under a memory budget, precision.

A subclass implements :meth:`Restorer.restore_batch` on a padded float32 batch and sets a few class
attributes (``scale``, ``pad_multiple``, ``tileable``, ``bytes_per_pixel``); the base class does the rest.

Memory budget: ``memory_budget`` (MiB, default :data:`DEFAULT_MEMORY_BUDGET_MB`) bounds the working
memory of one call of ``restore_batch``. ``bytes_per_pixel`` is the subclass's estimate of that memory
per input pixel (input, output at ``scale``, and intermediates), so ``max_tile_pixels = budget /
bytes_per_pixel`` pixels may go through at once. Images are batched up to that many pixels; an image
larger than that is cut into square tiles of side ``isqrt(max_tile_pixels)`` (rounded down to
``pad_multiple``), overlapping by ``tile_overlap`` pixels and blended as :mod:`clipiq.restore.tiling`
describes. ``tile=N`` sets the tile side instead; ``tile=0`` never tiles.

Restorers that use whole-image statistics (``tileable = False``, e.g. the dark channel prior's global
airlight) would give a different, seamed result tile by tile, so an image above their budget is refused
with an error saying how to proceed (raise ``memory_budget``, or pass ``tile=N`` to accept tiled output);
an explicit ``tile`` is honoured with a warning.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from clipiq.core.device import PRECISIONS, autocast
from clipiq.core.errors import ConfigError
from clipiq.core.image import check_image_batch, pad_to_multiple
from clipiq.data.io import DEFAULT_MAX_PIXELS
from clipiq.data.runner import BatchRunner, ImageInput, RunResult, decode
from clipiq.restore.tiling import tiled_apply

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MEMORY_BUDGET_MB", "DEFAULT_TILE_OVERLAP", "RUN_OPTIONS", "Restorer"]

#: Default working-memory budget of one forward pass, in MiB: fits next to other work on an 8 GB GPU.
DEFAULT_MEMORY_BUDGET_MB = 4096
#: Default overlap of neighbouring tiles, in input pixels (a quarter of it is discarded at each shared edge).
DEFAULT_TILE_OVERLAP = 32
#: Options every restorer takes (how it runs, not what it computes, apart from tiling a non-tileable method).
RUN_OPTIONS = ("batch_size", "memory_budget", "tile", "tile_overlap")

_MIB = 1 << 20


def _check_int(value: object, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


class Restorer(nn.Module):
    """Base class: subclasses implement :meth:`restore_batch`; calling a restorer restores images.

    Inputs are paths, PIL images, float tensors (3,H,W) or (N,3,H,W) in [0,1], or a sequence of these.
    A single image gives a float32 (3,H*scale,W*scale) tensor, a (N,3,H,W) tensor a (N,3,...) tensor, and
    a sequence a list of (3,...) tensors (sizes may differ). Outputs lie in [0,1], on the input tensor's
    device (on the CPU for paths and PIL images).
    """

    name: str = "restorer"
    #: Output size = input size x scale.
    scale: int = 1
    #: restore_batch gets H and W padded (reflect) to multiples of this.
    pad_multiple: int = 1
    #: Whether the output at a pixel depends only on a neighbourhood (so tiles blend back to the whole).
    tileable: bool = True
    #: Estimated peak working memory of restore_batch per input pixel, in bytes (float32).
    bytes_per_pixel: int = 256
    #: The weights file the restorer was built from (its shipped file when none was given); None without weights.
    weights: str | None = None

    def __init__(self, *, tile: int | None = None, tile_overlap: int = DEFAULT_TILE_OVERLAP,
                 memory_budget: float = DEFAULT_MEMORY_BUDGET_MB, batch_size: int = 4, precision: str = "fp32"):
        super().__init__()
        if tile is not None:
            _check_int(tile, "tile", 0)
        self.tile_overlap = _check_int(tile_overlap, "tile_overlap", 0)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int | float) or not memory_budget > 0:
            raise ConfigError(f"memory_budget must be a positive number of MiB, got {memory_budget!r}")
        self.memory_budget = float(memory_budget)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.tile = tile
        # A parameter-free restorer still needs .to() to say where it runs: a buffer moves with the module.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)
        if tile and not self.tileable:
            log.warning("%s uses whole-image statistics: tiles of %d pixels change its output", self.name, tile)
        if tile and tile <= self.tile_overlap:
            raise ConfigError(f"tile ({tile}) must be larger than tile_overlap ({self.tile_overlap})")

    # --- what a subclass provides -------------------------------------------------------------------

    def restore_batch(self, x: Tensor) -> Tensor:
        """(N,3,H,W) float32 in [0,1], H and W multiples of ``pad_multiple`` -> (N,3,H*scale,W*scale)."""
        raise NotImplementedError

    # --- running ------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the restorer runs; follows ``.to()``."""
        return self._device_anchor.device

    @property
    def max_tile_pixels(self) -> int:
        """Input pixels one call of ``restore_batch`` may take under the memory budget."""
        return max(1, int(self.memory_budget * _MIB / self.bytes_per_pixel))

    def tile_size(self) -> int:
        """Side of the square tiles a too-large image is cut into (a multiple of ``pad_multiple``)."""
        side = self.tile if self.tile else math.isqrt(self.max_tile_pixels)
        side -= side % self.pad_multiple
        if side <= self.tile_overlap:
            raise ValueError(f"{self.name}: tiles of {side} pixels (memory budget {self.memory_budget:g} MiB) "
                             f"must be larger than the {self.tile_overlap}-pixel overlap; raise memory_budget")
        return side

    def _needs_tiles(self, h: int, w: int) -> bool:
        if self.tile is not None:
            return self.tile > 0 and max(h, w) > self.tile
        hp, wp = h + -h % self.pad_multiple, w + -w % self.pad_multiple
        if hp * wp <= self.max_tile_pixels:
            return False
        if not self.tileable:
            need = hp * wp * self.bytes_per_pixel / _MIB
            raise ValueError(
                f"{self.name}: a {w}x{h} image needs about {need:.0f} MiB, above the memory budget of "
                f"{self.memory_budget:g} MiB, and {self.name} uses whole-image statistics, so tiles would change "
                "its output; raise memory_budget (--option memory_budget=MIB) or pass tile=N to accept tiles")
        return True

    def _forward_padded(self, x: Tensor) -> Tensor:
        """restore_batch on (N,3,h,w) moved to the device, padded to the multiple and cropped back."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x.to(self.device, torch.float32), self.pad_multiple)
        with autocast(self.device, self.precision):
            y = self.restore_batch(x)
        return y[..., : h * self.scale, : w * self.scale].float().clamp(0.0, 1.0)

    @torch.inference_mode()
    def restore_tensor(self, x: Tensor, out_device: torch.device | str | None = None) -> Tensor:
        """Restore a float (3,H,W) or (N,3,H,W) tensor in [0,1]; returns an (N,3,H',W') float32 batch.

        The result is on ``out_device`` (default: the input's device).
        """
        x = check_image_batch(x, "images")
        out_device = x.device if out_device is None else torch.device(out_device)
        n, _, h, w = x.shape
        if self._needs_tiles(h, w):
            tile = self.tile_size()
            per_call = max(1, min(self.batch_size, self.max_tile_pixels // (tile * tile)))
            # the blend canvas stays off the device: device memory holds one batch of tiles at a time
            canvas = out_device if out_device.type == "cpu" or self.device.type == "cpu" else torch.device("cpu")
            parts = [tiled_apply(self._forward_padded, x[i : i + per_call], tile, self.tile_overlap, self.scale,
                                 canvas).to(out_device) for i in range(0, n, per_call)]
        else:
            pixels = (h + -h % self.pad_multiple) * (w + -w % self.pad_multiple)
            per_call = max(1, min(self.batch_size, self.max_tile_pixels // pixels))
            parts = [self._forward_padded(x[i : i + per_call]).to(out_device) for i in range(0, n, per_call)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def forward(self, images: ImageInput | Sequence[ImageInput]) -> Tensor | list[Tensor]:
        """Restore one image, a (N,3,H,W) batch, or a sequence of inputs (a list of (3,H',W') tensors)."""
        if isinstance(images, Tensor):
            out = self.restore_tensor(images)
            return out[0] if images.ndim == 3 else out
        if isinstance(images, str | os.PathLike | Image.Image):
            return self.restore_tensor(decode(images, name=str(images))[None], "cpu")[0]
        # The batch runner decodes (a bounded window ahead) and groups images of one size, dtype and device;
        # the first failure is raised as it is, as for a single input.
        runner = BatchRunner(self._restore_on_input_device, batch_size=self.batch_size, raise_errors=True,
                             batch_key=lambda t: (tuple(t.shape), t.dtype, t.device))
        out = [r.output for r in runner.run_ordered(images)]
        if not out:
            raise ValueError("no images given")
        return out

    def iter_results(self, inputs: ImageInput | Iterable[ImageInput], *, batch_size: int | None = None,
                     workers: int = 2, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[RunResult]:
        """Restore many inputs on the batch runner: decoded in threads, one result per input as batches finish.

        Each ok result's ``output`` is the restored float32 (3,H',W') CPU tensor; a bad input gets an error.
        """
        runner = BatchRunner(self._restore_list, batch_size=batch_size or self.batch_size, workers=workers,
                             max_pixels=max_pixels)
        return runner.run(inputs)

    def _restore_list(self, images: list[Tensor]) -> list[Tensor]:
        return list(self.restore_tensor(torch.stack(images), "cpu").unbind(0))

    def _restore_on_input_device(self, images: list[Tensor]) -> list[Tensor]:
        return list(self.restore_tensor(torch.stack(images)).unbind(0))

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, scale={self.scale}, tileable={self.tileable}, "
                f"memory_budget={self.memory_budget:g} MiB, tile={self.tile}")
