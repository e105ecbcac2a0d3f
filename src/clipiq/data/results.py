"""Result files for batch scoring: written as rows finish, read back to resume, never lost or mixed.

A result file records what produced its rows. The *record* (tool, format version, metric, model with its
weights' sha256, precision, options, output names) hashes to a short *fingerprint*, which every row
carries in its ``fingerprint`` column. Where the full record lives:

- ``.csv``: a plain CSV (header row, then rows); the record is the sidecar ``<file>.clipiq.json``.
- ``.jsonl``: the first line is ``{"clipiq": record}``, then one row object per line.
- ``.json``: ``{"clipiq": record, "rows": [...]}``.
- ``.parquet``: a folder (a Parquet dataset, as Spark, pandas, pyarrow and Ray read it) of ``part-*.parquet``
  files, one per write, each published by an atomic rename; the record is ``_clipiq.json`` inside it (readers
  skip names starting with ``_``). Needs pyarrow.

Guarantees: while a run writes a file it holds ``<file>.lock`` (a second run is refused); an existing
non-empty file without clipiq's header or fingerprints is never overwritten; a rerun whose record differs
from the file's is refused, naming what differs; files are replaced only through fresh temporary files,
fsynced; CSV cells cannot run as spreadsheet formulas (see :func:`clipiq.core.files.csv_cell`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from clipiq.core.errors import ClipIQError
from clipiq.core.files import (
    atomic_write,
    commit_temp,
    csv_cell,
    csv_uncell,
    discard_temp,
    exclusive_lock,
    open_temp,
)
from clipiq.data.io import is_uri
from clipiq.data.runner import RunResult, rounded_outputs

P = TypeVar("P", str, Path)

log = logging.getLogger(__name__)

FORMATS = (".csv", ".jsonl", ".json", ".parquet")
#: Bump when the meaning of a row changes, so files from before are not resumed as if they were the same.
FORMAT_VERSION = 1
HEADER_KEY = "clipiq"
FINGERPRINT = "fingerprint"
SIDECAR_SUFFIX = ".clipiq.json"
PARQUET_RECORD = "_clipiq.json"
PARQUET_PART = "part-{:06d}-{}.parquet"
#: Parquet parts hold at least this many rows, or what arrived in ``PARQUET_FLUSH_SECONDS``: small parts make a
#: folder of millions of images into tens of thousands of files.
PARQUET_FLUSH_ROWS = 1000
PARQUET_FLUSH_SECONDS = 30.0
_URI_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
LOCK_SUFFIX = ".lock"


class ResultFileError(ClipIQError, ValueError):
    """An output file that this run must not write: not clipiq's, unreadable, or from other settings."""


