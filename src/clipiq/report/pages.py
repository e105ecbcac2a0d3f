"""The pages of a report: one per explained image, and the index that lists, sorts and filters them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from PIL import Image

from clipiq.core.files import atomic_write
from clipiq.explain.result import Explanation
from clipiq.report import figures
from clipiq.report.checks import (
    ReportError,
    check_explanation,
    check_failures,
    finite,
    report_folder,
    safe_name,
    unique_names,
)
from clipiq.report.html import SORT_FILTER_JS, bar, data_num, document, esc, num

#: Most bytes one image's page, its pictures and its thumbnail may take together.
PAGE_BUDGET = 300_000
#: JPEG (quality, scale of the large pictures) tried in turn until a page fits :data:`PAGE_BUDGET`;
#: a photo passes at the first; noise-like pictures need the later ones.
ENCODINGS: tuple[tuple[int, float], ...] = (
    (85, 1.0), (75, 1.0), (65, 1.0), (55, 1.0), (60, 0.8), (50, 0.8), (50, 0.65), (45, 0.5), (40, 0.4),
)  # fmt: skip
#: The folder of an index's own pictures (the histogram).
INDEX_FILES = "index_files"
THUMB = "thumb.jpg"


@dataclass
class _Picture:
    image: Image.Image
    large: bool  # shrunk with the page when the page is over budget
    data: bytes = b""

    def size(self, scale: float) -> tuple[int, int]:
        s = scale if self.large else 1.0
        return max(1, round(self.image.width * s)), max(1, round(self.image.height * s))


def _files_dir(name: str) -> str:
    return f"{name}_files"


def _img(src: str, pic: _Picture, scale: float, alt: str) -> str:
    w, h = pic.size(scale)
    return f'<img src="{esc(src)}" width="{w}" height="{h}" alt="{esc(alt)}" loading="lazy">'


def _legend(cmap: str, low: str, high: str) -> str:
    return (
        f'<div class="legend" style="background:{figures.css_gradient(cmap)}"></div>'
        f'<div class="legend-labels muted"><span>{esc(low)}</span><span>{esc(high)}</span></div>'
    )


def _dimension_keys(ex: Explanation) -> list[str]:
    keys: dict[str, None] = {}
    for r in ex.regions:
        keys.update(dict.fromkeys(r.dimensions))
    return list(keys)


def _pictures(ex: Explanation) -> tuple[dict[str, _Picture], list[int]]:
    """The page's pictures by file name, and the region labels in table order (worst first)."""
    base = figures.photo(ex.image)
    pics: dict[str, _Picture] = {}
    order = [r.label for r in sorted(ex.regions, key=lambda r: _score_key(finite(r.score)))]
    if ex.heatmap is not None:
        pics["quality.jpg"] = _Picture(figures.heatmap_overlay(base, ex.heatmap), large=True)
    if ex.labels is not None:
        pics["regions.jpg"] = _Picture(figures.regions_picture(base, ex.labels, order), large=True)
    if ex.heatmap is None and ex.labels is None:
        pics["photo.jpg"] = _Picture(base, large=True)
    for key, file in zip(ex.degradation_maps, unique_names([f"map-{k}" for k in ex.degradation_maps], ())):
        pics[f"{file}.jpg"] = _Picture(figures.map_picture(ex.degradation_maps[key]), large=False)
    if ex.restored is not None:
        pics["before.jpg"] = _Picture(base, large=True)
        pics["after.jpg"] = _Picture(figures.photo(ex.restored), large=True)
    pics[THUMB] = _Picture(figures.thumbnail(ex.image), large=False)
    return pics, order


def _score_key(x: float | None) -> tuple[int, float]:
    return (1, 0.0) if x is None else (0, x)


