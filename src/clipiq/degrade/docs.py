"""Markdown tables of the registered degradations, generated so that the docs cannot drift."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from clipiq.degrade.lowlight import LOWLIGHT_BLUR_RANGES, lowlight_blur_params
from clipiq.degrade.registry import DEGRADATIONS, NUM_LEVELS


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _level_table(rows: dict[str, list[Any]]) -> list[str]:
    head = "| parameter | " + " | ".join(f"level {i}" for i in range(1, NUM_LEVELS + 1)) + " |"
    lines = [head, "|---" * (NUM_LEVELS + 1) + "|"]
    lines += [f"| `{k}` | " + " | ".join(_fmt(v) for v in vals) + " |" for k, vals in rows.items()]
    return lines


def degradations_markdown() -> str:
    """Markdown summary plus one per-level parameter table per degradation (as in docs/degradations.md)."""
    lines = [
        "| name | family | description | seeded | differentiable | runs on |",
        "|---|---|---|---|---|---|",
    ]
    for r in DEGRADATIONS.values():
        where = "CPU (round trip)" if r.runs_on == "cpu" else "tensor device"
        lines.append(
            f"| `{r.name}` | {r.family} | {r.description} | {'yes' if r.random else 'no'} "
            f"| {'yes' if r.differentiable else 'no'} | {where} |"
        )
    for r in DEGRADATIONS.values():
        lines += ["", f"### `{r.name}`", "", r.description, ""]
        keys = list(r.levels[0])
        lines += _level_table({k: [lv[k] for lv in r.levels] for k in keys})
        sig = inspect.signature(r.fn).parameters
        extra = [f"`{p}={sig[p].default!r}`" for p in r.parameters if p not in keys]
        if r.random:
            extra.append("`seed=None`")
        if extra:
            lines += ["", "Other arguments: " + ", ".join(extra) + "."]
    lines += ["", "### `lowlight_blur_pair`", "", "Motion blur in linear light, then low light (LOL-Blur style).", ""]
    lines += _level_table(
        {k: [lowlight_blur_params(i)[k] for i in range(1, NUM_LEVELS + 1)] for k in LOWLIGHT_BLUR_RANGES}
    )
    lines += [
        "",
        "With `level=None` each image draws its own parameters:",
        "",
        "| parameter | low | high | distribution |",
        "|---|---|---|---|",
    ]
    for k, (lo, hi, log) in LOWLIGHT_BLUR_RANGES.items():
        lines.append(f"| `{k}` | {_fmt(lo)} | {_fmt(hi)} | {'log-uniform' if log else 'uniform'} |")
    return "\n".join(lines) + "\n"


BEGIN_MARKER = "<!-- BEGIN GENERATED: clipiq.degrade.degradations_markdown() -->"
END_MARKER = "<!-- END GENERATED -->"


def write_docs(path: str | os.PathLike) -> None:
    """Replace the generated section of a markdown file (between the markers) with the current tables."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"{p}: markers {BEGIN_MARKER!r} ... {END_MARKER!r} not found")
    body = f"{BEGIN_MARKER}\n\n{degradations_markdown()}\n{END_MARKER}"
    p.write_text(text[:start] + body + text[end + len(END_MARKER) :], encoding="utf-8")
