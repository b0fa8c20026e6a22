"""``kgtracin evaluate``: deletion faithfulness and noisy-fact detection for a run's model, with baselines."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ..predictions import KnownTriples, evaluate_model
from .deletion import (
    TracInArm,
    choose_targets,
    deletion_outcome,
    far_rows,
    neighbour_rows,
    target_view,
)
from .retrain import RetrainConfig, Retrainer

__all__ = ["EvaluationConfig", "DEFAULT_ARMS", "run_deletion", "run_noisy"]

logger = logging.getLogger(__name__)

#: The TracIn variants compared by default: the two losses, raw and with normalised training gradients.
DEFAULT_ARMS: tuple[TracInArm, ...] = (
    TracInArm("softmax", "train"),
    TracInArm("softmax", None),
    TracInArm("bce", "train"),
    TracInArm("bce", None),
)


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``kgtracin evaluate`` measures."""

    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    #: "isolated" (only the deleted triples differ) or "reshuffled" (PyKEEN's loop, several seeds)
    mode: str = "isolated"
    targets: int = 20
    ks: tuple[int, ...] = (1, 10)
    arms: tuple[TracInArm, ...] = DEFAULT_ARMS
    seeds: tuple[int, ...] = (0,)
    progress: bool = True


def _retrain(retrainer: Retrainer, mode: str, seed: int):
    if mode == "isolated":
        return lambda rows=None: retrainer.isolated(rows)
    return lambda rows=None: retrainer.reshuffled(rows, seed=seed)


def run_deletion(factory, splits: dict[str, torch.Tensor], config: EvaluationConfig) -> dict:
    """Deletion-and-retrain for every arm, k and seed.

    :param factory: the training triples as a PyKEEN ``TriplesFactory``
    :param splits: all known triples by split (``testing`` gives the targets; all of them filter)
    :return: ``{"seeds": [...per seed: base MRR, targets, rows...], "table": [{arm, k, pd, tc, ...}]}``
    """
    from ..tracin import TracIn

    known = KnownTriples(splits.values())
    retrainer = Retrainer(config.retrain, factory)
    train = factory.mapped_triples
    per_seed = []
    for seed in config.seeds:
        retrain = _retrain(retrainer, config.mode, seed)
        base, checkpoints = retrain()
        quality = evaluate_model(base, splits["testing"], list(splits.values()))
        targets = choose_targets(base, splits["testing"], known, config.targets, seed)
        if targets.shape[0] == 0:
            raise RuntimeError("the model ranks no test triple first; nothing to explain")
        before = target_view(base, targets, known)
        kmax = max(config.ks)
        chosen: dict[str, torch.Tensor] = {}
        for arm in config.arms:
            tracin = TracIn(base, train, checkpoints, loss=arm.loss, normalize=arm.normalize, progress=False)
            chosen[arm.name] = tracin.influence(targets, top_k=kmax).proponents.indices
        generator = torch.Generator().manual_seed(seed)
        chosen["NH"] = torch.stack([_pad(neighbour_rows(train, t, kmax, generator), kmax) for t in targets])
        chosen["RG"] = torch.stack([_pad(far_rows(train, t, kmax, generator), kmax) for t in targets])
        outcomes = []
        jobs = [(name, k, i) for name in chosen for k in config.ks for i in range(targets.shape[0])]
        bar = tqdm(jobs, desc=f"retraining (seed {seed})", unit="model", disable=not config.progress)
        for name, k, i in bar:
            rows = chosen[name][i, :k]
            rows = rows[rows >= 0]
            pd_, tc = deletion_outcome(lambda r, retrain=retrain: retrain(r)[0], targets[i], rows, before, i, known)
            outcomes.append(
                {"arm": f"{name}-{k}" if name in ("NH", "RG") else name, "k": k, "target": i, "pd": pd_, "tc": tc}
            )
        per_seed.append(
            {
                "seed": seed,
                "base": quality,
                "num_targets": int(targets.shape[0]),
                "targets": targets.tolist(),
                "outcomes": outcomes,
            }
        )
    return {"mode": config.mode, "retrain": asdict(config.retrain), "seeds": per_seed, "table": summarise(per_seed)}


def _pad(rows: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cat([rows, rows.new_full((k - rows.shape[0],), -1)]) if rows.shape[0] < k else rows


def summarise(per_seed: list[dict]) -> list[dict]:
    """PD and TC in % per (arm, k): the mean over seeds and, with several seeds, the standard deviation."""
    import pandas as pd

    frame = pd.DataFrame([dict(o, seed=s["seed"]) for s in per_seed for o in s["outcomes"]])
    by_seed = frame.groupby(["arm", "k", "seed"], sort=False)[["pd", "tc"]].mean().mul(100).reset_index()
    rows = []
    for (arm, k), part in by_seed.groupby(["arm", "k"], sort=False):
        row = {
            "arm": arm,
            "k": int(k),
            "pd": float(part["pd"].mean()),
            "tc": float(part["tc"].mean()),
            "targets": int(frame[(frame["arm"] == arm) & (frame["k"] == k)].shape[0]),
        }
        if len(part) > 1:
            row["pd_std"], row["tc_std"] = float(part["pd"].std()), float(part["tc"].std())
        rows.append(row)
    return rows


def run_noisy(
    factory, splits: dict[str, torch.Tensor], config: EvaluationConfig, fraction: float, loss: str, corruption="triples"
) -> dict:
    """Corrupt the training set (``triples``: add ``fraction`` x N fakes, each a real triple with its head, relation
    or tail replaced, the field's protocol; ``plausible``: the same with a head or tail the relation already has
    there; ``tails``: replace a fraction of the tails), retrain, and score every detector against the truth."""
    from pykeen.triples import TriplesFactory

    from ..audit import DETECTORS, detector_scores
    from .noisy import corrupt, detection_metrics

    known = set()
    for part in splits.values():
        known |= set(map(tuple, part.tolist()))
    seed = config.retrain.seed
    corrupted, noisy = corrupt(
        corruption, factory.mapped_triples, fraction, factory.num_entities, factory.num_relations, seed, known
    )
    noisy_factory = TriplesFactory(
        corrupted, factory.entity_to_id, factory.relation_to_id, create_inverse_triples=factory.create_inverse_triples
    )
    retrainer = Retrainer(config.retrain, noisy_factory)
    model, checkpoints = _retrain(retrainer, config.mode, config.seeds[0])()
    quality = evaluate_model(model, splits["testing"], list(splits.values()))
    scores = detector_scores(
        model, noisy_factory.mapped_triples, splits.get("validation"), checkpoints, DETECTORS, loss=loss, progress=False
    )
    metrics = detection_metrics(scores, noisy)
    # the plain loss under the other TracIn loss too, so the baseline is the stronger of the two
    other = "bce" if loss == "softmax" else "softmax"
    metrics[f"loss ({other})"] = detection_metrics(
        detector_scores(model, noisy_factory.mapped_triples, None, checkpoints, ("loss",), loss=other), noisy
    )["loss"]
    return {
        "fraction": fraction,
        "corruption": corruption,
        "num_noisy": int(noisy.sum()),
        "loss": loss,
        "base": quality,
        "detectors": metrics,
    }