def _page_body(ex: Explanation, name: str, pics: dict[str, _Picture], order: list[int], scale: float,
               index_href: str | None) -> str:  # fmt: skip
    files = _files_dir(name)
    src = lambda f: f"{files}/{f}"  # noqa: E731
    title = ex.source or name
    h, w = (int(d) for d in ex.image.shape[1:])
    size = f"explained at {w}\u00d7{h}"
    if ex.original_size is not None and tuple(ex.original_size) != (h, w):
        size += f" (original {ex.original_size[1]}\u00d7{ex.original_size[0]})"
    out = []
    if index_href:
        out.append(f'<p><a href="{esc(index_href)}">\u2190 all images</a></p>')
    out.append(f"<h1>{esc(title)}</h1>")
    out.append(f'<p class="muted">{esc(ex.metric)} \u00b7 {esc(size)}</p>')
    score = finite(ex.score)
    out.append(f'<section id="summary"><div class="score">{num(score)} <small>{esc(ex.metric)}</small></div>')
    if ex.attributes:
        out.append('<div class="bars" id="attributes">')
        for key, value in ex.attributes.items():
            v = finite(value)
            out.append(f'<span>{esc(key)}</span>{bar(v)}<span class="num">{num(v, 2)}</span>')
        out.append("</div>")
    out.append("</section>")

    figs = []
    if "quality.jpg" in pics:
        figs.append(
            f'<figure id="quality-map">{_img(src("quality.jpg"), pics["quality.jpg"], scale, "quality heatmap")}'
            f"{_legend(figures.HEATMAP_CMAP, 'good', 'poor')}"
            "<figcaption>Quality map over the photo: red where quality is poor.</figcaption></figure>"
        )
    if "regions.jpg" in pics:
        figs.append(
            f'<figure id="regions-map">{_img(src("regions.jpg"), pics["regions.jpg"], scale, "regions")}'
            "<figcaption>Regions, numbered worst first as in the table below.</figcaption></figure>"
        )
    if "photo.jpg" in pics:
        figs.append(f'<figure id="photo">{_img(src("photo.jpg"), pics["photo.jpg"], scale, "photo")}</figure>')
    out.append(f'<h2>Quality map and regions</h2>\n<div class="grid">{"".join(figs)}</div>')

    maps = [f for f in pics if f.startswith("map-")]
    if maps:
        out.append('<h2>Degradation maps</h2>\n<div class="small" id="degradation-maps">')
        for key, file in zip(ex.degradation_maps, maps):
            mean = float(ex.degradation_maps[key].detach().float().nan_to_num().mean())
            out.append(
                f'<figure class="degradation" data-map="{esc(key)}">{_img(src(file), pics[file], scale, key)}'
                f"{_legend(figures.DEGRADATION_CMAP, 'unlikely', 'likely')}"
                f"<figcaption>{esc(key)} \u00b7 mean {num(mean, 2)}</figcaption></figure>"
            )
        out.append("</div>")

    if ex.regions:
        by_label = {r.label: r for r in ex.regions}
        dims = _dimension_keys(ex)
        head = "".join(f"<th>{esc(d)}</th>" for d in dims)
        out.append(
            '<h2>Regions, worst first</h2>\n<table id="regions"><thead><tr><th class="num">#</th>'
            '<th class="num">score</th><th></th><th class="num">area</th><th>description</th>'
            f"{head}</tr></thead><tbody>"
        )
        for rank, label in enumerate(order, start=1):
            r = by_label[label]
            s, a = finite(r.score), finite(r.area)
            cells = "".join(f"<td>{esc(r.dimensions.get(d, ''))}</td>" for d in dims)
            area = "\u2013" if a is None else f"{100.0 * a:.1f}%"
            out.append(
                f'<tr class="region" data-label="{esc(label)}" data-score="{data_num(s)}"><td class="num">{rank}</td>'
                f'<td class="num">{num(s)}</td><td style="min-width:80px">{bar(s)}</td><td class="num">{area}</td>'
                f"<td>{esc(r.description)}</td>{cells}</tr>"
            )
        out.append("</tbody></table>")

    if ex.restored is not None:
        after = finite(ex.restored_score)
        by = f" by {esc(ex.restorer)}" if ex.restorer else ""
        out.append(
            f'<h2>Restoration{by}</h2>\n<div class="pair" id="restoration">'
            f'<figure class="before">{_img(src("before.jpg"), pics["before.jpg"], scale, "before")}'
            f"<figcaption>before \u00b7 {esc(ex.metric)} {num(score)}</figcaption></figure>"
            f'<figure class="after">{_img(src("after.jpg"), pics["after.jpg"], scale, "after")}'
            f"<figcaption>after \u00b7 {esc(ex.metric)} {num(after)}</figcaption></figure></div>"
        )
    return "\n".join(out)


def _encode(pics: dict[str, _Picture], quality: int, scale: float) -> int:
    for pic in pics.values():
        pic.data = figures.encode_jpeg(pic.image, quality, scale if pic.large else 1.0)
    return sum(len(p.data) for p in pics.values())


def _prepare_dir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"{str(folder)!r} exists and is not a folder; the report keeps its pictures there")
    folder.mkdir(exist_ok=True)


def _write_page(ex: Explanation, folder: Path, name: str, index_href: str | None) -> Path:
    pics, order = _pictures(ex)
    files = folder / _files_dir(name)
    _prepare_dir(files)
    text = ""
    for quality, scale in ENCODINGS:
        text = document(ex.source or name, _page_body(ex, name, pics, order, scale, index_href))
        total = _encode(pics, quality, scale) + len(text.encode("utf-8"))
        if total <= PAGE_BUDGET:
            break
    for file, pic in pics.items():
        atomic_write(files / file, pic.data)
    page = folder / f"{name}.html"
    atomic_write(page, text)
    return page


