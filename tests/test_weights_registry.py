"""Pretrained-weights registry, cache and sha256 verification (no network: the hub is mocked)."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

import huggingface_hub
import pytest

from clipiq.clip.weights import (
    PretrainedWeights,
    UnknownWeightsError,
    UnverifiedWeightsError,
    WeightsChecksumError,
    WeightsUnavailableError,
    cache_dir,
    cache_path,
    get_weights,
    is_cached,
    list_weights,
    register_weights,
    resolve_weights,
    sha256_file,
    unregister_weights,
    verify_file,
)
from clipiq.core import hub as core_hub

# OpenAI's normalisation constants, as written in openai/CLIP clip/clip.py.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
FAKE_REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "clipiq-home"
    monkeypatch.setenv("CLIPIQ_HOME", str(root))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return root


@pytest.fixture
def payload(tmp_path) -> bytes:
    data = os.urandom(3 * (1 << 20) + 123)  # several read chunks
    (tmp_path / "upstream.safetensors").write_bytes(data)
    return data


@pytest.fixture
def record(payload):
    rec = register_weights(
        PretrainedWeights(
            name="unit-test/fake",
            arch="test-tiny",
            hf_repo="clipiq-tests/fake-clip",
            hf_filename="fake.safetensors",
            hf_revision=FAKE_REVISION,
            sha256=hashlib.sha256(payload).hexdigest(),
            size=len(payload),
            act="gelu",
        )
    )
    yield rec
    unregister_weights(rec.name)


class FakeHub:
    """Stands in for huggingface_hub.hf_hub_download: copies bytes into an HF-like cache layout."""

    def __init__(self, content: bytes | None, error: Exception | None = None) -> None:
        self.content = content
        self.error = error
        self.calls: list[dict] = []

    def __call__(self, repo_id, filename, *, revision=None, cache_dir=None, **kwargs):
        self.calls.append(
            {"repo_id": repo_id, "filename": filename, "revision": revision, "cache_dir": cache_dir}
        )
        if self.error is not None:
            raise self.error
        repo_dir = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
        out = repo_dir / "snapshots" / (revision or "main") / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(self.content)
        return str(out)


@pytest.fixture
def hub(monkeypatch, payload) -> FakeHub:
    fake = FakeHub(payload)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return fake


# -- registry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "arch", "repo", "act"),
    [
        ("ViT-B-32/openai", "ViT-B-32", "timm/vit_base_patch32_clip_224.openai", "quick_gelu"),
        ("ViT-B-16/openai", "ViT-B-16", "timm/vit_base_patch16_clip_224.openai", "quick_gelu"),
        ("ViT-L-14/openai", "ViT-L-14", "timm/vit_large_patch14_clip_224.openai", "quick_gelu"),
        ("ViT-B-32/laion2b_s34b_b79k", "ViT-B-32", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "gelu"),
    ],
)
def test_required_entries(name, arch, repo, act):
    rec = get_weights(name)
    assert name in list_weights() and name in list_weights(arch=arch)
    assert (rec.arch, rec.hf_repo, rec.act, rec.layout) == (arch, repo, act, "open_clip")
    assert rec.hf_filename == "open_clip_model.safetensors" and len(rec.hf_revision or "") == 40
    assert rec.mean == OPENAI_MEAN and rec.std == OPENAI_STD
    assert (rec.image_size, rec.interpolation) == (224, "bicubic")
    assert rec.sha256 is not None and len(rec.sha256) == 64
    assert rec.source.startswith(f"https://huggingface.co/{repo}/resolve/{rec.hf_revision}/")


def test_openai_original_archives_are_content_addressed():
    names = [n for n in list_weights() if n.endswith("/openai-pt")]
    assert len(names) == 3
    for name in names:
        rec = get_weights(name)
        assert rec.layout == "openai" and rec.hf_repo is None
        # OpenAI's CDN path component is the file's sha256 (OpenAI's own downloader checks this).
        assert rec.url is not None and rec.url.split("/")[-2] == rec.sha256
    assert get_weights("ViT-B-32/openai-pt").sha256 == (
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
    )


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownWeightsError, match=r"Did you mean ViT-B-32/openai\b") as info:
        get_weights("ViT-B-32/opnai")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert "ViT-L-14/openai" in str(info.value)  # lists what is registered
    with pytest.raises(TypeError, match="int"):
        get_weights(3)  # type: ignore[arg-type]


def test_register_validates(record):
    with pytest.raises(ValueError, match="already registered"):
        register_weights(record)
    assert register_weights(record.replace(description="new"), overwrite=True).description == "new"
    with pytest.raises(TypeError, match="dict"):
        register_weights({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sha256"):
        record.replace(sha256="abc")
    with pytest.raises(ValueError, match="layout"):
        record.replace(layout="tf")
    with pytest.raises(ValueError, match="act"):
        record.replace(act="relu")
    with pytest.raises(ValueError, match="std"):
        record.replace(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="source"):
        PretrainedWeights(name="x/y", arch="ViT-B-32", sha256=None)
    with pytest.raises(ValueError, match="package_file"):
        record.replace(package_file="weights/a.safetensors")


def test_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPIQ_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("CLIPIQ_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "clipiq"


# -- resolve / verify ------------------------------------------------------------------------------


def test_resolve_downloads_verifies_and_caches(home, record, hub, payload):
    assert not is_cached(record)
    path = resolve_weights(record)
    assert path == home / "weights" / record.sha256 / "fake.safetensors" == cache_path(record)
    assert path.read_bytes() == payload and is_cached(record)
    assert hub.calls == [
        {
            "repo_id": "clipiq-tests/fake-clip",
            "filename": "fake.safetensors",
            "revision": FAKE_REVISION,
            "cache_dir": home / "hub",
        }
    ]
    assert resolve_weights("unit-test/fake") == path  # by name, from the cache
    assert len(hub.calls) == 1
    assert resolve_weights(record, offline=True) == path


def test_marker_avoids_rehashing(home, record, hub, monkeypatch):
    calls = []
    real = core_hub.sha256_file

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(core_hub, "sha256_file", counting)  # hashing lives in clipiq.core.hub
    path = resolve_weights(record)
    assert len(calls) == 1  # verified once, right after the download
    marker = path.with_name(path.name + ".sha256-ok")
    assert marker.is_file()
    for _ in range(3):
        resolve_weights(record)
    assert len(calls) == 1
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched: check again
    resolve_weights(record)
    assert len(calls) == 2
    marker.unlink()
    resolve_weights(record)
    assert len(calls) == 3 and marker.is_file()


def test_tampered_download_is_rejected(home, record, hub, payload):
    hub.content = payload[:-1] + bytes([payload[-1] ^ 0xFF])
    with pytest.raises(WeightsChecksumError) as info:
        resolve_weights(record)
    err = info.value
    assert isinstance(err, RuntimeError)
    assert err.expected == record.sha256
    assert err.actual == hashlib.sha256(hub.content).hexdigest() != record.sha256
    assert record.sha256 in str(err) and err.actual in str(err) and "fake.safetensors" in str(err)
    assert not cache_path(record).exists()


def test_tampered_cached_file_is_rejected(home, record, hub):
    path = resolve_weights(record)
    path.write_bytes(b"not the weights")
    with pytest.raises(WeightsChecksumError, match=str(path).replace("\\", "\\\\")) as info:
        resolve_weights(record)
    assert info.value.actual == hashlib.sha256(b"not the weights").hexdigest()
    assert "was not used" in str(info.value)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_without_cache_is_one_clear_error(home, record, hub, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights(record, offline=True if how == "flag" else None)
    msg = str(info.value)
    assert str(cache_path(record)) in msg
    assert "--weights" in msg and "weights=path" in msg
    assert "degradation-clip" in msg and "test-tiny" in msg
    assert "could not be downloaded" in msg
    assert hub.calls == []


def test_unreachable_hub_is_reported(home, record, hub):
    hub.error = ConnectionError("Name or service not known")
    with pytest.raises(WeightsUnavailableError, match="Name or service not known") as info:
        resolve_weights(record)
    assert str(cache_path(record)) in str(info.value)


def test_url_source_streams_and_verifies(home, tmp_path, payload):
    src = tmp_path / "upstream.safetensors"
    rec = PretrainedWeights(
        name="unit-test/url", arch="test-tiny", url=src.as_uri(), sha256=hashlib.sha256(payload).hexdigest()
    )
    path = resolve_weights(rec)
    assert path == cache_path(rec) and path.read_bytes() == payload
    assert path.with_name(path.name + ".sha256-ok").is_file()
    bad = rec.replace(sha256="0" * 64)
    with pytest.raises(WeightsChecksumError, match="discarded"):
        resolve_weights(bad)
    assert not cache_path(bad).exists()
    assert list(cache_path(bad).parent.iterdir()) == []  # no partial download left behind


def test_package_file_source(home):
    rel = "clip/bpe_simple_vocab_16e6.txt.gz"
    digest = hashlib.sha256(resources.files("clipiq").joinpath(rel).read_bytes()).hexdigest()
    rec = PretrainedWeights(name="unit-test/packaged", arch="test-tiny", package_file=rel, sha256=digest)
    path = resolve_weights(rec, offline=True)
    assert path.name == "bpe_simple_vocab_16e6.txt.gz" and path.is_file() and is_cached(rec)
    with pytest.raises(WeightsChecksumError):
        resolve_weights(rec.replace(sha256="f" * 64))
    missing = rec.replace(package_file="weights/does-not-exist.safetensors")
    assert not is_cached(missing)
    with pytest.raises(WeightsUnavailableError, match="reinstall"):
        resolve_weights(missing)


def test_record_without_sha256_needs_explicit_opt_in(home, hub, payload):
    rec = PretrainedWeights(
        name="unit-test/nohash", arch="test-tiny", hf_repo="a/b", hf_filename="w.bin", sha256=None
    )
    with pytest.raises(UnverifiedWeightsError, match="--weights"):
        resolve_weights(rec)
    assert hub.calls == []
    path = resolve_weights(rec, allow_unverified=True)
    assert path.read_bytes() == payload and path.parent.name == "unit-test--nohash"


def test_sha256_helpers(tmp_path, payload):
    src = tmp_path / "upstream.safetensors"
    assert sha256_file(src) == hashlib.sha256(payload).hexdigest()
    assert sha256_file(src, chunk_size=7) == hashlib.sha256(payload).hexdigest()
    assert verify_file(src, hashlib.sha256(payload).hexdigest().upper()) == src
    with pytest.raises(WeightsChecksumError):
        verify_file(src, "0" * 64)
    with pytest.raises(FileNotFoundError):
        verify_file(tmp_path / "missing.bin", "0" * 64)


def test_every_named_record_is_a_hub_file_with_a_licence():
    for name in list_weights():
        rec = get_weights(name)
        assert isinstance(rec, core_hub.HubFile) and rec.license == "MIT", name
    assert get_weights("vit-b-32/OPENAI").name == "ViT-B-32/openai"  # names are case-insensitive
    assert list_weights(arch="vit-b-32") == list_weights(arch="ViT-B-32")
    assert list_weights() == sorted(list_weights())
