"""clipiq.report: static HTML pages of explanations (fake ones here: no model, no weights, fast)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipiq.explain import DEGRADATION_MAPS, Explanation, RegionExplanation
from clipiq.report import PAGE_BUDGET, ReportError, write, write_image_page

H, W = 64, 96
ERROR = 'cannot decode <script>alert("x")</script> & more'


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each element id'd 'results'."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def with_class(self, tag: str, cls: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]


def parse(path: Path) -> Tags:
    p = Tags()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def fake(source: str, seed: int, *, restored: bool = False, h: int = H, w: int = W) -> Explanation:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(h, w, dtype=torch.int64)
    labels[:, w // 3 :] = 1
    labels[h // 2 :, 2 * w // 3 :] = 2
    regions = [
        RegionExplanation(
            label=k,
            score=float(s),
            area=float((labels == k).float().mean()),
            description=f"region {k}: a <b>dim</b> & noisy patch",
            dimensions={"colour": "good", "noise": "high", "artifacts": "low", "blur": "mild", "overall": "fair"},
        )
        for k, s in sorted(zip(range(3), torch.rand(3, generator=g).tolist()), key=lambda p: p[1])
    ]
    return Explanation(
        metric="clipiqa",
        score=float(torch.rand((), generator=g)),
        image=torch.rand(3, h, w, generator=g),
        attributes={"brightness": 0.7, "noisiness": 0.2, "sharpness": float(torch.rand((), generator=g))},
        heatmap=torch.rand(h, w, generator=g),
        degradation_maps={k: torch.rand(h, w, generator=g) for k in DEGRADATION_MAPS},
        labels=labels,
        regions=regions,
        restorer="cdasr" if restored else None,
        restored=torch.rand(3, 2 * h, 2 * w, generator=g) if restored else None,
        restored_score=0.9 if restored else None,
        source=source,
        original_size=(2 * h, 2 * w),
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[Explanation]]:
    out = tmp_path_factory.mktemp("report")
    # Two sources share a stem (and one has characters no file name should carry): pages must stay distinct.
    results = [
        fake("photos/a.png", 1),
        fake("other/a.jpg", 2, restored=True),
        fake("weird name <&>\"'.jpg", 3),
    ]
    index = write(results, out, failures=[("broken/x.jpg", ERROR)], worst_best_k=2)
    return index, results


def pages(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.html"))


def test_index_and_pages_exist_and_parse(report):
    index, _ = report
    assert index.name == "index.html" and index.is_file()
    assert len(pages(index.parent)) == 4  # index + one page per result
    for page in pages(index.parent):
        tags = parse(page)
        assert tags.find("html") and tags.find("title")


def test_every_picture_is_a_local_file_inside_the_report(report):
    index, _ = report
    root = index.parent.resolve()
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text
        assert not re.search(r"""(src|href)=["']//""", text)
        tags = parse(page)
        imgs = [a["src"] for a in tags.find("img")]
        assert imgs, page
        for src in imgs:
            target = (page.parent / src).resolve()
            assert target.is_file(), (page.name, src)
            assert target.is_relative_to(root)
        for a in tags.find("a"):
            href = a["href"]
            assert not href.startswith(("http:", "https:", "//")), href
            assert (page.parent / href).resolve().is_file(), (page.name, href)
        assert not tags.find("link") and all(not s.get("src") for s in tags.find("script"))


def test_results_table_rows_and_escaped_failure(report):
    index, results = report
    tags = parse(index)
    assert tags.find("table", id="results") and tags.find("input", id="filter")
    rows = tags.with_class("tr", "result")
    failed = tags.with_class("tr", "failed")
    assert len(rows) == 3 and len(failed) == 1
    assert sorted(float(r["data-score"]) for r in rows) == sorted(ex.score for ex in results)
    assert float(rows[0]["data-score"]) <= float(rows[1]["data-score"]) <= float(rows[2]["data-score"])
    assert failed[0]["data-error"] == ERROR and failed[0]["data-path"] == "broken/x.jpg"
    text = index.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in text
    assert "<b>dim</b>" not in text and "&lt;b&gt;dim&lt;/b&gt;" in text  # region descriptions too
    assert text.count("<script>") == 1  # only the report's own script
    keys = [a["data-key"] for a in tags.find("th") if a.get("data-key")]
    assert keys[:2] == ["path", "score"] and {"attr-brightness", "region", "region-score", "error"} <= set(keys)
    for k in keys:  # every sortable column has its value on every row
        assert all(f"data-{k}" in r for r in rows + failed), k
    numeric = {a["data-key"] for a in tags.find("th") if a.get("data-type") == "number"}
    assert {"score", "attr-brightness", "attr-sharpness", "region-score"} <= numeric
    # histogram and galleries
    assert index.parent.joinpath("index_files", "histogram.png").read_bytes()[:4] == b"\x89PNG"
    assert tags.find("div", id="worst") and tags.find("div", id="best")


