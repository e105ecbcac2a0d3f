"""One batch runner for every path that scores or restores many images.

``clipiq score``, ``clipiq bench``, ``clipiq restore``, the Python API over many inputs and the training
protocols' evaluation all go through :class:`BatchRunner`: inputs are decoded in worker threads a bounded
window ahead of the model, batched by shape, and each input ends as exactly one :class:`RunResult`, an
output or an error. Results stream out as batches finish, so memory is bounded for any number of inputs.

:func:`prefetch` is the one decode-ahead implementation; the runner and the training data loaders use it.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from PIL import Image
from torch import Tensor

from clipiq.core.errors import ClipIQError, ImageLoadError
from clipiq.core.image import check_image_batch, pil_to_tensor
from clipiq.data.io import DEFAULT_MAX_PIXELS, check_pixels, displayed, read_image

ImageInput = str | os.PathLike | Image.Image | Tensor
T = TypeVar("T")
R = TypeVar("R")


def prefetch(fn: Callable[[T], R], items: Iterable[T], *, workers: int = 2, ahead: int = 8
             ) -> Iterator[tuple[T, R | None, BaseException | None]]:
    """Apply ``fn`` to items in worker threads, at most ``ahead`` items in flight; yields in input order.

    Each item yields ``(item, value, None)`` or ``(item, None, exception)``: one failure never ends the stream.
    """
    if workers < 1 or ahead < 1:
        raise ValueError(f"workers and ahead must be at least 1, got {workers} and {ahead}")
    window: deque[tuple[T, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clipiq-decode") as pool:
        try:
            for item in items:
                window.append((item, pool.submit(fn, item)))
                if len(window) >= ahead:
                    yield _settle(*window.popleft())
            while window:
                yield _settle(*window.popleft())
        finally:
            # A consumer that stops early (break, exception) must not wait for work it will never read.
            for _, fut in window:
                fut.cancel()


def _settle(item: T, fut: Future) -> tuple[T, Any, BaseException | None]:
    try:
        return item, fut.result(), None
    except Exception as e:
        return item, None, e


class InputFailedError(ClipIQError, RuntimeError):
    """One input of a batch run failed while being prepared or processed; the message names the input."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


@dataclass
class RunResult:
    """What became of one input: ``output`` (whatever the batch function returned for it) or ``error``."""

    index: int
    source: str
    output: Any = None
    error: str | None = None
    #: What decoding chose that a reader of the result should know, e.g. "animated image (12 frames): first
    #: frame scored"; None when nothing.
    note: str | None = None
    #: The exception behind ``error``, for callers that raise rather than report (see :meth:`unwrap`).
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the input was processed."""
        return self.error is None

    def unwrap(self) -> Any:
        """The output, or raise this input's error: as it is when it names the input, else wrapped to name it."""
        if self.error is None:
            return self.output
        if self.exception is not None and self.source in str(self.exception):
            raise self.exception
        raise InputFailedError(self.source, self.error) from self.exception


def source_name(item: ImageInput, index: int) -> str:
    """How an input is named in results and errors: its path, or its kind and position."""
    if isinstance(item, str | os.PathLike):
        return str(item)
    return f"<{type(item).__name__} #{index}>"


def expand_inputs(inputs: ImageInput | Iterable[ImageInput]) -> Iterator[ImageInput]:
    """Flatten what the API accepts (one input, a sequence, an (N,3,H,W) batch) into single inputs, lazily."""
    if isinstance(inputs, Tensor):
        yield from check_image_batch(inputs, "images").unbind(0)
        return
    if isinstance(inputs, str | os.PathLike | Image.Image):
        yield inputs
        return
    if not isinstance(inputs, Iterable):
        raise TypeError(f"images must be paths, PIL images or tensors, got {type(inputs).__name__}")
    for i, item in enumerate(inputs):
        if isinstance(item, Tensor) and item.ndim == 4:
            yield from check_image_batch(item, f"images[{i}]").unbind(0)
        elif isinstance(item, str | os.PathLike | Image.Image | Tensor):
            yield item
        else:
            raise TypeError(f"images[{i}] must be a path, PIL image or tensor, got {type(item).__name__}")


