"""Noisy-fact detection by the field's protocol (CKRL, KGTtm, CAGED), on a model trained by ``kgtracin train``.

Usage: ``python benchmarks/noisy_facts.py [MODEL ...] [--graph DIR] [--fraction 0.05] [--corruption triples|plausible|tails]
[--validation-sample N] [--schedule log|linear] [--losses softmax bce] [--keep DIR] [--seed S]`` (default: DistMult ConvE on UMLS, 5% fakes, ``kgtracin
train``'s defaults).

``--corruption triples`` (default) adds ``fraction`` x N fake triples, each a copy of a real one with its head,
relation or tail (chosen uniformly) replaced by a random one; ``plausible`` adds fakes whose new head or tail is
one the relation already has there (they fit the graph's types); ``tails`` replaces a fraction of the tails, as
kgtracin's earlier figures did. ``--graph DIR`` reads ``train.tsv``, ``valid.tsv`` and ``test.tsv`` (e.g. the
WordNet graph of ``benchmarks/wordnet_graph.py``) instead of UMLS. For each model it trains on the corrupted
data, prints the filtered test MRR, then every audit detector's ROC AUC and precision / recall at 1%, 5% and
10% of the training triples, under each TracIn loss of ``--losses`` (default both), so that the plain-loss
baseline of either loss stands beside them. ``softmax`` validation detectors form (validation x batch) kernels
over all entities: on a graph of tens of thousands of entities, sample the validation triples or take ``bce``. The validation detectors use ``--validation-sample`` validation triples (default: all).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch


def _splits(graph: Path | None):
    """Labels and (training, validation, testing) ids: UMLS, or a folder of labelled TSV files."""
    from kgtracin.triples import Labels, read_labeled_triples

    if graph is None:
        from pykeen.datasets import UMLS

        dataset = UMLS()
        labels = Labels.from_maps(dataset.training.entity_to_id, dataset.training.relation_to_id)
        return labels, [p.mapped_triples for p in (dataset.training, dataset.validation, dataset.testing)]
    parts = [read_labeled_triples(graph / f"{name}.tsv") for name in ("train", "valid", "test")]
    entities = sorted({x for p in parts for x in set(p[:, 0]) | set(p[:, 2])})
    relations = sorted({x for p in parts for x in set(p[:, 1])})
    labels = Labels(tuple(entities), tuple(relations))
    return labels, [labels.to_ids(p) for p in parts]


def main(models, graph, fraction, corruption, validation_sample, schedule, losses, keep=None, seed=0) -> None:
    from kgtracin.audit import detector_scores
    from kgtracin.evaluation.noisy import corrupt, detection_metrics
    from kgtracin.runs import load_run
    from kgtracin.training import TrainingConfig, train_run
    from kgtracin.triples import write_labeled_triples

    labels, (training, validation, testing) = _splits(graph)
    known = set()
    for part in (training, validation, testing):
        known |= set(map(tuple, part.tolist()))
    num_entities, num_relations = len(labels.entities), len(labels.relations)
    train, noisy = corrupt(corruption, training, fraction, num_entities, num_relations, seed, known)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch) if keep is None else keep
        scratch.mkdir(parents=True, exist_ok=True)
        files = {"training": train, "validation": validation, "testing": testing}
        for name, triples in files.items():
            write_labeled_triples(scratch / f"{name}.tsv", labels.to_labels(triples))
        for model in models:
            path = train_run(
                scratch / model,
                TrainingConfig(model=model, checkpoint_schedule=schedule),
                **{name: str(scratch / f"{name}.tsv") for name in files},
                progress=False,
            )
            run = load_run(path)
            fakes = set(map(tuple, labels.to_labels(train[noisy]).tolist()))
            truth = torch.tensor([tuple(t) in fakes for t in run.labels.to_labels(run.training_triples).tolist()])
            assert int(truth.sum()) == int(noisy.sum())
            torch.save(truth, path / "noisy-truth.pt")  # which run.training_triples rows are fake (kept with --keep)
            epochs = [c["epoch"] for c in run.manifest["checkpoints"]]
            print(
                f"{model}: {corruption} corruption, {int(noisy.sum())} noisy of {train.shape[0]} training triples, "
                f"filtered test MRR {run.manifest['evaluation']['mrr']:.3f}, checkpoints at epochs {epochs}",
                flush=True,
            )
            valid = run.splits["validation"]
            if validation_sample:
                order = torch.randperm(valid.shape[0], generator=torch.Generator().manual_seed(0))
                valid = valid[order[:validation_sample]]
            for loss in losses:
                scores = detector_scores(
                    run.model, run.training_triples, valid, run.checkpoints, loss=loss, progress=False
                )
                metrics = {
                    k: {m: round(v, 3) for m, v in d.items()} for k, d in detection_metrics(scores, truth).items()
                }
                print(f"  TracIn loss {loss}: {json.dumps(metrics)}", flush=True)


if __name__ == "__main__":
    import argparse

    from kgtracin.config import CORRUPTIONS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=["DistMult", "ConvE"])
    parser.add_argument("--graph", type=Path, default=None, help="folder with train.tsv, valid.tsv, test.tsv")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--corruption", choices=CORRUPTIONS, default="triples")
    parser.add_argument("--validation-sample", type=int, default=None)
    parser.add_argument("--schedule", choices=["linear", "log"], default="log")
    parser.add_argument("--losses", nargs="+", choices=["softmax", "bce"], default=["softmax", "bce"])
    parser.add_argument("--keep", type=Path, default=None, help="keep the corrupted splits and runs in this new folder")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the fakes (a replicate of the field; training keeps its own)"
    )
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep} exists; give a new folder")
    main(
        args.models,
        args.graph,
        args.fraction,
        args.corruption,
        args.validation_sample,
        args.schedule,
        args.losses,
        args.keep,
        args.seed,
    )
