"""HTML building blocks of the run report (:mod:`cmkd.evaluation.report`) and its figures
(:mod:`cmkd.evaluation.figures`): escaping, compact number formatting, tables, inline PNG figures, and the order
and colour of the models, the same in every table and figure. ``figure_html``, ``table_html`` and ``escape`` are
the public ones recipes build their report sections with."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cmkd.config import Role


def esc(value: Any) -> str:
    """HTML-escape ``str(value)``, quotes included."""
    return html.escape(str(value), quote=True)


def is_num(value: Any) -> bool:
    """True for real numbers (bools excluded)."""
    real = isinstance(value, (int, float, np.integer, np.floating))
    return real and not isinstance(value, (bool, np.bool_))


def fmt(value: Any) -> str:
    """Format a table cell: thousands separators for ints, 4 significant digits for floats."""
    if value is None:
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    if is_num(value):
        return "nan" if not np.isfinite(value) else f"{float(value):.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def short(value: float) -> str:
    """Compact bar label: 120k, 1.2M, 0.036."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def flatten(metrics: dict | None, prefix: str = "") -> dict[str, Any]:
    """Flatten nested metric dicts to ``{"a.b": scalar}``; arrays are left out of tables."""
    out: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        elif is_num(value) or value is None or isinstance(value, str):
            out[f"{prefix}{key}"] = value
    return out


def table(header: list[str], rows: list[list[Any]], primary_row: str | None = None) -> str:
    """Render an escaped HTML table; the row whose first cell equals ``primary_row`` is bold."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cls = ' class="primary"' if primary_row is not None and row[0] == primary_row else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{esc(fmt(c))}</td>" for c in row) + "</tr>")
    return f"<div class='tbl'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def img(fig: Figure, alt: str, small: bool = False) -> str:
    """Encode ``fig`` as an inline base64 PNG ``<img>`` (``small``: three per row) and release the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    fig.clear()
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cls = ' class="small"' if small else ""
    return f'<img src="data:image/png;base64,{data}"{cls} alt="{esc(alt)}">'


def order(names: Any) -> list[str]:
    """Core models first (teacher, baseline, student), then the rest in their given order."""
    names = list(names)
    return [n for n in Role.CORE if n in names] + [n for n in names if n not in Role.CORE]


def colour(name: str, names: list[str]) -> str:
    """A colour per model that stays the same in every figure (grey C7 is kept for the ONNX bars)."""
    if name in Role.CORE:
        return f"C{Role.CORE.index(name)}"
    others = [n for n in names if n not in Role.CORE]
    return f"C{(3, 4, 5, 6, 8, 9)[others.index(name) % 6]}"


def figure_html(fig: Figure, alt: str, small: bool = False) -> str:
    """Public: a matplotlib figure as an inline PNG ``<img>`` (for recipe report sections)."""
    return img(fig, alt, small)


def table_html(header: list[str], rows: list[list[Any]]) -> str:
    """Public: an HTML table, numbers formatted compactly (for recipe report sections)."""
    return table(header, rows)


def escape(value: Any) -> str:
    """Public: HTML-escape text."""
    return esc(value)