def test_sort_and_filter_script_is_inline_and_uses_the_ids(report):
    index, _ = report
    script = "".join(parse(index).scripts)
    assert 'getElementById("results")' in script and 'getElementById("filter")' in script
    assert "data-key" in script and "parseFloat" in script and "addEventListener" in script


def test_pages_names_are_safe_and_unique(report):
    index, _ = report
    names = {p.stem for p in pages(index.parent)} - {"index"}
    assert len(names) == 3 and all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)
    assert {"a", "a-2"} <= names


def test_restored_pair_only_where_restored(report):
    index, results = report
    tags = parse(index)
    by_source = {}
    for row in tags.with_class("tr", "result"):
        by_source[row["data-path"]] = row
    links = {a["href"] for a in tags.find("a") if a["href"] != "index.html"}
    restored_pages = []
    for href in links:
        page = parse(index.parent / href)
        if page.find("div", id="restoration"):
            restored_pages.append(href)
            assert page.with_class("figure", "before") and page.with_class("figure", "after")
        assert page.find("figure", id="quality-map") and page.find("figure", id="regions-map")
        assert len(page.with_class("figure", "degradation")) == 3
        assert len(page.with_class("tr", "region")) == 3
        scores = [float(r["data-score"]) for r in page.with_class("tr", "region")]
        assert scores == sorted(scores)  # worst first
    assert restored_pages == ["a-2.html"]
    text = (index.parent / "a-2.html").read_text(encoding="utf-8")
    assert "after \u00b7 clipiqa 0.900" in text and "cdasr" in text


def test_size_per_image_within_budget(report):
    index, results = report
    for page in pages(index.parent):
        if page.stem == "index":
            continue
        files = page.parent / f"{page.stem}_files"
        total = page.stat().st_size + sum(f.stat().st_size for f in files.iterdir())
        assert total <= PAGE_BUDGET


def test_large_image_page_within_budget_and_side_capped(tmp_path):
    from PIL import Image

    # A 768 px image of noise is the worst case for JPEG: the page must still fit.
    ex = fake("big.png", 7, restored=True, h=512, w=768)
    page = write_image_page(ex, tmp_path, "big")
    files = tmp_path / "big_files"
    total = page.stat().st_size + sum(f.stat().st_size for f in files.iterdir())
    assert total <= PAGE_BUDGET
    for f in files.iterdir():
        with Image.open(f) as im:
            assert max(im.size) <= 768
    assert "index.html" not in page.read_text(encoding="utf-8")  # no link to an index that is not there


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "report"
    f.write_text("not a folder")
    with pytest.raises(ReportError, match="not a folder"):
        write([fake("a.png", 1)], f)
    with pytest.raises(ReportError, match="not a folder"):
        write_image_page(fake("a.png", 1), f, "a")


