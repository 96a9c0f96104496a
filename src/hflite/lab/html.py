"""The lab's report pages: the backtest report's look (its CSS, plotly template and atomic folder
writes), for pages made of titled sections."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from hflite.analytics.report import _CSS, _TEMPLATE, _anchor, _section, write_folder

_EXTRA_CSS = """
.verdict{font-size:16px;font-weight:600;padding:8px 12px;border-radius:6px;margin:6px 0 10px}
.verdict.good{background:#dafbe1;color:#116329}.verdict.bad{background:#ffebe9;color:#a40e26}
.verdict.mixed{background:#fff8c5;color:#7d4e00}
td.pass{color:#116329;font-weight:600}td.fail{color:#a40e26;font-weight:600}td.na{color:#57606a}
"""


def figure(fig: go.Figure, height: int = 360) -> str:
    """A plotly figure as a div (plotly.js is inlined once by :func:`page`)."""
    fig.update_layout(template=_TEMPLATE, height=height)
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})


def table(
    header: Sequence[str], rows: Sequence[Sequence[object]], classes: Sequence[str] | None = None
) -> str:
    """A plain HTML table; cells are escaped text. ``classes[i]`` (optional) is row i's last-cell class
    (``pass`` / ``fail`` / ``na``)."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = [f"<td>{escape(str(c))}</td>" for c in row]
        if classes is not None and classes[i] and cells:
            cells[-1] = f'<td class="{escape(classes[i])}">{escape(str(row[-1]))}</td>'
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def page(title: str, sections: Sequence[tuple[str, str]], lead: str = "") -> str:
    """A whole self-contained page: a header with a link per section, ``lead`` HTML first."""
    nav = "".join(f'<a href="#{_anchor(t)}">{escape(t)}</a>' for t, _ in sections)
    body = "".join(_section(t, inner) for t, inner in sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}{_EXTRA_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>{escape(title)}</h1><nav>{nav}</nav></header>"
        f"<main>{lead}{body}</main></body></html>\n"
    )


__all__ = ["figure", "page", "table", "write_folder"]
