"""How far can a detector that judges a triple by the rest of the graph go? The held-out ceiling of noisy-fact
detection, on a run kept by ``benchmarks/noisy_facts.py --keep DIR``.

Usage: ``python benchmarks/noisy_ceiling.py RUN [RUN ...] [--folds K] [--seed S] [--plant KIND]``, each RUN a kept
noisy run (``DIR/MODEL``, holding ``noisy-truth.pt``).

TracIn's self-influence is a first-order estimate of how much a triple's own training steps lowered its loss, that
is of the gap between the loss of the model trained on it and of one trained without it. ``memorization`` divides it
by what the other triples did. Both stand in for a *leave-one-out* judgement: how well does a model that never saw
the triple predict it? This script measures that judgement itself, so the figures are a ceiling for every detector
of this kind, however exactly it estimated it:

* **held out (no retraining):** the run's final model never saw the validation and test triples. They are real
  facts held out, and the field's protocol turns a copy of each into a fresh fake (head, relation or tail replaced
  by a random one, never a known triple) that the model never saw either. Each is scored by its filtered log rank
  among all tails and all heads (and by its ``bce`` loss), and precision and recall within the top 1%, 5% and 10%
  are those of a training set that mixes the two in the run's own proportions (its real and fake triples),
  weighting each held-out triple by it. Ranks are filtered by every known triple (training, validation, test),
  where the audit's ``held_out`` column filters by the training triples it has. The log ranks are also shown
  standardised within each relation, as the audit's ``held_out`` column is (the mixture's mean and deviation per
  relation, weighted as above). This assumes a training triple, held out, looks like a validation or test triple:
  those were drawn at random from the graph, among triples whose entities keep other facts;
* **cross-fitted (``--folds K``):** the audit's ``held_out`` detector (:mod:`kgtracin.evaluation.held_out`, K
  retrainings with the run's recipe and seed): each training triple scored by a model retrained without its fold,
  standardised within its relation (the audit's column) and raw. Measured on the run's own fakes, but each model
  sees (K-1)/K of the graph;
  With ``--folds``, also the audit's ``learned`` column (:mod:`kgtracin.evaluation.learned`), from the same
  retrainings, planting the field's fakes (``--plant triples``, the default) or plausible ones;
* **the graph's own cues (no model, :mod:`kgtracin.consistency`):** role surprise (type compatibility: how often
  the entities that share another role of the triple's head also play its head role, best over those roles, and
  likewise for the tail), pair surprise (the other relations linking the triple's pair, as rules for its own),
  multiplicity surprise (a second tail where the relation's other heads have one), and the audit's
  ``consistency`` column (role + pair).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

BUDGETS = (0.01, 0.05, 0.10)
BOTH, BY_RELATION = "log rank, both sides", "both sides, by relation"


def mixture_metrics(real: torch.Tensor, fake: torch.Tensor, num_real: int, num_fake: int) -> dict:
    """ROC AUC, and precision and recall within the top 1%, 5% and 10% of a set of ``num_real`` real and
    ``num_fake`` fake triples whose scores follow ``real`` and ``fake`` (higher: more suspicious).

    :param real: shape: (R,), held-out real triples' scores; each stands for ``num_real / R`` triples
    :param fake: shape: (F,), fresh fakes' scores; each stands for ``num_fake / F`` triples
    """
    from kgtracin.evaluation.noisy import roc_auc

    scores = torch.cat([real, fake]).double()
    is_fake = torch.cat([torch.zeros(real.shape[0], dtype=torch.bool), torch.ones(fake.shape[0], dtype=torch.bool)])
    weight = torch.where(is_fake, num_fake / fake.shape[0], num_real / real.shape[0]).double()
    order = torch.argsort(scores, descending=True, stable=True)
    taken, found = weight[order].cumsum(0), (weight * is_fake)[order].cumsum(0)
    out = {"auc": roc_auc(scores, is_fake)}
    total = num_real + num_fake
    for budget in BUDGETS:
        at = int(torch.searchsorted(taken, torch.tensor(budget * total, dtype=torch.float64)).clamp_max(len(taken) - 1))
        name = f"{round(budget * 100)}pct"
        out[f"precision_at_{name}"] = float(found[at] / taken[at])
        out[f"recall_at_{name}"] = float(found[at] / num_fake)
    return out


def rank_scores(model, triples: torch.Tensor, known) -> dict[str, torch.Tensor]:
    """Filtered log ranks (tail side, head side, their sum) and ``bce`` loss: higher is less plausible.

    :param triples: shape: (B, 3), dtype: long
    """
    from kgtracin.audit import plain_losses
    from kgtracin.evaluation.held_out import ranks_both_ways

    tail, head = (ranks.log() for ranks in ranks_both_ways(model, triples, known))
    return {
        BOTH: tail + head,
        "log rank, tail": tail,
        "log rank, head": head,
        "bce loss": plain_losses(model, triples, "bce").double(),
    }


def show(title: str, metrics: dict) -> None:
    print(f"  {title}")
    for name, m in metrics.items():
        print(
            f"    {name:24s} auc {m['auc']:.3f}  P@1% {m['precision_at_1pct']:.3f}  P@5% {m['precision_at_5pct']:.3f}"
            f"  R@5% {m['recall_at_5pct']:.3f}  P@10% {m['precision_at_10pct']:.3f}  R@10% {m['recall_at_10pct']:.3f}",
            flush=True,
        )


def main(paths: list[Path], folds: int, seed: int, plant: str = "triples") -> None:
    from kgtracin.consistency import consistency_scores, multiplicity_surprise, pair_surprise, role_surprise
    from kgtracin.evaluation.held_out import RELATION_PRIOR, HeldOutConfig, standardized_by_relation
    from kgtracin.evaluation.noisy import corrupt_triples, detection_metrics
    from kgtracin.predictions import KnownTriples
    from kgtracin.runs import load_run

    for path in paths:
        run, truth = load_run(path), torch.load(path / "noisy-truth.pt")
        train = run.training_triples
        held = torch.cat([run.splits[name] for name in ("validation", "testing") if name in run.splits])
        known_set = {tuple(t) for split in run.splits.values() for t in split.tolist()}
        mixed, is_fake = corrupt_triples(
            held, 0.5, len(run.labels.entities), len(run.labels.relations), seed, known_set
        )
        fakes = mixed[is_fake]
        known = KnownTriples([train, held])
        model = run.model.eval()
        num_fake = int(truth.sum())
        print(
            f"{path}: {train.shape[0]} training triples, {num_fake} fakes; {held.shape[0]} held-out real, "
            f"{fakes.shape[0]} fresh fakes",
            flush=True,
        )
        real_scores, fake_scores = rank_scores(model, held, known), rank_scores(model, fakes, known)
        num_real = train.shape[0] - num_fake
        both = torch.cat([real_scores[BOTH], fake_scores[BOTH]])
        weights = torch.cat(
            [
                torch.full((held.shape[0],), num_real / held.shape[0], dtype=torch.float64),
                torch.full((fakes.shape[0],), num_fake / fakes.shape[0], dtype=torch.float64),
            ]
        )
        relations = torch.cat([held[:, 1], fakes[:, 1]])
        standardized = standardized_by_relation(both, relations, RELATION_PRIOR, weights)
        real_scores[BY_RELATION], fake_scores[BY_RELATION] = standardized.split([held.shape[0], fakes.shape[0]])
        show(
            "held out, the run's final model (leave-one-out ceiling)",
            {k: mixture_metrics(real_scores[k], fake_scores[k], num_real, num_fake) for k in real_scores},
        )
        cues = {
            "consistency (role + pair)": consistency_scores(train),
            "role surprise (type compatibility)": role_surprise(train),
            "pair surprise": pair_surprise(train),
            "multiplicity surprise": multiplicity_surprise(train),
        }
        show("the graph's own cues (no model), the run's own fakes", detection_metrics(cues, truth))
        if folds > 1:
            from kgtracin.evaluation.learned import LearnedConfig, cross_fitted_detectors

            config = HeldOutConfig(folds=folds, seed=seed, by_relation=False, progress=False)
            out = cross_fitted_detectors(
                run, config, LearnedConfig(plant=plant, seed=seed)
            )  # raw held_out: standardised below
            column = standardized_by_relation(out["held_out"], train[:, 1], config.relation_prior)
            scores = {"learned": out["learned"], "held_out": column, "held_out, raw log ranks": out["held_out"]}
            show(f"cross-fitted, {folds} folds, the run's own fakes", detection_metrics(scores, truth))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--folds", type=int, default=0, help="also cross-fit with this many retrainings (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh fakes and of the folds")
    parser.add_argument("--plant", default="triples", help="the fakes the learned column plants: triples or plausible")
    args = parser.parse_args()
    main(args.runs, args.folds, args.seed, args.plant)
