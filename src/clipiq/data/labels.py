"""IQA label files: a generic CSV reader and readers for the official files of public IQA datasets.

Every reader returns an :class:`IQALabels`, a sequence of :class:`IQASample` records with absolute image
paths, plus whether the score runs backwards (``lower_is_better``, e.g. DMOS in CSIQ). Readers never open
the images; :meth:`IQALabels.missing_files` checks the paths when wanted.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from clipiq.core.registry import Registry

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

__all__ = [
    "CSIQ_DISTORTIONS",
    "KADID10K_DISTORTIONS",
    "TID2013_DISTORTIONS",
    "IQALabels",
    "IQASample",
    "LabelFileError",
    "read_csiq",
    "read_csv_labels",
    "read_dhd",
    "read_exbedde",
    "read_kadid10k",
    "read_koniq10k",
    "read_labels",
    "read_live_challenge",
    "read_spaq",
    "read_tid2013",
]

#: KADID-10k distortion types, numbered from 1 as in the file names (``I01_{type}_{level}.png``).
KADID10K_DISTORTIONS: tuple[str, ...] = (
    "gaussian blur", "lens blur", "motion blur", "color diffusion", "color shift", "color quantization",
    "color saturation 1", "color saturation 2", "jpeg2000", "jpeg", "white noise",
    "white noise in color component", "impulse noise", "multiplicative noise", "denoise", "brighten",
    "darken", "mean shift", "jitter", "non-eccentricity patch", "pixelate", "quantization", "color block",
    "high sharpen", "contrast change",
)  # fmt: skip

#: TID2013 distortion types, numbered from 1 as in the file names (``i01_{type}_{level}.bmp``).
TID2013_DISTORTIONS: tuple[str, ...] = (
    "additive gaussian noise", "additive noise in color components", "spatially correlated noise",
    "masked noise", "high frequency noise", "impulse noise", "quantization noise", "gaussian blur",
    "image denoising", "jpeg", "jpeg2000", "jpeg transmission errors", "jpeg2000 transmission errors",
    "non eccentricity pattern noise", "local block-wise distortions", "mean shift", "contrast change",
    "change of color saturation", "multiplicative gaussian noise", "comfort noise",
    "lossy compression of noisy images", "image color quantization with dither", "chromatic aberrations",
    "sparse sampling and reconstruction",
)  # fmt: skip

#: CSIQ ``dst_type`` values -> (folder under ``dst_imgs``, tag used in the file name ``1600.AWGN.1.png``).
CSIQ_DISTORTIONS: dict[str, tuple[str, str]] = {
    "noise": ("awgn", "AWGN"),
    "awgn": ("awgn", "AWGN"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg 2000": ("jpeg2000", "jpeg2000"),
    "jpeg2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
}

# Accepted header names after normalisation (lower case, runs of non-alphanumerics -> "_"), best first.
_PATH_COLUMNS = (
    "dis_img_path", "dist_img_path", "distorted_image", "dist_img", "dis_img", "image_path", "img_path",
    "image_name", "img_name", "image", "img", "filename", "file_name", "file", "path", "name", "picture",
)  # fmt: skip
_SCORE_COLUMNS = (
    "mos", "dmos", "score", "quality", "mos_score", "dmos_score", "rating", "mean_opinion_score",
    "mos_zscore", "zscore", "z_score", "label",
)  # fmt: skip
_REF_COLUMNS = (
    "ref_img_path", "ref_img", "ref_image", "ref_path", "reference_image", "reference", "ref", "ref_name",
)  # fmt: skip
_DISTORTION_COLUMNS = ("distortion", "dist_type", "dst_type", "distortion_type", "type", "dehazer")
_LEVEL_COLUMNS = (
    "level", "dist_level", "dst_lev", "dst_level", "distortion_level", "lev", "severity", "haze_level",
)  # fmt: skip
# The dehazing method in dehazed-image databases (DHD, exBeDDE), when no distortion column is present.
_METHOD_COLUMNS = ("method", "dehazing_method", "dehaze_method", "algorithm", "dehazer")
_SCENE_COLUMNS = ("scene", "scene_id", "content", "content_id", "group", "ref_id")

_SPLIT_NAMES = {
    "train": "train", "training": "train", "trainval": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip

# <ref>_<type>_<level>.<ext>: I01_01_03.png (KADID-10k), i01_01_1.bmp (TID2013).
_REF_TYPE_LEVEL = re.compile(r"^(?P<ref>[A-Za-z]+\d+)_(?P<type>\d+)_(?P<level>\d+)\.\w+$")


class LabelFileError(ValueError):
    """A label file could not be parsed; the message names the file (and line) and the problem."""

    def __init__(self, path: PathLike, reason: str, line: int | None = None):
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


@dataclass
class IQASample:
    """One labelled image: path, quality score and optional reference, distortion, level and scene."""

    path: Path
    score: float
    ref: Path | None = None
    distortion: str | None = None
    level: int | None = None
    scene: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The content group used for leak-free splits: scene, else reference image, else the image."""
        if self.scene is not None:
            return str(self.scene)
        if self.ref is not None:
            return str(self.ref)
        return str(self.path)


