"""Registry of pretrained CLIP weights, with download, cache and sha256 verification.

Each :class:`PretrainedWeights` record names one exact file (pinned Hugging Face revision or URL,
plus its sha256) and the preprocessing those weights were trained with, so normalisation cannot
drift from the weights. :func:`resolve_weights` returns a local, verified path: it looks in the
cache (``$CLIPIQ_HOME`` or ``~/.cache/clipiq``), downloads when allowed, verifies the sha256 before
first use and remembers a successful check in a small ``.sha256-ok`` marker (size + mtime), so a
large file is hashed once rather than on every load.

Sources of the registered hashes: the OpenAI ``.pt`` URLs carry their sha256 in the path (OpenAI's
``clip/clip.py`` checks it); the Hugging Face hashes are the LFS sha256 of the listed file at the
pinned revision.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from clipiq.clip.config import OPENAI_MEAN, OPENAI_STD

__all__ = [
    "PretrainedWeights",
    "WeightsError",
    "WeightsChecksumError",
    "WeightsUnavailableError",
    "UnverifiedWeightsError",
    "UnknownWeightsError",
    "register_weights",
    "unregister_weights",
    "get_weights",
    "list_weights",
    "cache_dir",
    "cache_path",
    "is_cached",
    "resolve_weights",
    "sha256_file",
    "verify_file",
]

logger = logging.getLogger(__name__)


#: State-dict layouts a record may declare: OpenAI's original checkpoints, open_clip's, Hugging Face
#: transformers' ``CLIPModel``, and checkpoints written by clipiq itself.
LAYOUTS = ("openai", "open_clip", "hf", "clipiq")
ACTIVATIONS = ("quick_gelu", "gelu")
INTERPOLATIONS = ("bicubic", "bilinear")

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_MARKER_SUFFIX = ".sha256-ok"
_URL_TIMEOUT_S = 60
_OFFLINE_ALTERNATIVES = (
    "Offline alternatives that need no download: the built-in 'degradation-clip' model, "
    "and 'test-tiny' (random weights, for smoke tests only)."
)


class WeightsError(RuntimeError):
    """Base class for problems with pretrained weight files."""


class WeightsChecksumError(WeightsError):
    """A weights file does not have the expected sha256; the file is not used."""

    def __init__(self, path: Path | str, expected: str, actual: str, detail: str = "") -> None:
        self.path = path  # a local path, or the URL of a discarded download
        self.expected = expected
        self.actual = actual
        msg = f"sha256 mismatch for weights file {path}: expected {expected}, got {actual}."
        super().__init__(f"{msg} {detail}".strip())


class WeightsUnavailableError(WeightsError):
    """The weights are neither cached nor downloadable (offline, or the source is unreachable)."""


class UnverifiedWeightsError(WeightsError):
    """The record has no known sha256 and the caller did not accept unverified weights."""


class UnknownWeightsError(KeyError, ValueError):
    """No weights are registered under this name (a KeyError and a ValueError)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, kw_only=True)
class PretrainedWeights:
    """One pretrained weights file: where it comes from, its sha256, and how inputs are prepared.

    Exactly one kind of source: a Hugging Face file (``hf_repo`` + ``hf_filename``, ideally pinned
    with ``hf_revision``) optionally backed by a ``url`` serving the same bytes, a ``url`` alone, or
    a ``package_file`` shipped inside clipiq (a path relative to the ``clipiq`` package).
    """

    name: str
    arch: str
    sha256: str | None
    layout: str = "open_clip"
    act: str = "quick_gelu"
    hf_repo: str | None = None
    hf_filename: str | None = None
    hf_revision: str | None = None
    url: str | None = None
    package_file: str | None = None
    size: int | None = None
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    image_size: int = 224
    license: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"name must be a non-empty string without whitespace, got {self.name!r}")
        if not isinstance(self.arch, str) or not self.arch:
            raise ValueError(f"{self.name}: arch must be a non-empty string, got {self.arch!r}")
        if self.sha256 is not None:
            digest = str(self.sha256).lower()
            if not _SHA256_RE.match(digest):
                raise ValueError(f"{self.name}: sha256 must be 64 hex digits or None, got {self.sha256!r}")
            object.__setattr__(self, "sha256", digest)
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"{self.name}: act must be one of {ACTIVATIONS}, got {self.act!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"{self.name}: interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        for field_name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, field_name))
            if len(value) != 3:
                raise ValueError(f"{self.name}: {field_name} must have 3 values (RGB), got {len(value)}")
            object.__setattr__(self, field_name, value)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std values must be positive, got {self.std}")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ValueError(f"{self.name}: image_size must be a positive int, got {self.image_size!r}")
        if self.size is not None and (not isinstance(self.size, int) or self.size <= 0):
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
        if self.package_file is not None:
            if has_hf or self.url is not None:
                raise ValueError(f"{self.name}: package_file cannot be combined with hf_repo or url")
            if Path(self.package_file).is_absolute() or ".." in Path(self.package_file).parts:
                raise ValueError(
                    f"{self.name}: package_file must be relative to the clipiq package, "
                    f"got {self.package_file!r}"
                )
        elif not has_hf and self.url is None:
            raise ValueError(f"{self.name}: give a source (hf_repo + hf_filename, url, or package_file)")

    @property
    def filename(self) -> str:
        """File name of the weights (as stored in the cache)."""
        if self.hf_filename:
            return Path(self.hf_filename).name
        if self.package_file:
            return Path(self.package_file).name
        return Path(urllib.parse.urlparse(self.url or "").path).name or "weights.bin"

    @property
    def source(self) -> str:
        """Human-readable origin of the file (a URL or the package path)."""
        if self.hf_repo:
            revision = self.hf_revision or "main"
            return f"https://huggingface.co/{self.hf_repo}/resolve/{revision}/{self.hf_filename}"
        if self.url:
            return self.url
        return f"clipiq/{self.package_file}"

    def replace(self, **changes: object) -> PretrainedWeights:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, PretrainedWeights] = {}


