"""The clipiq CLI end to end on test-tiny: tables, outputs, bad files, exit codes, resume, bench."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from clipiq.cli.main import main


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((48 + 8 * i, 64, 3)) * 255).astype(np.uint8)).save(d / f"img{i}.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (d / "notes.txt").write_text("not an image, and not listed because of its extension")
    sub = d / "sub"
    sub.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(sub / "deep.jpg")
    return d


def _read_csv(p: Path) -> list[dict]:
    return list(csv.DictReader(p.open()))


def test_score_table_and_exit_code(images, capsys):
    rc = main(["score", str(images), "--model", "test-tiny", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 1  # the corrupt file failed
    assert "img0.png" in out and "corrupt.png" in out and "corrupt or truncated" in out
    assert "RANDOM weights" in out
    assert "scored 5/6 images, 1 failed" in err
    assert "deep.jpg" not in out


def test_score_all_good_exits_zero_and_recursive(images, capsys):
    (images / "corrupt.png").unlink()
    rc = main(["score", str(images), "--recursive", "--model", "test-tiny", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "deep.jpg" in out and "scored 6/6 images, 0 failed" in err


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_output_resume_skips_scored_and_retries_failed(images, tmp_path, suffix, capsys):
    out = tmp_path / f"scores{suffix}"
    args = ["score", str(images), "--model", "test-tiny", "--device", "cpu", "-o", str(out), "--batch-size", "2"]
    assert main(args) == 1
    first = _load(out)
    assert len(first) == 6
    by_path = {r["path"]: r for r in first}
    assert by_path[str(images / "corrupt.png")]["error"]
    # Fix the bad file; the rerun must score only it and keep the earlier rows as they were.
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(images / "corrupt.png")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "5 of 6 images already scored" in err
    second = _load(out)
    assert len(second) == 6 and not any(r.get("error") for r in second)
    for r in second:
        if r["path"] != str(images / "corrupt.png"):
            assert float(r["score"]) == float(by_path[r["path"]]["score"])


def _load(p: Path) -> list[dict]:
    if p.suffix == ".csv":
        return _read_csv(p)
    if p.suffix == ".json":
        return json.loads(p.read_text())["rows"]
    return [r for r in map(json.loads, p.read_text().splitlines()) if "clipiq" not in r]  # the header record


def test_torn_jsonl_line_is_rescored(images, tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    (images / "corrupt.png").unlink()
    args = ["score", str(images), "--model", "test-tiny", "--device", "cpu", "-o", str(out)]
    assert main(args) == 0
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # a crash mid-write
    assert main(args) == 0
    rows = _load(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in images.glob("*.png"))


def test_score_rows_match_the_python_api(images, tmp_path):
    """Streamed rows (any batch size, any number of decoding threads) hold the scores the API gives one by one."""
    from clipiq import create_metric

    out = tmp_path / "s.jsonl"
    assert main(["score", str(images), "--model", "test-tiny", "--device", "cpu", "-o", str(out), "--batch-size",
                 "2", "--workers", "3", "--attributes", "sharpness"]) == 1
    rows = _load(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in images.glob("*.png"))
    assert all(set(r) == {"path", "score", "sharpness", "error", "metric", "model", "fingerprint"}
               for r in rows if not r["error"])
    metric = create_metric("clipiqa", model="test-tiny", device="cpu", attributes="sharpness")
    for r in rows:
        if r["error"]:
            assert r["path"].endswith("corrupt.png") and "score" not in r
            continue
        want = metric.score_with_outputs(r["path"])
        assert r["score"] == pytest.approx(float(want["score"][0]), abs=2e-5)
        assert r["sharpness"] == pytest.approx(float(want["sharpness"][0]), abs=2e-5)


def test_interrupted_score_keeps_finished_rows(images, tmp_path, monkeypatch, capsys):
    from clipiq.iqa.base import QualityMetric

    calls = []
    real = QualityMetric.score_batch

    def flaky(self, prepared):
        calls.append(len(prepared))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, prepared)

    monkeypatch.setattr(QualityMetric, "score_batch", flaky)
    out = tmp_path / "s.csv"
    args = ["score", str(images), "--model", "test-tiny", "--device", "cpu", "-o", str(out), "--batch-size", "2"]
    assert main(args) == 130
    kept = [r for r in _read_csv(out) if not r["error"]]
    assert len(kept) == sum(calls[:2])  # every image scored before the interrupt is on disk
    monkeypatch.undo()
    capsys.readouterr()
    assert main(args) == 1
    assert f"{len(kept)} of 6 images already scored" in capsys.readouterr().err


def test_output_from_another_metric_or_model_is_refused(images, tmp_path, capsys):
    out = tmp_path / "s.csv"
    (images / "corrupt.png").unlink()
    assert main(["score", str(images), "--model", "test-tiny", "--device", "cpu", "-o", str(out)]) == 0
    rc = main(["score", str(images), "--model", "test-tiny-quickgelu", "--device", "cpu", "-o", str(out)])
    assert rc == 2
    assert "already holds scores" in capsys.readouterr().err


def test_bad_output_suffix_and_unknown_metric(images, tmp_path, capsys):
    assert main(["score", str(images), "--model", "test-tiny", "--device", "cpu", "-o", str(tmp_path / "x.xlsx")]) == 2
    assert "must end in .csv" in capsys.readouterr().err
    assert main(["score", str(images), "--metric", "nope", "--model", "test-tiny", "--device", "cpu"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_pixel_limit_gives_a_row(images, capsys):
    rc = main(["score", str(images / "img4.png"), "--model", "test-tiny", "--device", "cpu", "--max-pixels", "100"])
    out = capsys.readouterr().out
    assert rc == 1 and "above the limit of 100" in out


def test_metrics_and_models_commands(capsys):
    assert main(["metrics"]) == 0
    assert "clipiqa" in capsys.readouterr().out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "ViT-B-32/openai" in out and "test-tiny (RANDOM weights" in out and "cached" in out


def test_bench_with_labels_matches_scipy(images, tmp_path, capsys):
    (images / "corrupt.png").unlink()
    scores_csv = tmp_path / "scores.csv"
    assert main(["score", str(images), "--model", "test-tiny", "--device", "cpu", "-o", str(scores_csv)]) == 0
    rows = _read_csv(scores_csv)
    rng = np.random.default_rng(1)
    labels = tmp_path / "labels.csv"
    mos = {}
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "MOS"])
        for r in rows:
            name = Path(r["path"]).name
            mos[name] = float(r["score"]) * 10 + rng.normal(0, 0.5)
            w.writerow([name, mos[name]])
    capsys.readouterr()
    rc = main(["bench", "--metric", "clipiqa", "--labels", str(labels), "--root", str(images),
               "--model", "test-tiny", "--device", "cpu", "--json", str(tmp_path / "b.json"), "--bootstrap", "200"])
    assert rc == 0
    res = json.loads((tmp_path / "b.json").read_text())
    pred = [float(r["score"]) for r in rows]
    target = [mos[Path(r["path"]).name] for r in rows]
    assert res["srcc"] == pytest.approx(stats.spearmanr(pred, target)[0], abs=1e-6)
    assert res["krcc"] == pytest.approx(stats.kendalltau(pred, target)[0], abs=1e-6)
    assert res["plcc_raw"] == pytest.approx(stats.pearsonr(pred, target)[0], abs=1e-6)
    assert res["srcc_ci_low"] <= res["srcc"] <= res["srcc_ci_high"]
    assert "srcc" in capsys.readouterr().out


def test_entry_point_runs_as_a_program(images):
    (images / "corrupt.png").unlink()
    r = subprocess.run([sys.executable, "-m", "clipiq.cli.main", "score", str(images / "img0.png"),
                        "--model", "test-tiny", "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "img0.png" in r.stdout


def test_bench_synthetic_psnr_anchor_and_clipiqa_table(photos_dir, tmp_path, capsys):
    """PSNR (full reference) ranks severity almost perfectly; clipiqa on test-tiny gives a well-formed table."""
    kodak = photos_dir / "kodak24"
    types = "gaussian_blur,gaussian_noise,jpeg,low_light"
    common = ["--synthetic", str(kodak), "--max-photos", "2", "--crop", "64", "--degradations", types]
    assert main(["bench", "--metric", "psnr", *common, "--json", str(tmp_path / "psnr.json")]) == 0
    out = capsys.readouterr().out
    res = json.loads((tmp_path / "psnr.json").read_text())
    assert res["mean_srcc"] >= 0.95, out
    assert main(["bench", "--metric", "clipiqa", "--model", "test-tiny", "--device", "cpu", *common,
                 "--out", str(tmp_path / "rows.csv")]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    for t in types.split(","):
        assert sum(ln.split()[0] == t for ln in lines) == 1, out
    assert any(ln.lower().startswith("mean") for ln in lines), out
    rows = _read_csv(tmp_path / "rows.csv")
    assert len(rows) == 2 * 4 * 5
    assert {r["degradation"] for r in rows} == set(types.split(","))