class IQALabels(Sequence[IQASample]):
    """The records of one label file, with the score direction and where they came from."""

    def __init__(
        self,
        samples: Sequence[IQASample],
        *,
        lower_is_better: bool = False,
        source: PathLike | None = None,
        name: str = "custom",
    ):
        self.samples: list[IQASample] = list(samples)
        self.lower_is_better = bool(lower_is_better)
        self.source = Path(source) if source is not None else None
        self.name = name

    @overload
    def __getitem__(self, index: int) -> IQASample: ...
    @overload
    def __getitem__(self, index: slice) -> IQALabels: ...
    def __getitem__(self, index: int | slice) -> IQASample | IQALabels:
        if isinstance(index, slice):
            return self._like(self.samples[index])
        return self.samples[index]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[IQASample]:
        return iter(self.samples)

    def __repr__(self) -> str:
        direction = "lower is better" if self.lower_is_better else "higher is better"
        return f"IQALabels(name={self.name!r}, n={len(self)}, {direction}, source={self.source})"

    def _like(self, samples: Sequence[IQASample]) -> IQALabels:
        return IQALabels(samples, lower_is_better=self.lower_is_better, source=self.source, name=self.name)

    def subset(self, indices: Sequence[int]) -> IQALabels:
        """The records at ``indices`` (same direction and source)."""
        return self._like([self.samples[int(i)] for i in indices])

    def scores(self) -> np.ndarray:
        """All scores as a float64 array."""
        return np.array([s.score for s in self.samples], dtype=np.float64)

    def groups(self) -> list[str]:
        """The content group of every record (see :attr:`IQASample.group`)."""
        return [s.group for s in self.samples]

    def missing_files(self, check_refs: bool = True) -> list[Path]:
        """Image (and reference) paths that do not exist, each listed once, in record order."""
        missing: dict[Path, None] = {}
        for s in self.samples:
            for p in (s.path, s.ref if check_refs else None):
                if p is not None and p not in missing and not p.is_file():
                    missing[p] = None
        return list(missing)


# ---------------------------------------------------------------------------------------------------------
# helpers


