"""Reports people look at: static HTML pages of :class:`clipiq.explain.Explanation` results (above explain).

:func:`write` writes one page per image and an ``index.html`` that sorts, filters and links them;
:func:`write_image_page` writes a single page, and :func:`write_index` the index of pages already written (a
folder run streams pages, keeping only each page's small :class:`IndexEntry`). Pages are self-contained (inline
CSS and JavaScript, no CDN, no server, no external font): open ``index.html`` in a browser. Pictures are drawn
with Pillow and matplotlib's Agg backend, imported only when a report is written.
"""

from clipiq.report.checks import ReportError
from clipiq.report.pages import PAGE_BUDGET, IndexEntry, index_entry, write, write_image_page, write_index

__all__ = ["PAGE_BUDGET", "IndexEntry", "ReportError", "index_entry", "write", "write_image_page", "write_index"]
