"""The explanation subgraph: entities as nodes, the test triple and its proponents and opponents as edges.

networkx lays the graph out (Kamada-Kawai); the drawing is plain SVG written into the page, so the report needs
no script. Edges are directed and labelled with their relation; colour gives the sign of the influence
(proponent green, opponent red, the explained triple dashed blue) and width its size. Parallel edges between
the same two entities bend apart; a triple from an entity to itself is a loop.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from html import escape

__all__ = ["Edge", "subgraph_svg", "COLOURS"]

COLOURS = {"test": "#2c3e91", "proponent": "#1a8a45", "opponent": "#c8302b"}
WIDTH, HEIGHT, MARGIN, RADIUS = 900, 470, 60, 9
NODE_FONT, MAX_LABEL = 13, 36  # label font size (px); longer labels are shortened (the full one is the tooltip)
_BEND = 44.0  # twice the pixels between the midpoints of parallel edges


@dataclass(frozen=True)
class Edge:
    """One triple to draw.

    :param kind: ``test``, ``proponent`` or ``opponent``
    :param influence: its TracIn influence on the explained triple (0 for the test triple)
    """

    head: str
    relation: str
    tail: str
    kind: str
    influence: float = 0.0


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "\u2026"


def _half_width(label: str) -> float:
    """About half the rendered width of a node label, for margins that keep every label inside the drawing."""
    return 0.31 * NODE_FONT * len(_short(label)) + 6


def _layout(nodes: list[str], edges: list[Edge]) -> dict[str, tuple[float, float]]:
    """Node -> (x, y) in pixels, inside margins wide enough for the labels."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from((e.head, e.tail) for e in edges if e.head != e.tail)
    if len(nodes) == 1:
        return {nodes[0]: (WIDTH / 2, HEIGHT / 2)}
    pos = nx.kamada_kawai_layout(graph) if len(nodes) > 2 else nx.circular_layout(graph)
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    side = max(MARGIN, max(_half_width(n) for n in nodes))
    return {
        node: (
            side + (x - min(xs)) / span_x * (WIDTH - 2 * side),
            MARGIN + (y - min(ys)) / span_y * (HEIGHT - 1.6 * MARGIN),
        )
        for node, (x, y) in pos.items()
    }


def _width(edge: Edge, largest: float) -> float:
    if edge.kind == "test" or largest <= 0:
        return 2.5
    return 1.2 + 6.0 * abs(edge.influence) / largest


def _edge_path(start, end, offset: float) -> tuple[str, tuple[float, float]]:
    """A quadratic curve bent ``offset`` pixels sideways; returns the path and its midpoint."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy) or 1.0
    nx_, ny_ = -dy / length, dx / length
    cx, cy = (x0 + x1) / 2 + 2 * offset * nx_, (y0 + y1) / 2 + 2 * offset * ny_
    mid = (0.25 * x0 + 0.5 * cx + 0.25 * x1, 0.25 * y0 + 0.5 * cy + 0.25 * y1)
    return f"M {x0:.1f} {y0:.1f} Q {cx:.1f} {cy:.1f} {x1:.1f} {y1:.1f}", mid


def _loop_path(at, index: int) -> tuple[str, tuple[float, float]]:
    x, y = at
    size = 34 + 14 * index
    path = (
        f"M {x - 5:.1f} {y - RADIUS:.1f} C {x - size:.1f} {y - 2 * size:.1f} "
        f"{x + size:.1f} {y - 2 * size:.1f} {x + 5:.1f} {y - RADIUS:.1f}"
    )
    return path, (x, y - 1.5 * size)


def subgraph_svg(edges: list[Edge], focus: tuple[str, str] = ()) -> str:
    """The subgraph as an ``<svg>`` element.

    :param edges: the test triple first, then proponents and opponents
    :param focus: the explained triple's head and tail, drawn larger
    """
    nodes = list(dict.fromkeys(n for e in edges for n in (e.head, e.tail)))
    pos = _layout(nodes, edges)
    largest = max((abs(e.influence) for e in edges if e.kind != "test"), default=0.0)
    seen: dict[frozenset, int] = defaultdict(int)
    parts = [
        f'<svg class="subgraph" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        'xmlns="http://www.w3.org/2000/svg" role="img" font-family="sans-serif">',
        "<defs>",
    ]
    for kind, colour in COLOURS.items():
        parts.append(
            f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="{10 + RADIUS}" refY="5" '
            f'markerWidth="11" markerHeight="11" markerUnits="userSpaceOnUse" orient="auto">'
            f'<path d="M 0 0 L 10 5 L 0 10 z" fill="{colour}"/></marker>'
        )
    parts.append("</defs>")
    labels, on_top = [], []
    for edge in edges:
        key = frozenset((edge.head, edge.tail))
        index = seen[key]
        seen[key] += 1
        if edge.head == edge.tail:
            path, mid = _loop_path(pos[edge.head], index)
        else:
            # alternate sides; the sign flips with direction so that a<->b pairs do not overlap
            side = (1 if index % 2 else -1) * ((index + 1) // 2)
            direction = 1 if edge.head < edge.tail else -1
            path, mid = _edge_path(pos[edge.head], pos[edge.tail], _BEND * side * direction / 2)
        colour = COLOURS[edge.kind]
        dash = ' stroke-dasharray="7 4"' if edge.kind == "test" else ""
        title = escape(
            f"{edge.kind}: {edge.head} {edge.relation} {edge.tail}"
            + ("" if edge.kind == "test" else f" (influence {edge.influence:+.3e})")
        )
        (on_top if edge.kind == "test" else parts).append(
            f'<path class="edge {edge.kind}" d="{path}" fill="none" stroke="{colour}" '
            f'stroke-width="{_width(edge, largest):.2f}" stroke-opacity="0.85"{dash} '
            f'marker-end="url(#arrow-{edge.kind})"><title>{title}</title></path>'
        )
        labels.append(
            f'<text class="edge-label" x="{mid[0]:.1f}" y="{mid[1] + 4:.1f}" text-anchor="middle" '
            f'font-size="11" fill="{colour}" stroke="#fff" stroke-width="3" paint-order="stroke">'
            f"{escape(edge.relation)}</text>"
        )
    parts.extend(on_top)  # the explained triple over its proponents and opponents
    for node in nodes:
        x, y = pos[node]
        big = node in focus
        parts.append(
            f'<circle class="node" cx="{x:.1f}" cy="{y:.1f}" r="{RADIUS + (3 if big else 0)}" '
            f'fill="{"#2c3e91" if big else "#ffffff"}" stroke="#333" stroke-width="1.5">'
            f"<title>{escape(node)}</title></circle>"
        )
        labels.append(
            f'<text class="node-label" x="{x:.1f}" y="{y - RADIUS - 8:.1f}" text-anchor="middle" '
            f'font-size="{NODE_FONT}" font-weight="{"bold" if big else "normal"}" fill="#111" '
            f'stroke="#fff" stroke-width="4" paint-order="stroke">{escape(_short(node))}'
            f"<title>{escape(node)}</title></text>"
        )
    parts.extend(labels)  # labels last: on top of every edge and node
    parts.append("</svg>")
    return "".join(parts)
