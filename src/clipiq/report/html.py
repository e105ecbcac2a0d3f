"""The HTML of a report: one inline stylesheet, the index's sort-and-filter script, and escaping helpers.

Pages are static and self-contained: no CDN, no external font or script, nothing fetched from a server;
the only links are to the pictures written next to them and between the pages of the report.
"""

from __future__ import annotations

import html
import math

CSS = """
:root { --fg: #1d232b; --muted: #5d6875; --line: #d8dee6; --bg: #f6f8fa; --bad: #c0392b; --bar: #4a78b5; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 16px 20px 40px; color: var(--fg); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
h1 { font-size: 20px; margin: 8px 0 4px; word-break: break-all; }
h2 { font-size: 16px; margin: 26px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
a { color: #1f5fa8; }
.muted, figcaption { color: var(--muted); font-size: 12.5px; }
.score { font-size: 34px; font-weight: 650; letter-spacing: -0.5px; }
.score small { font-size: 14px; font-weight: 400; color: var(--muted); }
.bars { display: grid; grid-template-columns: max-content minmax(120px, 360px) max-content; gap: 5px 10px;
  align-items: center; }
.bar { height: 12px; background: var(--bg); border: 1px solid var(--line); border-radius: 6px; overflow: hidden; }
.bar > span { display: block; height: 100%; background: var(--bar); }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
.small { display: flex; flex-wrap: wrap; gap: 14px; }
.small figure { width: 200px; }
figure { margin: 0; }
figure img { display: block; width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px;
  image-rendering: auto; }
.legend { height: 10px; border-radius: 5px; margin: 4px 0 2px; }
.legend-labels { display: flex; justify-content: space-between; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--bg); position: sticky; top: 0; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.path { word-break: break-all; }
th[data-key] { cursor: pointer; user-select: none; }
th[data-key] button { all: inherit; cursor: pointer; padding: 0; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
tr.failed td { background: #fdecea; }
tr.failed .error { color: var(--bad); font-weight: 600; }
.tag { display: inline-block; padding: 0 6px; border-radius: 3px; background: var(--bad); color: #fff;
  font-size: 11px; font-weight: 700; }
.controls { display: flex; gap: 12px; align-items: center; margin: 8px 0; }
#filter { padding: 5px 8px; width: min(420px, 100%); border: 1px solid var(--line); border-radius: 4px; font: inherit; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.gallery a { display: block; width: 164px; text-decoration: none; color: inherit; }
.gallery img { display: block; max-width: 160px; max-height: 160px; border: 1px solid var(--line); border-radius: 3px; }
.gallery span { display: block; font-size: 12px; word-break: break-all; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
"""

#: Sorts the results table by the ``data-<key>`` attribute of its rows when a header is clicked (numbers
#: numerically, missing values last either way) and hides the rows whose text lacks the filter's words.
SORT_FILTER_JS = """
(function () {
  "use strict";
  var table = document.getElementById("results");
  var filter = document.getElementById("filter");
  var shown = document.getElementById("shown");
  if (!table) { return; }
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.querySelectorAll("th[data-key]"));
  var current = { key: null, dir: 1 };
  function value(row, key, numeric) {
    var v = row.getAttribute("data-" + key);
    if (v === null || v === "") { return null; }
    if (numeric) { var x = parseFloat(v); return isNaN(x) ? null : x; }
    return v.toLowerCase();
  }
  function sortBy(th) {
    var key = th.getAttribute("data-key");
    var numeric = th.getAttribute("data-type") === "number";
    current.dir = current.key === key ? -current.dir : 1;
    current.key = key;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, key, numeric), y = value(b, key, numeric);
      if (x === null || y === null) { return (x === null) - (y === null); }
      return x < y ? -current.dir : x > y ? current.dir : 0;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    headers.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", current.dir > 0 ? "ascending" : "descending");
  }
  headers.forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
  });
  function applyFilter() {
    var words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var n = 0;
    Array.prototype.forEach.call(body.rows, function (row) {
      var text = row.textContent.toLowerCase();
      var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
      row.hidden = !keep;
      if (keep) { n += 1; }
    });
    if (shown) { shown.textContent = n + " of " + body.rows.length + " rows"; }
  }
  if (filter) { filter.addEventListener("input", applyFilter); applyFilter(); }
})();
"""


def esc(text: object) -> str:
    """Text from an input, escaped for HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def num(value: float | None, digits: int = 3) -> str:
    """A number for display; an en dash when missing or not finite."""
    if value is None or not math.isfinite(value):
        return "\u2013"
    return f"{value:.{digits}f}"


def data_num(value: float | None) -> str:
    """A number for a ``data-`` attribute (empty when missing), precise enough to sort by."""
    if value is None or not math.isfinite(value):
        return ""
    return repr(float(value))


def bar(value: float | None) -> str:
    """A horizontal CSS bar for a value in [0, 1] (clipped; empty when missing)."""
    width = 0.0 if value is None or not math.isfinite(value) else min(1.0, max(0.0, value)) * 100.0
    return f'<div class="bar" role="presentation"><span style="width:{width:.1f}%"></span></div>'


def document(title: str, body: str, script: str = "") -> str:
    """A whole page: ``title`` is escaped here; ``body`` and ``script`` are trusted markup built by this package."""
    tail = f"<script>{script}</script>\n" if script else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n{tail}</body>\n</html>\n"
    )


__all__ = ["CSS", "SORT_FILTER_JS", "bar", "data_num", "document", "esc", "num"]