def _norm(header: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")


class _Resolver:
    """Joins names to a root, falling back to a case-insensitive match (TID2013 and CSIQ mix cases)."""

    def __init__(self, root: Path):
        self.root = root
        self._listings: dict[Path, dict[str, str]] = {}

    def _listing(self, folder: Path) -> dict[str, str]:
        if folder not in self._listings:
            try:
                self._listings[folder] = {n.lower(): n for n in os.listdir(folder)}
            except OSError:
                self._listings[folder] = {}
        return self._listings[folder]

    def __call__(self, name: str, *subdirs: str) -> Path:
        rel = name.strip().replace("\\", "/")
        if Path(rel).is_absolute():
            return Path(rel)
        candidates = [self.root / d / rel for d in subdirs] + [self.root / rel]
        for p in candidates:
            if p.exists():
                return p
        for p in candidates:
            real = self._listing(p.parent).get(p.name.lower())
            if real is not None:
                return p.parent / real
        return candidates[0]  # not on disk (yet): report the preferred location


def _sniff_delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    if counts[best] > 0:
        return best
    # Space-separated TXT tables ("image mos"); a one-column file reads the same either way.
    return " " if len(first.split()) > 1 else ","


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows of a CSV/TSV file; blank lines are skipped."""
    if not path.is_file():
        raise LabelFileError(path, "label file does not exist")
    if path.suffix.lower() in (".xlsx", ".xls"):
        raise LabelFileError(path, "Excel files are not read directly; export the sheet to CSV first")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    delimiter = _sniff_delimiter(text)
    # runs of spaces are one separator in space-separated tables
    reader = csv.reader(text.splitlines(), delimiter=delimiter, skipinitialspace=delimiter == " ")
    rows = [(i + 1, [c.strip() for c in row]) for i, row in enumerate(reader) if any(c.strip() for c in row)]
    if not rows:
        raise LabelFileError(path, "file is empty")
    header = rows[0][1]
    return header, rows[1:]


def _find_column(
    path: Path,
    header: Sequence[str],
    explicit: str | None,
    candidates: Sequence[str],
    what: str,
    required: bool,
    arg: str | None = None,
) -> int | None:
    normed = [_norm(h) for h in header]
    if explicit is not None:
        key = _norm(explicit)
        if key in normed:
            return normed.index(key)
        raise LabelFileError(path, f"no column named {explicit!r} for the {what}; headers are {list(header)}")
    for cand in candidates:
        if cand in normed:
            return normed.index(cand)
    if required:
        hint = f" ({arg}=...)" if arg else ""
        raise LabelFileError(
            path,
            f"cannot find the {what} column; headers are {list(header)}; expected one of "
            f"{list(candidates)} (case-insensitive), or name the column explicitly{hint}",
        )
    return None


def _cell(path: Path, line: int, row: Sequence[str], col: int | None, header: Sequence[str]) -> str | None:
    if col is None:
        return None
    if col >= len(row):
        raise LabelFileError(path, f"row has {len(row)} fields, no value for column {header[col]!r}", line)
    return row[col] if row[col] != "" else None


def _float(path: Path, line: int, value: str | None, what: str) -> float:
    if value is None:
        raise LabelFileError(path, f"missing {what}", line)
    try:
        x = float(value)
    except ValueError:
        raise LabelFileError(path, f"{what} {value!r} is not a number", line) from None
    if not math.isfinite(x):
        raise LabelFileError(path, f"{what} {value!r} is not finite", line)
    return x


def _int(path: Path, line: int, value: str | None, what: str) -> int | None:
    if value is None:
        return None
    x = _float(path, line, value, what)
    if x != int(x):
        raise LabelFileError(path, f"{what} {value!r} is not an integer", line)
    return int(x)


def _auto(value: str) -> Any:
    """Numbers in extra columns become int/float; everything else, and ids like ``007``, stays text."""
    if re.fullmatch(r"0\d+", value):
        return value
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return value


def _split_name(path: Path, line: int, value: str | None) -> str | None:
    if value is None:
        return None
    name = _SPLIT_NAMES.get(value.strip().lower())
    if name is None:
        expected = sorted(set(_SPLIT_NAMES))
        raise LabelFileError(path, f"unknown split {value!r}; expected one of {expected}", line)
    return name


def _default_root(label_file: Path, *subdirs: str) -> Path:
    for d in subdirs:
        if (label_file.parent / d).is_dir():
            return label_file.parent / d
    return label_file.parent


# ---------------------------------------------------------------------------------------------------------
# generic CSV


def _parse_csv(
    path: Path,
    image_root: Path,
    columns: Mapping[str, str | None],
    ref_root: Path | None = None,
) -> tuple[list[str], list[tuple[int, list[str], IQASample]]]:
    """Parse a label table into (line, raw cells, record) triples; ``columns`` overrides detection."""
    header, rows = _read_table(path)
    get = columns.get
    cols = {
        "path": _find_column(path, header, get("path"), _PATH_COLUMNS, "image path", True, "path_col"),
        "score": _find_column(path, header, get("score"), _SCORE_COLUMNS, "score", True, "score_col"),
        "ref": _find_column(path, header, columns.get("ref"), _REF_COLUMNS, "reference image", False),
        "distortion": _find_column(
            path, header, columns.get("distortion"), _DISTORTION_COLUMNS, "distortion", False
        ),
        "level": _find_column(path, header, columns.get("level"), _LEVEL_COLUMNS, "distortion level", False),
        "scene": _find_column(path, header, columns.get("scene"), _SCENE_COLUMNS, "scene", False),
    }
    if cols["path"] == cols["score"]:
        raise LabelFileError(path, f"the image path and score columns are the same; headers are {header}")
    resolve = _Resolver(image_root)
    resolve_ref = _Resolver(ref_root) if ref_root is not None else resolve
    used = {c for c in cols.values() if c is not None}
    out = []
    for line, row in rows:
        image = _cell(path, line, row, cols["path"], header)
        if image is None:
            raise LabelFileError(path, "empty image path", line)
        ref = _cell(path, line, row, cols["ref"], header)
        extra = {header[j]: _auto(v) for j, v in enumerate(row) if j not in used and j < len(header) and v}
        sample = IQASample(
            path=resolve(image),
            score=_float(path, line, _cell(path, line, row, cols["score"], header), "score"),
            ref=resolve_ref(ref) if ref is not None else None,
            distortion=_cell(path, line, row, cols["distortion"], header),
            level=_int(path, line, _cell(path, line, row, cols["level"], header), "level"),
            scene=_cell(path, line, row, cols["scene"], header),
            extra=extra,
        )
        out.append((line, row, sample))
    if not out:
        raise LabelFileError(path, "no data rows below the header")
    return header, out


def read_csv_labels(
    label_file: PathLike,
    image_root: PathLike | None = None,
    *,
    path_col: str | None = None,
    score_col: str | None = None,
    ref_col: str | None = None,
    distortion_col: str | None = None,
    level_col: str | None = None,
    scene_col: str | None = None,
    lower_is_better: bool | None = None,
    ref_root: PathLike | None = None,
    name: str = "custom",
) -> IQALabels:
    """Read a CSV (or TSV/semicolon) label file whose header names an image column and a score column.

    Headers are matched case-insensitively (``dis_img_path,score``, ``image,mos``, ``image_name,MOS``,
    ``filename,dmos``, ``path,quality``...); optional ``ref_img_path``, ``distortion``/``dist_type``,
    ``level`` and ``scene`` columns are picked up too, and every other column lands in ``extra``.
    Relative paths are joined to ``image_root`` (default: the CSV's folder; references to ``ref_root``,
    default ``image_root``). ``lower_is_better`` defaults to True when the score column is named DMOS.
    """
    path = Path(label_file)
    columns = {
        "path": path_col, "score": score_col, "ref": ref_col, "distortion": distortion_col,
        "level": level_col, "scene": scene_col,
    }  # fmt: skip
    root = Path(image_root) if image_root is not None else path.parent
    header, parsed = _parse_csv(path, root, columns, Path(ref_root) if ref_root is not None else None)
    if lower_is_better is None:
        score_header = _find_column(path, header, score_col, _SCORE_COLUMNS, "score", True)
        lower_is_better = "dmos" in _norm(header[score_header])  # type: ignore[index]
    return IQALabels([s for _, _, s in parsed], lower_is_better=lower_is_better, source=path, name=name)


# ---------------------------------------------------------------------------------------------------------
# official label files


def read_koniq10k(
    label_file: PathLike, image_root: PathLike | None = None, *, score_col: str = "MOS"
) -> IQALabels:
    """KonIQ-10k ``koniq10k_scores_and_distributions.csv`` or ``koniq10k_distributions_sets.csv``.

    ``score_col`` picks ``MOS`` (1-5) or ``MOS_zscore`` (0-100). When the file has a ``set`` column
    (the distributions_sets file), the official train/val/test part is stored as ``extra["split"]``.
    ``image_root`` defaults to the ``1024x768`` (else ``512x384``) folder beside the label file.
    """
    path = Path(label_file)
    root = Path(image_root) if image_root is not None else _default_root(path, "1024x768", "512x384")
    header, parsed = _parse_csv(path, root, {"path": "image_name", "score": score_col})
    set_col = _find_column(path, header, None, ("set", "split"), "split", False)
    samples = []
    for line, row, sample in parsed:
        if set_col is not None:
            sample.extra.pop(header[set_col], None)
            split = _split_name(path, line, _cell(path, line, row, set_col, header))
            if split is not None:
                sample.extra["split"] = split
        samples.append(sample)
    return IQALabels(samples, lower_is_better=False, source=path, name="koniq10k")


def _mat_variable(path: Path, mat: Mapping[str, Any], preferred: str) -> np.ndarray:
    if preferred in mat:
        return np.asarray(mat[preferred])
    keys = [k for k in mat if not k.startswith("__")]
    if len(keys) == 1:
        return np.asarray(mat[keys[0]])
    raise LabelFileError(path, f"expected a variable named {preferred!r}; the file holds {keys}")


def _mat_strings(path: Path, arr: np.ndarray) -> list[str]:
    """Flatten a MATLAB cell array of strings as scipy.io.loadmat returns it."""
    out = []
    for item in np.asarray(arr, dtype=object).ravel(order="F"):
        flat = np.asarray(item).ravel()
        if flat.size != 1 or not isinstance(flat[0], str):
            raise LabelFileError(path, f"expected a cell array of file names, found element {item!r}")
        out.append(flat[0].strip())
    return out


def read_live_challenge(
    mos_file: PathLike,
    images_file: PathLike | None = None,
    image_root: PathLike | None = None,
    *,
    exclude_first7: bool = True,
) -> IQALabels:
    """LIVE Challenge (LIVE in the Wild) from ``AllMOS_release.mat`` and ``AllImages_release.mat``.

    The first 7 entries of the official release are its training images ``t1.bmp``..``t7.bmp`` (stored
    under ``Images/trainingImages``); published results use the other 1162, so they are dropped unless
    ``exclude_first7=False``. ``images_file`` defaults to ``AllImages_release.mat`` beside ``mos_file``;
    ``image_root`` to ``../Images`` of the ``Data`` folder holding the .mat files (the release layout).
    """
    import scipy.io

    mos_path = Path(mos_file)
    img_path = Path(images_file) if images_file is not None else mos_path.parent / "AllImages_release.mat"
    if image_root is not None:
        root = Path(image_root)
    elif (mos_path.parent.parent / "Images").is_dir():
        root = mos_path.parent.parent / "Images"
    else:
        root = mos_path.parent
    mats = {}
    for p in (mos_path, img_path):
        if not p.is_file():
            raise LabelFileError(p, "label file does not exist")
        try:
            mats[p] = scipy.io.loadmat(str(p))
        except Exception as e:  # scipy raises several unrelated types for bad files
            raise LabelFileError(p, f"not a readable MATLAB file ({e})") from None
    try:
        mos = _mat_variable(mos_path, mats[mos_path], "AllMOS_release").astype(np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise LabelFileError(mos_path, f"MOS values are not numeric ({e})") from None
    names = _mat_strings(img_path, _mat_variable(img_path, mats[img_path], "AllImages_release"))
    if len(names) != len(mos):
        raise LabelFileError(
            mos_path, f"holds {len(mos)} scores but {img_path} holds {len(names)} image names"
        )
    resolve = _Resolver(root)
    samples = []
    for i, (name, score) in enumerate(zip(names, mos, strict=True)):
        if i < 7 and exclude_first7:
            continue
        p = resolve(name, "trainingImages") if i < 7 else resolve(name)
        samples.append(IQASample(path=p, score=float(score), extra={"index": i}))
    return IQALabels(samples, lower_is_better=False, source=mos_path, name="live_challenge")


def _type_names(label_file: Path, default: Sequence[str]) -> dict[int, str]:
    """Distortion names by type number from ``distortions.json`` beside the labels, else ``default``."""
    json_path = label_file.parent / "distortions.json"
    if json_path.is_file():
        try:
            raw = json.loads(json_path.read_text(encoding="utf-8"))
            return {int(k): str(v) for k, v in raw.items()}
        except (ValueError, AttributeError) as e:
            reason = f"expected a JSON object mapping type numbers to names ({e})"
            raise LabelFileError(json_path, reason) from None
    return {i + 1: n for i, n in enumerate(default)}


def read_kadid10k(label_file: PathLike, image_root: PathLike | None = None) -> IQALabels:
    """KADID-10k ``dmos.csv`` (``dist_img,ref_img,dmos,var``); also reads folders made by ``make-dataset``.

    KADID's ``dmos`` runs from 1 to 5 with higher meaning better, despite the name. Reference, type and
    level come from names like ``I01_01_03.png``; type names from ``distortions.json`` beside the file
    when present, else :data:`KADID10K_DISTORTIONS`. ``image_root`` defaults to ``images/`` beside the
    file (the release layout), else the file's folder.
    """
    path = Path(label_file)
    root = Path(image_root) if image_root is not None else _default_root(path, "images")
    columns = {"path": "dist_img", "score": "dmos", "ref": "ref_img"}
    _, parsed = _parse_csv(path, root, columns)
    names = _type_names(path, KADID10K_DISTORTIONS)
    samples = []
    for line, _, s in parsed:
        m = _REF_TYPE_LEVEL.match(s.path.name)
        if m is None:
            raise LabelFileError(path, f"image name {s.path.name!r} is not of the form I01_01_03.png", line)
        type_id, level = int(m["type"]), int(m["level"])
        if s.level is not None and s.level != level:
            reason = f"level column says {s.level} but the name {s.path.name} says {level}"
            raise LabelFileError(path, reason, line)
        s.scene = m["ref"].upper()
        s.level = level
        # A distortion column (written by make-dataset) wins over the type table.
        if s.distortion is None:
            s.distortion = names.get(type_id, f"type {type_id:02d}")
        s.extra["type"] = type_id
        samples.append(s)
    return IQALabels(samples, lower_is_better=False, source=path, name="kadid10k")


def read_tid2013(
    mos_file: PathLike, image_root: PathLike | None = None, ref_root: PathLike | None = None
) -> IQALabels:
    """TID2013 ``mos_with_names.txt`` (lines ``MOS name`` such as ``5.51429 i01_01_1.bmp``); MOS 0-9.

    ``image_root`` defaults to ``distorted_images/`` beside the file and ``ref_root`` to
    ``reference_images/`` (``I01.BMP``...); names are matched case-insensitively on disk.
    """
    path = Path(mos_file)
    if not path.is_file():
        raise LabelFileError(path, "label file does not exist")
    root = Path(image_root) if image_root is not None else _default_root(path, "distorted_images")
    if ref_root is None and (path.parent / "reference_images").is_dir():
        ref_root = path.parent / "reference_images"
    resolve = _Resolver(root)
    resolve_ref = _Resolver(Path(ref_root)) if ref_root is not None else None
    samples = []
    for line, text in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise LabelFileError(path, f"expected 'MOS name', got {text.strip()!r}", line)
        score = _float(path, line, parts[0], "MOS")
        m = _REF_TYPE_LEVEL.match(parts[1])
        if m is None:
            raise LabelFileError(path, f"image name {parts[1]!r} is not of the form i01_01_1.bmp", line)
        type_id = int(m["type"])
        ref_id = f"I{int(re.sub(r'[^0-9]', '', m['ref'])):02d}"
        samples.append(
            IQASample(
                path=resolve(parts[1]),
                score=score,
                ref=resolve_ref(f"{ref_id}.BMP") if resolve_ref is not None else None,
                distortion=TID2013_DISTORTIONS[type_id - 1]
                if 1 <= type_id <= len(TID2013_DISTORTIONS)
                else f"type {type_id:02d}",
                level=int(m["level"]),
                scene=ref_id,
                extra={"type": type_id},
            )
        )
    if not samples:
        raise LabelFileError(path, "no 'MOS name' lines")
    return IQALabels(samples, lower_is_better=False, source=path, name="tid2013")


def read_csiq(
    label_file: PathLike, image_root: PathLike | None = None, ref_root: PathLike | None = None
) -> IQALabels:
    """CSIQ labels exported from ``csiq.DMOS.xlsx`` to CSV (``image,dst_type,dst_lev,dmos`` columns).

    DMOS runs from 0 (best) upwards, so ``lower_is_better`` is True. When ``image`` holds a bare id
    (``1600``) the distorted file ``1600.AWGN.1.png`` is looked up in ``image_root`` and in its per-type
    folder (``awgn/``...); ``image_root`` defaults to ``dst_imgs/`` beside the file, ``ref_root`` to
    ``src_imgs/`` (``1600.png``).
    """
    path = Path(label_file)
    root = Path(image_root) if image_root is not None else _default_root(path, "dst_imgs", "dst_imgs_all")
    if ref_root is None and (path.parent / "src_imgs").is_dir():
        ref_root = path.parent / "src_imgs"
    header, rows = _read_table(path)
    keys = ("image", "dst_type", "dst_lev", "dmos")
    cols = {key: _find_column(path, header, key, (), key, True) for key in keys}
    resolve = _Resolver(root)
    resolve_ref = _Resolver(Path(ref_root)) if ref_root is not None else None
    used = set(cols.values())
    samples = []
    for line, row in rows:
        image, dtype = (_cell(path, line, row, cols[k], header) for k in ("image", "dst_type"))
        if image is None or dtype is None:
            raise LabelFileError(path, "empty image or dst_type", line)
        level = _int(path, line, _cell(path, line, row, cols["dst_lev"], header), "dst_lev")
        if level is None:
            raise LabelFileError(path, "empty dst_lev", line)
        if image.lower().endswith((".png", ".bmp", ".jpg")):
            dist_path, scene = resolve(image), image.split(".")[0]
        else:
            folder, tag = CSIQ_DISTORTIONS.get(dtype.strip().lower(), (dtype.strip().lower(),) * 2)
            dist_path, scene = resolve(f"{image}.{tag}.{level}.png", folder), image
        extra = {header[j]: _auto(v) for j, v in enumerate(row) if j not in used and j < len(header) and v}
        samples.append(
            IQASample(
                path=dist_path,
                score=_float(path, line, _cell(path, line, row, cols["dmos"], header), "dmos"),
                ref=resolve_ref(f"{scene}.png") if resolve_ref is not None else None,
                distortion=dtype.strip().lower(),
                level=level,
                scene=scene,
                extra=extra,
            )
        )
    if not samples:
        raise LabelFileError(path, "no data rows below the header")
    return IQALabels(samples, lower_is_better=True, source=path, name="csiq")


def read_spaq(label_file: PathLike, image_root: PathLike | None = None) -> IQALabels:
    """SPAQ ``MOS and Image attribute scores`` exported to CSV (``Image name,MOS,Brightness,...``).

    The attribute scores (brightness, colorfulness, contrast, noisiness, sharpness) land in ``extra``.
    ``image_root`` defaults to ``TestImage/`` beside the file.
    """
    path = Path(label_file)
    root = Path(image_root) if image_root is not None else _default_root(path, "TestImage")
    header, parsed = _parse_csv(path, root, {"path": "Image name", "score": "MOS"})
    return IQALabels([s for _, _, s in parsed], lower_is_better=False, source=path, name="spaq")


def _prefix_scene(name: str) -> str:
    """The name's part before the first ``_`` (``0012_dcp.png`` -> ``0012``), else its leading digits."""
    stem = Path(name).stem
    if "_" in stem:
        return stem.split("_", 1)[0]
    m = re.match(r"\d+", stem)
    return m.group(0) if m else stem


def _read_dehazed_table(path: Path, root: Path) -> tuple[list[str], list[tuple[int, list[str], IQASample]], bool]:
    """Parse a dehazed-image label table; a method column fills ``distortion`` when that is missing."""
    header, parsed = _parse_csv(path, root, {})
    score_col = _find_column(path, header, None, _SCORE_COLUMNS, "score", True)
    lower_is_better = "dmos" in _norm(header[score_col])  # type: ignore[index]
    method_col = _find_column(path, header, None, _METHOD_COLUMNS, "method", False)
    for line, row, s in parsed:
        if method_col is not None and s.distortion is None:
            s.distortion = _cell(path, line, row, method_col, header)
            s.extra.pop(header[method_col], None)
    return header, parsed, lower_is_better


def read_dhd(label_file: PathLike, image_root: PathLike | None = None) -> IQALabels:
    """DHD (dehazed-image quality database: 250 hazy scenes, each dehazed by 7 methods) from a label table.

    The official label format could not be checked when this reader was written, so it accepts any
    CSV/TSV/semicolon or space-separated TXT table whose header names an image column and a MOS column,
    detected as in :func:`read_csv_labels` (``image,mos``, ``filename MOS``...); a DMOS column makes
    ``lower_is_better`` True. Scene: a ``scene`` column when present, else the file name's part before the
    first ``_`` (``0012_dcp.png`` -> ``"0012"``), else its leading digits (``0012.png`` -> ``"0012"``).
    Method (``distortion``): a distortion/method column, else the rest of the name (``"dcp"``).
    ``image_root`` defaults to ``images/`` beside the file when present, else the file's folder.
    """
    path = Path(label_file)
    root = Path(image_root) if image_root is not None else _default_root(path, "images")
    _, parsed, lower_is_better = _read_dehazed_table(path, root)
    samples = []
    for _, _, s in parsed:
        stem = s.path.stem
        if s.scene is None:
            s.scene = _prefix_scene(s.path.name)
        if s.distortion is None and "_" in stem:
            s.distortion = stem.split("_", 1)[1]
        samples.append(s)
    return IQALabels(samples, lower_is_better=lower_is_better, source=path, name="dhd")


# <city>_<n>_<method>.<ext>, the exBeDDE naming: beijing_3_dcp.png.
_CITY_INDEX_METHOD = re.compile(r"^(?P<city>[^_]+)_(?P<index>\d+)_(?P<method>.+)$")


def read_exbedde(label_file: PathLike, image_root: PathLike | None = None) -> IQALabels:
    """exBeDDE (12 cities, 167 hazy images each dehazed by 10 methods) from a label table.

    The official label format could not be checked when this reader was written, so it accepts any table
    :func:`read_csv_labels` can read with an image column and a score/MOS column; images are expected as
    ``<city>/<city>_<n>_<method>.png`` or similar. Scene (the city, so that splits keep a city's views
    together): a ``scene`` column when present, else the first folder of the image path below
    ``image_root`` (the parent folder's name for paths outside it), else the file name's part before the
    first ``_``. For names like ``beijing_3_dcp.png`` the method becomes ``distortion`` (unless a
    distortion/method column gives it) and ``extra["hazy"]`` the hazy image's id ``beijing_3``.
    ``image_root`` defaults to the file's folder.
    """
    path = Path(label_file)
    root = Path(image_root) if image_root is not None else path.parent
    _, parsed, lower_is_better = _read_dehazed_table(path, root)
    samples = []
    for _, _, s in parsed:
        if s.scene is None:
            try:
                folders = s.path.relative_to(root).parts[:-1]
            except ValueError:
                folders = (s.path.parent.name,)
            s.scene = folders[0] if folders and folders[0] else _prefix_scene(s.path.name)
        m = _CITY_INDEX_METHOD.match(s.path.stem)
        if m is not None:
            if s.distortion is None:
                s.distortion = m["method"]
            s.extra.setdefault("hazy", f"{m['city']}_{m['index']}")
        samples.append(s)
    return IQALabels(samples, lower_is_better=lower_is_better, source=path, name="exbedde")


# Every reader takes (label_file, image_root=..., **options) and returns IQALabels.
LABEL_READERS: Registry[Callable[..., IQALabels]] = Registry("label format")
for _name, _reader in (("csv", read_csv_labels), ("koniq10k", read_koniq10k), ("live_challenge", read_live_challenge),
                       ("kadid10k", read_kadid10k), ("tid2013", read_tid2013), ("csiq", read_csiq),
                       ("spaq", read_spaq), ("dhd", read_dhd), ("exbedde", read_exbedde)):
    LABEL_READERS.register(_name, _reader)


def _guess_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".mat"):
        return "live_challenge"
    if name.startswith("dhd"):
        return "dhd"
    if name.startswith("exbedde"):
        return "exbedde"
    if name.endswith(".txt") and "mos" in name:
        return "tid2013"
    if name.startswith("koniq"):
        return "koniq10k"
    if name.startswith("mos and image attribute"):
        return "spaq"
    header = {_norm(h) for h in _read_table(path)[0]}
    if {"dist_img", "dmos"} <= header:
        return "kadid10k"
    if {"image", "dst_type", "dst_lev", "dmos"} <= header:
        return "csiq"
    return "csv"


def read_labels(
    label_file: PathLike, image_root: PathLike | None = None, format: str | None = None, **kwargs: Any
) -> IQALabels:
    """Read any supported label file; ``format`` (one of the reader names) is guessed when omitted."""
    path = Path(label_file)
    fmt = format if format is not None else _guess_format(path)
    reader = LABEL_READERS.get(fmt)
    logger.debug("reading %s as %s", path, fmt)
    return reader(path, image_root=image_root, **kwargs)
