"""Noisy facts: corrupt a fraction of the training tails, retrain, and see which detector finds them."""

from __future__ import annotations

import pandas as pd
import torch

__all__ = ["corrupt_tails", "detection_metrics", "roc_auc"]


def corrupt_tails(
    triples: torch.Tensor, fraction: float, num_entities: int, seed: int, known: set[tuple[int, int, int]] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the tail of a random ``fraction`` of the triples by a random other entity.

    A corrupted triple is never a known true triple (of ``known``, or of ``triples`` itself).

    :param triples: shape: (N, 3), dtype: long
    :return: the corrupted triples (N, 3) and the mask of corrupted rows (N,), dtype: bool
    """
    generator = torch.Generator().manual_seed(seed)
    known = set(map(tuple, triples.tolist())) | (known or set())
    out = triples.clone()
    chosen = torch.randperm(triples.shape[0], generator=generator)[: round(fraction * triples.shape[0])]
    noisy = torch.zeros(triples.shape[0], dtype=torch.bool)
    for row in chosen.tolist():
        h, r, t = out[row].tolist()
        for _ in range(100):
            candidate = int(torch.randint(num_entities, (1,), generator=generator))
            if candidate != t and (h, r, candidate) not in known:
                out[row, 2] = candidate
                known.add((h, r, candidate))
                noisy[row] = True
                break
    return out, noisy


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """The area under the ROC curve (ties count half): the chance a positive outscores a negative."""
    ranks = pd.Series(scores.double().numpy()).rank(method="average").to_numpy()
    pos = positive.numpy().astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_metrics(scores: dict[str, torch.Tensor], noisy: torch.Tensor, budget: float = 0.1) -> dict:
    """ROC AUC and recall within the top ``budget`` fraction, per detector.

    :return: detector -> ``{"auc": ..., "recall_at_10pct": ...}``
    """
    top = max(1, round(budget * noisy.shape[0]))
    out = {}
    for name, values in scores.items():
        order = torch.argsort(values.double(), descending=True, stable=True)[:top]
        recall = float(noisy[order].sum() / max(1, int(noisy.sum())))
        out[name] = {"auc": roc_auc(values, noisy), f"recall_at_{int(budget * 100)}pct": recall}
    return out
