"""Result files of ``clipiq score`` (and the CSVs of bench and restore): nothing lost, nothing mixed, nothing run.

Each test is a regression test for one finding of issue 11: a second writer, resume across settings, torn
or odd CSVs, files clipiq did not write, spreadsheet formulas, non-finite scores, duplicate labels and
option errors.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipiq.cli.main import main
from clipiq.core.files import atomic_write, csv_cell, csv_text, csv_uncell, exclusive_lock, open_temp
from clipiq.data.results import ResultFileError, ResultWriter, lock_path, run_record, sidecar_path

TINY = ["--model", "test-tiny", "--device", "cpu"]


def _save(path: Path, seed: int, size: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size + 8, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        _save(d / f"img{i}.png", i)
    return d


def _csv_rows(p: Path) -> list[dict]:
    with p.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _score(*args: str) -> int:
    return main(["score", *args, *TINY])


# --- two writers, temporary files, symlinks -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_a_second_writer_is_refused_and_the_first_keeps_its_rows(images, tmp_path, suffix, capsys):
    out = tmp_path / f"s{suffix}"
    assert _score(str(images), "-o", str(out)) == 0
    before = out.read_bytes()
    with exclusive_lock(lock_path(out), "another run"):  # a run in progress on the same file
        assert _score(str(images / "img0.png"), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert "being written by another run" in err and str(lock_path(out)) in err
    assert out.read_bytes() == before
    assert not lock_path(out).exists()  # a finished run leaves no lock file behind
    # With the first run gone, the one-image run resumes into the same file and loses nothing.
    assert _score(str(images / "img0.png"), "-o", str(out)) == 0
    assert "scored 1/1 images" in capsys.readouterr().err
    assert out.read_bytes() != b"" and len(_load(out)) == 3


def _load(p: Path) -> list[dict]:
    if p.suffix == ".csv":
        return _csv_rows(p)
    if p.suffix == ".json":
        return json.loads(p.read_text())["rows"]
    return [r for r in map(json.loads, p.read_text().splitlines()) if "clipiq" not in r]


def test_temporary_files_are_fresh_and_never_followed(images, tmp_path):
    out = tmp_path / "s.json"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    # The old writer used the fixed name s.json.tmp: a symlink planted there was written through.
    (tmp_path / "s.json.tmp").symlink_to(victim)
    assert _score(str(images), "-o", str(out)) == 0
    assert victim.read_text() == "keep me"
    assert len(_load(out)) == 3
    a, b = open_temp(out), open_temp(out)
    try:
        assert a.name != b.name and Path(a.name).parent == out.parent
    finally:
        for f in (a, b):
            f.close()
            os.unlink(f.name)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".s.json")) == []


def test_an_output_that_is_a_symlink_is_refused(images, tmp_path, capsys):
    victim = tmp_path / "victim.csv"
    victim.write_text("precious,data\n1,2\n")
    link = tmp_path / "s.csv"
    link.symlink_to(victim)
    assert _score(str(images), "-o", str(link)) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious,data\n1,2\n" and link.is_symlink()


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import clipiq.core.files as files

    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}")
                                                                    else "file"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "x.json", "{}")
    assert calls == ["file", "replace", "dir"]
    assert (tmp_path / "x.json").read_text() == "{}"


# --- resume never mixes settings ----------------------------------------------------------------------------


def test_the_default_model_is_recorded_so_naming_it_resumes(images, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["score", str(images), "--device", "cpu", "-o", str(out)]) == 0
    rows = _csv_rows(out)
    assert {r["model"] for r in rows} == {"degradation-clip-v2"}
    record = json.loads(sidecar_path(out).read_text())["clipiq"]
    assert record["model"] == "degradation-clip-v2" and len(record["weights_sha256"]) == 64
    assert {r["fingerprint"] for r in rows} == {record["fingerprint"]}
    capsys.readouterr()
    assert main(["score", str(images), "--model", "degradation-clip-v2", "--device", "cpu", "-o", str(out)]) == 0
    assert "3 of 3 images already scored" in capsys.readouterr().err


def test_local_weights_that_differ_from_the_registry_are_not_mixed_in(images, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    import clipiq

    src = Path(clipiq.__file__).parent / "weights" / "degradation-clip.safetensors"
    with safe_open(str(src), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] = tensors[key] * 1.01
    local = tmp_path / "tuned.safetensors"
    save_file(tensors, str(local), metadata=meta)
    out = tmp_path / "s.jsonl"
    assert main(["score", str(images), "--model", "degradation-clip", "--device", "cpu", "-o", str(out)]) == 0
    assert main(["score", str(images), "--model", "degradation-clip", "--weights", str(local), "--device", "cpu",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds scores made with other settings" in err and "weights_sha256: f769010b" in err
    assert len(_load(out)) == 3


@pytest.mark.parametrize(("first", "second", "named"), [
    (["--attributes", "sharpness"], [], "options.attributes: sharpness in the file, (not set) now"),
    ([], ["--precision", "bf16"], "precision: fp32 in the file, bf16 now"),
    (["--option", "max_tiles=4"], ["--option", "max_tiles=2"], "options.max_tiles: 4 in the file, 2 now"),
    ([], ["--model", "test-tiny-quickgelu"], "architecture.act"),
])
def test_a_rerun_with_other_settings_is_refused_naming_them(images, tmp_path, capsys, first, second, named):
    out = tmp_path / "s.csv"
    assert _score(str(images), "-o", str(out), *first) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["score", str(images), "-o", str(out), *TINY, *second]) == 2
    err = capsys.readouterr().err
    assert named in err, err
    assert out.read_bytes() == before


def test_the_patch_stride_and_checkpoint_are_part_of_the_record():
    from types import SimpleNamespace

    clip = SimpleNamespace(weights_name="ViT-B-32/openai", weights_sha256="a" * 64, cfg=None)
    metric = SimpleNamespace(name="clip-dqa", clip=clip, model_id="ViT-B-32/openai+ck.safetensors#0123456789ab",
                             output_names=("score",))
    a = run_record(metric, "fp32", {"checkpoint": "/x/ck.safetensors", "patch_stride": 64})
    b = run_record(metric, "fp32", {"checkpoint": "/y/ck.safetensors", "patch_stride": 32})
    c = run_record(metric, "fp32", {"checkpoint": "/y/ck.safetensors", "patch_stride": 64})
    assert a["fingerprint"] != b["fingerprint"]
    assert a["fingerprint"] == c["fingerprint"]  # the checkpoint is its hash in model_id, not its folder
    other = SimpleNamespace(**{**vars(metric), "model_id": "ViT-B-32/openai+ck.safetensors#ffffffffffff"})
    assert run_record(other, "fp32", {"patch_stride": 64})["fingerprint"] != a["fingerprint"]


def test_weights_of_another_sha_under_one_name_are_refused(tmp_path):
    from types import SimpleNamespace

    def record(sha: str) -> dict:
        clip = SimpleNamespace(weights_name="ViT-B-32/openai", weights_sha256=sha, cfg=None)
        return run_record(SimpleNamespace(name="clipiqa", clip=clip, output_names=("score",)), "fp32", {})

    out = tmp_path / "s.json"
    with ResultWriter(out) as w:
        w.begin(record("a" * 64), ["path", "score", "error"], [])
        w.write([{"path": "x.png", "score": 0.5, "error": ""}])
    with ResultWriter(out) as w, pytest.raises(ResultFileError, match=f"weights_sha256: {'a' * 64} in the file"):
        w.begin(record("b" * 64), ["path", "score", "error"], [])


# --- reading CSVs back --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["mid-row", "in-the-last-cell"])
def test_a_torn_last_csv_row_is_scored_again(images, tmp_path, capsys, cut):
    out = tmp_path / "s.csv"
    assert _score(str(images), "-o", str(out)) == 0
    text = out.read_text(encoding="utf-8")
    last = text.rstrip("\r\n").rsplit("\n", 1)[1]
    keep = len(last) // 2 if cut == "mid-row" else len(last) - 3  # the latter still splits into every column
    out.write_text(text[: len(text.rstrip("\r\n")) - len(last) + keep], encoding="utf-8", newline="")
    capsys.readouterr()
    assert _score(str(images), "-o", str(out)) == 0
    assert "2 of 3 images already scored" in capsys.readouterr().err
    rows = _csv_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in images.glob("*.png"))


def test_a_path_with_a_newline_resumes_without_duplicates(images, tmp_path, capsys):
    odd = _save(images / "two\nlines.png", 7)
    out = tmp_path / "s.csv"
    assert _score(str(images), "-o", str(out)) == 0
    assert _score(str(images), "-o", str(out)) == 0
    assert "4 of 4 images already scored" in capsys.readouterr().err
    rows = _csv_rows(out)
    assert len(rows) == 4 and [r["path"] for r in rows].count(str(odd)) == 1


def test_two_spellings_of_one_file_are_one_input(images, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(images)
    out = tmp_path / "s.csv"
    assert _score("img0.png", str(images / "img0.png"), "./img0.png", "-o", str(out)) == 0
    assert "scored 1/1 images" in capsys.readouterr().err
    assert [r["path"] for r in _csv_rows(out)] == ["img0.png"]  # written as given first
    assert _score(str(images / "img0.png"), "-o", str(out)) == 0
    assert "1 of 1 images already scored" in capsys.readouterr().err
    assert _score(str(images), "-o", str(out)) == 0
    # Counts are of this run's inputs: 3 here, though the file now holds rows of the same 3.
    assert "scored 3/3 images" in capsys.readouterr().err
    assert len(_csv_rows(out)) == 3


def test_scored_counts_only_this_runs_inputs(images, tmp_path, capsys):
    (images / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "s.jsonl"
    assert _score(str(images), "-o", str(out)) == 1
    capsys.readouterr()
    assert _score(str(images / "img1.png"), "-o", str(out)) == 0
    assert "scored 1/1 images, 0 failed" in capsys.readouterr().err
    rows = _load(out)
    # The failed row of an input this run did not retry stays: nothing in the file is lost.
    assert len(rows) == 4 and [Path(r["path"]).name for r in rows if r["error"]] == ["broken.png"]


# --- files clipiq did not write -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "content"), [
    ("s.json", '{"experiment": "keep", "results": [1, 2, 3]}'),
    ("s.json", '[{"path": "a.png", "score": 0.5}]'),  # a list of rows, but not clipiq's header
    ("s.jsonl", "plain text notes\nmore notes\n"),
    ("s.jsonl", '{"path": "a.png", "score": 0.5}\n'),
    ("s.csv", "name,value\nalpha,1\n"),
    ("s.csv", "one line of text without a newline"),
])
def test_files_clipiq_did_not_write_are_never_overwritten(images, tmp_path, capsys, name, content):
    out = tmp_path / name
    out.write_text(content)
    assert _score(str(images), "-o", str(out)) == 2
    assert "not written by clipiq score" in capsys.readouterr().err
    assert out.read_text() == content


def test_an_empty_file_is_a_new_output(images, tmp_path):
    out = tmp_path / "s.jsonl"
    out.touch()
    assert _score(str(images), "-o", str(out)) == 0
    header = json.loads(out.read_text().splitlines()[0])
    assert header["clipiq"]["metric"] == "clipiqa" and header["clipiq"]["model"] == "test-tiny (random, seed 0)"


# --- spreadsheet formulas -----------------------------------------------------------------------------------


def test_csv_cell_escapes_text_not_numbers():
    for bad in ("=1+1", "+1", "-2+3", "@SUM(A1)", "\t=x", "\r=x"):
        assert csv_cell(bad) == "'" + bad and csv_uncell(csv_cell(bad)) == bad
    assert csv_cell("'quoted") == "''quoted" and csv_uncell("''quoted") == "'quoted"
    assert csv_cell(-0.25) == -0.25 and csv_cell(3) == 3 and csv_cell("photo.png") == "photo.png"
    assert csv_text([{"a": "=x", "b": -1.5}], ["a", "b"]) == "a,b\r\n'=x,-1.5\r\n"


def test_score_csv_cells_cannot_run_and_resume_still_matches(images, tmp_path, monkeypatch, capsys):
    for i, name in enumerate(("=HYPERLINK(1).png", "-x.png", "@y.png", "+z.png", "'q.png")):
        _save(images / name, 10 + i)
    (images / "=bad.png").write_bytes(b"not an image")
    monkeypatch.chdir(images)
    names = sorted(p.name for p in images.iterdir())
    out = tmp_path / "s.csv"
    assert main(["score", "-o", str(out), *TINY, "--", *names]) == 1  # "--": names may start with "-"
    raw = list(csv.reader(out.open(newline="")))
    cells = [c for row in raw[1:] for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not _number(c))]
    assert "'=HYPERLINK(1).png" in cells and "'-x.png" in cells and "''q.png" in cells
    capsys.readouterr()
    assert main(["score", "-o", str(out), *TINY, "--", *names]) == 1  # only the bad file is tried again
    assert f"{len(names) - 1} of {len(names)} images already scored" in capsys.readouterr().err
    assert len(_csv_rows(out)) == len(names)


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_bench_and_restore_csvs_escape_formulas(images, tmp_path, monkeypatch, capsys):
    for i, name in enumerate(("=a.png", "-b.png", "@c.png")):
        _save(images / name, 20 + i)
    monkeypatch.chdir(images)
    bench_out = tmp_path / "bench.csv"  # its photo column holds file stems: "=a", "-b", "@c"
    assert main(["bench", "--synthetic", str(images), "--metric", "psnr", "--crop", "32", "--degradations",
                 "gaussian_blur", "--levels", "1,2,3", "--out", str(bench_out)]) == 0
    assert "'=a" in bench_out.read_text() and "'-b" in bench_out.read_text()
    restored = tmp_path / "restored"
    args = ["restore", "--method", "dehaze-none", "-o", str(restored), "--device", "cpu", "--", "=a.png", "-b.png",
            "@c.png"]
    assert main(args) == 0
    log = (restored / "restore_log.csv").read_text()
    for text in (bench_out.read_text(), log):
        cells = [c for row in csv.reader(text.splitlines()) for c in row]
        assert not [c for c in cells if c[:1] in ("=", "@") or (c[:1] == "-" and not _number(c))], text
    assert "'=a.png" in log and "'-b.png" in log
    capsys.readouterr()
    assert main(args) == 0  # the log is read back un-escaped: nothing is restored twice
    assert "3 of 3 images already restored" in capsys.readouterr().err


# --- non-finite scores --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_scores_are_errors_and_retried(images, tmp_path, monkeypatch, capsys, bad):
    from clipiq.iqa.base import QualityMetric

    real = QualityMetric.score_batch

    def broken(self, prepared):
        rows = real(self, prepared)
        rows[0]["score"] = bad
        return rows

    monkeypatch.setattr(QualityMetric, "score_batch", broken)
    out = tmp_path / "s.jsonl"
    assert _score(str(images), "-o", str(out), "--batch-size", "8") == 1
    rows = _load(out)
    bad_rows = [r for r in rows if r["error"]]
    assert len(bad_rows) == 1 and bad_rows[0]["error"].startswith("non-finite score") and "score" not in bad_rows[0]
    monkeypatch.undo()
    capsys.readouterr()
    assert _score(str(images), "-o", str(out)) == 0
    assert "2 of 3 images already scored" in capsys.readouterr().err
    assert all(math.isfinite(r["score"]) for r in _load(out))


# --- bench --labels -----------------------------------------------------------------------------------------


def _labels(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "labels.csv"
    p.write_text("image,MOS\n" + "\n".join(lines) + "\n")
    return p


def test_bench_refuses_duplicate_images_naming_them(images, tmp_path, capsys):
    labels = _labels(tmp_path, ["img0.png,1", "img1.png,2", "img2.png,3", "img1.png,5"])
    assert main(["bench", "--labels", str(labels), "--root", str(images), *TINY]) == 2
    err = capsys.readouterr().err
    assert "more than once" in err and "img1.png (2 rows)" in err and "img0.png" not in err


def test_bench_lists_failed_images_on_stderr(images, tmp_path, capsys):
    _save(images / "img3.png", 3)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    labels = _labels(tmp_path, ["img0.png,1", "img1.png,2", "img2.png,3", "img3.png,4", "broken.png,5"])
    assert main(["bench", "--labels", str(labels), "--root", str(images), *TINY, "--bootstrap", "10"]) == 1
    err = capsys.readouterr().err
    assert f"failed: {images / 'broken.png'}: " in err and "corrupt or truncated" in err


# --- option errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "named"), [
    ("foo=1", "'foo'"),
    ("max_tiles=abc", "'max_tiles'"),
    ("max_tiles", "KEY=VALUE"),
    ("=3", "KEY=VALUE"),
    ("batch_size=4", "--batch-size"),
])
@pytest.mark.parametrize("command", ["score", "bench"])
def test_bad_options_are_one_line_usage_errors(images, tmp_path, capsys, command, option, named):
    labels = _labels(tmp_path, ["img0.png,1", "img1.png,2", "img2.png,3"])
    where = [str(images)] if command == "score" else ["--labels", str(labels), "--root", str(images)]
    assert main([command, *where, *TINY, "--option", option]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"clipiq {command}: error:") and named in err[0], err


@pytest.mark.parametrize(("option", "named"), [
    ("foo=1", "foo"), ("omega=abc", "omega"), ("omega", "KEY=VALUE"), ("batch_size=2", "--batch-size"),
])
def test_bad_restore_options_are_one_line_usage_errors(images, tmp_path, capsys, option, named):
    rc = main(["restore", str(images), "--method", "dehaze-dcp", "-o", str(tmp_path / "out"), "--device", "cpu",
               "--option", option])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clipiq restore: error:") and named in err[0], err


# --- notes from the decoder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_results_note_is_written_in_its_own_column(images, tmp_path, monkeypatch, suffix):
    from clipiq.iqa.base import QualityMetric

    real = QualityMetric.iter_results
    note = "animated image (12 frames): first frame scored"

    def noted(self, *args, **kwargs):
        for r in real(self, *args, **kwargs):
            if r.source.endswith("img1.png"):
                r.note = note  # what the decoder reports for an animation (RunResult.note)
            yield r

    monkeypatch.setattr(QualityMetric, "iter_results", noted)
    out = tmp_path / f"s{suffix}"
    assert _score(str(images), "-o", str(out)) == 0
    notes = {Path(r["path"]).name: r.get("note") for r in _load(out)}
    assert notes["img1.png"] == note and not notes["img0.png"] and not notes["img2.png"]
