"""A cheap check of explanations, after Kelpie's post-training: relearn the head, with and without them.

Kelpie (SIGMOD 2022) checks a candidate explanation by training a *mimic* of the prediction's head: a fresh
embedding learned from the head's own facts, every other weight of the final model held fixed, once with the
candidate facts and once without. Here the mimics of all predictions' heads are relearned at once: their rows are
set to zero and trained with Adam for ``steps`` full-batch steps on the ``softmax`` loss of the training facts
that mention a head, once without the union of the explanations and once with them. Each prediction's filtered
tail rank after both is what the check predicts: a prediction that falls without its explanation and not with
it needed the explanation. It costs ``2 x steps`` passes over the heads' facts (seconds for a hundred
predictions on the WordNet graph), against one whole retraining in the end-to-end protocol, whose outcome it
tries to predict.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..compat import embedding_table, entity_slots, to_internal
from ..losses import SoftmaxLoss
from ..predictions import KnownTriples, tail_view
from ..scorers import matrix_products

__all__ = ["CheckConfig", "run_check_config", "head_facts", "check_explanations", "check_ranks", "check_unsupported"]


@dataclass(frozen=True)
class CheckConfig:
    """How explanations are checked: Adam on the mimic rows only (the end-to-end evaluation takes the run's
    learning rate)."""

    steps: int = 10
    learning_rate: float = 0.01
    #: training triples per chunk of a step (the step's gradient is summed over chunks)
    chunk: int = 256


def run_check_config(run, **options) -> CheckConfig:
    """The check's configuration for a run: Adam at the learning rate its manifest records (``kgtracin train``),
    else kgtracin's default (:data:`kgtracin.config.DEFAULT_LEARNING_RATE`)."""
    from ..config import DEFAULT_LEARNING_RATE

    rate = ((getattr(run, "manifest", None) or {}).get("training") or {}).get("learning_rate")
    return CheckConfig(learning_rate=DEFAULT_LEARNING_RATE if rate is None else float(rate), **options)


def _mimic(model, heads: torch.Tensor, rows: torch.Tensor, config: CheckConfig, start: str = "zero"):
    """A copy of ``model`` whose entity rows ``heads`` are relearned on ``rows``, all else fixed.

    :param start: the relearned rows' first value: ``zero`` (the check's), ``mean`` (each table's mean row) or
        ``random`` (normal, with each table's standard deviation, seed 0); ``benchmarks/check_variants.py``
        compares them
    """
    if start not in ("zero", "mean", "random"):
        raise ValueError(f"unknown start {start!r}: zero, mean or random")
    model = copy.deepcopy(model).eval()
    tables = [embedding_table(model.entity_representations[i]) for i in sorted(set().union(*entity_slots(model)))]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    mask = torch.zeros(tables[0].shape[0], 1, dtype=tables[0].dtype, device=tables[0].device)
    mask[heads] = 1.0
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for table in tables:
            if start == "zero":
                table[heads] = 0.0
            elif start == "mean":
                table[heads] = table.mean(dim=0)
            else:  # random
                noise = torch.randn(heads.shape[0], *table.shape[1:], generator=generator, dtype=table.dtype)
                table[heads] = noise.to(table.device) * table.std()
    for table in tables:
        table.requires_grad_(True)
    if rows.numel():
        internal = to_internal(model, rows).to(tables[0].device)
        loss_fn = SoftmaxLoss()
        optimizer = torch.optim.Adam(tables, lr=config.learning_rate)
        with torch.enable_grad(), matrix_products(model):  # all-entity scores as one product
            for _ in range(config.steps):
                optimizer.zero_grad(set_to_none=True)
                for part in internal.split(config.chunk):
                    (loss_fn(model, part).sum() / internal.shape[0]).backward()
                for table in tables:  # only the mimics learn
                    table.grad.mul_(mask.to(table.grad.dtype).view(-1, *([1] * (table.grad.dim() - 1))))
                optimizer.step()
    for table in tables:
        table.requires_grad_(False)
    return model.eval()


def head_facts(train: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictions' distinct heads, which the check relearns, and the training rows that mention one.

    :param train: shape: (N, 3)
    :param targets: shape: (T, 3)
    :return: heads (H,) and rows of ``train`` (F,), both long
    """
    heads = torch.unique(targets[:, 0])
    return heads, (torch.isin(train[:, 0], heads) | torch.isin(train[:, 2], heads)).nonzero().squeeze(1)


def check_explanations(
    model,
    train: torch.Tensor,
    targets: torch.Tensor,
    explanations: list[list[int]],
    known: KnownTriples,
    config: CheckConfig,
    ranks_with: list[float] | None = None,
) -> list[dict]:
    """Each prediction's filtered tail rank with its head relearned from the heads' facts, without and with the
    explanations.

    :param model: the final model (not changed)
    :param train: shape: (N, 3), the training triples
    :param targets: shape: (T, 3), the predictions
    :param explanations: per prediction, rows of ``train``
    :param ranks_with: the ranks with every fact, as an earlier call for the same ``targets`` returned them
        (``rank_with``): they do not depend on the explanations, so several sets of explanations of the same
        predictions need them once
    :return: per prediction ``{"rank_without": ..., "rank_with": ...}``
    """
    heads, facts = head_facts(train, targets)
    removed = torch.as_tensor(sorted({row for rows in explanations for row in rows}), dtype=torch.long)
    keep = facts[~torch.isin(facts, removed)]
    without = tail_view(_mimic(model, heads, train[keep], config), targets, known)[1].tolist()
    if ranks_with is None:
        ranks_with = tail_view(_mimic(model, heads, train[facts], config), targets, known)[1].tolist()
    return [{"rank_without": a, "rank_with": b} for a, b in zip(without, ranks_with)]


def check_unsupported(model) -> str | None:
    """Why the check cannot relearn this model's heads (it relearns plain embedding rows), or None."""
    from ..compat import is_plain_embedding

    for i in sorted(set().union(*entity_slots(model))):
        representation = model.entity_representations[i]
        if not is_plain_embedding(representation):
            return (
                f"{type(model).__name__}'s entity representation {i} ({type(representation).__name__}) is not a "
                "plain embedding table, whose rows the check relearns"
            )
    return None


def check_ranks(
    model,
    train: torch.Tensor,
    targets: torch.Tensor,
    proponent_rows: torch.Tensor,
    proponent_scores: torch.Tensor,
    k: int,
    known: KnownTriples,
    config: CheckConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The check of each prediction's explanation by its first ``k`` proponents (positive influence only):
    its filtered tail rank with its head relearned from the heads' facts, and without those proponents.

    All heads are relearned at once, without the union of the explanations (as in :func:`check_explanations`):
    a prediction whose head is another's also loses that one's proponents.

    :param proponent_rows: shape: (M, K'), rows of ``train`` best first, -1 for a filler; K' >= k
    :param proponent_scores: shape: (M, K'), their influences
    :return: ranks with (M,) and without (M,), float64 (a half where scores tie)
    """
    rows = [
        [int(r) for r, s in zip(index[:k].tolist(), score[:k].tolist()) if r >= 0 and s > 0]
        for index, score in zip(proponent_rows, proponent_scores)
    ]
    checked = check_explanations(model, train, targets, rows, known, config)
    with_ = torch.tensor([c["rank_with"] for c in checked], dtype=torch.float64)
    without = torch.tensor([c["rank_without"] for c in checked], dtype=torch.float64)
    return with_, without
