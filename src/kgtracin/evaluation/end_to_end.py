"""The field's end-to-end protocol (Kelpie, SIGMOD 2022; eXpath, VLDB 2025): delete explanations, retrain once.

Take N test predictions that the run's model ranks first (filtered tail ranking), explain each with its top k
proponents (or a greedy set of k, :mod:`.greedy`), delete the **union** of the explanations from the training
set, retrain **once** with the run's own recipe and seed (:func:`kgtracin.training.fit`, the code ``kgtracin
train`` ran, from the run's manifest), and rank the N predictions again: ΔH@1 and ΔMRR. One retraining per arm
and k, where Kelpie's per-prediction protocol would need one per prediction.

Arms, all from the same run and the same predictions:

* **TracIn variants**: kgtracin's default explanation, and any other settings (:class:`Variant`);
* **NH-k**: k random training facts that mention the prediction's head (Kelpie's candidate pool);
* **RG-k**: k random training facts that share no entity with the prediction: deleting them measures the
  retraining's own noise (deleted triples reshuffle every batch, unless the retraining keeps the run's batches:
  ``batches="same"``, :mod:`.batches`);
* **nothing deleted**: when retraining is bit-reproducible (checked: one epoch of retraining against the run's
  first checkpoint) this is the run's own model; otherwise a full retraining.

Each finished explanation and arm is kept in the output folder (:class:`.workspace.Workspace`), so an interrupted
evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import KGTracinError
from ..predictions import KnownTriples, tail_view
from .check import CheckConfig
from .deletion import choose_targets, far_rows
from .greedy import choose_greedily, greedy_pool
from .variants import Variant, parse_variant, variants_unsupported
from .workspace import Workspace

__all__ = [
    "Variant",
    "EndToEndConfig",
    "parse_variant",
    "run_end_to_end",
    "retraining_config",
    "linking_rows",
    "fingerprint",
    "variants_unsupported",
]

logger = logging.getLogger(__name__)

#: proponents kept per prediction: at least this many, for the locality figure (a linking fact in the top 4)
LOCALITY_DEPTH = 4


@dataclass(frozen=True)
class EndToEndConfig:
    """What the end-to-end protocol measures."""

    #: test predictions ranked first to explain (fewer when the model ranks fewer first)
    predictions: int = 100
    #: facts per explanation; one retraining per arm and k
    ks: tuple[int, ...] = (1,)
    variants: tuple[Variant, ...] = (Variant(),)
    #: also the NH-k and RG-k baselines
    baselines: bool = True
    seed: int = 0
    progress: bool = True
    #: extra TracIn options for every variant (batch size, device)
    tracin_options: tuple[tuple[str, object], ...] = field(default=())
    #: steps of the cheap check (:mod:`.check`) of every explanation; 0: no check
    check_steps: int = 10
    #: ``reshuffled``: the retraining draws its batches afresh (Kelpie's); ``same``: the run's own batches, less
    #: the deleted facts, so that only they differ (:mod:`.batches`; the lcwa loop only)
    batches: str = "reshuffled"

    def __post_init__(self) -> None:
        if self.batches not in ("reshuffled", "same"):
            raise KGTracinError(f"batches must be reshuffled or same, got {self.batches!r}")


def retraining_config(run, purpose: str = "the end-to-end protocol retrains"):
    """The run's own training recipe, from its manifest: a ``TrainingConfig`` and PyKEEN's model arguments.

    :param purpose: what needs the recipe, for the error message

    :raises KGTracinError: for a run without a kgtracin training manifest (a PyKEEN folder, checkpoints only)
    """
    from ..config import TrainingConfig

    manifest = run.manifest or {}
    training, kwargs = manifest.get("training"), manifest.get("model_kwargs")
    if not run.has_recipe:
        raise KGTracinError(
            f"{purpose} with the run's own recipe, which only a run made by kgtracin train "
            "records (its manifest.json); this run has none"
        )
    try:
        config = TrainingConfig(model=manifest["model"], inverse_triples=manifest.get("inverse_triples"), **training)
    except TypeError as error:
        raise KGTracinError(f"the run's manifest holds a training recipe kgtracin cannot read: {error}") from None
    return config, dict(kwargs)


def linking_rows(train: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Training rows that directly link the prediction's two entities (any relation, either direction).

    :param target: shape: (3,)
    :return: shape: (n,), dtype: long
    """
    h, t = int(target[0]), int(target[2])
    forward = (train[:, 0] == h) & (train[:, 2] == t)
    backward = (train[:, 0] == t) & (train[:, 2] == h)
    return (forward | backward).nonzero().squeeze(1)


