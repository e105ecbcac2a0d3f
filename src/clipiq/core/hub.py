"""Files fetched from a model hub: records, the local cache, sha256 verification and download.

A :class:`HubFile` names one exact file: a pinned Hugging Face file (optionally backed by a URL
serving the same bytes), a URL alone, or a file shipped inside the clipiq package (or inside another
installed Python package, such as a pip package that ships pretrained weights), together with its
sha256, size and licence. :func:`resolve` turns a record into a local, verified path: a user-supplied
copy, the package file, or the cache (``$CLIPIQ_HOME`` or ``~/.cache/clipiq``), downloading into the
cache when allowed. Packages that need weights (CLIP backbones, segmenters, restorers) subclass
``HubFile`` with their own fields and keep their records in a :class:`HubRegistry`.

A successful check is remembered in a ``<file>.sha256-ok`` marker next to the cached file, so a
large file is hashed once rather than on every load. The marker trusts that a file whose path,
size, modification time (ns) and inode are all unchanged still has the recorded sha256: rewriting,
replacing or touching the file changes one of them and triggers a fresh hash. Only a deliberate
in-place edit that also restores the mtime would go unnoticed; delete the marker to force a check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar, Self, TypeVar

from clipiq.core.errors import UnknownNameError, WeightsError
from clipiq.core.registry import Registry

__all__ = [
    "HubFile",
    "HubRegistry",
    "UnknownWeightsError",
    "UnverifiedWeightsError",
    "WeightsChecksumError",
    "WeightsUnavailableError",
    "cache_dir",
    "cache_path",
    "download",
    "is_cached",
    "local_path",
    "package_path",
    "resolve",
    "sha256_file",
    "verify",
    "verify_file",
]

logger = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_MARKER_SUFFIX = ".sha256-ok"
_URL_TIMEOUT_S = 60
_PACKAGE = "clipiq"  # package_file paths are relative to this package unless python_package names another


class WeightsChecksumError(WeightsError):
    """A file does not have the expected sha256; it is not used."""

    def __init__(self, path: Path | str, expected: str, actual: str, detail: str = "") -> None:
        self.path = path  # a local path, or the URL of a discarded download
        self.expected = expected
        self.actual = actual
        msg = f"sha256 mismatch for weights file {path}: expected {expected}, got {actual}."
        super().__init__(f"{msg} {detail}".strip())


class WeightsUnavailableError(WeightsError):
    """The file is neither local nor downloadable (offline, or the source is unreachable)."""


class UnverifiedWeightsError(WeightsError):
    """The record has no known sha256 and the caller did not accept an unverified file."""


class UnknownWeightsError(UnknownNameError):
    """No record is registered under this name (a KeyError and a ValueError, with close matches)."""


@dataclass(frozen=True, kw_only=True)
class HubFile:
    """One exact file: where it comes from, its sha256, size and licence.

    Exactly one kind of source: a Hugging Face file (``hf_repo`` + ``hf_filename``, ideally pinned
    with ``hf_revision``) optionally backed by a ``url`` serving the same bytes, a ``url`` alone, or
    a ``package_file``: a path relative to the ``clipiq`` package, or to the installed Python package
    named by ``python_package`` (its import name) when the file ships in a dependency.
    ``sha256=None`` is allowed but such a file is only used when the caller opts in.
    """

    #: What the file is, as error messages name it; subclasses say e.g. "pretrained weights".
    kind: ClassVar[str] = "file"

    name: str
    sha256: str | None
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str | None = None
    url: str | None = None
    package_file: str | None = None
    python_package: str | None = None
    size: int | None = None
    license: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"name must be a non-empty string without whitespace, got {self.name!r}")
        if self.sha256 is not None:
            digest = str(self.sha256).lower()
            if not _SHA256_RE.match(digest):
                raise ValueError(f"{self.name}: sha256 must be 64 hex digits or None, got {self.sha256!r}")
            object.__setattr__(self, "sha256", digest)
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0):
            raise ValueError(f"{self.name}: size must be a positive int (bytes) or None, got {self.size!r}")
        has_hf = self.hf_repo is not None or self.hf_filename is not None
        if has_hf and not (self.hf_repo and self.hf_filename):
            raise ValueError(f"{self.name}: hf_repo and hf_filename must be given together")
        if self.hf_revision is not None and not has_hf:
            raise ValueError(f"{self.name}: hf_revision needs hf_repo and hf_filename")
        if self.url is not None:
            scheme = urllib.parse.urlparse(self.url).scheme
            if scheme not in ("https", "http", "file"):
                raise ValueError(f"{self.name}: url must be https, http or file, got {self.url!r}")
        if self.python_package is not None:
            if self.package_file is None:
                raise ValueError(f"{self.name}: python_package needs package_file (the file's path inside it)")
            if not all(part.isidentifier() for part in str(self.python_package).split(".")):
                raise ValueError(
                    f"{self.name}: python_package must be an import name like 'pkg.sub', got {self.python_package!r}"
                )
        if self.package_file is not None:
            if has_hf or self.url is not None:
                raise ValueError(f"{self.name}: package_file cannot be combined with hf_repo or url")
            if Path(self.package_file).is_absolute() or ".." in Path(self.package_file).parts:
                raise ValueError(
                    f"{self.name}: package_file must be relative to the {self.package} package, "
                    f"got {self.package_file!r}"
                )
        elif not has_hf and self.url is None:
            raise ValueError(f"{self.name}: give a source (hf_repo + hf_filename, url, or package_file)")

    @property
    def package(self) -> str:
        """The Python package a ``package_file`` is relative to: ``python_package``, else clipiq."""
        return self.python_package or _PACKAGE

    @property
    def filename(self) -> str:
        """File name (as stored in the cache)."""
        if self.hf_filename:
            return Path(self.hf_filename).name
        if self.package_file:
            return Path(self.package_file).name
        return Path(urllib.parse.urlparse(self.url or "").path).name or "weights.bin"

    @property
    def source(self) -> str:
        """Human-readable origin of the file (a URL or the package path)."""
        if self.hf_repo:
            return f"https://huggingface.co/{self.hf_repo}/resolve/{self.hf_revision or 'main'}/{self.hf_filename}"
        if self.url:
            return self.url
        return f"{self.package}/{self.package_file}"

    def replace(self, **changes: object) -> Self:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def local_copy_hint(self) -> str:
        """How a user passes their own copy instead of a download; subclasses name their CLI option."""
        return "`local=path` in clipiq.core.hub.resolve"

    def offline_alternatives(self) -> str:
        """A sentence naming what works without any download, appended to 'unavailable' errors."""
        return ""

    def checks_copy(self, path: str | Path) -> bool:
        """Whether :func:`resolve` verifies a local copy at ``path``: the record has a sha256 and the
        copy is the record's own file (same name). Other file forms (a converted checkpoint, a folder)
        cannot be compared with the registered hash."""
        path = Path(path)
        return self.sha256 is not None and path.is_file() and path.name == self.filename


H = TypeVar("H", bound=HubFile)


class HubRegistry(Registry[H]):
    """A :class:`Registry` of HubFile records under their own names; unknown names raise UnknownWeightsError."""

    def __init__(self, kind: str, record_type: type[H]) -> None:
        super().__init__(kind)
        self.record_type = record_type

    def add(self, record: H, *, overwrite: bool = False) -> H:
        """Register ``record`` under ``record.name`` (``overwrite=True`` replaces one of the same name)."""
        if not isinstance(record, self.record_type):
            raise TypeError(f"record must be a {self.record_type.__name__}, got {type(record).__name__}")
        return self.register(record.name, record, overwrite=overwrite)

    def get(self, name: str) -> H:
        """The record registered under ``name``; an unknown name lists close matches."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if name not in self:
            raise UnknownWeightsError(self.unknown_message(name))
        return super().get(name)

    __getitem__ = get

    def lookup(self, record: H | str) -> H:
        """``record`` itself, or the record registered under that name."""
        if isinstance(record, self.record_type):
            return record
        if isinstance(record, str):
            return self.get(record)
        raise TypeError(
            f"record must be a {self.record_type.__name__} or a registered name, got {type(record).__name__}"
        )


