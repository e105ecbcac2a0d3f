"""Inputs named by folders, globs, manifests and URIs; Parquet result folders (written, resumed, refused)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from clipiq.cli.main import main
from clipiq.data.io import is_uri, read_image
from clipiq.data.results import ResultFileError, ResultWriter, input_key, parquet_parts, read_results
from clipiq.data.sources import ManifestError, read_manifest, resolve_inputs
from photo_files import write_photos

pa = pytest.importorskip("pyarrow", reason="Parquet manifests and results need pyarrow (pip install pyarrow)")
import pyarrow.parquet as pq  # noqa: E402


def test_folder_glob_and_file(tmp_path: Path) -> None:
    write_photos(tmp_path / "a", n=3)
    (tmp_path / "a" / "notes.txt").write_text("x")
    assert [Path(p).name for p in resolve_inputs([tmp_path / "a"])] == ["p0.png", "p1.png", "p2.png"]
    assert [Path(p).name for p in resolve_inputs([str(tmp_path / "a" / "p[12].png")])] == ["p1.png", "p2.png"]
    # A file that does not exist is kept, so it gets its own error row; so is a pattern that matches nothing
    # (it may be a literal name with brackets).
    assert resolve_inputs([tmp_path / "missing.png"]) == [str(tmp_path / "missing.png")]
    assert resolve_inputs([str(tmp_path / "missing[1].png")]) == [str(tmp_path / "missing[1].png")]
    # A pattern names images, as a folder does: notes.txt is not among its matches.
    assert [Path(p).name for p in resolve_inputs([str(tmp_path / "a" / "*")])] == ["p0.png", "p1.png", "p2.png"]


def test_tables_that_are_not_manifests_are_inputs_like_any_file(tmp_path: Path) -> None:
    write_photos(tmp_path, n=1)
    labels = tmp_path / "labels.csv"
    labels.write_text("image_name,mos\na.png,50\n")  # no path column
    result = tmp_path / "scores.csv"
    result.write_text("path,score,fingerprint\np0.png,0.5,abc\n")  # a clipiq result file
    assert resolve_inputs([labels, result]) == [str(labels), str(result)]
    out = tmp_path / "again.csv"
    assert main(["score", str(tmp_path / "p0.png"), str(labels), "--model", "test-tiny", "-o", str(out)]) == 1
    _, rows = read_results(out)
    assert sorted(bool(r["error"]) for r in rows) == [False, True]  # the table got an error row; nothing aborted


def test_csv_and_parquet_manifests_resolve_relative_to_their_folder(tmp_path: Path) -> None:
    write_photos(tmp_path / "imgs", n=2)
    (tmp_path / "lists").mkdir()
    manifest = tmp_path / "lists" / "todo.csv"
    manifest.write_text("Path,label\n../imgs/p0.png,1\n" + str(tmp_path / "imgs" / "p1.png") + ",2\n")
    expected = [str(tmp_path / "lists" / ".." / "imgs" / "p0.png"), str(tmp_path / "imgs" / "p1.png")]
    assert read_manifest(manifest) == expected
    table = pa.table({"image": ["../imgs/p0.png", str(tmp_path / "imgs" / "p1.png")]})
    pq.write_table(table, tmp_path / "lists" / "todo.parquet")
    assert resolve_inputs([tmp_path / "lists" / "todo.parquet"]) == expected
    # Through a URI too: the manifest and the relative paths in it.
    uri = (tmp_path / "lists" / "todo.parquet").as_uri()
    assert resolve_inputs([uri]) == [(tmp_path / "lists").as_uri() + "/../imgs/p0.png", expected[1]]


def test_manifest_without_a_path_column_names_what_it_found(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("name,score\na.png,1\n")
    with pytest.raises(ManifestError, match=r"m\.csv has no path column.*found name, score"):
        read_manifest(bad)
    empty_cell = tmp_path / "e.csv"
    empty_cell.write_text("path\na.png\n\"\"\n")
    with pytest.raises(ManifestError, match=r"row 2 has an empty 'path'"):
        read_manifest(empty_cell)


def test_uri_inputs_are_read_and_keep_their_identity(tmp_path: Path) -> None:
    write_photos(tmp_path, n=1)
    uri = (tmp_path / "p0.png").as_uri()
    assert is_uri(uri) and not is_uri(str(tmp_path / "p0.png"))
    assert input_key(uri) == uri
    assert read_image(uri).image.size == read_image(tmp_path / "p0.png").image.size
    with pytest.raises(Exception, match=r"file does not exist"):
        read_image((tmp_path / "nope.png").as_uri())


def _record(fp: str = "abc") -> dict:
    return {"tool": "clipiq score", "metric": "m", "outputs": ["score"], "fingerprint": fp}


def test_parquet_writer_appends_parts_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    cols = ["path", "score", "error", "note", "metric", "model", "fingerprint"]
    with ResultWriter(out, flush_rows=2) as w:
        assert w.begin(_record(), cols, ["/x/a.png", "/x/b.png", "/x/c.png"]) == set()
        w.add({"path": "/x/a.png", "score": 0.5, "error": ""})
        w.add({"path": "/x/b.png", "error": "corrupt"})
        w.add({"path": "/x/c.png", "score": 0.25, "error": ""})
    # Parquet parts hold at least 1000 rows (or 30 s of them): these three are one part, written at close.
    assert len(parquet_parts(out)) == 1
    table = pq.read_table(out)  # readable as one dataset; the record file is skipped by readers
    assert table.schema.field("score").type == pa.float64()
    assert sorted(table.column("path").to_pylist()) == ["/x/a.png", "/x/b.png", "/x/c.png"]
    # A rerun keeps the scored rows and retries the failed one.
    with ResultWriter(out) as w:
        assert w.begin(_record(), cols, ["/x/a.png", "/x/b.png", "/x/c.png"]) == {"/x/a.png", "/x/c.png"}
    record, rows = read_results(out)
    assert record["fingerprint"] == "abc" and sorted(r["path"] for r in rows) == ["/x/a.png", "/x/c.png"]
    with ResultWriter(out) as w, pytest.raises(ResultFileError, match=r"other settings"):
        w.begin(_record("zzz"), cols, ["/x/a.png"])


def test_parquet_output_never_overwrites_what_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "theirs.parquet"
    foreign.mkdir()
    pq.write_table(pa.table({"path": ["a"]}), foreign / "part-0.parquet")
    with pytest.raises(ResultFileError, match=r"not written by clipiq score"):
        ResultWriter(foreign)
    single = tmp_path / "single.parquet"
    pq.write_table(pa.table({"path": ["a"]}), single)
    with pytest.raises(ResultFileError, match=r"not a folder"):
        ResultWriter(single)
    assert pq.read_table(single).num_rows == 1 and len(list(foreign.iterdir())) == 1


def test_cli_local_engine_writes_parquet_from_a_manifest(tmp_path: Path) -> None:
    write_photos(tmp_path / "imgs", n=3)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"not an image")
    manifest = tmp_path / "todo.csv"
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([["path"], ["imgs/p0.png"], ["imgs/p1.png"], ["imgs/bad.png"], ["imgs/p2.png"]])
    out = tmp_path / "s.parquet"
    args = ["score", str(manifest), "--model", "test-tiny", "--device", "cpu", "-o", str(out)]
    assert main(args) == 1  # one bad file
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 4
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["path"].endswith("bad.png") and bad[0]["score"] is None
    assert json.loads((out / "_clipiq.json").read_text())["clipiq"]["metric"] == "clipiqa"
    assert main(args) == 1
    assert pq.read_table(out).num_rows == 4  # the rerun scored nothing twice


def test_parquet_refuses_uri_outputs_and_non_utf8_names_before_scoring(tmp_path: Path) -> None:
    with pytest.raises(ResultFileError, match=r"not a URI"):
        ResultWriter(Path("s3://bucket/scores.parquet"))
    cols = ["path", "score", "error", "note", "metric", "model", "fingerprint"]
    with ResultWriter(tmp_path / "s.parquet") as w, pytest.raises(ResultFileError, match=r"not UTF-8"):
        w.begin(_record(), cols, ["/x/ok.png", "/x/bad\udcff.png"])


def test_parquet_needs_pyarrow_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(ResultFileError, match=r"need pyarrow"):
        ResultWriter(tmp_path / "s.parquet")
    assert not (tmp_path / "s.parquet").exists()


def test_parquet_rows_left_twice_by_an_interrupted_compaction_are_merged(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    cols = ["path", "score", "error", "note", "metric", "model", "fingerprint"]
    with ResultWriter(out) as w:
        w.begin(_record(), cols, ["/x/a.png"])
        w.write([{"path": "/x/a.png", "score": 0.5, "error": ""}])
        w.write([{"path": "/x/a.png", "score": 0.5, "error": ""}])  # as a compaction cut short leaves it
    assert len(read_results(out)[1]) == 2
    with ResultWriter(out) as w:
        assert w.begin(_record(), cols, ["/x/a.png"]) == {"/x/a.png"}
    assert len(read_results(out)[1]) == 1 and len(parquet_parts(out)) == 1