def _ranks(model, targets: torch.Tensor, known: KnownTriples) -> torch.Tensor:
    """Filtered (realistic) rank of each target's tail. :return: shape: (T,), float64"""
    return tail_view(model, targets, known)[1]


def _quality(ranks: torch.Tensor) -> dict:
    return {"hits_at_1": float((ranks <= 1).double().mean()), "mrr": float((1.0 / ranks).mean())}


def _random_rows(pool: torch.Tensor, k: int, generator: torch.Generator) -> list[int]:
    rows = pool.nonzero().squeeze(1)
    return rows[torch.randperm(rows.shape[0], generator=generator)[:k]].tolist()


def _baseline_rows(train: torch.Tensor, targets: torch.Tensor, k: int, seed: int) -> dict[str, list[list[int]]]:
    """Per prediction, k random facts mentioning its head (NH-k), and k sharing no entity with it (RG-k)."""
    generator = torch.Generator().manual_seed(seed)
    near, far = [], []
    for target in targets:
        mentions_head = (train[:, 0] == target[0]) | (train[:, 2] == target[0])
        near.append(_random_rows(mentions_head, k, generator))
        far.append(far_rows(train, target, k, generator).tolist())
    return {f"NH-{k}": near, f"RG-{k}": far}


def fingerprint(run, config: EndToEndConfig) -> dict:
    """What an end-to-end evaluation measures: the run's files (hashed) and the protocol's settings."""
    digest = hashlib.sha256()
    for name in ("manifest.json", "model.pt"):
        path = None if run.path is None else run.path / name
        if path is not None and path.is_file():
            digest.update(path.read_bytes())
    return {
        "protocol": "end-to-end/1",
        "run": digest.hexdigest(),
        "predictions": config.predictions,
        "ks": list(config.ks),
        "variants": [v.name for v in config.variants],
        "baselines": config.baselines,
        "seed": config.seed,
        **({"batches": config.batches} if config.batches != "reshuffled" else {}),
        **(
            {"greedy": {"pool": greedy_pool(max(config.ks)), "steps": config.check_steps or CheckConfig.steps}}
            if any(v.selection == "greedy" for v in config.variants)
            else {}
        ),
    }


class _Retrainer:
    """Retrains the run's model with its own recipe and seed, without some training rows."""

    def __init__(self, run, progress: bool, batches: str = "reshuffled"):
        from pykeen.triples import TriplesFactory

        from .batches import same_batches_loop, same_batches_unsupported

        self.run, self.progress = run, progress
        self.config, self.kwargs = retraining_config(run)
        self.train = run.training_triples
        self.loop_cls, self._state = None, None
        if batches == "same":
            reason = same_batches_unsupported(self.config.training_loop, run.model)
            if reason:
                raise KGTracinError(reason)
            self.loop_cls = same_batches_loop(self.train)
        self._factory = lambda rows: TriplesFactory(
            rows,
            run.labels.entity_to_id,
            run.labels.relation_to_id,
            create_inverse_triples=bool(self.config.inverse_triples),
        )

    def __call__(self, deleted: list[int], epochs: int | None = None):
        from dataclasses import replace

        from ..training import build_model, fit

        keep = torch.ones(self.train.shape[0], dtype=torch.bool)
        keep[torch.as_tensor(deleted, dtype=torch.long)] = False
        factory = self._factory(self.train[keep])
        config = self.config if epochs is None else replace(self.config, epochs=epochs, checkpoints=min(epochs, 1))
        if self.loop_cls is not None and self._state is None:
            # the random state that the run's training started from: the run's model built on every fact
            build_model(config, self.kwargs, self._factory(self.train))
            self._state = torch.get_rng_state()
        model = build_model(config, self.kwargs, factory)
        if self._state is not None:  # a model whose building draws by its triples (NodePiece) moves no batch
            torch.set_rng_state(self._state)
        fit(model, config, factory, progress=self.progress, loop_cls=self.loop_cls)
        return model.eval()

    def rebuilt(self, deleted: list[int], state: dict[str, torch.Tensor]):
        """The model that ``self(deleted)`` retrains, built as it would be and given the weights ``state`` (a kept
        retraining, :mod:`kgtracin.retrainings`); ``None`` where they do not fit it."""
        from ..training import build_model

        keep = torch.ones(self.train.shape[0], dtype=torch.bool)
        keep[torch.as_tensor(deleted, dtype=torch.long)] = False
        model = build_model(self.config, self.kwargs, self._factory(self.train[keep]))
        own = model.state_dict()
        if set(own) != set(state) or any(
            own[name].shape != value.shape or own[name].dtype != value.dtype for name, value in state.items()
        ):
            return None
        model.load_state_dict(state)
        return model.eval()

    def reproduces_first_checkpoint(self) -> bool | None:
        """Whether one epoch of retraining with nothing deleted equals the run's epoch-1 checkpoint bit for bit
        (None when the run kept no epoch-1 checkpoint)."""
        records = self.run.manifest.get("checkpoints", [])
        first = [i for i, c in enumerate(records) if isinstance(c, dict) and c.get("epoch") == 1]
        if not first or len(self.run.checkpoints) != len(records):
            return None
        state = self.run.checkpoints[first[0]].load_state()
        model = self(deleted=[], epochs=1)
        return all(torch.equal(value, state[name]) for name, value in model.state_dict().items() if name in state)


