"""What a report accepts: the checks on explanations, failures and the report folder, and safe page names."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath

from torch import Tensor

from clipiq.core.errors import ClipIQError
from clipiq.explain.result import Explanation

#: Longest page name kept from a source's file name (before a ``-2`` suffix).
MAX_NAME = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ReportError(ClipIQError, ValueError):
    """A report cannot be written: a malformed explanation, a bad failure entry or an unusable folder."""


def _what(ex: Explanation) -> str:
    return f"explanation of {ex.source!r}" if ex.source else "explanation"


def _shape(t: Tensor) -> str:
    return "x".join(str(d) for d in t.shape)


def check_explanation(ex: object) -> Explanation:
    """``ex`` when it is an :class:`Explanation` whose maps and labels fit its image; else :class:`ReportError`."""
    if not isinstance(ex, Explanation):
        raise ReportError(f"a report renders clipiq.explain.Explanation objects, got {type(ex).__name__}")
    what = _what(ex)
    img = ex.image
    if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != 3 or img.shape[1] < 1 or img.shape[2] < 1:
        got = _shape(img) if isinstance(img, Tensor) else type(img).__name__
        raise ReportError(f"{what}: image must be a (3, H, W) tensor, got {got}")
    if not img.is_floating_point():
        raise ReportError(f"{what}: image must be a float tensor in [0, 1], got {img.dtype}")
    hw = tuple(img.shape[1:])
    maps: list[tuple[str, object]] = [("heatmap", ex.heatmap), ("labels", ex.labels)]
    maps += [(f"degradation map {k!r}", v) for k, v in ex.degradation_maps.items()]
    for name, m in maps:
        if m is None:
            continue
        if not isinstance(m, Tensor):
            raise ReportError(f"{what}: {name} must be a tensor, got {type(m).__name__}")
        if tuple(m.shape) != hw:
            raise ReportError(
                f"{what}: {name} is {_shape(m)} but the image is {hw[0]}x{hw[1]}; maps and labels must match "
                "the image they explain"
            )
    if ex.labels is not None and ex.labels.is_floating_point():
        raise ReportError(f"{what}: labels must be an integer tensor, got {ex.labels.dtype}")
    if ex.restored is not None and (
        not isinstance(ex.restored, Tensor) or ex.restored.dim() != 3 or ex.restored.shape[0] != 3
    ):
        got = _shape(ex.restored) if isinstance(ex.restored, Tensor) else type(ex.restored).__name__
        raise ReportError(f"{what}: restored must be a (3, H', W') tensor, got {got}")
    if ex.restored is not None and not ex.restored.is_floating_point():
        raise ReportError(f"{what}: restored must be a float tensor in [0, 1], got {ex.restored.dtype}")
    for name, value in [("score", ex.score), *((f"attribute {k!r}", v) for k, v in ex.attributes.items())]:
        if not _is_number(value):
            raise ReportError(f"{what}: {name} must be a number, got {value!r}")
    for r in ex.regions:
        if not _is_number(r.score) or not _is_number(r.area):
            raise ReportError(f"{what}: region {r.label} needs a numeric score and area, got {r.score!r}, {r.area!r}")
    return ex


def _is_number(v: object) -> bool:
    if isinstance(v, bool | str | bytes):
        return False
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several elements
        return False
    return True


def check_failures(failures: Iterable[object]) -> list[tuple[str, str]]:
    """The failures as (source, error message) string pairs; else :class:`ReportError`."""
    out = []
    for i, f in enumerate(failures):
        if isinstance(f, str | bytes) or not isinstance(f, Sequence) or len(f) != 2:
            raise ReportError(f"failure {i} must be a (source, error message) pair, got {f!r}")
        out.append((str(f[0]), str(f[1])))
    return out


def report_folder(out_dir: str | PurePath) -> Path:
    """The report folder, created when missing; :class:`ReportError` when it is a file or cannot be made."""
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise ReportError(f"report folder {str(p)!r} exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the report folder {str(p)!r}: {e.strerror or e}") from e
    return p


_HTML_SUFFIX = re.compile(r"(\.html?)+$", re.IGNORECASE)


def safe_name(text: str, default: str = "image", *, stem: bool = True) -> str:
    """A file-name stem from ``text``: letters, digits, ``.``, ``_`` and ``-`` only, no leading dot.

    With ``stem`` (for paths) the folders and the extension are dropped; without, only the folders.
    """
    path = PurePath(text.replace("\\", "/")) if text else PurePath()
    base = path.stem if stem else path.name
    base = _UNSAFE.sub("_", base).strip("._-")[:MAX_NAME].rstrip("._-")
    # A name is a page's stem: one ending in .html would name another page (a.html.png -> a.html -> a.html.html).
    base = _HTML_SUFFIX.sub("", base).rstrip("._-")
    return base or default


def unique_names(sources: Sequence[str], reserved: Iterable[str] = ("index",)) -> list[str]:
    """One safe page name per source, distinct ignoring case (``a``, ``a-2``...) and never a reserved name."""
    taken = {r.lower() for r in reserved}
    out = []
    for src in sources:
        base = safe_name(src)
        name, n = base, 1
        while name.lower() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.lower())
        out.append(name)
    return out


def finite(v: object) -> float | None:
    """``v`` as a float, or None when it is missing or not finite."""
    if v is None:
        return None
    x = float(v)  # type: ignore[arg-type]
    return x if math.isfinite(x) else None


__all__ = [
    "ReportError",
    "check_explanation",
    "check_failures",
    "finite",
    "report_folder",
    "safe_name",
    "unique_names",
]