def decode(item: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str = "image") -> Tensor:
    """One input as a float (3,H,W) tensor in [0,1]: files are decoded, tensors and PIL images checked."""
    return decode_noted(item, max_pixels, name)[0]


def decode_noted(item: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str = "image"
                 ) -> tuple[Tensor, str | None]:
    """:func:`decode`, with the decoder's note (e.g. which frame of an animation was taken) or None.

    Files and PIL images are shown as a viewer shows them (:func:`clipiq.data.io.displayed`); every kind of
    input is held to ``max_pixels``, files before a pixel is decoded.
    """
    if isinstance(item, str | os.PathLike):
        decoded = read_image(item, max_pixels=max_pixels)  # a str may be a URI: not made a Path
        return pil_to_tensor(decoded.image), decoded.note
    if isinstance(item, Image.Image):
        check_pixels(name, *item.size, max_pixels)
        try:
            decoded = displayed(item)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageLoadError(name, str(e)) from None
        return pil_to_tensor(decoded.image), decoded.note
    if isinstance(item, Tensor):
        if item.ndim != 3:
            raise ValueError(f"{name} must have shape (3,H,W), got {tuple(item.shape)}")
        check_pixels(name, item.shape[-1], item.shape[-2], max_pixels)
        return check_image_batch(item, name)[0], None
    raise TypeError(f"{name} must be a path, PIL image or tensor, got {type(item).__name__}")


def error_text(e: BaseException) -> str:
    """A one-line reason for a result row: the decoder's own reason, else the exception's type and text."""
    if isinstance(e, ImageLoadError):
        return e.reason
    return f"{type(e).__name__}: {e}"


def shape_key(prepared: Any) -> Hashable:
    """Batch key of a prepared input: tensors batch with tensors of the same shape."""
    return tuple(prepared.shape) if isinstance(prepared, Tensor) else type(prepared).__name__


def rounded_outputs(output: Mapping[str, Any]) -> tuple[dict[str, float], str]:
    """A metric's outputs as result rows hold them: ``(floats rounded to 6 places, "")``, or ``({}, error)`` when
    any is NaN or infinite (a non-finite score is an error, never a result)."""
    values = {k: float(v) for k, v in output.items()}
    bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
    if bad:
        return {}, f"non-finite score ({', '.join(bad)})"
    return {k: round(v, 6) for k, v in values.items()}, ""


def process_all(process: Callable[[list[Any]], Sequence[Any]], items: list[Any]) -> list[Any]:
    """``process(items)``, checked to give one output per item."""
    outputs = list(process(items))
    if len(outputs) != len(items):
        raise RuntimeError(f"the batch function returned {len(outputs)} outputs for {len(items)} inputs")
    return outputs


def process_isolating_failures(process: Callable[[list[Any]], Sequence[Any]], items: list[Any]
                               ) -> list[tuple[Any, BaseException | None]]:
    """``(output, None)`` or ``(None, exception)`` per item: a batch that raises is retried item by item, so only
    the offending item fails."""
    try:
        return [(out, None) for out in process_all(process, items)]
    except Exception as e:
        if len(items) == 1:
            return [(None, e)]
        return [r for item in items for r in process_isolating_failures(process, [item])]


class _Held(NamedTuple):
    """A prepared input waiting for its batch."""

    index: int
    name: str
    prepared: Any
    note: str | None