def write_image_page(explanation: Explanation, out_dir: str | PurePath, name: str, *,
                     index_href: str | None = None) -> Path:  # fmt: skip
    """Write one self-contained HTML page explaining one image; returns the page's path.

    The page ``<out_dir>/<name>.html`` shows the score and its attribute bars, the quality heatmap over the
    photo, the degradation maps, the regions outlined with a table of them worst first, and, when the
    explanation holds a restoration, before and after side by side. Its pictures are JPEGs (longer side at
    most 768 px) in ``<out_dir>/<name>_files/``; the page and its pictures fit :data:`PAGE_BUDGET` bytes.
    ``name`` is reduced to letters, digits, ``.``, ``_`` and ``-``; ``index_href`` adds a link back to an index.
    Raises :class:`ReportError` when the explanation's maps do not fit its image or ``out_dir`` is a file.
    """
    ex = check_explanation(explanation)
    folder = report_folder(out_dir)
    stem = re.sub(r"\.html?$", "", str(name), flags=re.IGNORECASE)
    return _write_page(ex, folder, safe_name(stem, "image", stem=False), index_href)


def _attr_keys(results: Sequence[Explanation] | Sequence[IndexEntry]) -> list[tuple[str, str]]:
    """(attribute, its ``data-`` key) for every attribute any result has, in first-seen order."""
    keys: dict[str, None] = {}
    for ex in results:
        keys.update(dict.fromkeys(ex.attributes))
    slugs = unique_names(
        ["attr-" + (re.sub(r"[^a-z0-9]+", "-", k.lower()).strip("-") or "x") for k in keys],
        reserved=("path", "score", "region", "region-score", "error"),
    )
    return [(k, s.lower()) for k, s in zip(keys, slugs)]


def _worst_region(ex: Explanation):
    if not ex.regions:
        return None
    return min(ex.regions, key=lambda r: _score_key(finite(r.score)))


@dataclass
class IndexEntry:
    """What the index shows of one explained image (small and JSON-able, so a folder run can stream pages)."""

    name: str  # the page's name: <name>.html, its pictures in <name>_files/
    source: str
    metric: str
    score: float | None
    attributes: dict[str, float | None] = field(default_factory=dict)
    region: str = ""  # the worst region's description
    region_score: float | None = None


def index_entry(explanation: Explanation, name: str) -> IndexEntry:
    """The index row of an explanation whose page is ``<name>.html``."""
    region = _worst_region(explanation)
    return IndexEntry(name=name, source=explanation.source or name, metric=explanation.metric,
                      score=finite(explanation.score),
                      attributes={k: finite(v) for k, v in explanation.attributes.items()},
                      region=region.description if region else "",
                      region_score=finite(region.score) if region else None)


def _gallery(html_id: str, title: str, items: list[tuple[str, IndexEntry]]) -> str:
    cards = []
    for name, ex in items:
        src = f"{_files_dir(name)}/{THUMB}"
        label = ex.source or name
        cards.append(
            f'<a href="{esc(name)}.html" title="{esc(label)}"><img src="{esc(src)}" alt="{esc(label)}" loading="lazy">'
            f"<span>{num(finite(ex.score))} \u00b7 {esc(PurePath(label).name or label)}</span></a>"
        )
    return f'<h2>{esc(title)}</h2>\n<div class="gallery" id="{html_id}">{"".join(cards)}</div>'


def write(results: Iterable[Explanation], out_dir: str | PurePath, *, failures: Iterable[Sequence[str]] = (),
          worst_best_k: int = 6) -> Path:  # fmt: skip
    """Write a static HTML report: one page per explanation and ``index.html``; returns the index's path.

    The index holds a table of every image (path, score, attributes, worst region, error) that sorts when a
    column header is clicked and filters as one types, a histogram of the scores, galleries of the
    ``worst_best_k`` worst and best images linking to their pages, and one marked row per failure
    (``failures``: (source, error message) pairs). Page names come from each explanation's ``source``, made
    safe and unique. Everything is checked before anything is written: a malformed explanation or failure,
    or an ``out_dir`` that is a file, raises :class:`ReportError`.
    """
    results = [check_explanation(ex) for ex in results]
    failed = check_failures(failures)
    _check_k(worst_best_k)
    folder = report_folder(out_dir)
    names = unique_names([ex.source or f"image-{i + 1}" for i, ex in enumerate(results)], reserved=("index",))
    for ex, name in zip(results, names):
        _write_page(ex, folder, name, index_href="index.html")
    return write_index([index_entry(ex, name) for ex, name in zip(results, names)], folder, failures=failed,
                       worst_best_k=worst_best_k)


