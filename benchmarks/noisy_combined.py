"""``support`` combined with a TracIn detector, on kept noisy runs, against the fakes' truth.

Usage: ``python benchmarks/noisy_combined.py RUN [RUN ...] [--with memorization]``, each RUN a run kept by
``benchmarks/noisy_facts.py --keep DIR`` (``DIR/MODEL``, holding ``noisy-truth.pt``). Scores the audit's detectors
(``bce``) and prints ROC AUC / P@1% / R@10% of: the TracIn detector, ``support``, ``support`` with its ties broken by
the detector, and the sum of the two percentile ranks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def percentile(values: torch.Tensor) -> torch.Tensor:
    """Each value's rank among ``values`` over their number, ties sharing their average rank: higher is more
    suspicious."""
    import pandas as pd

    ranks = pd.Series(values.double().numpy()).rank(method="average").to_numpy()
    return torch.tensor(ranks, dtype=torch.float64) / values.shape[0]


def lexicographic(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Scores that order by ``first``, and by ``second`` where ``first`` ties (higher: more suspicious)."""
    by_second = torch.argsort(second, stable=True)
    order = by_second[torch.argsort(first[by_second], stable=True)]  # ascending by (first, second)
    out = torch.empty(first.shape[0], dtype=torch.float64)
    out[order] = torch.arange(first.shape[0], dtype=torch.float64)
    return out


def main(runs: list[Path], detector: str) -> None:
    from kgtracin.audit import AUDIT_LOSS, detector_scores
    from kgtracin.evaluation.noisy import detection_metrics
    from kgtracin.runs import load_run

    for path in runs:
        run = load_run(path)
        truth = torch.load(path / "noisy-truth.pt")
        scores = detector_scores(
            run.model, run.training_triples, None, run.checkpoints, (detector, "support"), loss=AUDIT_LOSS,
            progress=False,
        )  # fmt: skip
        support, other = scores["support"], scores[detector].double()
        orders = {
            detector: other,
            "support": support,
            f"support, ties broken by {detector}": lexicographic(support, other),
            "the sum of the two ranks": percentile(support) + percentile(other),
        }
        print(f"## {path}")
        for name, m in detection_metrics(orders, truth).items():
            print(f"| {name} | {m['auc']:.3f} / {m['precision_at_1pct']:.3f} / {m['recall_at_10pct']:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--with", dest="detector", default="memorization")
    args = parser.parse_args()
    main(args.runs, args.detector)
