"""Noisy-fact detection on UMLS: 5% of training tails corrupted, trained by ``kgtracin train`` defaults.

Usage: ``python benchmarks/noisy_facts.py [MODEL ...] [--schedule linear|log]`` (default: DistMult ConvE, log,
as ``kgtracin train``). For each model it prints the
filtered test MRR of the model trained on the corrupted data, then every audit detector's ROC AUC and recall in
the top 10%, under both TracIn losses, so that the plain-loss baseline of either loss stands beside them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch


def main(models: list[str], fraction: float = 0.05, schedule: str = "log") -> None:
    from pykeen.datasets import UMLS

    from kgtracin.audit import detector_scores
    from kgtracin.evaluation.noisy import corrupt_tails, detection_metrics
    from kgtracin.runs import load_run
    from kgtracin.training import TrainingConfig, train_run
    from kgtracin.triples import Labels, write_labeled_triples

    dataset = UMLS()
    labels = Labels.from_maps(dataset.training.entity_to_id, dataset.training.relation_to_id)
    known = set()
    for part in (dataset.training, dataset.validation, dataset.testing):
        known |= set(map(tuple, part.mapped_triples.tolist()))
    train, noisy = corrupt_tails(dataset.training.mapped_triples, fraction, dataset.num_entities, 0, known)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files = {
            "training": train,
            "validation": dataset.validation.mapped_triples,
            "testing": dataset.testing.mapped_triples,
        }
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
            assert torch.equal(run.labels.to_ids(labels.to_labels(train)), run.training_triples)
            epochs = [c["epoch"] for c in run.manifest["checkpoints"]]
            print(
                f"{model}: trained on {fraction:.0%} corrupted tails ({int(noisy.sum())} triples), filtered test "
                f"MRR {run.manifest['evaluation']['mrr']:.3f}, checkpoints at epochs {epochs}",
                flush=True,
            )
            for loss in ("softmax", "bce"):
                scores = detector_scores(
                    run.model,
                    run.training_triples,
                    run.splits["validation"],
                    run.checkpoints,
                    loss=loss,
                    progress=False,
                )
                metrics = {
                    k: {m: round(v, 3) for m, v in d.items()} for k, d in detection_metrics(scores, noisy).items()
                }
                print(f"  TracIn loss {loss}: {json.dumps(metrics)}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", default=["DistMult", "ConvE"])
    parser.add_argument("--schedule", choices=["linear", "log"], default="log")
    args = parser.parse_args()
    main(args.models, schedule=args.schedule)
