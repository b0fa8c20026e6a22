"""The HTML page: one self-contained file (inline CSS and SVG; no script, font, stylesheet or image fetched)."""

from __future__ import annotations

from html import escape

import pandas as pd

from ..outputs import GENERATOR_TAG
from .graph import COLOURS, subgraph_svg
from .views import TripleView

__all__ = ["render_page"]

_CSS = """
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1000px;
       color: #1b1b1b; padding: 0 16px; }}
h1 {{ font-size: 24px; margin-bottom: 4px; }} h2 {{ font-size: 19px; margin-top: 36px; border-bottom: 1px solid #ddd; }}
h3 {{ font-size: 15px; margin: 18px 0 6px; }}
.summary, .legend {{ color: #444; font-size: 14px; }}
.triple {{ font-family: ui-monospace, Menlo, Consolas, monospace; background: #f3f4f8; padding: 2px 6px; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }}
th, td {{ border-bottom: 1px solid #e4e4e4; padding: 3px 10px; text-align: left; }}
th {{ background: #f7f7f7; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
.wide {{ overflow-x: auto; max-width: 100%; }}
tr.proponent td:first-child {{ border-left: 4px solid {proponent}; }}
tr.opponent td:first-child {{ border-left: 4px solid {opponent}; }}
.swatch {{ display: inline-block; width: 22px; height: 4px; vertical-align: middle; margin: 0 4px 0 12px; }}
.figure {{ border: 1px solid #e4e4e4; border-radius: 4px; background: #fff; display: inline-block; }}
.columns {{ display: flex; gap: 28px; flex-wrap: wrap; }}
""".format(**COLOURS)


def _table(frame: pd.DataFrame, row_class: str | None = None, floats: tuple[str, ...] = ()) -> str:
    """A small HTML table; every cell escaped."""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        values = record._asdict()
        cells = []
        for column, value in zip(frame.columns, record):
            if column in floats:
                cells.append(f'<td class="num">{value:+.4e}</td>')
            elif isinstance(value, float):
                cells.append(f'<td class="num">{value:.4g}</td>')
            else:
                cells.append(f"<td>{escape(str(value))}</td>")
        css = f' class="{escape(str(values[row_class]))}"' if row_class else ""
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _legend() -> str:
    names = {"test": "explained triple", "proponent": "proponent", "opponent": "opponent"}
    return (
        '<p class="legend">'
        + "".join(f'<span class="swatch" style="background:{COLOURS[k]}"></span>{v}' for k, v in names.items())
        + " &middot; edge width: size of the influence</p>"
    )


def _triple_section(number: int, view: TripleView) -> str:
    h, r, t = view.triple
    rank = f"{view.rank:g}"
    return "".join(
        [
            f'<section class="explained"><h2>{number}. <span class="triple">{escape(h)} &nbsp;{escape(r)}&nbsp; '
            f"{escape(t)}</span></h2>",
            f'<p class="summary">The model scores it <b>{view.score:+.4f}</b>; filtered rank <b>{rank}</b> among all '
            f"tails of ({escape(h)}, {escape(r)}, ?).</p>",
            '<div class="columns"><div><h3>The model\'s top tails</h3>',
            _table(view.top_tails),
            "</div></div>",
            "<h3>Why: the explained triple with its top proponents and opponents</h3>",
            f'<div class="figure">{subgraph_svg(view.edges(), focus=(h, t))}</div>',
            _legend(),
            "<h3>Proponents and opponents</h3>",
            _table(view.influences, row_class="kind", floats=("influence",)),
            "</section>",
        ]
    )


def render_page(
    title: str,
    summary: list[str],
    views: list[TripleView],
    self_influence_svg: str | None = None,
    self_influence_top: pd.DataFrame | None = None,
    audit: pd.DataFrame | None = None,
    audit_order: str = "",
) -> str:
    """The whole report as one HTML string.

    :param summary: lines about the run and the TracIn settings
    :param views: the explained triples
    :param self_influence_svg: a histogram of self-influence, when asked
    :param audit: the audit's most suspicious training triples, when asked
    :param audit_order: a sentence on the detector that orders them, and why
    """
    body = [f"<h1>{escape(title)}</h1>"] + [f'<p class="summary">{escape(line)}</p>' for line in summary]
    body += [_triple_section(i + 1, view) for i, view in enumerate(views)]
    if self_influence_svg is not None:
        body.append(
            '<section class="run"><h2>Self-influence of the training triples</h2>'
            '<p class="summary">High self-influence marks triples the model found hard to fit: '
            "candidates for noisy facts.</p>"
            f'<div class="figure">{self_influence_svg}</div>'
        )
        if self_influence_top is not None:
            body.append("<h3>Highest self-influence</h3>" + _table(self_influence_top, floats=("self_influence",)))
        body.append("</section>")
    if audit is not None:
        floats = tuple(c for c in audit.columns if c not in ("rank", "head", "relation", "tail", "train_index"))
        body.append(
            '<section class="audit"><h2>Audit: the most suspicious training triples</h2>'
            + (f'<p class="summary">{escape(audit_order)}</p>' if audit_order else "")
            + f'<div class="wide">{_table(audit, floats=floats)}</div>'
            + "</section>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        + GENERATOR_TAG
        + f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
