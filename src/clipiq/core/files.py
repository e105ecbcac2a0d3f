"""Files written safely: atomic replacement through fresh temporary names, exclusive run locks, and CSV
cells that a spreadsheet will not run as formulas.

Every file clipiq replaces goes through :func:`open_temp` / :func:`commit_temp` (or :func:`atomic_path`
for writers that take a file name): a fresh ``mkstemp`` name in the target's folder (two writers never
share a temporary file, and a planted symlink is never followed), fsynced before ``os.replace`` and the
folder fsynced after it, so a crash leaves either the old file or the new one, never a torn mix.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from clipiq.core.errors import ClipIQError

try:  # POSIX only; elsewhere runs are not locked against each other
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


#: Characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection), and the quote
#: that escapes them; a leading quote is escaped too, so the escape can be undone exactly.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_ESCAPE = "'"


class FileBusyError(ClipIQError, RuntimeError):
    """The lock on a file this run would write is held by another run, or cannot be taken."""


def csv_cell(value: Any) -> Any:
    """A CSV cell that cannot run as a spreadsheet formula: text starting with = + - @ tab or CR gets a ``'``.

    Numbers are returned as they are (a negative score is a number, not text); text already starting with
    a quote gets one more, so :func:`csv_uncell` restores every cell exactly.
    """
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, CSV_ESCAPE)):
        return CSV_ESCAPE + value
    return value


def csv_uncell(value: str) -> str:
    """The text :func:`csv_cell` escaped."""
    return value[1:] if value.startswith(CSV_ESCAPE) else value


@functools.cache
def _umask() -> int:
    """The process umask, read on first use: mkstemp creates 0600 files, and a replaced file should get the
    permissions a plain open() would give it.

    Linux reports it in /proc without touching it; elsewhere it is set and restored at once (reading the
    umask means setting it for a moment), which is why it is not done at import.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    # A rename is durable only once its folder is; some filesystems cannot open or fsync a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _new_temp(path: Path) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return fd, Path(tmp)


def _replace(fd: int, tmp: Path, path: Path) -> None:
    """The one commit sequence: the mode a plain write would give, data on disk, the rename, the rename on disk."""
    try:
        mode = path.stat().st_mode & 0o7777 if path.is_file() and not path.is_symlink() else 0o666 & ~_umask()
        os.fchmod(fd, mode)
    except (OSError, AttributeError):  # no fchmod (Windows): keep the temporary file's mode
        pass
    os.fsync(fd)
    os.replace(tmp, path)  # replaces a symlink at ``path`` itself; never writes through it
    _fsync_dir(path.parent)


def open_temp(path: str | os.PathLike, binary: bool = False) -> IO[Any]:
    """A fresh temporary file beside ``path``, open for writing (text: UTF-8, no newline translation).

    Publish it with :func:`commit_temp` (the handle stays open on the published file, for appending) or
    drop it with :func:`discard_temp`.
    """
    fd, tmp = _new_temp(Path(path))

    def opener(_path: str, _flags: int) -> int:  # the mkstemp descriptor, so the handle's name is its path
        return fd

    if binary:
        return open(tmp, "wb", opener=opener)  # noqa: SIM115 (the caller commits or discards it)
    # Paths that are not UTF-8 (possible on POSIX) arrive as surrogate escapes: write them back as the bytes.
    return open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="", opener=opener)  # noqa: SIM115


def commit_temp(fh: IO[Any], path: str | os.PathLike) -> None:
    """Flush and fsync an :func:`open_temp` file and atomically replace ``path`` with it; ``fh`` stays open."""
    fh.flush()
    _replace(fh.fileno(), Path(fh.name), Path(path))


def discard_temp(fh: IO[Any]) -> None:
    """Close an uncommitted :func:`open_temp` file and remove it."""
    fh.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(fh.name)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (fresh temporary file, fsync, rename, folder fsync)."""
    p = Path(path)
    fh = open_temp(p, binary=isinstance(data, bytes))
    try:
        fh.write(data)
        commit_temp(fh, p)
    except BaseException:
        discard_temp(fh)
        raise
    fh.close()
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for writers that take a file name; on success it replaces ``path``."""
    p = Path(path)
    fd, tmp = _new_temp(p)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            _replace(fd, tmp, p)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as CSV text under a header, every cell through :func:`csv_cell`; keys not in ``columns`` are left out."""
    import csv

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows({k: csv_cell(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the lock file ``path`` (created, removed on release); a second holder is
    refused at once with :class:`FileBusyError` naming ``what``.

    The lock file is removed while still locked, and a lock taken on a file that was removed meanwhile is
    taken again, so two processes never both believe they hold it.
    """
    p = Path(path)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as e:  # a symlink planted as the lock file, a read-only folder, ...
            raise FileBusyError(f"{what}: cannot open the lock file {p} ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FileBusyError(f"{what} is being written by another run (it holds {p}); wait for that run "
                                "to finish, or write to another file") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(p, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this lock file: lock the new one
    else:  # pragma: no cover - only under a storm of competing runs
        raise FileBusyError(f"{what}: could not take the lock {p}; another run keeps replacing it")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
        os.close(fd)


__all__ = [
    "CSV_ESCAPE",
    "FORMULA_STARTS",
    "FileBusyError",
    "atomic_path",
    "atomic_write",
    "commit_temp",
    "csv_cell",
    "csv_text",
    "csv_uncell",
    "discard_temp",
    "exclusive_lock",
    "open_temp",
]