def _fmt(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ResultFileError(f"output file {path} must end in .csv, .jsonl, .json or .parquet "
                              f"(got {suffix or 'no suffix'!r})")
    return suffix


def input_key(path: str | os.PathLike) -> str:
    """The identity of an input file: its absolute path with symlinks resolved (``a.png`` is ``./a.png``);
    a URI (``s3://bucket/a.png``) is its own identity."""
    if isinstance(path, str) and is_uri(path):
        return path
    return str(Path(path).resolve())


def unique_inputs(paths: Iterable[P]) -> list[P]:
    """Inputs with later spellings of the same file dropped (the first spelling is the one written)."""
    seen: set[str] = set()
    out = []
    for p in paths:
        key = input_key(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def run_record(metric: Any, precision: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """What produced a run's scores, with its ``fingerprint`` (a hash of everything else in the record).

    The model is the metric's ``model_id`` (trained metrics: backbone plus checkpoint name and hash) or the
    loaded weights' name; ``weights_sha256`` tells a local copy from the registry's file of the same name;
    ``architecture`` is the backbone's config (activation, sizes, preprocessing).
    Options that change how fast, not what, (batch size, workers) are not part of it.
    """
    clip = getattr(metric, "clip", None)
    model = getattr(metric, "model_id", None) or getattr(clip, "weights_name", None) or ""
    # A trained metric's model_id already holds its checkpoint's hash; its path is not what scored.
    opts = {k: v for k, v in sorted(options.items()) if not (k == "checkpoint" and getattr(metric, "model_id", None))}
    # The architecture too: a random backbone has no weights file, and one file can load as gelu or quick_gelu.
    cfg = getattr(clip, "cfg", None)
    arch = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else None
    record = {"tool": "clipiq score", "format": FORMAT_VERSION, "metric": metric.name, "model": model,
              "weights_sha256": getattr(clip, "weights_sha256", None), "architecture": arch,
              "precision": precision, "options": opts, "outputs": list(metric.output_names)}
    record = json.loads(json.dumps(record, default=str))  # what a file gives back: lists, not tuples
    return {**record, FINGERPRINT: _digest(record)}


@dataclasses.dataclass
class ScoringPlan:
    """What a scoring run does: its record, the columns every row gets, and the inputs still to score."""

    record: dict[str, Any]
    base: dict[str, Any]
    columns: list[str]
    todo: list[Any]
    already: int


def plan_scoring(metric: Any, precision: str, options: Mapping[str, Any], paths: Sequence[Any],
                 writer: ResultWriter | None) -> ScoringPlan:
    """Check the run against ``writer``'s file (when writing one) and list the inputs not scored in it yet."""
    record = run_record(metric, precision, options)
    base = {"metric": record["metric"], "model": record["model"]}
    columns = ["path", *metric.output_names, "error", "note", "metric", "model", FINGERPRINT]
    keys = [input_key(p) for p in paths]
    done = writer.begin(record, columns, keys) if writer else set()
    todo = [p for p, k in zip(paths, keys) if k not in done]
    return ScoringPlan(record, base, columns, todo, len(paths) - len(todo))


def _digest(record: Mapping[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != FINGERPRINT}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def result_row(result: RunResult, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row of one input: path, outputs (rounded to 6 places), error ("" when scored), note, and ``base``.

    A score that is NaN or infinite is an error row ("non-finite score"), never a result.
    """
    row = {**(base or {}), "path": result.source, "error": result.error or ""}
    if result.ok:
        values, error = rounded_outputs(result.output)
        row.update(values)
        if error:
            row["error"] = error
    note = getattr(result, "note", None)
    if note:
        row["note"] = note
    return row


def is_scored(row: Mapping[str, Any]) -> bool:
    """Whether a row holds a finite score and no error."""
    if row.get("error"):
        return False
    try:
        return math.isfinite(float(row.get("score")))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _record_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, Mapping):
                out.update(flat(v, f"{prefix}{k}."))
            elif k != FINGERPRINT:
                out[prefix + k] = v
        return out

    a, b = flat(old), flat(new)

    def show(v: Any) -> str:
        return "(not set)" if v is None else json.dumps(v) if isinstance(v, list | dict) else str(v)

    return [f"{k}: {show(a.get(k))} in the file, {show(b.get(k))} now" for k in sorted({*a, *b})
            if a.get(k) != b.get(k)]


def _read_csv(path: Path, text: str) -> tuple[list[dict[str, Any]], bool]:
    """Rows of a clipiq CSV (cells un-escaped) and whether a torn last record was dropped."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[list[str]] = []
    torn = False
    try:
        records.extend(reader)
    except csv.Error as e:
        # clipiq writes whole records, each ending in a newline: only the very end can be cut off.
        if str(e) != "unexpected end of data":
            raise ResultFileError(f"{path}: line {reader.line_num} is not well-formed CSV ({e}); "
                                  "move the file away to start over") from None
        torn = True
    if records and not torn and not text.endswith(("\n", "\r")):
        # An unterminated last record is a write cut short, even where it splits into every column.
        records.pop()
        torn = True
    if not records or FINGERPRINT not in records[0]:
        raise ResultFileError(f"{path} exists and was not written by clipiq score (no {FINGERPRINT!r} "
                              "column); not overwritten: move it away or choose another output file")
    header = [csv_uncell(c) for c in records[0]]
    rows = []
    for n, rec in enumerate(records[1:], start=2):
        if len(rec) != len(header):
            raise ResultFileError(f"{path}: record {n} has {len(rec)} cells, the header {len(header)}; "
                                  "the file was edited or mixed: move it away to start over")
        rows.append({k: csv_uncell(v) for k, v in zip(header, rec)})
    return rows, torn


def _read_jsonl(path: Path, text: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]], bool]:
    lines = text.splitlines(keepends=True)  # JSON escapes newlines inside strings: one line is one record
    torn = False
    header, rows = None, []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if header is None:
                break  # no clipiq header: not clipiq's file
            if i == len(lines) - 1 and not line.endswith("\n"):
                torn = True  # an interrupted run's half line: that image is simply scored again
                continue
            raise ResultFileError(f"{path}: line {i + 1} is not JSON; the file was edited or is not clipiq's: "
                                  "move it away to start over") from None
        if header is None:
            if not (isinstance(obj, dict) and isinstance(obj.get(HEADER_KEY), dict)):
                break
            header = obj[HEADER_KEY]
        elif isinstance(obj, dict):
            rows.append(obj)
        else:
            raise ResultFileError(f"{path}: line {i + 1} is not a row object; move the file away to start over")
    return header, rows, torn


def read_results(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The record and rows of an existing output file; ``(None, [])`` when it is absent or empty.

    Tolerates a torn last row (an interrupted run); refuses, with ResultFileError, any other non-empty
    file that clipiq did not write.
    """
    fmt = _fmt(path)
    if path.is_symlink():
        raise ResultFileError(f"output file {path} is a symbolic link; give the file it points to, or another name")
    if not path.exists():
        return None, []
    if fmt == ".parquet":
        return _read_parquet(path)
    if not path.is_file():
        raise ResultFileError(f"output {path} exists and is not a file; give a file name")
    # Paths that are not UTF-8 (possible on POSIX) were written as surrogate escapes and come back the same.
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    if not text.strip():
        return None, []
    foreign = ResultFileError(f"{path} exists and was not written by clipiq score (no clipiq header); not "
                              "overwritten: move it away or choose another output file")
    torn = False
    if fmt == ".csv":
        rows, torn = _read_csv(path, text)
        record = _read_sidecar(path)
    elif fmt == ".jsonl":
        record, rows, torn = _read_jsonl(path, text)
        if record is None:
            raise foreign
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ResultFileError(f"{path}: existing output is not valid JSON ({e}); move it away to start "
                                  "over") from None
        if not (isinstance(data, dict) and isinstance(data.get(HEADER_KEY), dict)
                and isinstance(data.get("rows"), list)):
            raise foreign
        record, rows = data[HEADER_KEY], data["rows"]
        if not all(isinstance(r, dict) for r in rows):
            raise ResultFileError(f"{path}: 'rows' holds something other than row objects; move the file away "
                                  "to start over")
    if torn:
        log.warning("%s: ignoring a torn last row (an interrupted run); that input is scored again", path)
    if any(not r.get(FINGERPRINT) for r in rows):
        raise ResultFileError(f"{path} holds rows without a {FINGERPRINT}: it was not written by this version "
                              "of clipiq score; move it away or choose another output file")
    return record, rows


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401  (the submodule must be loaded for pyarrow.parquet below)
    except ImportError:
        raise ResultFileError("Parquet results need pyarrow: pip install pyarrow (it comes with "
                              "pip install 'clipiq[ray]'), or write .csv/.jsonl/.json") from None
    return pyarrow


def parquet_parts(path: Path) -> list[Path]:
    """The published part files of a Parquet result folder, in write order."""
    return sorted(p for p in path.glob("part-*.parquet") if p.is_file())


def _read_parquet(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    if not path.is_dir():
        raise ResultFileError(f"output {path} exists and is not a folder: clipiq writes Parquet results as a folder "
                              "of part files; not overwritten: move it away or choose another output name")
    if not any(path.iterdir()):
        return None, []
    record_file = path / PARQUET_RECORD
    if not record_file.is_file():
        raise ResultFileError(f"{path} exists and was not written by clipiq score (no {PARQUET_RECORD}); not "
                              "overwritten: move it away or choose another output name")
    try:
        data = json.loads(record_file.read_text(encoding="utf-8"))
        record = data[HEADER_KEY]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ResultFileError(f"{record_file} is not clipiq's record ({e}); move {path} away to start over") from None
    pa = _pyarrow()
    rows: list[dict[str, Any]] = []
    for part in parquet_parts(path):
        try:
            table = pa.parquet.read_table(part)
        except (OSError, pa.ArrowException) as e:
            raise ResultFileError(f"{part} is not readable Parquet ({e}); move {path} away to start over") from None
        # Absent values come back as None: drop them, so a row reads as the line formats' rows do.
        rows.extend({k: v for k, v in r.items() if v is not None} for r in table.to_pylist())
    if any(not r.get(FINGERPRINT) for r in rows):
        raise ResultFileError(f"{path} holds rows without a {FINGERPRINT}: it was not written by this version "
                              "of clipiq score; move it away or choose another output name")
    return record, rows


def sidecar_path(path: Path) -> Path:
    """Where a CSV's record lives: ``scores.csv`` -> ``scores.csv.clipiq.json``."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def lock_path(path: Path) -> Path:
    """The lock a run holds while it writes ``path``: ``scores.csv`` -> ``scores.csv.lock``."""
    return path.with_name(path.name + LOCK_SUFFIX)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    side = sidecar_path(path)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = data.get(HEADER_KEY) if isinstance(data, dict) else None
    return record if isinstance(record, dict) else None


def check_record(path: Path, stored: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]],
                 record: Mapping[str, Any]) -> None:
    """Refuse to add this run's rows (``record``) to a file whose rows were produced otherwise, naming what differs."""
    theirs = sorted({str(r.get(FINGERPRINT)) for r in rows} - {record[FINGERPRINT]})
    if not theirs:
        return
    if stored is not None and stored.get(FINGERPRINT) == theirs[0] and len(theirs) == 1:
        what = "; ".join(_record_diff(stored, record)) or "their fingerprints"
    else:
        # The full record is gone (a CSV without its sidecar): only the fingerprints can be compared.
        what = f"fingerprint {', '.join(theirs)} in the file, {record[FINGERPRINT]} now"
    raise ResultFileError(f"{path} already holds scores made with other settings ({what}); use another output "
                          f"file for these scores, or rerun with the file's settings")


class ResultWriter:
    """One output file for one run: locked, checked, then appended as rows finish (JSON: rewritten).

    Creating it takes ``<file>.lock`` and reads the file, refusing one that clipiq did not write;
    :meth:`begin` checks this run's record against the file's and rewrites it without the rows to retry.
    Use it as a context manager (or call :meth:`close`) to release the lock.
    """

    def __init__(self, path: Path, flush_rows: int = 16, flush_seconds: float = 5.0):
        if _URI_LIKE.match(str(path)):
            raise ResultFileError(f"output {path}: results are written to a local path (or a mounted shared "
                                  "file system), not a URI")
        self.path = path
        self.fmt = _fmt(path)
        if self.fmt == ".parquet":
            _pyarrow()  # before any model loads or row is scored
            flush_rows, flush_seconds = max(flush_rows, PARQUET_FLUSH_ROWS), max(flush_seconds, PARQUET_FLUSH_SECONDS)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._fieldnames_cache: list[str] | None = None
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self.record: dict[str, Any] = {}
        self._fh: IO[str] | None = None
        self._csv: csv.DictWriter | None = None
        self._parts = 0  # Parquet: part files in the folder, so new names sort after them
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(exclusive_lock(lock_path(path), str(path)))
        try:
            self.stored, self.previous = read_results(path)
        except BaseException:
            self._lock.close()
            raise

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def begin(self, record: dict[str, Any], columns: Sequence[str], inputs: Iterable[str]) -> set[str]:
        """Check ``record`` against the file, rewrite it with what stays, and return the keys already scored.

        Scored rows stay; failed rows of this run's inputs (``inputs``: :func:`input_key` values) go, as
        those inputs are tried again; failed rows of other inputs stay as they are.
        """
        check_record(self.path, self.stored, self.previous, record)
        retry = set(inputs)
        if self.fmt == ".parquet":
            _check_parquet_text(self.path, retry)
        self.record, self.columns = dict(record), list(columns)
        self.rows = [r for r in self.previous if is_scored(r) or input_key(str(r.get("path"))) not in retry]
        if self.fmt == ".parquet":
            self.rows = _first_per_input(self.rows)  # an interrupted compaction may have left rows twice
        if self.fmt == ".csv":
            # The record first: a CSV whose rows carry a fingerprint always has the record beside it.
            atomic_write(sidecar_path(self.path), json.dumps({HEADER_KEY: self.record}, indent=1) + "\n")
        if self.fmt == ".json":
            self._rewrite_json()
        elif self.fmt == ".parquet":
            self._begin_parquet(dropped=len(self.rows) != len(self.previous))
        else:
            self._rewrite_lines()
        return {input_key(str(r.get("path"))) for r in self.rows if is_scored(r)}

    def _rewrite_lines(self) -> None:
        fh = open_temp(self.path)
        try:
            if self.fmt == ".csv":
                self._csv = csv.DictWriter(fh, fieldnames=self._fieldnames(), extrasaction="ignore")
                self._csv.writeheader()
                self._csv.writerows(map(_escaped, self.rows))
            else:
                fh.write(json.dumps({HEADER_KEY: self.record}) + "\n")
                fh.writelines(json.dumps(r) + "\n" for r in self.rows)
            # The handle stays open on the published file: rows are appended to what was just written.
            commit_temp(fh, self.path)
        except BaseException:
            discard_temp(fh)
            raise
        self._fh = fh

    def _fieldnames(self) -> list[str]:
        # Fixed at begin(): this run's columns, then any others that rows kept from earlier runs carry.
        if self._fieldnames_cache is None:
            names = list(self.columns)
            for r in self.rows:
                names.extend(k for k in r if k not in names)
            self._fieldnames_cache = names
        return self._fieldnames_cache

    def _begin_parquet(self, dropped: bool) -> None:
        self.path.mkdir(exist_ok=True)
        atomic_write(self.path / PARQUET_RECORD, json.dumps({HEADER_KEY: self.record}, indent=1) + "\n")
        old = parquet_parts(self.path)
        self._parts = len(old)
        if dropped:
            # The rows that stay go into one new part before the old parts (all this tool's) are removed: an
            # interruption in between leaves rows twice, never lost.
            self._write_part(self.rows)
            for part in old:
                part.unlink()

    def _write_part(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        pa = _pyarrow()
        outputs = set(self.record.get("outputs", []))
        fields = [pa.field(n, pa.float64() if n in outputs else pa.string()) for n in self._fieldnames()]
        columns = {f.name: [_parquet_value(r.get(f.name), f.name in outputs) for r in rows] for f in fields}
        table = pa.table(columns, schema=pa.schema(fields))
        fh = open_temp(self.path / PARQUET_PART.format(self._parts, "x"), binary=True)
        try:
            pa.parquet.write_table(table, fh)
            name = PARQUET_PART.format(self._parts, hashlib.sha256(os.urandom(16)).hexdigest()[:8])
            commit_temp(fh, self.path / name)
        except BaseException:
            discard_temp(fh)
            raise
        fh.close()
        self._parts += 1

    def _rewrite_json(self) -> None:
        atomic_write(self.path, json.dumps({HEADER_KEY: self.record, "rows": self.rows}, indent=1))

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Persist finished rows now (fsynced), each with this run's fingerprint."""
        rows = [{**r, FINGERPRINT: self.record[FINGERPRINT]} for r in rows]
        if self.fmt == ".json":
            self.rows.extend(rows)  # only JSON is rewritten whole; the other formats append and keep nothing
            self._rewrite_json()
            return
        if self.fmt == ".parquet":
            self._write_part(rows)
            return
        assert self._fh is not None, "begin() first"
        if self._csv is not None:
            self._csv.writerows(map(_escaped, rows))
        else:
            self._fh.writelines(json.dumps(r) + "\n" for r in rows)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def add(self, row: dict[str, Any]) -> None:
        """Queue a finished row; queued rows are written a ``flush_rows`` batch at a time, and no later than
        ``flush_seconds`` once more rows arrive (one fsync per batch, not per image: an interrupted run loses at
        most that many)."""
        self._pending.append(row)
        if len(self._pending) >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the queued rows now."""
        if self._pending:
            rows, self._pending = self._pending, []
            self.write(rows)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Write the queued rows, close the file and release the lock."""
        try:
            if self.record:
                self.flush()
            if self._fh is not None:
                self._fh.close()
                self._fh = None
        finally:
            self._lock.close()


def _check_parquet_text(path: Path, keys: Iterable[str]) -> None:
    """Refuse, before anything is scored, inputs whose names Parquet's UTF-8 strings cannot hold."""
    for key in keys:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ResultFileError(f"{path}: the input {key.encode('utf-8', 'surrogateescape')!r} has a name that is "
                                  "not UTF-8, which Parquet cannot store; write .csv or .jsonl instead") from None


def _first_per_input(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with later repeats of an input dropped (a scored row is kept over a failed one)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = input_key(str(r.get("path")))
        if key not in best or (is_scored(r) and not is_scored(best[key])):
            best[key] = r
    return list(best.values())


def _parquet_value(value: Any, numeric: bool) -> Any:
    if value is None or value == "" and numeric:
        return None
    return float(value) if numeric else str(value)


def _escaped(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: csv_cell(v) for k, v in row.items()}


__all__ = [
    "FINGERPRINT",
    "FORMATS",
    "ResultFileError",
    "ResultWriter",
    "ScoringPlan",
    "check_record",
    "input_key",
    "is_scored",
    "lock_path",
    "parquet_parts",
    "plan_scoring",
    "read_results",
    "result_row",
    "run_record",
    "sidecar_path",
    "unique_inputs",
]
