"""``clipiq explain`` end to end on small images with the random test-tiny backbone (fast; numbers meaningless)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipiq.cli.main import main

FAST = ["--model", "test-tiny", "--segmenter", "grid", "--device", "cpu", "--max-side", "96"]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((64, 80, 3)) * 255).astype(np.uint8)).save(d / f"img{i}.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"<script>" * 4)
    return d


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "explain.jsonl").read_text().splitlines()]


def test_a_folder_report_with_a_bad_file_then_resume(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["explain", str(photos), "-o", str(out), *FAST]) == 1  # one file failed, the rest explained
    err = capsys.readouterr().err
    assert "explained 2/3 images (0 already done), 1 failed" in err
    index = (out / "index.html").read_text()
    assert index.count('<tr class="result"') == 2 and index.count('<tr class="failed"') == 1
    assert (out / "img0.html").exists() and (out / "img1.html").exists()
    rows = _log(out)
    assert sorted(bool(r["error"]) for r in rows) == [False, False, True]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.html") if p.name != "index.html"}

    assert main(["explain", str(photos), "-o", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert "resuming: 2 of 3 images already explained" in err and "(2 already done)" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.html") if p.name != "index.html"} == before
    assert len(_log(out)) == 4  # only the broken file was tried again

    (photos / "broken.png").unlink()
    assert main(["explain", str(photos), "-o", str(out), *FAST]) == 0
    assert (out / "index.html").read_text().count('<tr class="failed"') == 0


def test_other_settings_are_refused_and_foreign_pages_never_overwritten(photos: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    (photos / "broken.png").unlink()
    out.mkdir()
    (out / "img1.html").write_text("mine")  # not written by clipiq explain
    assert main(["explain", str(photos), "-o", str(out), *FAST]) == 1
    assert (out / "img1.html").read_text() == "mine"
    assert any("not written by clipiq explain" in r["error"] for r in _log(out))
    assert main(["explain", str(photos), "-o", str(out), *FAST]) == 1  # the retry must not overwrite it either
    assert (out / "img1.html").read_text() == "mine"
    (photos / "img9.png").write_bytes((photos / "img0.png").read_bytes())
    (out / "img9_files").mkdir()  # a foreign folder where the new page's pictures would go
    assert main(["explain", str(photos), "-o", str(out), *FAST]) == 1
    assert not (out / "img9.html").exists() and not any((out / "img9_files").iterdir())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "index.html").write_text("theirs")
    assert main(["explain", str(photos), "-o", str(foreign), *FAST]) == 2
    assert (foreign / "index.html").read_text() == "theirs"
    capsys.readouterr()
    assert main(["explain", str(photos), "-o", str(out), *FAST, "--describer", "none"]) == 2
    assert "use another folder" in capsys.readouterr().err


def test_restore_shows_both_and_bad_arguments_exit_2(photos: Path, tmp_path: Path, capsys) -> None:
    (photos / "broken.png").unlink()
    out = tmp_path / "report"
    assert main(["explain", str(photos / "img0.png"), "-o", str(out), *FAST, "--restore", "dehaze-dcp"]) == 0
    page = (out / "img0.html").read_text()
    assert 'id="restoration"' in page and "Restoration by dehaze-dcp" in page
    assert (out / "img0_files" / "before.jpg").exists() and (out / "img0_files" / "after.jpg").exists()
    entry = _log(out)[0]["entry"]
    assert entry["score"] is not None and entry["region"]
    capsys.readouterr()
    assert main(["explain", str(photos), "-o", str(tmp_path / "r2"), *FAST, "--restore", "no-such"]) == 2
    assert main(["explain", str(photos), "-o", str(photos / "img0.png"), *FAST]) == 2  # a file, not a folder
    err = capsys.readouterr().err
    assert "no-such" in err and "not a folder" in err
