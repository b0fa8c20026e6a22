"""Explanations as sets chosen greedily by the cheap check, after Kelpie's necessary explanations.

TracIn's top k proponents are the k facts with the largest influence each, as if their effects added up. Two
facts that stand in for each other (say, two paths between the same entities) both rank high, yet deleting one
leaves the other. A greedy set asks the check (:mod:`.check`: the predictions' heads relearned from their facts,
every other weight of the final model fixed) instead: each step adds, among the prediction's best ``pool``
proponents, the fact whose deletion *together with those already chosen* leaves the prediction's margin lowest.

All predictions are stepped at once: one relearning per candidate slot and step, so ``k x pool`` relearnings in
all (each costs about half of the end-to-end protocol's check). A fact deleted for one prediction that mentions
another's head also reaches that one, as in the check.
"""

from __future__ import annotations

import math
import time

import torch

from ..predictions import KnownTriples, tail_scores
from .check import CheckConfig, _mimic, head_facts, run_check_config

__all__ = ["GREEDY_POOL", "greedy_pool", "tail_margins", "greedy_sets", "choose_greedily", "greedy_unsupported"]

#: proponents per prediction that a greedy set is chosen from (at least; ``k`` where k is larger)
GREEDY_POOL = 8


def greedy_pool(k: int) -> int:
    """Proponents per prediction that a greedy set of ``k`` is chosen from."""
    return max(GREEDY_POOL, k)


@torch.no_grad()
def tail_margins(model, targets: torch.Tensor, known: KnownTriples) -> torch.Tensor:
    """How far each prediction's tail leads the best other tail that is not a known fact (filtered): positive while
    it is ranked first.

    :param targets: shape: (T, 3), dataset ids
    :return: shape: (T,), float64
    """
    scores = tail_scores(model, targets[:, :2]).double()
    rows = torch.arange(targets.shape[0])
    own = scores[rows, targets[:, 2]].clone()
    scores = scores.masked_fill(known.mask(targets[:, :2], scores.shape[1]), -math.inf)
    scores[rows, targets[:, 2]] = -math.inf
    return own - scores.max(dim=1).values


def greedy_sets(
    model,
    train: torch.Tensor,
    targets: torch.Tensor,
    candidates: list[list[int]],
    k: int,
    known: KnownTriples,
    config: CheckConfig,
) -> tuple[list[list[int]], list[list[float]]]:
    """Per prediction, up to ``k`` of its candidates, chosen one at a time by the check.

    Step s: for every candidate slot j, relearn the heads without, for each prediction, the facts it has chosen
    and its j-th candidate (or only its chosen facts, where that candidate is chosen already or missing); each
    prediction then adds the candidate that left its margin (:func:`tail_margins`) lowest, the earlier slot on a
    tie. The sets are nested: the first ``k'`` facts of a ``k``-set are the greedy ``k'``-set. The predictions are
    not isolated from each other: a relearning also leaves out the other predictions' facts of the same slot, and
    a relearned head is a candidate tail of the other predictions.

    :param model: the final model (not changed)
    :param train: shape: (N, 3), the training triples
    :param targets: shape: (T, 3), the predictions
    :param candidates: per prediction, rows of ``train``, best first (TracIn's proponents)
    :return: per prediction the chosen rows in the order chosen, and the margin the check left after each
    """
    heads, facts = head_facts(train, targets)
    chosen: list[list[int]] = [[] for _ in candidates]
    margins: list[list[float]] = [[] for _ in candidates]
    width = max((len(c) for c in candidates), default=0)
    for _ in range(min(k, width)):
        best: list[tuple[float, int] | None] = [None] * len(candidates)
        for slot in range(width):
            trials = [c[slot] if slot < len(c) and c[slot] not in chosen[p] else None for p, c in enumerate(candidates)]
            if all(t is None for t in trials):
                continue
            removed = {row for rows in chosen for row in rows} | {t for t in trials if t is not None}
            keep = facts[~torch.isin(facts, torch.as_tensor(sorted(removed), dtype=torch.long))]
            margin = tail_margins(_mimic(model, heads, train[keep], config), targets, known).tolist()
            for p, trial in enumerate(trials):
                if trial is not None and (best[p] is None or margin[p] < best[p][0]):
                    best[p] = (margin[p], trial)
        if all(b is None for b in best):
            break
        for p, pick in enumerate(best):
            if pick is not None:
                chosen[p].append(pick[1])
                margins[p].append(pick[0])
    return chosen, margins


def choose_greedily(run, targets: torch.Tensor, record: dict, k: int, known: KnownTriples, steps: int) -> None:
    """Put each prediction's greedy set of ``k`` (from its best :func:`greedy_pool` positive proponents) first in
    an end-to-end explanation ``record`` (``indices``, ``scores``: per prediction, best first), the other
    proponents after it in TracIn's order; the time is added to the explanation's.

    :param steps: the check's steps (0: the check's default)
    """
    start = time.perf_counter()
    pool = greedy_pool(k)
    candidates = [
        [i for i, s in zip(rows[:pool], scores[:pool]) if s > 0]
        for rows, scores in zip(record["indices"], record["scores"])
    ]
    check = run_check_config(run, steps=steps or CheckConfig.steps)
    chosen, margins = greedy_sets(run.model, run.training_triples, targets, candidates, k, known, check)
    for p, (rows, scores) in enumerate(zip(record["indices"], record["scores"])):
        order = chosen[p] + [i for i in rows if i not in chosen[p]]
        score_of = dict(zip(rows, scores))
        record["indices"][p], record["scores"][p] = order, [score_of[i] for i in order]
    seconds = time.perf_counter() - start
    record["seconds"] += seconds
    record["greedy"] = {"pool": pool, "seconds": seconds, "margins": margins}


def greedy_unsupported(model, variants) -> str | None:
    """Why a greedy variant cannot run on this model (the check relearns plain embedding rows), or None."""
    from .check import check_unsupported  # looked up when called, so that tests can stand in for it

    if any(v.selection == "greedy" for v in variants):
        reason = check_unsupported(model)
        if reason:
            return f"selection=greedy chooses by the check, which cannot run here: {reason}"
    return None
