"""The Ray engine changes nothing but speed: same scores, same error rows, same resume as the local runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clipiq.cli.main import main
from clipiq.data.results import read_results
from photo_files import write_photos


def test_clipiq_never_imports_ray() -> None:
    code = ("import sys, clipiq, clipiq.distributed, clipiq.cli.main\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from clipiq.distributed import require_ray
    from clipiq.distributed.ray_score import RayNotInstalledError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(RayNotInstalledError, match=r"pip install 'clipiq\[ray\]'"):
        require_ray()
    write_photos(tmp_path, n=1)
    assert main(["score", str(tmp_path), "--engine", "ray", "-o", str(tmp_path / "s.csv"), "--model",
                 "test-tiny"]) != 0
    assert "pip install 'clipiq[ray]'" in capsys.readouterr().err


def test_ray_engine_needs_an_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_photos(tmp_path, n=1)
    assert main(["score", str(tmp_path), "--engine", "ray", "--model", "test-tiny"]) == 2
    assert "give -o OUT" in capsys.readouterr().err


def test_ray_engine_refuses_fp16_on_cpu_actors_before_starting(tmp_path: Path) -> None:
    from clipiq.distributed import score

    write_photos(tmp_path, n=1)
    with pytest.raises(ValueError, match=r"fp16.*needs CUDA"):
        score(tmp_path, tmp_path / "s.csv", model="test-tiny", precision="fp16")
    assert not (tmp_path / "s.csv").exists()


def test_a_pool_the_cluster_cannot_place_is_refused() -> None:
    from clipiq.distributed.ray_score import _check_resources

    _check_resources({"CPU": 2.0}, 1, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"need 2.25 of Ray's logical CPUs; the cluster has 2"):
        _check_resources({"CPU": 2.0}, 2, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"need 1.0 GPUs; the Ray cluster has 0"):
        _check_resources({"CPU": 8.0}, 1, 1.0, 1.0)


def _by_path(path: Path) -> dict[str, dict]:
    _, rows = read_results(path)
    return {"/".join(Path(r["path"]).parts[-2:]): r for r in rows}


def test_ray_scores_equal_the_local_runner_and_rerun_adds_nothing(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'clipiq[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'clipiq[ray]')")
    from clipiq.distributed import score

    images = write_photos(tmp_path / "imgs", n=5, size=48)
    write_photos(tmp_path / "big", n=2, size=72, seed=3)  # a second shape: batches mix sizes
    (images / "bad.png").write_bytes(b"\x89PNG broken")
    (images / "empty.jpg").write_bytes(b"")
    inputs = [str(images), str(tmp_path / "big"), str(tmp_path / "gone.png")]
    local = tmp_path / "local.csv"
    assert main(["score", *inputs, "--model", "test-tiny", "--device", "cpu", "-o", str(local),
                 "--batch-size", "3"]) == 1

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray.parquet"
        first = score(inputs, out, model="test-tiny", batch_size=4, actors=1, progress=False)
        assert (first.inputs, first.already, first.scored, first.failed) == (10, 0, 7, 3)
        a, b = _by_path(local), _by_path(out)
        assert set(a) == set(b) and len(b) == 10
        for name, row in a.items():
            assert row["error"] == b[name]["error"], name
            if not row["error"]:
                assert abs(float(row["score"]) - b[name]["score"]) <= 1e-5, name
        assert {n.split("/")[-1] for n, r in b.items() if r["error"]} == {"bad.png", "empty.jpg", "gone.png"}
        assert a[f"{tmp_path.name}/gone.png"]["error"] == "file does not exist"
        assert len({r["fingerprint"] for r in [*a.values(), *b.values()]}) == 1  # the same record

        again = score(inputs, out, model="test-tiny", batch_size=4, actors=2, cpus_per_actor=0.5, progress=False)
        assert (again.already, again.scored) == (7, 0)  # only the three failures were tried again
        assert _by_path(out).keys() == b.keys() and len(read_results(out)[1]) == 10
        # The Ray engine resumes the local runner's file as its own: nothing is left to score.
        third = score(inputs, local, model="test-tiny", progress=False)
        assert (third.already, third.scored) == (7, 0) and len(read_results(local)[1]) == 10
    finally:
        ray.shutdown()
