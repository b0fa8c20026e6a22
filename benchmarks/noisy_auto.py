"""The audit's detector chosen from the run (``kgtracin audit --order-by auto``), against the fakes' truth.

Usage: ``python benchmarks/noisy_auto.py RUN [RUN ...] [--seed 0] [--plant plausible|triples]``, each RUN a
corrupted run kept by ``python benchmarks/noisy_facts.py MODEL [--graph DIR] --losses bce --keep DIR``
(``DIR/MODEL``, with its ``noisy-truth.pt``). For each run: the calibration (fakes planted in the run's training triples, one retraining
with the run's recipe, every detector's ROC AUC for the planted fakes, :mod:`kgtracin.evaluation.calibration`),
then every detector's ROC AUC and precision / recall at 1%, 5% and 10% for the run's own fakes, with the chosen
detector and the default (``memorization``) marked. The audit's TracIn loss (``bce``) throughout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from kgtracin.config import PLANTS


def main(runs: list[Path], seed: int, plant: str = "plausible") -> None:
    from kgtracin.audit import AUDIT_LOSS, DEFAULT_DETECTOR, detector_scores, detectors_for
    from kgtracin.evaluation.calibration import CalibrationConfig, choose_detector
    from kgtracin.evaluation.noisy import detection_metrics
    from kgtracin.runs import load_run

    for path in runs:
        run = load_run(path)
        truth = torch.load(path / "noisy-truth.pt")
        validation = run.splits.get("validation")
        detectors, _ = detectors_for(validation is not None)
        start = time.perf_counter()
        chosen, planted = choose_detector(
            run, detectors, CalibrationConfig(seed=seed, progress=False, plant=plant), loss=AUDIT_LOSS, progress=False
        )
        seconds = time.perf_counter() - start
        scores = detector_scores(
            run.model, run.training_triples, validation, run.checkpoints, detectors, loss=AUDIT_LOSS, progress=False
        )
        metrics = detection_metrics(scores, truth)
        print(f"## {path} ({type(run.model).__name__}; calibration {seconds:.0f} s, seed {seed}, {plant} planted)\n")
        print("| detector | planted fakes: ROC AUC | the run's fakes: ROC AUC | P@1% | P@5% | R@5% | P@10% | R@10% |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name in detectors:
            m = metrics[name]
            mark = " (**chosen**)" if name == chosen else ""
            mark += " (the default)" if name == DEFAULT_DETECTOR else ""
            print(
                f"| {name}{mark} | {planted[name]:.3f} | {m['auc']:.3f} | {m['precision_at_1pct']:.3f} | "
                f"{m['precision_at_5pct']:.3f} | {m['recall_at_5pct']:.3f} | {m['precision_at_10pct']:.3f} | "
                f"{m['recall_at_10pct']:.3f} |"
            )
        print(json.dumps({"run": str(path), "chosen": chosen, "planted": planted}), flush=True)
        print()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plant", choices=PLANTS, default="plausible")
    args = parser.parse_args()
    main(args.runs, args.seed, args.plant)