class BatchRunner:
    """Decode ahead in threads, batch by shape, run the model, and yield one result per input.

    ``process`` takes a list of prepared inputs of one shape and returns one output per input. ``prepare``
    turns a decoded (3,H,W) image into what ``process`` batches (it runs in the worker threads, so it must
    be thread-safe and should stay on the CPU). A batch that raises is retried input by input, so only the
    offending input gets an error. Results come in completion order, each carrying its input's index.

    ``load`` replaces the default decoding (:func:`decode` of paths, PIL images and tensors) for inputs of
    another kind, such as record indices into an image cache; its inputs are taken as they come.
    ``batch_key`` decides which prepared inputs may share a batch (default: equal tensor shapes).
    ``raise_errors`` makes the first failure (decoding or a batch) end the run as it is, for callers to
    whom a failure is a bug to surface rather than a row (training evaluation).
    """

    def __init__(self, process: Callable[[list[Any]], Sequence[Any]], *,
                 prepare: Callable[[Tensor], Any] | None = None, batch_size: int = 16, workers: int = 2,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, ahead: int | None = None,
                 batch_key: Callable[[Any], Hashable] = shape_key, load: Callable[[Any], Any] | None = None,
                 raise_errors: bool = False):
        if batch_size < 1 or workers < 1:
            raise ValueError(f"batch_size and workers must be at least 1, got {batch_size} and {workers}")
        if max_pixels is not None and max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1 (or None for no limit), got {max_pixels}")
        self.process = process
        self.prepare = prepare
        self.batch_size = batch_size
        self.workers = workers
        self.max_pixels = max_pixels
        self.ahead = ahead or max(2 * batch_size, 4 * workers)
        self.batch_key = batch_key
        self.load = load
        self.raise_errors = raise_errors

    def _load(self, job: tuple[int, Any]) -> tuple[Any, str | None]:
        index, item = job
        note = None
        if self.load is not None:
            image = self.load(item)
        else:
            image, note = decode_noted(item, self.max_pixels, name=source_name(item, index))
        return (self.prepare(image) if self.prepare is not None else image), note

    def run(self, inputs: ImageInput | Iterable[Any]) -> Iterator[RunResult]:
        """Process every input; yields results as batches finish (at most ``ahead + batch_size`` held)."""
        groups: dict[Hashable, list[_Held]] = {}
        held = 0
        jobs = enumerate(expand_inputs(inputs) if self.load is None else inputs)
        for (index, item), loaded, err in prefetch(self._load, jobs, workers=self.workers, ahead=self.ahead):
            name = source_name(item, index)
            if err is not None:
                if self.raise_errors:
                    raise err
                yield RunResult(index, name, error=error_text(err), exception=err)
                continue
            prepared, note = loaded
            key = self.batch_key(prepared)
            group = groups.setdefault(key, [])
            group.append(_Held(index, name, prepared, note))
            held += 1
            if len(group) >= self.batch_size:
                yield from self._flush(groups.pop(key))
                held -= len(group)
            elif held >= self.batch_size:
                # Mixed shapes: never hold more than a batch's worth; send the group waiting longest as it is.
                # (Sending the largest instead would keep a rare shape waiting to the end, shrinking every
                # later batch of the common shape by one.)
                key = min(groups, key=lambda k: groups[k][0].index)
                group = groups.pop(key)
                held -= len(group)
                yield from self._flush(group)
        for group in groups.values():
            yield from self._flush(group)

    def _flush(self, group: list[_Held]) -> list[RunResult]:
        items = [h.prepared for h in group]
        settled = ([(out, None) for out in process_all(self.process, items)] if self.raise_errors
                   else process_isolating_failures(self.process, items))
        return [RunResult(h.index, h.name, output=out, note=h.note) if err is None else
                RunResult(h.index, h.name, error=error_text(err), note=h.note, exception=err)
                for h, (out, err) in zip(group, settled)]

    def run_ordered(self, inputs: ImageInput | Iterable[Any]) -> list[RunResult]:
        """Every result, in input order (holds all outputs: for scores, not for restored images)."""
        return sorted(self.run(inputs), key=lambda r: r.index)


__all__ = [
    "BatchRunner",
    "ImageInput",
    "InputFailedError",
    "RunResult",
    "decode",
    "decode_noted",
    "error_text",
    "expand_inputs",
    "prefetch",
    "process_all",
    "process_isolating_failures",
    "rounded_outputs",
    "shape_key",
    "source_name",
]