def register_weights(record: PretrainedWeights, *, overwrite: bool = False) -> PretrainedWeights:
    """Add a weights record to the registry (``overwrite=True`` to replace one of the same name)."""
    if not isinstance(record, PretrainedWeights):
        raise TypeError(f"record must be a PretrainedWeights, got {type(record).__name__}")
    if record.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"weights {record.name!r} are already registered; pass overwrite=True to replace them"
        )
    _REGISTRY[record.name] = record
    return record


def unregister_weights(name: str) -> PretrainedWeights:
    """Remove a record from the registry and return it."""
    record = get_weights(name)
    del _REGISTRY[record.name]
    return record


def get_weights(name: str) -> PretrainedWeights:
    """The record registered under ``name`` (e.g. ``"ViT-B-32/openai"``)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    by_lower = {n.lower(): n for n in _REGISTRY}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(by_lower[c]) for c in close)}?" if close else ""
    raise UnknownWeightsError(
        f"unknown pretrained weights {name!r}.{hint} Registered: {', '.join(sorted(_REGISTRY))}"
    )


def list_weights(arch: str | None = None) -> list[str]:
    """Sorted names of the registered weights, optionally only those for one architecture."""
    return sorted(n for n, r in _REGISTRY.items() if arch is None or r.arch == arch)


# --------------------------------------------------------------------------------------------------
# Cache, verification and download


def cache_dir() -> Path:
    """Root of clipiq's cache: ``$CLIPIQ_HOME`` if set, else ``~/.cache/clipiq``."""
    env = os.environ.get("CLIPIQ_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "clipiq"


def cache_path(record: PretrainedWeights | str) -> Path:
    """Where the weights file lives in the cache: ``cache_dir()/weights/<sha256 or name>/<filename>``."""
    record = _as_record(record)
    key = record.sha256 or re.sub(r"[^A-Za-z0-9._-]+", "--", record.name)
    return cache_dir() / "weights" / key / record.filename


def is_cached(record: PretrainedWeights | str) -> bool:
    """Whether the file is present locally (cache or package); says nothing about its checksum."""
    record = _as_record(record)
    if record.package_file:
        return _package_path(record).is_file()
    return cache_path(record).is_file()


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


def resolve_weights(
    record: PretrainedWeights | str, *, offline: bool | None = None, allow_unverified: bool = False
) -> Path:
    """Local, sha256-verified path of the weights, downloading them into the cache if needed.

    ``offline=None`` follows ``HF_HUB_OFFLINE``; offline, only the cache (or the package) is used.
    Raises WeightsChecksumError on a bad file, WeightsUnavailableError when there is no copy and no
    way to download one, and UnverifiedWeightsError for a record without sha256 unless
    ``allow_unverified=True``.
    """
    record = _as_record(record)
    if record.sha256 is None and not allow_unverified:
        raise UnverifiedWeightsError(
            f"weights {record.name!r} have no known sha256, so they cannot be verified. Pass a file you "
            f"trust with `--weights FILE` / load_clip({record.name!r}, weights=path), or "
            "allow_unverified=True to use the download unchecked."
        )
    if record.package_file:
        path = _package_path(record)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights {record.name!r} should ship inside clipiq at {path}, but the file is missing; "
                "reinstall clipiq. " + _OFFLINE_ALTERNATIVES
            )
        _ensure_verified(path, record)
        return path

    target = cache_path(record)
    if target.is_file():
        _ensure_verified(target, record)
        return target

    if _is_offline(offline):
        reason = "offline mode is on (offline=True or HF_HUB_OFFLINE=1), so nothing was downloaded"
        raise WeightsUnavailableError(_unavailable_message(record, target, reason))

    failures: list[str] = []
    if record.hf_repo:
        try:
            _download_hf(record, target)
            return target
        except WeightsChecksumError:
            raise
        except Exception as exc:  # any network/hub failure: report it and try the next source
            logger.warning("could not download %s from the Hugging Face hub: %s", record.name, exc)
            failures.append(f"Hugging Face hub ({record.hf_repo}): {type(exc).__name__}: {exc}")
    if record.url:
        try:
            _download_url(record, target)
            return target
        except WeightsChecksumError:
            raise
        except Exception as exc:
            logger.warning("could not download %s from %s: %s", record.name, record.url, exc)
            failures.append(f"{record.url}: {type(exc).__name__}: {exc}")
    reason = "the download failed (no network, or the source is unreachable): " + "; ".join(
        f.rstrip(". ") for f in failures
    )
    raise WeightsUnavailableError(_unavailable_message(record, target, reason))


