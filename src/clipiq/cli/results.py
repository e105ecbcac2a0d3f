"""Result files for batch scoring: written as rows finish, read back to resume."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipiq.data.runner import RunResult

log = logging.getLogger(__name__)

FORMATS = (".csv", ".jsonl", ".json")


def _fmt(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"output file {path} must end in .csv, .jsonl or .json (got {suffix or 'no suffix'!r})")
    return suffix


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows already in an output file (empty when it does not exist); tolerates a torn last line."""
    if not path.exists():
        return []
    fmt = _fmt(path)
    text = path.read_text(encoding="utf-8")
    if fmt == ".csv":
        return list(csv.DictReader(text.splitlines()))
    if fmt == ".json":
        try:
            data = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: existing output is not valid JSON ({e}); move it away to start over") from None
        return data if isinstance(data, list) else []
    rows = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            # An interrupted run can leave half a line; that image is simply scored again.
            log.warning("%s: ignoring unreadable line %d", path, i + 1)
    return rows


def result_row(result: RunResult, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row of one scored input: path, each output (rounded to 6 places), error ("" when scored), and ``base``."""
    row = {**(base or {}), "path": result.source, "error": result.error or ""}
    if result.ok:
        row.update({k: round(float(v), 6) for k, v in result.output.items()})
    return row


def completed_paths(rows: Sequence[dict[str, Any]]) -> set[str]:
    """Paths whose rows hold a score and no error."""
    done = set()
    for r in rows:
        score, err = r.get("score"), r.get("error")
        if score not in (None, "") and not err:
            done.add(str(r.get("path")))
    return done


class ResultWriter:
    """Appends rows as they finish (CSV, JSON lines) or rewrites atomically (JSON)."""

    def __init__(self, path: Path, columns: Sequence[str], previous: Sequence[dict[str, Any]] = ()):
        self.path = path
        self.fmt = _fmt(path)
        self.columns = list(columns)
        # Failed rows from an earlier run are dropped: those images are retried now.
        self.rows = [r for r in previous if str(r.get("path")) in completed_paths([r])]
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == ".json":
            self._rewrite_json()
        else:
            self._rewrite_lines()

    def _rewrite_lines(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            if self.fmt == ".csv":
                w = csv.DictWriter(f, fieldnames=self._fieldnames(), extrasaction="ignore")
                w.writeheader()
                w.writerows(self.rows)
            else:
                for r in self.rows:
                    f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)
        self._fh = self.path.open("a", encoding="utf-8", newline="")
        if self.fmt == ".csv":
            self._csv = csv.DictWriter(self._fh, fieldnames=self._fieldnames(), extrasaction="ignore")

    def _fieldnames(self) -> list[str]:
        names = list(self.columns)
        for r in self.rows:
            names.extend(k for k in r if k not in names)
        return names

    def _rewrite_json(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.rows, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Persist finished rows now (flushed to disk)."""
        self.rows.extend(rows)
        if self.fmt == ".json":
            self._rewrite_json()
            return
        for r in rows:
            if self.fmt == ".csv":
                self._csv.writerow(r)
            else:
                self._fh.write(json.dumps(r) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file handle."""
        if self.fmt != ".json":
            self._fh.close()
