"""The small-loss criterion on a kept noisy run: each training triple's loss at each checkpoint, as a detector.

Usage: ``python benchmarks/noisy_by_checkpoint.py RUN [--losses bce softmax] [--ranks]``, where RUN is a run kept
by ``benchmarks/noisy_facts.py --keep DIR`` (``DIR/MODEL``, holding ``noisy-truth.pt``). Prints the ROC AUC and the
precision / recall at 1%, 5% and 10% of the training triples of the loss at every checkpoint, of the mean over
checkpoints and of the final model's loss (the audit's ``loss`` baseline). ``--ranks`` adds each triple's filtered
rank (``log`` of its tail rank plus ``log`` of its head rank, the training triples filtered) at every checkpoint and
its mean over checkpoints, the area under the rank curve: a fact learned late, by fitting it alone, ranks low for
longer.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch


def log_ranks(model, triples: torch.Tensor, known, chunk: int = 2048) -> torch.Tensor:
    """``log`` tail rank + ``log`` head rank of each triple, filtered by ``known``. :return: shape: (N,)"""
    from kgtracin.predictions import head_view, tail_view

    parts = []
    for first in range(0, triples.shape[0], chunk):  # chunks: all-entity scores of every triple at once are GBs
        block = triples[first : first + chunk]
        parts.append(tail_view(model, block, known)[1].log() + head_view(model, block, known)[1].log())
    return torch.cat(parts)


def main(path: Path, losses: list[str], ranks: bool) -> None:
    from kgtracin.audit import plain_losses
    from kgtracin.evaluation.noisy import detection_metrics
    from kgtracin.runs import load_run
    from kgtracin.scorers import matrix_products

    run = load_run(path)
    truth = torch.load(path / "noisy-truth.pt")

    def scored(model, loss):
        with matrix_products(model):  # all-entity scores as one product, as training does
            return plain_losses(model, run.training_triples, loss)

    from kgtracin.predictions import KnownTriples

    known = KnownTriples([run.training_triples]) if ranks else None
    per = {loss: [] for loss in losses}
    per_rank = []
    for checkpoint in run.checkpoints:  # each checkpoint loaded once, for every loss and the ranks
        model = copy.deepcopy(run.model)
        model.load_state_dict(checkpoint.load_state())
        for loss in losses:
            per[loss].append(scored(model, loss))
        if ranks:
            per_rank.append(log_ranks(model.eval(), run.training_triples, known))
    epochs = [run.manifest["checkpoints"][n].get("epoch", n) for n in range(len(run.checkpoints))]
    scores = {}
    for loss in losses:
        scores.update({f"{loss} loss at epoch {epoch}": values for epoch, values in zip(epochs, per[loss])})
        scores[f"{loss} loss, mean over checkpoints"] = torch.stack(per[loss]).mean(0)
        scores[f"{loss} loss of the final model"] = scored(run.model, loss)
    if ranks:
        scores.update({f"log rank at epoch {epoch}": values for epoch, values in zip(epochs, per_rank)})
        scores["log rank, mean over checkpoints"] = torch.stack(per_rank).mean(0)
    for name, metrics in detection_metrics(scores, truth).items():
        print(name, json.dumps({m: round(v, 3) for m, v in metrics.items()}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--losses", nargs="+", choices=["bce", "softmax"], default=["bce", "softmax"])
    parser.add_argument("--ranks", action="store_true", help="also each triple's filtered rank at each checkpoint")
    args = parser.parse_args()
    main(args.run, args.losses, args.ranks)
