"""Variants of the cheap check (``kgtracin.evaluation.check``) on a run's first-ranked test predictions.

Usage: ``python benchmarks/check_variants.py RUN [SPEC ...] [--predictions 100] [--k 1]``. Each SPEC is
``ROWS:STEPS:START[:RATE]``: the rows relearned (``heads``, ``tails`` or ``both`` of the predictions), the Adam
steps, the rows' first value (``zero``, ``mean`` or ``random``) and the learning rate (default: the run's).
Default SPECs: the check as ``explain --check`` runs it (``heads:10:zero``).

The predictions are the end-to-end protocol's (the same seed), explained by kgtracin's default explanation. For
each SPEC it prints the share of predictions still ranked first after relearning the rows with every fact
(``with``) and without the union of the predictions' top-k proponents (``without``). A check that predicts the
retraining well keeps about the model's own share ``with`` and the end-to-end protocol's retrained share
``without`` (``kgtracin evaluate RUN --protocol end-to-end``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch


def main(path, specs, predictions, k) -> None:
    from kgtracin.config import EXPLAIN_CANDIDATES
    from kgtracin.evaluation.check import _mimic, run_check_config
    from kgtracin.evaluation.deletion import choose_targets
    from kgtracin.predictions import KnownTriples, tail_view
    from kgtracin.runs import load_run
    from kgtracin.tracin import TracIn

    run = load_run(path)
    known, train = KnownTriples(run.splits.values()), run.training_triples
    targets = choose_targets(run.model, run.splits["testing"], known, predictions, 0)
    start = time.perf_counter()
    tracin = TracIn(run.model, train, run.checkpoints, loss=run.tracin_loss, candidates=EXPLAIN_CANDIDATES)
    result = tracin.influence(targets, top_k=k)
    positive = result.proponents.scores > 0
    removed = torch.unique(result.proponents.indices[positive])
    print(f"{targets.shape[0]} predictions explained in {time.perf_counter() - start:.1f} s; {removed.numel()} facts")
    base = run_check_config(run)
    for spec in specs:
        rows, steps, first, *rate = spec.split(":")
        config = replace(base, steps=int(steps), learning_rate=float(rate[0]) if rate else base.learning_rate)
        entities = {"heads": targets[:, 0], "tails": targets[:, 2], "both": targets[:, [0, 2]].reshape(-1)}[rows]
        entities = torch.unique(entities)
        facts = (torch.isin(train[:, 0], entities) | torch.isin(train[:, 2], entities)).nonzero().squeeze(1)
        keep = facts[~torch.isin(facts, removed)]
        start = time.perf_counter()
        shares = [
            float(
                (tail_view(_mimic(run.model, entities, train[r], config, first), targets, known)[1] <= 1)
                .double()
                .mean()
            )
            for r in (facts, keep)
        ]
        print(
            f"{spec}: H@1 with {shares[0]:.2f}, without {shares[1]:.2f} ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run")
    parser.add_argument("specs", nargs="*", default=["heads:10:zero"])
    parser.add_argument("--predictions", type=int, default=100)
    parser.add_argument("--k", type=int, default=1)
    args = parser.parse_args()
    main(args.run, args.specs, args.predictions, args.k)
