"""Filtered test MRR of ``kgtracin train``'s defaults on UMLS (the issue's targets: DistMult >= 0.5, ConvE >= 0.6).

Usage: ``python benchmarks/train_defaults.py [MODEL ...]`` (default: DistMult ConvE). Prints one line per model.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from kgtracin.runs import read_manifest
from kgtracin.training import TrainingConfig, format_evaluation, train_run


def main(models: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for model in models:
            start = time.perf_counter()
            path = train_run(Path(scratch) / model, TrainingConfig(model=model), dataset="umls", progress=False)
            print(
                f"{model}: {format_evaluation(read_manifest(path)['evaluation'])}; {time.perf_counter() - start:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:] or ["DistMult", "ConvE"])
