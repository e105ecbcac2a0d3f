"""What a batch command's inputs name: image files, folders, globs, URIs, and manifests of paths.

One resolver for every engine (the local runner and Ray), so ``clipiq score X`` scores the same images
whichever engine runs it. A *manifest* is a ``.csv`` or ``.parquet`` file (local or a URI) with a column of
paths (``path``, or ``image``, ``file``, ``filename``); a relative path in it is relative to the manifest's
folder; a table without such a column, or a clipiq result file, is not a manifest but an input like any other
(it gets its error row). URIs (``s3://...``) name single files, read through pyarrow's filesystems and kept as
they are, never made local; folders and prefixes of URIs are not listed (give a manifest).
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from clipiq.core.errors import ClipIQError
from clipiq.data.io import is_image_file, is_uri, list_images

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".parquet")
PATH_COLUMNS = ("path", "image", "file", "filename")
_GLOB_CHARS = frozenset("*?[")
FINGERPRINT_COLUMN = "fingerprint"  # clipiq's result files have one: such a file is never a manifest


class ManifestError(ClipIQError, ValueError):
    """A manifest of input paths that cannot be read or has no path column."""


def is_manifest(spec: str | os.PathLike) -> bool:
    """Whether an input names a manifest of paths (by its suffix) rather than an image."""
    return str(spec).lower().endswith(MANIFEST_SUFFIXES)


def resolve_inputs(specs: Iterable[str | os.PathLike], recursive: bool = False) -> list[str]:
    """Every input named by files, folders, globs, URIs and manifests, in order (duplicates kept).

    A path that does not exist is kept, so it gets its own error row rather than vanishing, and so is a pattern
    that matches nothing (it may be a literal name with ``[`` in it); a pattern's matches are its image files
    and folders, as a folder's are.
    """
    out: list[str] = []
    for spec in specs:
        out.extend(_expand(spec, recursive))
    return out


def _expand(spec: str | os.PathLike, recursive: bool) -> Iterator[str]:
    text = os.fspath(spec)
    if is_manifest(text) and (is_uri(text) or Path(text).is_file()):
        paths = _manifest_or_none(text)
        if paths is not None:
            yield from paths
            return
    if is_uri(text):
        yield text
    elif _GLOB_CHARS & set(text) and not Path(text).exists():
        # A pattern that matches nothing is taken as the literal name it may be (it then gets its own error row).
        matches = sorted(glob.glob(text, recursive=recursive))
        if not matches:
            yield text
            return
        for match in matches:
            if Path(match).is_dir():
                yield from (str(p) for p in list_images([match], recursive=recursive))
            elif is_image_file(match):  # as in a folder: a pattern names images, not every file it matches
                yield match
    else:
        yield from (str(p) for p in list_images([text], recursive=recursive))


def _manifest_or_none(name: str) -> list[str] | None:
    """The manifest's paths, or None for a .csv/.parquet that is not a manifest (a clipiq result file, or a
    table without a path column), which is then an input like any other file and gets its own error row."""
    columns = _columns(name)
    if FINGERPRINT_COLUMN in columns or not any(c in columns for c in PATH_COLUMNS):
        log.warning("%s is not read as a manifest of paths (%s)", name,
                    "it is a clipiq result file" if FINGERPRINT_COLUMN in columns else
                    f"no {' / '.join(PATH_COLUMNS)} column")
        return None
    return read_manifest(name, columns)


def _columns(name: str) -> dict[str, list[Any]]:
    try:
        if name.lower().endswith(".parquet"):
            return _parquet_columns(name)
        return _csv_columns(_read_bytes(name).decode("utf-8-sig"), name)
    except ManifestError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest {name}: cannot read it ({e})") from None


def read_manifest(source: str | os.PathLike, columns: dict[str, list[Any]] | None = None) -> list[str]:
    """The paths listed in a ``.csv`` or ``.parquet`` manifest (local path or URI)."""
    name = os.fspath(source)
    if columns is None:
        columns = _columns(name)
    column = next((c for c in PATH_COLUMNS if c in columns), None)
    if column is None:
        raise ManifestError(f"manifest {name} has no path column: expected one of {', '.join(PATH_COLUMNS)}, "
                            f"found {', '.join(map(str, columns)) or 'no columns'}")
    base = None if is_uri(name) else Path(name).parent
    paths = []
    for i, value in enumerate(columns[column]):
        if value is None or not str(value).strip():
            raise ManifestError(f"manifest {name}: row {i + 1} has an empty {column!r}")
        value = str(value).strip()
        if is_uri(name) and not is_uri(value) and not value.startswith("/"):
            value = name.rsplit("/", 1)[0] + "/" + value  # relative to the manifest's folder, as for local ones
        elif base is not None and not is_uri(value) and not os.path.isabs(value):
            value = str(base / value)
        paths.append(value)
    return paths


def _read_bytes(name: str) -> bytes:
    if not is_uri(name):
        return Path(name).read_bytes()
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(name)
    with filesystem.open_input_file(inner) as f:
        return f.read()


def _csv_columns(text: str, name: str) -> dict[str, list[Any]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    header = reader.fieldnames or []
    return {h.strip().lower(): [r.get(h) for r in rows] for h in header}


def _parquet_columns(name: str) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ManifestError(f"manifest {name}: Parquet manifests need pyarrow (pip install pyarrow)") from None
    table = pq.read_table(name) if is_uri(name) else pq.read_table(Path(name))
    return {c.strip().lower(): table.column(c).to_pylist() for c in table.column_names}


__all__ = ["MANIFEST_SUFFIXES", "ManifestError", "PATH_COLUMNS", "is_manifest", "read_manifest", "resolve_inputs"]
