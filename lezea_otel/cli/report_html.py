"""The report's HTML pieces shared by every kind of report (one run, a distributed experiment, several
runs compared): the page with plotly.js inline once, tables that say in one line when they are empty, and
a figure's section."""

from __future__ import annotations

import html
import math
from typing import Any

PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
           "#FF97FF", "#FECB52")
"""plotly's own colours: one per scope in a run's figures, one per run in a comparison."""


def page(title: str, sections: list[str]) -> str:
    """The whole document: plotly.js inline once (it opens offline), then the sections."""
    from plotly.offline import get_plotlyjs

    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>lezea_otel report: {html.escape(title)}</title>"
            f"<style>{CSS}</style><script>{get_plotlyjs()}</script></head><body>"
            + "".join(sections) + "</body></html>")


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def table(title: str, columns: list[str], rows: list[list[Any]], table_id: str | None = None,
          empty: str | None = None, note: str = "") -> str:
    """A titled table; with no rows and ``empty`` given, that one sentence instead of an empty table (a
    reader should not have to wonder whether a table failed to fill). ``note``: a line under the title."""
    ident = f' id="{table_id}"' if table_id else ""
    caption = f"<p class='note'>{html.escape(note)}</p>" if note else ""
    if not rows and empty is not None:
        return f"<h2>{html.escape(title)}</h2><p class='empty'{ident}>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return (f"<h2>{html.escape(title)}</h2>{caption}<table{ident}><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def figure_section(name: str, figure: Any) -> str:
    """A plotly figure as a section; its div is ``plot-<name>`` (what the browser tests look for)."""
    drawn = str(figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}"))
    return f'<section id="{name}">{drawn}</section>'


def empty_section(name: str, title: str, sentence: str) -> str:
    """A figure that has nothing to draw: its title and why, in one line."""
    return (f"<section id='{name}'><h2>{html.escape(title)}</h2><p class='empty'>{html.escape(sentence)}"
            "</p></section>")


CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}h1{margin-bottom:.2rem}.meta{color:#555}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:left;font-size:.9rem}th{background:#f3f3f3}section{margin-bottom:2rem}
.empty{color:#666;font-style:italic}.note{color:#555;font-size:.9rem}
"""