def _explain(run, variant: Variant, targets: torch.Tensor, depth: int, config: EndToEndConfig) -> dict:
    from ..config import EXPLAIN_CANDIDATES
    from ..tracin import TracIn

    options = {
        "loss": run.tracin_loss,
        "candidates": EXPLAIN_CANDIDATES,
        "progress": config.progress,
        **dict(config.tracin_options),
    }
    options.update(dict(variant.options))
    start = time.perf_counter()
    checkpoints = variant.pick_checkpoints(run.checkpoints)
    result = TracIn(run.model, run.training_triples, checkpoints, labels=run.labels, **options).influence(
        targets, top_k=depth
    )
    return {
        "variant": variant.name,
        "seconds": time.perf_counter() - start,
        "indices": result.proponents.indices.tolist(),
        "scores": result.proponents.scores.double().tolist(),
    }


def _check(run, targets: torch.Tensor, explanation: dict, config: EndToEndConfig, known: KnownTriples) -> dict:
    """The cheap check (:mod:`.check`) of the predictions' top-k explanations, per k:
    ``{k: [{rank_without, rank_with}, ...]}``."""
    from .check import check_explanations, run_check_config

    check = run_check_config(run, steps=config.check_steps)
    start = time.perf_counter()
    out, with_ = {}, None
    for k in config.ks:
        rows = [
            _deleted({"indices": [i], "scores": [s]}, k) for i, s in zip(explanation["indices"], explanation["scores"])
        ]
        out[str(k)] = check_explanations(run.model, run.training_triples, targets, rows, known, check, with_)
        with_ = [c["rank_with"] for c in out[str(k)]]  # the same for every k: relearned once
    explanation["check_seconds"] = time.perf_counter() - start
    return out


def _check_summary(checks: list[dict]) -> dict:
    """Share of predictions still ranked first after the check, without and with the explanation."""
    n = max(1, len(checks))
    return {
        "hits_at_1_without": sum(c["rank_without"] <= 1 for c in checks) / n,
        "hits_at_1_with": sum(c["rank_with"] <= 1 for c in checks) / n,
    }


def _locality(explanation: dict, links: list[set[int]]) -> dict:
    """Of the predictions with a directly linking training fact: how often one is in the top 4, and first."""
    linked = [i for i, rows in enumerate(links) if rows]
    top4 = sum(bool(set(explanation["indices"][i][:LOCALITY_DEPTH]) & links[i]) for i in linked)
    first = sum(explanation["indices"][i][0] in links[i] for i in linked)
    n = max(len(linked), 1)
    return {"linked_predictions": len(linked), "in_top_4": top4 / n, "top_1": first / n}


def _deleted(explanation: dict, k: int) -> list[int]:
    """The union of every prediction's first k facts (those with a positive influence): its top k proponents, or
    its greedy set (``selection=greedy``, put first by :func:`.greedy.choose_greedily`)."""
    rows = set()
    for indices, scores in zip(explanation["indices"], explanation["scores"]):
        rows.update(i for i, s in zip(indices[:k], scores[:k]) if s > 0)
    return sorted(rows)


