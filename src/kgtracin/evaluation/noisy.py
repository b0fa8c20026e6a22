"""Noisy facts: corrupt a fraction of the training triples, retrain, and see which detector finds them.

Three corruptions: :func:`corrupt_tails` (a fraction of the tails replaced); :func:`corrupt_triples`, the field's
protocol (CKRL, KGTtm, CAGED): a fraction of fake triples *added*, each a copy of a real one with its head,
relation or tail, chosen uniformly, replaced by a random one; and :func:`corrupt_plausible`, fakes added the same
way whose new head or tail is one the relation already has there, so that they fit the graph's types.
:func:`detection_metrics` reports ROC AUC, and precision and recall within the top 1%, 5% and 10% of the
training triples (CAGED's figures).
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from ..config import CORRUPTIONS
from ..errors import KGTracinError

__all__ = [
    "corrupt",
    "corrupt_tails",
    "corrupt_triples",
    "corrupt_plausible",
    "known_triples",
    "detection_metrics",
    "roc_auc",
    "BUDGETS",
]

logger = logging.getLogger(__name__)

#: the fractions of the training triples at which precision and recall are reported
BUDGETS = (0.01, 0.05, 0.1)


def known_triples(run) -> set[tuple[int, int, int]]:
    """Every triple of the run's splits (training, validation, testing): the triples a planted fake must not be."""
    return {tuple(t) for split in run.splits.values() for t in split.tolist()}


def corrupt(
    kind: str,
    triples: torch.Tensor,
    fraction: float,
    num_entities: int,
    num_relations: int,
    seed: int,
    known: set[tuple[int, int, int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ``triples`` by ``kind`` (one of :data:`kgtracin.config.CORRUPTIONS`): ``triples``
    (:func:`corrupt_triples`), ``plausible`` (:func:`corrupt_plausible`) or ``tails`` (:func:`corrupt_tails`).

    :return: the corrupted triples and the mask of the corrupted (or added) rows, as the function of ``kind``
    """
    if kind == "tails":
        return corrupt_tails(triples, fraction, num_entities, seed, known)
    if kind == "plausible":
        return corrupt_plausible(triples, fraction, seed, known)
    if kind == "triples":
        return corrupt_triples(triples, fraction, num_entities, num_relations, seed, known)
    raise KGTracinError(f"unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}")


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


def corrupt_triples(
    triples: torch.Tensor,
    fraction: float,
    num_entities: int,
    num_relations: int,
    seed: int,
    known: set[tuple[int, int, int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add ``round(fraction * N)`` fake triples, the field's protocol: each copies a random real triple and replaces
    its head, relation or tail (chosen uniformly) by a random other one. A fake is never a known true triple (of
    ``known``, or of ``triples``), another fake, or a self-loop; one that is gets redrawn.

    :param triples: shape: (N, 3), dtype: long
    :return: the real triples followed by the fakes (N + F, 3), in a seeded random order, and the mask of the
        fakes (N + F,), dtype: bool
    """

    def replace(original: list[int], generator: torch.Generator) -> list[int]:
        position = int(torch.randint(3, (1,), generator=generator))
        size = num_relations if position == 1 else num_entities
        candidate = list(original)
        candidate[position] = int(torch.randint(size, (1,), generator=generator))
        return candidate

    return _add_fakes(triples, fraction, seed, known, replace)


def corrupt_plausible(
    triples: torch.Tensor, fraction: float, seed: int, known: set[tuple[int, int, int]] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add ``round(fraction * N)`` fakes that fit the graph's types: each copies a random real triple ``(h, r, t)``
    and replaces its head or its tail (chosen uniformly) by another entity that is a head (or a tail) of ``r`` in
    ``triples``. Such a fake asks queries that real facts ask too, as a wrong but plausible fact would, where the
    field's protocol (:func:`corrupt_triples`) mostly makes queries that no fact asks. A fake is never a known true
    triple, another fake, or a self-loop; one that is gets redrawn.

    :param triples: shape: (N, 3), dtype: long
    :return: as :func:`corrupt_triples`
    """
    pools = {}
    for position in (0, 2):
        for relation in triples[:, 1].unique().tolist():
            pools[position, relation] = triples[triples[:, 1] == relation, position].unique()

    def replace(original: list[int], generator: torch.Generator) -> list[int]:
        position = 2 * int(torch.randint(2, (1,), generator=generator))
        pool = pools[position, original[1]]
        candidate = list(original)
        candidate[position] = int(pool[int(torch.randint(pool.shape[0], (1,), generator=generator))])
        return candidate

    return _add_fakes(triples, fraction, seed, known, replace)


def _add_fakes(triples, fraction, seed, known, replace) -> tuple[torch.Tensor, torch.Tensor]:
    """Fakes drawn by ``replace(original, generator)`` from random real triples until ``round(fraction * N)`` are
    new, or ``100`` times that many draws are spent (fewer fakes then, with a warning); see :func:`corrupt_triples`
    for the rules and the result."""
    if not 0 <= fraction < 1:
        raise KGTracinError(f"the fraction of fakes must be at least 0 and below 1, got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    known = set(map(tuple, triples.tolist())) | (known or set())
    fakes: list[list[int]] = []
    wanted = round(fraction * triples.shape[0])
    for _ in range(100 * max(1, wanted)):
        if len(fakes) == wanted:
            break
        original = triples[int(torch.randint(triples.shape[0], (1,), generator=generator))].tolist()
        candidate = replace(original, generator)
        if candidate == original or tuple(candidate) in known or candidate[0] == candidate[2]:
            continue
        known.add(tuple(candidate))
        fakes.append(candidate)
    if len(fakes) < wanted:
        logger.warning(
            "drew %d fakes of the %d wanted: most draws were known triples or self-loops", len(fakes), wanted
        )
    combined = torch.cat([triples, torch.tensor(fakes, dtype=triples.dtype).view(-1, 3)])
    noisy = torch.cat([torch.zeros(triples.shape[0], dtype=torch.bool), torch.ones(len(fakes), dtype=torch.bool)])
    order = torch.randperm(combined.shape[0], generator=generator)
    return combined[order], noisy[order]


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """The area under the ROC curve (ties count half): the chance a positive outscores a negative."""
    ranks = pd.Series(scores.double().numpy()).rank(method="average").to_numpy()
    pos = positive.numpy().astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_metrics(scores: dict[str, torch.Tensor], noisy: torch.Tensor, budgets=BUDGETS) -> dict:
    """Per detector (higher score: more suspicious): ROC AUC, and precision and recall within the top
    1%, 5% and 10% of the training triples (ties broken by the smaller row).

    :return: detector -> ``{"auc", "precision_at_1pct", "recall_at_1pct", ..., "recall_at_10pct"}``
    """
    out = {}
    positives = max(1, int(noisy.sum()))
    for name, values in scores.items():
        order = torch.argsort(values.double(), descending=True, stable=True)
        record = {"auc": roc_auc(values, noisy)}
        for budget in budgets:
            top = max(1, round(budget * noisy.shape[0]))
            found = int(noisy[order[:top]].sum())
            label = f"{budget * 100:g}pct"
            record[f"precision_at_{label}"] = found / top
            record[f"recall_at_{label}"] = found / positives
        out[name] = record
    return out