# --------------------------------------------------------------------------------------------------
# Paths


def cache_dir() -> Path:
    """Root of clipiq's cache: ``$CLIPIQ_HOME`` if set, else ``~/.cache/clipiq``."""
    env = os.environ.get("CLIPIQ_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "clipiq"


def cache_path(record: HubFile) -> Path:
    """Where the file lives in the cache: ``cache_dir()/weights/<sha256 or name>/<filename>``."""
    # Keyed by content when the hash is known, so two records of the same file share one copy.
    key = record.sha256 or re.sub(r"[^A-Za-z0-9._-]+", "--", record.name)
    return cache_dir() / "weights" / key / record.filename


def package_path(record: HubFile) -> Path:
    """Path of a file shipped inside clipiq or another installed package (it may be missing from a broken
    install); raises WeightsUnavailableError when that package is not installed."""
    if record.package_file is None:
        raise ValueError(f"{record.name}: not a package file (source {record.source})")
    try:
        root = resources.files(record.package)
    except ModuleNotFoundError as exc:
        raise WeightsUnavailableError(
            f"{record.kind} {record.name!r} ships inside the Python package {record.package!r}, which is not "
            f"installed ({exc}); install it, or pass a copy of "
            f"{record.filename} with {record.local_copy_hint()}"
        ) from exc
    # Packages installed as plain directories give real paths; zipped installs are not supported
    # because weights must be memory-mappable by safetensors/torch.
    return Path(str(root.joinpath(record.package_file)))


def local_path(record: HubFile) -> Path:
    """Where the file is, or would be, on this machine: the package file or the cache path."""
    return package_path(record) if record.package_file else cache_path(record)


def is_cached(record: HubFile) -> bool:
    """Whether the file is present locally (cache or package); says nothing about its checksum."""
    try:
        return local_path(record).is_file()
    except WeightsUnavailableError:  # the package that would hold it is not installed
        return False


# --------------------------------------------------------------------------------------------------
# Verification


def sha256_file(path: str | Path, chunk_size: int = _CHUNK) -> str:
    """Hex sha256 of a file, read in chunks so large files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | Path, sha256: str) -> Path:
    """Check that ``path`` has the given sha256; return it, or raise WeightsChecksumError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    expected = sha256.lower()
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsChecksumError(path, expected, actual)
    return path


def verify(record: HubFile, path: str | Path | None = None) -> Path:
    """Check the record's local file (or ``path``) against its sha256, hashing only when the marker
    does not vouch for it; return the path or raise WeightsChecksumError. A record without sha256
    is passed with a warning."""
    path = local_path(record) if path is None else Path(path)
    if record.sha256 is None:
        logger.warning("using %s %s from %s without sha256 verification", record.kind, record.name, path)
        return path
    if _marker_matches(record, path):
        return path
    logger.info("verifying sha256 of %s", path)
    _check_digest(record, path, sha256_file(path), _mismatch_advice(record, path))
    _write_marker(record, path)
    return path


def _check_digest(record: HubFile, where: Path | str, actual: str, detail: str) -> None:
    if record.sha256 is not None and actual != record.sha256:
        raise WeightsChecksumError(where, record.sha256, actual, detail)


def _mismatch_advice(record: HubFile, path: Path, remedy: str | None = None) -> str:
    size_note = f" The file has {path.stat().st_size} bytes" + (
        f"; the published file has {record.size} bytes." if record.size else "."
    )
    if remedy is None:
        remedy = (
            f"Reinstall {record.package}" if record.package_file else "Delete it and retry the download"
        ) + f", or pass a trusted copy with {record.local_copy_hint()}"
    return (
        f"It is not the {record.name!r} file from {record.source} (corrupted, truncated or replaced) "
        f"and was not used.{size_note} {remedy}."
    )


def _marker_path(record: HubFile) -> Path:
    # Always under the cache, even for package files, whose folder may be read-only.
    target = cache_path(record)
    return target.with_name(target.name + _MARKER_SUFFIX)


def _identity(path: Path) -> dict[str, object]:
    """What the marker compares: a replaced, rewritten or touched file differs in one of these."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def _marker_matches(record: HubFile, path: Path) -> bool:
    try:
        data = json.loads(_marker_path(record).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data == {"sha256": record.sha256, **_identity(path)}


def _write_marker(record: HubFile, path: Path) -> None:
    marker = _marker_path(record)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"sha256": record.sha256, **_identity(path)}), encoding="utf-8")
        os.replace(tmp, marker)
    except OSError as exc:  # a read-only cache only costs a re-hash next time
        logger.debug("could not write checksum marker %s: %s", marker, exc)


# --------------------------------------------------------------------------------------------------
# Resolve and download


def resolve(
    record: HubFile,
    *,
    local: str | Path | None = None,
    offline: bool | None = None,
    allow_unverified: bool = False,
) -> Path:
    """Local, sha256-verified path of the file, downloading it into the cache if needed.

    ``local``: a copy the user supplies; it is verified when it is the record's own file (see
    :meth:`HubFile.checks_copy`) and otherwise used as given, with a warning. ``offline=None``
    follows ``HF_HUB_OFFLINE``; offline, only the package or the cache is used. Raises
    WeightsChecksumError on a bad file, WeightsUnavailableError when there is no copy and no way to
    download one, and UnverifiedWeightsError for a record without sha256 unless ``allow_unverified``.
    """
    if local is not None:
        return _resolve_local(record, Path(local))
    _require_sha256(record, allow_unverified)
    path = local_path(record)
    if path.is_file():
        return verify(record, path)
    if record.package_file:
        raise WeightsUnavailableError(
            f"{record.kind} {record.name!r} should ship inside {record.package} at {path}, but the file is "
            f"missing; reinstall {record.package}. {record.offline_alternatives()}".strip()
        )
    if _is_offline(offline):
        reason = "offline mode is on (offline=True or HF_HUB_OFFLINE=1), so nothing was downloaded"
        raise WeightsUnavailableError(_unavailable_message(record, path, reason))
    return download(record, allow_unverified=allow_unverified)


def download(record: HubFile, *, allow_unverified: bool = False) -> Path:
    """Fetch the file into the cache from the Hugging Face hub, else its URL; verify it and return the
    cached path. Always fetches: :func:`resolve` is the entry point that uses a cached copy first."""
    _require_sha256(record, allow_unverified)
    if record.package_file:
        raise ValueError(
            f"{record.name}: ships inside {record.package} ({record.source}); there is nothing to download"
        )
    target = cache_path(record)
    sources: list[tuple[str, Callable[[HubFile, Path], None]]] = []
    if record.hf_repo:
        sources.append((f"Hugging Face hub ({record.hf_repo})", _download_hf))
    if record.url:
        sources.append((record.url, _download_url))
    failures: list[str] = []
    for label, fetch in sources:
        try:
            fetch(record, target)
        except WeightsChecksumError:
            raise  # a wrong file is an error, not a reason to try the next source
        except Exception as exc:  # any network/hub failure: report it and try the next source
            logger.warning("could not download %s from %s: %s", record.name, label, exc)
            failures.append(f"{label}: {type(exc).__name__}: {exc}".rstrip(". "))
            continue
        if record.sha256 is not None:
            _write_marker(record, target)
        return target
    reason = "the download failed (no network, or the source is unreachable): " + "; ".join(failures)
    raise WeightsUnavailableError(_unavailable_message(record, target, reason))


def _resolve_local(record: HubFile, path: Path) -> Path:
    if not path.exists():
        raise WeightsUnavailableError(f"{path}: local copy of {record.kind} {record.name!r} does not exist")
    if record.checks_copy(path):
        remedy = f"Pass the file published at {record.source}, or a copy in another file form"
        _check_digest(record, path, sha256_file(path), _mismatch_advice(record, path, remedy))
        return path
    logger.warning(
        "%s: local copy of %s in another file form; its sha256 is not checked against the registry", path, record.name
    )
    return path


def _require_sha256(record: HubFile, allow_unverified: bool) -> None:
    if record.sha256 is None and not allow_unverified:
        raise UnverifiedWeightsError(
            f"{record.name!r} ({record.kind}) has no known sha256, so it cannot be verified. Pass a file you "
            f"trust with {record.local_copy_hint()}, or allow_unverified=True to use the download unchecked."
        )


def _is_offline(offline: bool | None) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download_hf(record: HubFile, target: Path) -> None:
    from huggingface_hub import hf_hub_download  # optional at import time: only downloads need it

    logger.info("downloading %s from the Hugging Face hub (%s)", record.name, record.hf_repo)
    downloaded = Path(
        hf_hub_download(
            repo_id=record.hf_repo,
            filename=record.hf_filename,
            revision=record.hf_revision,
            cache_dir=cache_dir() / "hub",
        )
    )
    if record.sha256 is not None:
        _check_digest(record, downloaded, sha256_file(downloaded), _mismatch_advice(record, downloaded))
    _place(downloaded, target)


def _place(src: Path, target: Path) -> None:
    """Put ``src`` at ``target`` atomically: a hard link when possible (no second copy), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        try:
            os.link(src.resolve(), tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _download_url(record: HubFile, target: Path) -> None:
    url = record.url or ""
    logger.info("downloading %s from %s", record.name, url)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as resp:
            # Hash while streaming so a large download is not read a second time.
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
        detail = f"The download from {url} was discarded ({tmp.stat().st_size} bytes); nothing was cached."
        _check_digest(record, url, digest.hexdigest(), detail)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _unavailable_message(record: HubFile, target: Path, reason: str) -> str:
    digest = f" (sha256 {record.sha256})" if record.sha256 else ""
    lines = [
        f"{record.kind[:1].upper()}{record.kind[1:]} {record.name!r} could not be downloaded: {reason}.",
        f"No cached copy was found at {target}.",
        "To use it without network, either",
        f"  - pass a local copy: {record.local_copy_hint()}; or",
        f"  - place the file {record.filename}{digest}, from {record.source}, at {target}",
    ]
    if alternatives := record.offline_alternatives():
        lines.append(alternatives)
    return "\n".join(lines)
