"""``kgtracin report``: one self-contained HTML page that shows why the model predicts what it predicts.

For each explained triple: the model's view (score, filtered rank, its top tails), a drawn subgraph of the
triple with its top proponents and opponents (networkx layout, inline SVG), and their table. For the run, when
asked: a histogram of self-influence and the audit's most suspicious training triples.
"""

from __future__ import annotations

import torch

from ..predictions import KnownTriples
from .charts import histogram_svg
from .graph import Edge, subgraph_svg
from .page import render_page
from .views import TripleView, triple_views

__all__ = ["build_report", "TripleView", "Edge", "subgraph_svg", "histogram_svg", "render_page"]


def build_report(
    run, tracin, test: torch.Tensor, top_k: int = 5, top_tails: int = 5, self_influence: bool = False, audit: int = 0
) -> str:
    """The report for a run as one HTML string.

    :param run: a :class:`~kgtracin.runs.Run` (model, triples, labels, splits)
    :param tracin: the :class:`~kgtracin.TracIn` that explains (its loss, method and checkpoints)
    :param test: shape: (M, 3), dtype: long, dataset ids: the triples to explain
    :param top_k: proponents and opponents per triple
    :param top_tails: the model's best tails listed per triple
    :param self_influence: add a histogram and the top of the self-influence ranking
    :param audit: add the audit's ``audit`` most suspicious triples (0: none), in its default order
    """

    result = tracin.influence(test, top_k=top_k)
    known = KnownTriples(run.splits.values())
    views = triple_views(run.model, result, run.labels, known, KnownTriples([run.training_triples]), top_tails)
    checkpoints = ", ".join(f"{c.learning_rate:g}" for c in tracin.checkpoints)
    summary = [
        f"Model {type(run.model).__name__} ({sum(p.numel() for p in run.model.parameters()):,} parameters), "
        f"{run.training_triples.shape[0]:,} training triples, {len(run.labels.entities):,} entities.",
        f"TracIn with the {tracin.config.loss} loss over {len(tracin.checkpoints)} checkpoint(s) "
        f"(learning rates {checkpoints}), method {tracin.config.method}; positive influence: training on the "
        "triple lowered the explained triple's loss.",
    ]
    if run.path is not None:
        summary.insert(0, f"Run: {run.path}")
    histogram = top_self = audit_table = None
    if self_influence:
        values = tracin.self_influence()
        histogram = histogram_svg(
            values.double().numpy(),
            "Self-influence of every training triple",
            "self-influence (sum over checkpoints of lr * |gradient|^2)",
        )
        from ..audit import self_influence_frame

        top_self = self_influence_frame(values, run.training_triples, run.labels, top_k=10).drop(columns="train_index")
    audit_order = ""
    if audit:
        from ..audit import AUDIT_LOSS, audit_frame, detector_scores, detectors_for

        validation = run.splits.get("validation")
        detectors, order_by = detectors_for(validation is not None)
        order_by, audit_order = _audit_order(run, detectors, order_by, AUDIT_LOSS)
        scores = detector_scores(
            run.model,
            run.training_triples,
            validation,
            tracin.checkpoints,
            detectors,
            loss=AUDIT_LOSS,
            method=tracin.config.method,
            progress=False,
        )
        audit_table = audit_frame(scores, run.training_triples, run.labels, order_by=order_by, top_k=audit)
    return render_page(
        f"kgtracin report: {type(run.model).__name__}",
        summary,
        views,
        histogram,
        top_self,
        audit_table,
        audit_order,
    )


def _audit_order(run, detectors: tuple[str, ...], fallback: str, loss: str) -> tuple[str, str]:
    """The detector ``kgtracin audit`` chose for this run with its default settings when it kept one (the report
    never retrains), else ``fallback``; and a sentence that says which."""
    from ..calibrations import key_for, read_kept

    if not run.has_recipe:
        return fallback, (
            f"Ordered by {fallback}, the audit's order for a run without a training recipe (one not made by "
            "kgtracin train)."
        )
    kept = read_kept(key_for(run, detectors, loss=loss))
    if kept is None:
        return fallback, (
            f"Ordered by {fallback}. kgtracin audit, with its default settings, chooses the detector from the run "
            "(planted fakes, one retraining); once it has, the report follows its choice."
        )
    chosen, aucs, _ = kept
    return chosen, (
        f"Ordered by {chosen}, the detector kgtracin audit chose for this run: it found the fakes planted in a "
        f"retraining best (ROC AUC {aucs[chosen]:.3f})."
    )