def run_end_to_end(run, workspace: Workspace, config: EndToEndConfig) -> dict:
    """Explain, delete, retrain once per arm and k, and measure; every finished step is kept in ``workspace``.

    :return: ``{"predictions", "before", "control", "explanations", "arms": [...], "config"}`` (also written to
        the workspace as ``end-to-end.json``)
    """
    reason = variants_unsupported(run, config.variants)
    if reason:
        raise KGTracinError(reason)
    retrainer = _Retrainer(run, config.progress, config.batches)
    if "testing" not in run.splits:
        raise KGTracinError("the run has no test split to draw predictions from")
    known = KnownTriples(run.splits.values())
    train = run.training_triples
    targets = choose_targets(run.model, run.splits["testing"], known, config.predictions, config.seed)
    if targets.shape[0] == 0:
        raise KGTracinError("the run's model ranks no test triple first; nothing to explain")
    before = _quality(_ranks(run.model, targets, known))
    links = [set(linking_rows(train, t).tolist()) for t in targets]
    depth = max(max(config.ks), LOCALITY_DEPTH)

    from .check import check_unsupported

    # the check relearns plain embedding rows: skipped, and said so, for a model whose entity rows are computed
    unchecked = check_unsupported(run.model) if config.check_steps else None
    explanations = {}
    for number, variant in enumerate(config.variants):
        name = f"explanation-{number}.json"
        record = workspace.read(name)
        changed = record is None
        if changed:
            logger.info("explaining %d predictions: %s", targets.shape[0], variant.name)
            greedy = variant.selection == "greedy"
            record = _explain(
                run, variant, targets, max(depth, greedy_pool(max(config.ks))) if greedy else depth, config
            )
            if greedy:
                choose_greedily(run, targets, record, max(config.ks), known, config.check_steps)
            record["locality"] = _locality(record, links)
        # also for an explanation kept without its check
        if config.check_steps and unchecked is None and "check" not in record:
            record["check"] = _check(run, targets, record, config, known)
            changed = True
        if changed:
            workspace.write(name, record)
        explanations[variant.name] = record

    jobs: list[tuple[str, int, list[int]]] = []
    for k in config.ks:
        jobs += [(name, k, _deleted(record, k)) for name, record in explanations.items()]
        if config.baselines:
            for arm, per_target in _baseline_rows(train, targets, k, config.seed + k).items():
                jobs.append((arm, k, sorted({row for rows in per_target for row in rows})))

    control = workspace.read("control.json")
    if control is None:
        reproducible = retrainer.reproduces_first_checkpoint()
        if reproducible:
            control = {"reproducible": True, **_quality(_ranks(run.model, targets, known)), "seconds": 0.0}
        else:
            start = time.perf_counter()
            control = {"reproducible": reproducible, **_quality(_ranks(retrainer([]), targets, known))}
            control["seconds"] = time.perf_counter() - start
        workspace.write("control.json", control)

    arms = []
    bar = tqdm(jobs, desc="retraining arms", unit="arm", disable=not config.progress)
    for number, (name, k, rows) in enumerate(bar):
        file = f"arm-{number}.json"
        record = workspace.read(file)
        if record is None or record.get("arm") != name or record.get("k") != k:
            bar.set_postfix_str(f"{name}, k={k}: {len(rows)} facts deleted")
            start = time.perf_counter()
            ranks = _ranks(retrainer(rows), targets, known)
            record = {"arm": name, "k": k, "deleted": len(rows), **_quality(ranks)}
            record.update(seconds=time.perf_counter() - start, ranks=ranks.tolist())
            workspace.write(file, record)
        record = dict(record)
        record["delta_hits_at_1"] = record["hits_at_1"] - before["hits_at_1"]
        record["delta_mrr"] = record["mrr"] - before["mrr"]
        record["delta_hits_at_1_vs_control"] = record["hits_at_1"] - control["hits_at_1"]
        record["delta_mrr_vs_control"] = record["mrr"] - control["mrr"]
        checks = (explanations.get(name) or {}).get("check", {}).get(str(k))
        if checks:
            record["check"] = _check_summary(checks)
        arms.append(record)
    return {
        "predictions": targets.tolist(),
        "before": before,
        "control": control,
        "explanations": {
            name: {
                "seconds": r["seconds"],
                "check_seconds": r.get("check_seconds"),
                "locality": r["locality"],
                "top_1": [row[0] for row in r["indices"]],
            }
            for name, r in explanations.items()
        },
        "arms": arms,
        "recipe": {"model": retrainer.config.model, "epochs": retrainer.config.epochs, "seed": retrainer.config.seed},
        "batches": config.batches,
        **({"check_skipped": unchecked} if unchecked else {}),
        "epoch_seconds": run.manifest.get("epoch_seconds"),
    }