def _check_k(worst_best_k: object) -> None:
    if isinstance(worst_best_k, bool) or not isinstance(worst_best_k, int) or worst_best_k < 0:
        raise ReportError(f"worst_best_k must be a non-negative integer, got {worst_best_k!r}")


def write_index(entries: Iterable[IndexEntry], out_dir: str | PurePath, *, failures: Iterable[Sequence[str]] = (),
                worst_best_k: int = 6) -> Path:  # fmt: skip
    """Write ``index.html`` (see :func:`write`) for pages already written; returns its path."""
    entries = list(entries)
    failed = check_failures(failures)
    _check_k(worst_best_k)
    folder = report_folder(out_dir)
    ranked = sorted(((e.name, e) for e in entries), key=lambda p: _score_key(p[1].score))
    metrics = sorted({e.metric for e in entries if e.metric})
    out = ["<h1>Quality report</h1>"]
    summary = f"{len(entries)} image{'s' if len(entries) != 1 else ''} explained"
    if failed:
        summary += f", {len(failed)} failed"
    if metrics:
        summary += " \u00b7 " + ", ".join(metrics)
    out.append(f'<p class="muted" id="summary">{esc(summary)}</p>')

    if entries:
        _prepare_dir(folder / INDEX_FILES)
        atomic_write(
            folder / INDEX_FILES / "histogram.png",
            figures.histogram_png([e.score for e in entries if e.score is not None], ", ".join(metrics)),
        )
        out.append(
            f'<h2>Scores</h2>\n<figure id="histogram"><img src="{INDEX_FILES}/histogram.png" width="640" '
            'height="240" alt="histogram of the scores"></figure>'
        )
        k = worst_best_k
        if k:
            if len(ranked) <= k:
                out.append(_gallery("worst", f"All {len(ranked)}, worst first", ranked))
            else:
                worst = ranked[:k]
                best = ranked[k:][::-1][:k]
                out.append(_gallery("worst", f"Worst {len(worst)}", worst))
                out.append(_gallery("best", f"Best {len(best)}", best))

    attrs = _attr_keys(entries)
    head = ['<th data-key="path">path</th>', '<th data-key="score" data-type="number" class="num">score</th>']
    head += [f'<th data-key="{s}" data-type="number" class="num">{esc(a)}</th>' for a, s in attrs]
    head += [
        '<th data-key="region">worst region</th>',
        '<th data-key="region-score" data-type="number" class="num">region score</th>',
        '<th data-key="error">error</th>',
    ]
    rows = []
    for name, ex in ranked:
        score, rscore, rdesc = ex.score, ex.region_score, ex.region
        values = {s: ex.attributes.get(a) for a, s in attrs}
        data = "".join(f' data-{s}="{data_num(v)}"' for s, v in values.items())
        cells = "".join(f'<td class="num">{num(v)}</td>' for v in values.values())
        rows.append(
            f'<tr class="result" data-path="{esc(ex.source or name)}" data-score="{data_num(score)}"{data}'
            f' data-region="{esc(rdesc)}" data-region-score="{data_num(rscore)}" data-error="">'
            f'<td class="path"><a href="{esc(name)}.html">{esc(ex.source or name)}</a></td>'
            f'<td class="num">{num(score)}</td>{cells}<td>{esc(rdesc)}</td><td class="num">{num(rscore)}</td>'
            "<td></td></tr>"
        )
    blank = "".join('<td class="num">\u2013</td>' for _ in attrs)
    for source, error in failed:
        rows.append(
            f'<tr class="failed" data-path="{esc(source)}" data-score=""'
            + "".join(f' data-{s}=""' for _, s in attrs)
            + f' data-region="" data-region-score="" data-error="{esc(error)}">'
            f'<td class="path">{esc(source)}</td><td class="num">\u2013</td>{blank}<td></td>'
            f'<td class="num">\u2013</td><td><span class="tag">FAILED</span> <span class="error">{esc(error)}</span>'
            "</td></tr>"
        )
    out.append(
        '<h2>All images</h2>\n<div class="controls"><label for="filter">Filter</label>'
        '<input id="filter" type="search" placeholder="path, description or error" autocomplete="off">'
        '<span id="shown" class="muted"></span><span class="muted">Click a column header to sort.</span></div>'
        f'<table id="results"><thead><tr>{"".join(head)}</tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table>"
    )
    index = folder / "index.html"
    atomic_write(index, document("Quality report", "\n".join(out), SORT_FILTER_JS))
    return index


__all__ = ["ENCODINGS", "PAGE_BUDGET", "IndexEntry", "ReportError", "index_entry", "write", "write_image_page",
           "write_index"]
