"""clipiq.core.hub: HubFile records, cache paths, sha256 checks, markers, downloads (faked) and errors."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import huggingface_hub
import pytest

from clipiq.core import hub
from clipiq.core.errors import ClipIQError, UnknownNameError, WeightsError
from clipiq.core.hub import (
    HubFile,
    HubRegistry,
    UnknownWeightsError,
    UnverifiedWeightsError,
    WeightsChecksumError,
    WeightsUnavailableError,
)

DATA = b"segmenter weights \x00\x01" * 1000
DIGEST = hashlib.sha256(DATA).hexdigest()
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("CLIPIQ_HOME", str(root))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return root


@pytest.fixture
def record() -> HubFile:
    return HubFile(
        name="seg/fake",
        hf_repo="nobody/fake-seg",
        hf_filename="sub/model.safetensors",
        hf_revision=REVISION,
        sha256=DIGEST,
        size=len(DATA),
        license="Apache-2.0",
        description="a fake segmenter",
    )


class FakeFetch:
    """Stands in for huggingface_hub.hf_hub_download: writes ``content`` into an HF-like cache folder."""

    def __init__(self) -> None:
        self.content = DATA
        self.calls: list[dict] = []

    def __call__(self, repo_id, filename, *, revision=None, cache_dir=None, **kwargs):
        self.calls.append({"repo_id": repo_id, "filename": filename, "revision": revision, "cache_dir": cache_dir})
        out = Path(cache_dir) / repo_id.replace("/", "--") / (revision or "main") / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(self.content)
        return str(out)


@pytest.fixture
def fetch(monkeypatch) -> FakeFetch:
    fake = FakeFetch()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return fake


# -- records -----------------------------------------------------------------------------------------


def test_record_fields_and_sources(record):
    assert record.filename == "model.safetensors"
    assert record.source == f"https://huggingface.co/nobody/fake-seg/resolve/{REVISION}/sub/model.safetensors"
    url = HubFile(name="u", url="https://example.org/a/w.pth?x=1", sha256=None)
    assert (url.filename, url.source) == ("w.pth", "https://example.org/a/w.pth?x=1")
    pkg = HubFile(name="p", package_file="weights/x.safetensors", sha256=DIGEST.upper())
    assert pkg.sha256 == DIGEST and pkg.source == "clipiq/weights/x.safetensors"
    assert record.replace(license="MIT").license == "MIT" and record.license == "Apache-2.0"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"name": "has space"}, "whitespace"),
        ({"sha256": "abc"}, "64 hex"),
        ({"size": 0}, "size"),
        ({"size": True}, "size"),
        ({"hf_filename": None}, "together"),
        ({"hf_repo": None, "hf_filename": None, "hf_revision": None, "url": "ftp://x/y"}, "https, http or file"),
        ({"hf_repo": None, "hf_filename": None, "hf_revision": None}, "give a source"),
        ({"package_file": "weights/a.bin"}, "cannot be combined"),
        ({"hf_repo": None, "hf_filename": None, "hf_revision": None, "package_file": "../a.bin"}, "relative"),
    ],
)
def test_record_validation(record, changes, match):
    with pytest.raises(ValueError, match=match):
        record.replace(**changes)


# -- sha256 and paths -------------------------------------------------------------------------------


def test_sha256_and_verify_file(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(DATA)
    assert hub.sha256_file(f) == hub.sha256_file(f, chunk_size=7) == DIGEST
    assert hub.verify_file(f, DIGEST.upper()) == f
    with pytest.raises(WeightsChecksumError) as info:
        hub.verify_file(f, "0" * 64)
    err = info.value
    assert isinstance(err, WeightsError) and isinstance(err, ClipIQError) and isinstance(err, RuntimeError)
    assert (err.path, err.expected, err.actual) == (f, "0" * 64, DIGEST)
    assert str(f) in str(err) and "0" * 64 in str(err) and DIGEST in str(err)
    with pytest.raises(FileNotFoundError):
        hub.verify_file(tmp_path / "missing.bin", DIGEST)


def test_cache_paths(home, record, tmp_path, monkeypatch):
    assert hub.cache_dir() == home
    assert hub.cache_path(record) == home / "weights" / DIGEST / "model.safetensors" == hub.local_path(record)
    unhashed = record.replace(name="seg/un+hashed", sha256=None)  # keyed by a file-system-safe name
    assert hub.cache_path(unhashed).parent.name == "seg--un--hashed"
    assert not hub.is_cached(record)
    with pytest.raises(ValueError, match="not a package file"):
        hub.package_path(record)
    monkeypatch.delenv("CLIPIQ_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub.cache_dir() == tmp_path / "user" / ".cache" / "clipiq"


# -- resolve, download and the marker ---------------------------------------------------------------


def test_download_through_fake_fetch_then_verify(home, record, fetch):
    path = hub.resolve(record)
    assert path == hub.cache_path(record) and path.read_bytes() == DATA and hub.is_cached(record)
    assert fetch.calls == [
        {"repo_id": "nobody/fake-seg", "filename": "sub/model.safetensors", "revision": REVISION,
         "cache_dir": home / "hub"}
    ]
    marker = json.loads(path.with_name(path.name + ".sha256-ok").read_text())
    st = path.stat()
    assert marker == {
        "sha256": DIGEST, "path": str(path.resolve()),
        "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
    }
    assert hub.verify(record) == path
    assert hub.resolve(record, offline=True) == path and len(fetch.calls) == 1  # served from the cache


def test_download_falls_back_to_url(home, record, tmp_path, monkeypatch):
    def unreachable(**kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    mirror = tmp_path / "mirror.bin"
    mirror.write_bytes(DATA)
    rec = record.replace(url=mirror.as_uri())
    assert hub.download(rec).read_bytes() == DATA
    with pytest.raises(WeightsUnavailableError, match="hub unreachable"):
        hub.download(record)  # no mirror: the failure is reported


def test_tampered_download_is_refused(home, record, fetch):
    fetch.content = b"something else"
    with pytest.raises(WeightsChecksumError) as info:
        hub.resolve(record)
    assert info.value.expected == DIGEST and info.value.actual == hashlib.sha256(b"something else").hexdigest()
    assert "model.safetensors" in str(info.value) and "was not used" in str(info.value)
    assert not hub.cache_path(record).exists()


def test_marker_reverifies_a_changed_file(home, record, fetch, monkeypatch):
    path = hub.resolve(record)
    hashed: list[Path] = []
    real = hub.sha256_file
    monkeypatch.setattr(hub, "sha256_file", lambda p, *a, **k: hashed.append(Path(p)) or real(p, *a, **k))
    hub.resolve(record)
    assert hashed == []  # the marker vouches for the unchanged file
    # Same size, same mtime, different bytes, written as a new file: only the inode tells.
    st = path.stat()
    swap = path.with_name("swap")
    swap.write_bytes(DATA[:-1] + b"!")
    os.utime(swap, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(swap, path)
    with pytest.raises(WeightsChecksumError, match=str(path)):
        hub.resolve(record)
    assert hashed == [path]
    path.write_bytes(DATA)  # repaired: the new mtime makes it hash again, then trust it
    assert hub.resolve(record) == path and hub.resolve(record) == path
    assert len(hashed) == 2


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_error_says_where_and_how(home, record, fetch, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        hub.resolve(record, offline=True if how == "flag" else None)
    msg = str(info.value)
    assert msg.startswith("File 'seg/fake' could not be downloaded: offline mode is on")
    assert f"No cached copy was found at {hub.cache_path(record)}" in msg
    assert f"place the file model.safetensors (sha256 {DIGEST}), from {record.source}" in msg
    assert "local=path" in msg  # the default hint; subclasses name their own option
    assert fetch.calls == []


def test_subclass_hooks_shape_the_messages(home):
    class ToyModel(HubFile):
        kind = "toy model"

        def local_copy_hint(self) -> str:
            return "`--toy FILE`"

        def offline_alternatives(self) -> str:
            return "Try the built-in 'toy-lite'."

    rec = ToyModel(name="toy", url="https://example.org/toy.pt", sha256=DIGEST)
    with pytest.raises(WeightsUnavailableError) as info:
        hub.resolve(rec, offline=True)
    msg = str(info.value)
    assert msg.startswith("Toy model 'toy'") and "`--toy FILE`" in msg and msg.endswith("Try the built-in 'toy-lite'.")


def test_unverified_record_needs_opt_in(home, record, fetch):
    rec = record.replace(sha256=None)
    with pytest.raises(UnverifiedWeightsError, match="no known sha256"):
        hub.resolve(rec)
    assert fetch.calls == []
    assert hub.resolve(rec, allow_unverified=True).read_bytes() == DATA


def test_local_copy(home, record, tmp_path):
    own = tmp_path / "model.safetensors"  # the record's own file name: checked
    own.write_bytes(DATA)
    assert record.checks_copy(own) and hub.resolve(record, local=own, offline=True) == own
    own.write_bytes(b"fine-tuned")
    with pytest.raises(WeightsChecksumError, match="was not used"):
        hub.resolve(record, local=own)
    other = tmp_path / "converted.pt"  # another file form: used as given
    other.write_bytes(b"converted")
    assert not record.checks_copy(other) and hub.resolve(record, local=other) == other
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        hub.resolve(record, local=tmp_path / "missing.safetensors")
    assert not hub.cache_path(record).exists()  # a local copy never touches the cache


def test_package_file(home):
    rel = "clip/bpe_simple_vocab_16e6.txt.gz"
    digest = hashlib.sha256(resources.files("clipiq").joinpath(rel).read_bytes()).hexdigest()
    rec = HubFile(name="vocab", package_file=rel, sha256=digest, license="MIT")
    path = hub.resolve(rec, offline=True)
    assert path == hub.package_path(rec) == hub.local_path(rec) and hub.is_cached(rec)
    with pytest.raises(WeightsChecksumError, match="Reinstall clipiq"):
        hub.resolve(rec.replace(sha256="f" * 64))
    with pytest.raises(WeightsUnavailableError, match="reinstall"):
        hub.resolve(rec.replace(package_file="weights/missing.bin"))
    with pytest.raises(ValueError, match="nothing to download"):
        hub.download(rec)


# -- registry -----------------------------------------------------------------------------------------


def test_registry_of_hub_files(record):
    files: HubRegistry[HubFile] = HubRegistry("segmenter weights", HubFile)
    assert files.add(record) is record
    assert files.get("SEG/FAKE") is record and files["seg/fake"] is record and "seg/Fake" in files
    assert files.lookup(record) is record and files.lookup("seg/fake") is record
    with pytest.raises(ValueError, match="already registered"):
        files.add(record)
    assert files.add(record.replace(description="v2"), overwrite=True).description == "v2"
    files.add(record.replace(name="seg/other", license="MIT"))
    assert files.names(where=lambda r: r.license == "MIT") == ["seg/other"]
    with pytest.raises(UnknownWeightsError, match="Did you mean seg/fake") as info:
        files.get("seg/fak")
    assert isinstance(info.value, UnknownNameError) and isinstance(info.value, KeyError)
    with pytest.raises(TypeError, match="dict"):
        files.add({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        files.lookup(3)  # type: ignore[arg-type]
    assert files.unregister("seg/other").name == "seg/other" and files.names() == ["seg/fake"]


def test_file_inside_another_installed_package(home, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "clipiq_fake_weights_pkg"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "w.pth").write_bytes(DATA)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    rec = HubFile(name="dep/w", python_package="clipiq_fake_weights_pkg", package_file="models/w.pth",
                  sha256=DIGEST, license="Apache-2.0")
    assert rec.package == "clipiq_fake_weights_pkg" and rec.source == "clipiq_fake_weights_pkg/models/w.pth"
    assert hub.resolve(rec, offline=True) == hub.package_path(rec) == pkg / "models" / "w.pth" and hub.is_cached(rec)
    with pytest.raises(WeightsChecksumError, match="Reinstall clipiq_fake_weights_pkg"):
        hub.resolve(rec.replace(sha256="f" * 64))
    with pytest.raises(WeightsUnavailableError, match="reinstall clipiq_fake_weights_pkg"):
        hub.resolve(rec.replace(package_file="models/missing.pth"))
    absent = rec.replace(python_package="clipiq_no_such_pkg_anywhere")
    assert not hub.is_cached(absent)
    with pytest.raises(WeightsUnavailableError, match="not installed"):
        hub.resolve(absent)
    with pytest.raises(ValueError, match="needs package_file"):
        HubFile(name="x", url="https://example.org/w.pth", python_package="pkg", sha256=None)
    with pytest.raises(ValueError, match="import name"):
        rec.replace(python_package="not-a-module")
