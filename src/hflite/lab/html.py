"""The lab's report pages: the backtest report's look (its CSS, plotly template and atomic folder
writes), for pages made of titled sections."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from hflite.analytics.report import _CSS, _TEMPLATE, _anchor, _move_into_place, _report_error, _section

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


def write_folder(out_dir: Path, fill: Callable[[Path], None]) -> Path:
    """Write a report folder atomically: ``fill(tmp)`` writes the files into a temporary sibling, which
    then replaces ``out_dir``; a file-system failure is a ``ReportError`` naming the folder."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise _report_error(out_dir, exc) from exc
    try:
        tmp.chmod(0o755)
        fill(tmp)
        _move_into_place(tmp, out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _report_error(out_dir, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
