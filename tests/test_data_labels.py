"""IQA label readers: tiny fake label files in each official format, parsing, grouping and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from clipiq.data.labels import (
    KADID10K_DISTORTIONS,
    TID2013_DISTORTIONS,
    IQALabels,
    LabelFileError,
    read_csiq,
    read_csv_labels,
    read_dhd,
    read_exbedde,
    read_kadid10k,
    read_koniq10k,
    read_labels,
    read_live_challenge,
    read_spaq,
    read_tid2013,
)


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def _image(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 128, np.uint8)).save(path)
    return path


# --- generic CSV -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "lower_is_better"),
    [
        ("dis_img_path,score", False),
        ("image,mos", False),
        ("image_name,MOS", False),
        ("Image Name,Mos", False),
        ("filename,dmos", True),
        ("path,quality", False),
        ("IMG,Score", False),
    ],
)
def test_csv_header_detection(tmp_path: Path, header: str, lower_is_better: bool) -> None:
    f = _write(tmp_path / "labels.csv", f"{header}\na.png,3.5\nsub/b.jpg,-1e-1\n")
    labels = read_csv_labels(f)
    assert isinstance(labels, IQALabels) and len(labels) == 2
    assert labels[0].path == tmp_path / "a.png"
    assert labels[1].path == tmp_path / "sub" / "b.jpg"
    assert [s.score for s in labels] == [3.5, -0.1]
    assert labels.lower_is_better is lower_is_better
    np.testing.assert_array_equal(labels.scores(), [3.5, -0.1])


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_csv_delimiters_bom_and_root(tmp_path: Path, sep: str) -> None:
    text = sep.join(["image", "mos"]) + "\n" + sep.join(["x.png", "4"]) + "\n\n"
    f = _write(tmp_path / "l.csv", "\ufeff" + text)
    labels = read_csv_labels(f, image_root=tmp_path / "imgs")
    assert labels[0].path == tmp_path / "imgs" / "x.png"
    assert labels[0].score == 4.0


def test_csv_optional_columns_and_extra(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "l.csv",
        "dis_img_path,ref_img_path,dist_type,level,scene,score,std,note,id\n"
        "d/a_1.png,r/a.png,blur,1,sceneA,4.2,0.5,ok,007\n"
        "d/a_2.png,r/a.png,noise,2.0,sceneA,3.1,0.25,,12\n",
    )
    labels = read_csv_labels(f, image_root=tmp_path / "root")
    s0, s1 = labels
    assert s0.ref == tmp_path / "root" / "r" / "a.png"
    assert (s0.distortion, s0.level, s0.scene) == ("blur", 1, "sceneA")
    assert (s1.distortion, s1.level) == ("noise", 2)
    assert s0.extra == {"std": 0.5, "note": "ok", "id": "007"}
    assert s1.extra == {"std": 0.25, "id": 12}  # empty cells are left out
    assert s0.group == s1.group == "sceneA"


def test_csv_group_falls_back_to_ref_then_path(tmp_path: Path) -> None:
    f = _write(tmp_path / "l.csv", "image,ref,score\na.png,r1.png,1\nb.png,r1.png,2\nc.png,,3\n")
    labels = read_csv_labels(f)
    groups = labels.groups()
    assert groups[0] == groups[1] == str(tmp_path / "r1.png")
    assert groups[2] == str(tmp_path / "c.png")


def test_csv_explicit_columns_and_direction(tmp_path: Path) -> None:
    f = _write(tmp_path / "l.csv", "id,file_a,value_b,mos\n1,a.png,7,1\n2,b.png,8,2\n")
    labels = read_csv_labels(f, path_col="FILE_A", score_col="value_b", lower_is_better=True)
    assert [s.path.name for s in labels] == ["a.png", "b.png"]
    assert [s.score for s in labels] == [7.0, 8.0]
    assert labels.lower_is_better
    with pytest.raises(LabelFileError, match=r"no column named 'nope'.*headers are \['id', 'file_a'"):
        read_csv_labels(f, path_col="file_a", score_col="nope")


def test_csv_detection_failure_names_file_and_headers(tmp_path: Path) -> None:
    f = _write(tmp_path / "weird.csv", "foo,bar\na.png,1\n")
    with pytest.raises(LabelFileError) as info:
        read_csv_labels(f)
    msg = str(info.value)
    assert str(f) in msg and "['foo', 'bar']" in msg and "image path" in msg and "path_col=" in msg
    f2 = _write(tmp_path / "noscore.csv", "image,comment\na.png,nice\n")
    with pytest.raises(LabelFileError, match=r"noscore\.csv.*score column.*\['image', 'comment'\]"):
        read_csv_labels(f2)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("image,mos\na.png,good\n", r"line 2: score 'good' is not a number"),
        ("image,mos\na.png,1\nb.png,nan\n", r"line 3: score 'nan' is not finite"),
        ("image,mos\na.png\n", r"line 2: row has 1 fields"),
        ("image,mos\n,3\n", r"line 2: empty image path"),
        ("image,mos,level\na.png,3,1.5\n", r"line 2: level '1.5' is not an integer"),
        ("image,mos\n", r"no data rows"),
        ("", r"file is empty"),
    ],
)
def test_csv_malformed_rows(tmp_path: Path, text: str, pattern: str) -> None:
    f = _write(tmp_path / "bad.csv", text)
    with pytest.raises(LabelFileError, match=pattern) as info:
        read_csv_labels(f)
    assert str(info.value).startswith(str(f))


def test_csv_missing_and_excel_files(tmp_path: Path) -> None:
    with pytest.raises(LabelFileError, match="does not exist"):
        read_csv_labels(tmp_path / "nope.csv")
    xlsx = _write(tmp_path / "scores.xlsx", "not really excel")
    with pytest.raises(LabelFileError, match="export the sheet to CSV"):
        read_csv_labels(xlsx)


def test_missing_files_and_subset(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    f = _write(tmp_path / "l.csv", "image,ref,mos\na.png,a.png,1\nb.png,a.png,2\nc.png,r.png,3\n")
    labels = read_csv_labels(f)
    assert labels.missing_files() == [tmp_path / "b.png", tmp_path / "c.png", tmp_path / "r.png"]
    assert labels.missing_files(check_refs=False) == [tmp_path / "b.png", tmp_path / "c.png"]
    sub = labels.subset([2, 0])
    assert [s.score for s in sub] == [3.0, 1.0] and sub.source == labels.source
    assert isinstance(labels[1:], IQALabels) and len(labels[1:]) == 2


# --- KonIQ-10k ----------------------------------------------------------------------------------------

KONIQ_HEADER = '"image_name","c1","c2","c3","c4","c5","c_total","MOS","SD","MOS_zscore","set"\n'


def test_koniq_with_official_sets(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "koniq10k_distributions_sets.csv",
        KONIQ_HEADER + '"826373.jpg",0,0,25,73,7,105,3.828571,0.527,77.38,"training"\n'
        '"60040.jpg",0,3,45,47,6,101,3.554,0.6,68.2,"validation"\n'
        '"3346.jpg",1,5,40,50,4,100,3.51,0.7,66.0,"test"\n',
    )
    (tmp_path / "1024x768").mkdir()
    labels = read_koniq10k(f)
    assert labels.name == "koniq10k" and not labels.lower_is_better
    assert labels[0].path == tmp_path / "1024x768" / "826373.jpg"
    assert labels[0].score == pytest.approx(3.828571)
    assert [s.extra["split"] for s in labels] == ["train", "val", "test"]
    assert labels[0].extra["c_total"] == 105 and labels[0].extra["SD"] == pytest.approx(0.527)
    assert "set" not in labels[0].extra
    z = read_koniq10k(f, tmp_path / "512x384", score_col="MOS_zscore")
    assert [s.score for s in z] == [77.38, 68.2, 66.0]
    assert z[0].path == tmp_path / "512x384" / "826373.jpg"


def test_koniq_without_sets_and_bad_set(tmp_path: Path) -> None:
    f = _write(tmp_path / "koniq10k_scores_and_distributions.csv",
               '"image_name","MOS","MOS_zscore"\n"1.jpg",3.0,60.0\n')  # fmt: skip
    labels = read_koniq10k(f)
    assert "split" not in labels[0].extra and labels[0].path == tmp_path / "1.jpg"
    bad = _write(tmp_path / "k2.csv", '"image_name","MOS","set"\n"1.jpg",3.0,"holdout"\n')
    with pytest.raises(LabelFileError, match=r"line 2: unknown split 'holdout'"):
        read_koniq10k(bad)


# --- LIVE Challenge -----------------------------------------------------------------------------------


def _livec(tmp_path: Path, n: int = 10, n_names: int | None = None) -> Path:
    data = tmp_path / "ChallengeDB_release" / "Data"
    data.mkdir(parents=True)
    (tmp_path / "ChallengeDB_release" / "Images" / "trainingImages").mkdir(parents=True)
    names = [f"t{i + 1}.bmp" for i in range(7)] + [f"{i}.bmp" for i in range(100, 100 + n - 7)]
    names = names[: n if n_names is None else n_names]
    cell = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cell[i, 0] = np.array([name])
    scipy.io.savemat(data / "AllImages_release.mat", {"AllImages_release": cell})
    scipy.io.savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.linspace(10, 90, n)[None, :]})
    return data / "AllMOS_release.mat"


def test_live_challenge_excludes_training_images(tmp_path: Path) -> None:
    mos = _livec(tmp_path)
    images = tmp_path / "ChallengeDB_release" / "Images"
    labels = read_live_challenge(mos)
    assert len(labels) == 3 and labels.name == "live_challenge" and not labels.lower_is_better
    assert [s.path for s in labels] == [images / "100.bmp", images / "101.bmp", images / "102.bmp"]
    np.testing.assert_allclose(labels.scores(), np.linspace(10, 90, 10)[7:])
    everything = read_live_challenge(mos, exclude_first7=False)
    assert len(everything) == 10
    assert everything[0].path == images / "trainingImages" / "t1.bmp"
    assert everything[7].path == images / "100.bmp"


def test_live_challenge_errors(tmp_path: Path) -> None:
    mos = _livec(tmp_path, n=10, n_names=9)
    pattern = r"AllMOS_release\.mat: holds 10 scores but .* holds 9 image names"
    with pytest.raises(LabelFileError, match=pattern):
        read_live_challenge(mos)
    broken = _write(tmp_path / "broken" / "AllMOS_release.mat", "this is not a MAT file")
    _write(tmp_path / "broken" / "AllImages_release.mat", "neither is this")
    with pytest.raises(LabelFileError, match=r"broken/AllMOS_release\.mat: not a readable MATLAB file"):
        read_live_challenge(broken)


# --- KADID-10k ----------------------------------------------------------------------------------------


def test_kadid_parses_ref_type_level(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "dmos.csv",
        "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.57,0.496\nI01_10_03.png,I01.png,3.2,0.8\n"
        "I02_25_05.png,I02.png,1.5,0.3\n",
    )
    (tmp_path / "images").mkdir()
    labels = read_kadid10k(f)
    assert labels.name == "kadid10k" and not labels.lower_is_better  # KADID's dmos: higher is better
    s0, s1, s2 = labels
    assert s0.path == tmp_path / "images" / "I01_01_01.png" and s0.ref == tmp_path / "images" / "I01.png"
    assert (s0.scene, s0.extra["type"], s0.level, s0.distortion) == ("I01", 1, 1, "gaussian blur")
    assert (s1.extra["type"], s1.level, s1.distortion) == (10, 3, KADID10K_DISTORTIONS[9])
    assert (s2.scene, s2.distortion, s2.level) == ("I02", "contrast change", 5)
    assert s0.extra["var"] == pytest.approx(0.496)
    assert s0.group == s1.group != s2.group


def test_kadid_distortions_json_and_errors(tmp_path: Path) -> None:
    f = _write(tmp_path / "dmos.csv", "dist_img,ref_img,dmos,var\nI01_02_01.png,I01.png,5,0\n")
    _write(tmp_path / "distortions.json", json.dumps({"2": "my_blur"}))
    labels = read_kadid10k(f)
    assert labels[0].distortion == "my_blur" and labels[0].path == tmp_path / "I01_02_01.png"
    header = "dist_img,ref_img,dmos,var\n"
    bad = _write(tmp_path / "x" / "dmos.csv", header + "I01_01_01.png,I01.png,5,0\nfoo.png,I01.png,4,0\n")
    with pytest.raises(LabelFileError, match=r"line 3: image name 'foo.png' is not of the form"):
        read_kadid10k(bad)
    clash = _write(tmp_path / "y" / "dmos.csv", "dist_img,ref_img,dmos,level\nI01_01_02.png,I01.png,4,3\n")
    pattern = r"line 2: level column says 3 but the name I01_01_02.png says 2"
    with pytest.raises(LabelFileError, match=pattern):
        read_kadid10k(clash)
    _write(tmp_path / "z" / "dmos.csv", "dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,5,0\n")
    _write(tmp_path / "z" / "distortions.json", "[1, 2]")
    with pytest.raises(LabelFileError, match=r"distortions\.json: expected a JSON object"):
        read_kadid10k(tmp_path / "z" / "dmos.csv")


# --- TID2013 ------------------------------------------------------------------------------------------


def test_tid2013_case_insensitive_paths_and_refs(tmp_path: Path) -> None:
    text = "5.51429 i01_01_1.bmp\n\n4.0 i01_24_5.bmp\n3.2  i25_08_2.bmp\n"
    f = _write(tmp_path / "mos_with_names.txt", text)
    _image(tmp_path / "distorted_images" / "I01_01_1.BMP")  # cases differ on disk, as in some copies
    _image(tmp_path / "distorted_images" / "i25_08_2.bmp")
    _image(tmp_path / "reference_images" / "I01.BMP")
    _image(tmp_path / "reference_images" / "i25.bmp")
    labels = read_tid2013(f)
    s0, s1, s2 = labels
    assert s0.path == tmp_path / "distorted_images" / "I01_01_1.BMP"
    assert s1.path == tmp_path / "distorted_images" / "i01_24_5.bmp"  # absent: kept as written
    assert s0.ref == s1.ref == tmp_path / "reference_images" / "I01.BMP"
    assert s2.ref == tmp_path / "reference_images" / "i25.bmp"
    assert (s0.scene, s0.distortion, s0.level, s0.score) == ("I01", TID2013_DISTORTIONS[0], 1, 5.51429)
    assert (s1.distortion, s1.level) == ("sparse sampling and reconstruction", 5)
    assert (s2.scene, s2.distortion) == ("I25", "gaussian blur")
    assert labels.missing_files() == [s1.path]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("5.1 i01_01_1.bmp extra\n", r"line 1: expected 'MOS name'"),
        ("4.0 i01_01_1.bmp\nabc i01_01_2.bmp\n", r"line 2: MOS 'abc' is not a number"),
        ("4.0 picture.bmp\n", r"line 1: image name 'picture.bmp' is not of the form i01_01_1.bmp"),
        ("\n\n", r"no 'MOS name' lines"),
    ],
)
def test_tid2013_malformed(tmp_path: Path, text: str, pattern: str) -> None:
    f = _write(tmp_path / "mos_with_names.txt", text)
    with pytest.raises(LabelFileError, match=pattern):
        read_tid2013(f)


# --- CSIQ ---------------------------------------------------------------------------------------------


def test_csiq_builds_file_names(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "csiq.csv",
        "image,dst_idx,dst_type,dst_lev,dmos_std,dmos\n1600,1,noise,1,0.01,0.062\n"
        "1600,3,jpeg 2000,4,0.05,0.5\naerial_city,5,blur,2,0.02,0.3\n",
    )
    _image(tmp_path / "dst_imgs" / "awgn" / "1600.AWGN.1.png")
    _image(tmp_path / "dst_imgs" / "jpeg2000" / "1600.JPEG2000.4.png")  # case differs from the usual tag
    (tmp_path / "src_imgs").mkdir()
    labels = read_csiq(f)
    assert labels.lower_is_better and labels.name == "csiq"
    s0, s1, s2 = labels
    assert s0.path == tmp_path / "dst_imgs" / "awgn" / "1600.AWGN.1.png"
    assert s1.path == tmp_path / "dst_imgs" / "jpeg2000" / "1600.JPEG2000.4.png"
    assert s2.path.name == "aerial_city.BLUR.2.png"
    assert s0.ref == tmp_path / "src_imgs" / "1600.png"
    assert (s0.scene, s0.distortion, s0.level, s0.score) == ("1600", "noise", 1, 0.062)
    assert s0.extra == {"dst_idx": 1, "dmos_std": 0.01}
    assert s0.group == s1.group != s2.group


def test_csiq_file_names_in_column_and_missing_columns(tmp_path: Path) -> None:
    f = _write(tmp_path / "c.csv", "image,dst_type,dst_lev,dmos\n1600.AWGN.1.png,noise,1,0.1\n")
    labels = read_csiq(f, image_root=tmp_path / "flat")
    assert labels[0].path == tmp_path / "flat" / "1600.AWGN.1.png" and labels[0].scene == "1600"
    bad = _write(tmp_path / "b.csv", "image,dst_type,dmos\n1600,noise,0.1\n")
    pattern = r"b\.csv: no column named 'dst_lev'.*\['image', 'dst_type', 'dmos'\]"
    with pytest.raises(LabelFileError, match=pattern):
        read_csiq(bad)


# --- SPAQ ---------------------------------------------------------------------------------------------


def test_spaq_attributes(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "MOS and Image attribute scores.csv",
        "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness\n"
        "00001.jpg,42.65,43.5,38.2,41.3,45.1,40.0\n00002.jpg,66.2,60,61,62,63,64\n",
    )
    (tmp_path / "TestImage").mkdir()
    labels = read_spaq(f)
    assert labels.name == "spaq" and not labels.lower_is_better
    assert labels[0].path == tmp_path / "TestImage" / "00001.jpg"
    assert labels[0].score == 42.65 and labels[0].extra["Sharpness"] == 40.0
    assert set(labels[1].extra) == {"Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"}


# --- DHD and exBeDDE (dehazed images) -----------------------------------------------------------------


def test_dhd_scene_and_method_from_names(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    rows = "0012_dcp.png,3.2\n0012_cap.png,4.1\n0013_dcp.png,2\n0013.png,1.5\n"
    f = _write(tmp_path / "dhd_mos.csv", "image,mos\n" + rows)
    labels = read_dhd(f)
    assert labels.name == "dhd" and not labels.lower_is_better
    assert labels[0].path == tmp_path / "images" / "0012_dcp.png" and labels[1].score == 4.1
    expected = [("0012", "dcp"), ("0012", "cap"), ("0013", "dcp"), ("0013", None)]
    assert [(s.scene, s.distortion) for s in labels] == expected
    assert labels.groups() == ["0012", "0012", "0013", "0013"]
    # a space-separated TXT with an explicit scene and a method column, and DMOS
    txt = _write(tmp_path / "t" / "scores.txt", "filename  method scene DMOS\na.png DCP s1 0.5\nb.png  NLD s2 0.7\n")
    other = read_dhd(txt, image_root=tmp_path / "imgs")
    assert other.lower_is_better and other[1].path == tmp_path / "imgs" / "b.png"
    assert [(s.scene, s.distortion, s.score) for s in other] == [("s1", "DCP", 0.5), ("s2", "NLD", 0.7)]
    assert "method" not in other[0].extra
    with pytest.raises(LabelFileError, match="cannot find the score column"):
        read_dhd(_write(tmp_path / "bad.csv", "image,comment\n0001_dcp.png,ok\n"))


def test_exbedde_scene_from_folder_or_name(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "exBeDDE_scores.csv",
        "image,score\nbeijing/beijing_1_dcp.png,0.61\nbeijing/dehazed/beijing_2_cap.png,0.72\n"
        "shanghai/shanghai_1_dcp.png,0.3\nxian_3_nld.png,0.4\nlhasa.png,0.9\n",
    )
    labels = read_exbedde(f)
    assert labels.name == "exbedde" and not labels.lower_is_better
    assert labels[0].path == tmp_path / "beijing" / "beijing_1_dcp.png"
    assert [s.scene for s in labels] == ["beijing", "beijing", "shanghai", "xian", "lhasa"]
    assert [s.distortion for s in labels] == ["dcp", "cap", "dcp", "nld", None]
    assert labels[1].extra["hazy"] == "beijing_2" and "hazy" not in labels[4].extra
    # an explicit scene column wins; absolute paths outside the root use their parent folder
    outside = tmp_path / "elsewhere" / "tianjin" / "tianjin_4_gfn.png"
    g = _write(tmp_path / "g.csv", f"image,mos,city\nbeijing/beijing_1_dcp.png,1,bj\n{outside},2,\n")
    other = read_exbedde(g, image_root=tmp_path / "root")
    assert other[0].path == tmp_path / "root" / "beijing" / "beijing_1_dcp.png" and other[0].extra["city"] == "bj"
    assert [(s.scene, s.distortion) for s in other] == [("beijing", "dcp"), ("tianjin", "gfn")]
    h = _write(tmp_path / "h.csv", "image,mos,scene\nbeijing/beijing_1_dcp.png,1,bj\n")
    assert read_exbedde(h)[0].scene == "bj"


def test_read_labels_dehazed_formats(tmp_path: Path) -> None:
    dhd = _write(tmp_path / "d" / "DHD_mos.txt", "image mos\n0001_dcp.png 3\n")  # not TID2013's 'MOS name'
    ex = _write(tmp_path / "e" / "exbedde.csv", "image,score\nbeijing/beijing_1_dcp.png,0.5\n")
    assert read_labels(dhd).name == "dhd" and read_labels(ex).name == "exbedde"
    mine = _write(tmp_path / "m" / "mine.csv", "image,mos\n0001_dcp.png,3\n")
    assert read_labels(mine, format="dhd")[0].scene == "0001"
    assert read_labels(mine, format="exbedde")[0].scene == "0001"


# --- format guessing ----------------------------------------------------------------------------------


def test_read_labels_guesses_format(tmp_path: Path) -> None:
    files = {
        "kadid10k": _write(tmp_path / "k" / "dmos.csv", "dist_img,ref_img,dmos\nI01_01_01.png,I01.png,4\n"),
        "tid2013": _write(tmp_path / "t" / "mos_with_names.txt", "4.0 i01_01_1.bmp\n"),
        "csiq": _write(tmp_path / "c" / "csiq.csv", "image,dst_type,dst_lev,dmos\n1600,blur,1,0.1\n"),
        "koniq10k": _write(tmp_path / "q" / "koniq10k_scores.csv", "image_name,MOS\n1.jpg,3\n"),
        "spaq": _write(tmp_path / "s" / "MOS and Image attribute scores.csv", "Image name,MOS\n1.jpg,3\n"),
        "custom": _write(tmp_path / "g" / "mine.csv", "path,quality\na.png,1\n"),
        "live_challenge": _livec(tmp_path / "l"),
    }
    for name, f in files.items():
        assert read_labels(f).name == name, f
    assert read_labels(files["custom"], format="csv").name == "custom"
    with pytest.raises(ValueError, match="unknown label format"):
        read_labels(files["custom"], format="pipal")
