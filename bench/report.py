"""Figures, the printed table and ``bench/results/latest.json``."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One measured figure; ``limit`` is the machine limit it is divided by (same run)."""

    figure: str
    value: float | None
    unit: str
    limit: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""
    section: str = ""


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "unit", "limit", "ratio", "target", "met", "note")]
    section = None
    out_rows: list[tuple[str, ...] | str] = []
    for f in figures:
        if f.section != section:
            section = f.section
            out_rows.append(f"-- {section} --")
        met = "—" if f.met is None else ("yes" if f.met else "NO")
        out_rows.append((f.figure, _num(f.value), f.unit, _num(f.limit),
                         "—" if f.ratio is None else f"{f.ratio:.3f}", f.target or "—", met,
                         f.note))
    widths = [max(len(r[i]) for r in [rows[0], *[r for r in out_rows if isinstance(r, tuple)]])
              for i in range(7)]
    widths = [min(w, 48) for w in widths]

    def fmt(r: tuple[str, ...]) -> str:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1,)]
        cells += [r[2].ljust(widths[2])] + [r[i].rjust(widths[i]) for i in (3, 4)]
        cells += [r[5].ljust(widths[5]), r[6].ljust(widths[6]), r[7]]
        return "  ".join(cells).rstrip()

    lines = [fmt(rows[0]), "-" * (sum(widths) + 2 * 7)]
    for r in out_rows:
        lines.append(r if isinstance(r, str) else fmt(r))
    return "\n".join(lines)


def write_json(path: Path, machine: dict[str, Any], figures: list[Figure],
               extra: dict[str, Any]) -> None:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    doc = {"machine": machine, "figures": [clean(asdict(f)) for f in figures], **clean(extra)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    os.replace(tmp, path)