def test_heatmap_that_does_not_match_the_image_is_refused(tmp_path):
    bad = fake("bad.png", 4)
    bad.heatmap = torch.rand(H // 2, W // 2)
    with pytest.raises(ReportError, match=r"bad\.png.*heatmap is 32x48 but the image is 64x96"):
        write([fake("ok.png", 1), bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written
    with pytest.raises(ValueError, match="heatmap"):
        write_image_page(bad, tmp_path, "bad")


def test_other_bad_inputs(tmp_path):
    with pytest.raises(ReportError, match="Explanation"):
        write([{"score": 1.0}], tmp_path)
    with pytest.raises(ReportError, match="pair"):
        write([], tmp_path, failures=["just a string"])
    ex = fake("a.png", 1)
    ex.labels = torch.zeros(H, W + 1, dtype=torch.int64)
    with pytest.raises(ReportError, match="labels"):
        write_image_page(ex, tmp_path, "a")


def test_minimal_explanation_and_empty_report(tmp_path):
    ex = Explanation(metric="m", score=float("nan"), image=torch.rand(3, 8, 8), source="tiny.png")
    index = write([ex], tmp_path, failures=[("gone.png", "missing")])
    tags = parse(index)
    assert len(tags.with_class("tr", "result")) == 1 and tags.with_class("tr", "result")[0]["data-score"] == ""
    page = parse(tmp_path / "tiny.html")
    assert page.find("figure", id="photo") and not page.find("div", id="restoration")
    empty = write([], tmp_path / "empty", failures=[("x.png", "boom")])
    assert len(parse(empty).with_class("tr", "failed")) == 1


class Rows(HTMLParser):
    """The rows of the results table: their attributes and their text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[dict] = []
        self._row: dict | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr" and (("class", "result") in attrs or ("class", "failed") in attrs):
            self._row = {"attrs": dict(attrs), "text": ""}
            self.rows.append(self._row)

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self._row["text"] += data


#: A few DOM objects, enough to run the report's script in node: rows are moved by appendChild, headers
#: clicked through their listeners, the filter typed into through its "input" listener.
DOM_SHIM = """
const data = JSON.parse(process.argv[process.argv.length - 1]);
function el(attrs) {
  const listeners = {};
  return { attrs, hidden: false, textContent: "", value: "",
    getAttribute(k) { return k in this.attrs ? this.attrs[k] : null; },
    setAttribute(k, v) { this.attrs[k] = String(v); },
    addEventListener(t, f) { listeners[t] = f; }, fire(t) { listeners[t](); } };
}
const rows = data.rows.map(r => Object.assign(el(r.attrs), { textContent: r.text }));
const body = { rows: rows.slice(), appendChild(r) { this.rows.splice(this.rows.indexOf(r), 1); this.rows.push(r); } };
const headers = data.keys.map(k => el(k));
const table = Object.assign(el({}), { tBodies: [body], querySelectorAll: () => headers });
const filter = el({}), shown = el({});
global.document = { getElementById: id => ({ results: table, filter: filter, shown: shown })[id] || null };
eval(data.script);
const out = {};
const score = headers.find(h => h.attrs["data-key"] === "score");
score.fire("click"); out.up = body.rows.map(r => r.attrs["data-score"]);
score.fire("click"); out.down = body.rows.map(r => r.attrs["data-score"]);
headers.find(h => h.attrs["data-key"] === "path").fire("click"); out.paths = body.rows.map(r => r.attrs["data-path"]);
filter.value = "FAILED  broken"; filter.fire("input"); out.failedOnly = body.rows.filter(r => !r.hidden).length;
filter.value = ""; filter.fire("input"); out.all = body.rows.filter(r => !r.hidden).length;
out.shown = shown.textContent;
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: the script is not run")
def test_sort_is_numeric_and_filter_hides_rows(tmp_path):
    from clipiq.report.html import SORT_FILTER_JS

    results = [fake("b.png", 1), fake("c.png", 2), fake("a.png", 3)]
    for ex, s in zip(results, (0.5, 10.0, 2.0)):  # as text, "10" < "2" < "0.5" would not be ascending
        ex.score = s
    index = write(results, tmp_path, failures=[("broken.png", ERROR)])
    rows = Rows()
    rows.feed(index.read_text(encoding="utf-8"))
    keys = [a for t, a in parse(index).tags if t == "th" and a.get("data-key")]
    data = json.dumps({"rows": rows.rows, "keys": keys, "script": SORT_FILTER_JS})
    done = subprocess.run(["node", "-e", DOM_SHIM, data], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert [float(s) if s else None for s in out["up"]] == [0.5, 2.0, 10.0, None]  # missing last
    assert [float(s) if s else None for s in out["down"]] == [10.0, 2.0, 0.5, None]
    assert out["paths"] == ["a.png", "b.png", "broken.png", "c.png"]
    assert out["failedOnly"] == 1 and out["all"] == 4 and out["shown"] == "4 of 4 rows"


def test_importing_the_report_does_not_import_matplotlib():
    code = "import sys, clipiq.report; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_scatter_png_draws_pairs_and_refuses_mismatched_lengths():
    from clipiq.report.figures import scatter_png

    png = scatter_png([0.1, 0.5, float("nan"), 0.9], [0.2, 0.4, 0.5, 1.0], title="x")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    im = Image.open(io.BytesIO(png))
    assert im.size == (400, 360) and np.asarray(im.convert("L")).std() > 5
    with pytest.raises(ValueError, match="3 predictions for 2"):
        scatter_png([1, 2, 3], [1, 2])


def test_page_names_never_end_in_html():
    from clipiq.report.checks import unique_names

    names = unique_names(["x/a.html.png", "y/a.png", "index.html.jpg", "b.HTM.htm.png"])
    assert names == ["a", "a-2", "index-2", "b"]