def _as_record(record: PretrainedWeights | str) -> PretrainedWeights:
    if isinstance(record, PretrainedWeights):
        return record
    if isinstance(record, str):
        return get_weights(record)
    raise TypeError(f"record must be a PretrainedWeights or a registered name, got {type(record).__name__}")


def _is_offline(offline: bool | None) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _package_path(record: PretrainedWeights) -> Path:
    # Packages installed as plain directories give real paths; zipped installs are not supported
    # for weights because the file must be memory-mappable by safetensors/torch.
    return Path(str(resources.files("clipiq").joinpath(record.package_file or "")))


def _marker_path(record: PretrainedWeights) -> Path:
    target = cache_path(record)
    return target.with_name(target.name + _MARKER_SUFFIX)


def _marker_matches(marker: Path, path: Path, stat: os.stat_result, sha256: str) -> bool:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        data.get("sha256") == sha256
        and data.get("size") == stat.st_size
        and data.get("mtime_ns") == stat.st_mtime_ns
        and data.get("path") == str(path.resolve())
    )


def _write_marker(record: PretrainedWeights, path: Path, sha256: str) -> None:
    marker = _marker_path(record)
    stat = path.stat()
    payload = {
        "sha256": sha256,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "path": str(path.resolve()),
    }
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, marker)
    except OSError as exc:  # a read-only cache only costs a re-hash next time
        logger.debug("could not write checksum marker %s: %s", marker, exc)


def _ensure_verified(path: Path, record: PretrainedWeights) -> None:
    if record.sha256 is None:
        logger.warning("using weights %s from %s without sha256 verification", record.name, path)
        return
    if _marker_matches(_marker_path(record), path, path.stat(), record.sha256):
        return
    logger.info("verifying sha256 of %s", path)
    actual = sha256_file(path)
    if actual != record.sha256:
        raise WeightsChecksumError(path, record.sha256, actual, _mismatch_advice(record, path))
    _write_marker(record, path, actual)


def _mismatch_advice(record: PretrainedWeights, path: Path) -> str:
    size = path.stat().st_size
    size_note = f" The file has {size} bytes" + (
        f"; the published file has {record.size} bytes." if record.size else "."
    )
    return (
        f"It is not the {record.name!r} file from {record.source} (corrupted, truncated or replaced) "
        f"and was not used.{size_note} Delete it and retry the download, or pass a trusted copy "
        "with `--weights FILE`."
    )


def _download_hf(record: PretrainedWeights, target: Path) -> None:
    from huggingface_hub import hf_hub_download

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
        actual = sha256_file(downloaded)
        if actual != record.sha256:
            advice = _mismatch_advice(record, downloaded)
            raise WeightsChecksumError(downloaded, record.sha256, actual, advice)
    _place(downloaded, target)
    if record.sha256 is not None:
        _write_marker(record, target, record.sha256)


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


