"""Charts drawn by matplotlib as inline SVG (text as paths, so the page needs no font)."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["histogram_svg"]


def histogram_svg(values: np.ndarray, title: str, xlabel: str, bins: int = 50) -> str:
    """A histogram of ``values`` (shape (N,)) as an ``<svg>`` element, on a log count axis."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    values = np.asarray(values, dtype=float)
    with matplotlib.rc_context({"svg.fonttype": "path", "font.size": 10}):
        figure, axis = plt.subplots(figsize=(7.2, 2.8))
        try:
            axis.hist(values, bins=bins, color="#2c3e91", alpha=0.85)
            axis.set_yscale("log")
            axis.set_xlabel(xlabel)
            axis.set_ylabel("training triples")
            axis.set_title(title)
            figure.tight_layout()
            buffer = io.StringIO()
            # no metadata: it would name RDF and matplotlib URLs in an offline page
            figure.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
        finally:
            plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype: the SVG goes inside the HTML page