def _download_url(record: PretrainedWeights, target: Path) -> None:
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
        actual = digest.hexdigest()
        if record.sha256 is not None and actual != record.sha256:
            raise WeightsChecksumError(
                url,
                record.sha256,
                actual,
                f"The download from {url} was discarded ({tmp.stat().st_size} bytes); nothing was cached.",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if record.sha256 is not None:
        _write_marker(record, target, record.sha256)


def _unavailable_message(record: PretrainedWeights, target: Path, reason: str) -> str:
    digest = f" (sha256 {record.sha256})" if record.sha256 else ""
    return (
        f"Pretrained weights {record.name!r} could not be downloaded: {reason}.\n"
        f"No cached copy was found at {target}.\n"
        "To use them without network, either\n"
        f"  - pass a local copy: `--weights FILE` on the command line, or "
        f"load_clip({record.name!r}, weights=path) in Python; or\n"
        f"  - place the file {record.filename}{digest}, from {record.source}, at {target}\n"
        + _OFFLINE_ALTERNATIVES
    )


# --------------------------------------------------------------------------------------------------
# Built-in records

_OPENAI_NOTE = "OpenAI CLIP weights (MIT, github.com/openai/CLIP), trained on 400M web image-text pairs"

for _record in (
    PretrainedWeights(
        name="ViT-B-32/openai",
        arch="ViT-B-32",
        hf_repo="timm/vit_base_patch32_clip_224.openai",
        hf_filename="open_clip_model.safetensors",
        hf_revision="a6f597a30f7b82c51704746581f9a4e41421e878",
        sha256="e6d1bd7789aa45192b3bf90570a789b478bae1b74ebcce7eddd908e83a2b7c31",
        size=605_143_284,
        layout="open_clip",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; open_clip safetensors from the timm hub mirror.",
    ),
    PretrainedWeights(
        name="ViT-B-16/openai",
        arch="ViT-B-16",
        hf_repo="timm/vit_base_patch16_clip_224.openai",
        hf_filename="open_clip_model.safetensors",
        hf_revision="977e3dd0ec55ab8da155f2fbeb6b5f54948b6e3d",
        sha256="4b8699299b1e8997753c64b052ba32031449d5d853f55a039148560ee02b820f",
        size=598_516_980,
        layout="open_clip",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; open_clip safetensors from the timm hub mirror.",
    ),
    PretrainedWeights(
        name="ViT-L-14/openai",
        arch="ViT-L-14",
        hf_repo="timm/vit_large_patch14_clip_224.openai",
        hf_filename="open_clip_model.safetensors",
        hf_revision="18d0535469bb561bf468d76c1d73aa35156c922b",
        sha256="9ce2e8a8ebfff3793d7d375ad6d3c35cb9aebf3de7ace0fc7308accab7cd207e",
        layout="open_clip",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; open_clip safetensors from the timm hub mirror.",
    ),
    PretrainedWeights(
        name="ViT-B-32/laion2b_s34b_b79k",
        arch="ViT-B-32",
        hf_repo="laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        hf_filename="open_clip_model.safetensors",
        hf_revision="1a25a446712ba5ee05982a381eed697ef9b435cf",
        sha256="ac4f8c4b88af6d963118cbf40ad93176d092abbedfcb752601ae1866352656e6",
        size=605_143_316,
        layout="open_clip",
        act="gelu",
        license="MIT",
        description="OpenCLIP ViT-B/32 trained by LAION on LAION-2B (34B samples seen, batch 79K).",
    ),
    # OpenAI's original TorchScript archives; the URL path component is the file's sha256.
    PretrainedWeights(
        name="ViT-B-32/openai-pt",
        arch="ViT-B-32",
        url="https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        layout="openai",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; the original TorchScript archive from OpenAI's CDN.",
    ),
    PretrainedWeights(
        name="ViT-B-16/openai-pt",
        arch="ViT-B-16",
        url="https://openaipublic.azureedge.net/clip/models/"
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
        sha256="5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
        layout="openai",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; the original TorchScript archive from OpenAI's CDN.",
    ),
    PretrainedWeights(
        name="ViT-L-14/openai-pt",
        arch="ViT-L-14",
        url="https://openaipublic.azureedge.net/clip/models/"
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
        sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
        layout="openai",
        act="quick_gelu",
        license="MIT",
        description=f"{_OPENAI_NOTE}; the original TorchScript archive from OpenAI's CDN.",
    ),
):
    register_weights(_record)
del _record


# clipiq's own offline model, shipped inside the package (see docs/models/degradation-clip.md).
register_weights(
    PretrainedWeights(
        name="degradation-clip",
        arch="degradation-clip",
        package_file="weights/degradation-clip.safetensors",
        sha256="f769010bd4fbadf7ee6075c26428a7453d79cfe99cf25c7fff9d6915565b390b",
        size=16199690,
        layout="clipiq",
        act="gelu",
        image_size=128,
        license="MIT",
        description="Small CLIP trained by clipiq on synthetic degradations of real photos; knows degradations, "
        "not scene semantics. Offline default.",
    )
)
