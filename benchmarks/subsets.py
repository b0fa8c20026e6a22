"""A parameter subset must not cost more than all parameters: ``python benchmarks/subsets.py``.

Trains the README's UMLS ConvE run (``kgtracin train --dataset umls --model ConvE``: 50 epochs, 5 checkpoints),
then times ``kgtracin explain`` of the same test triples, each in its own process, one after another, over all
parameters and over subsets, under the run's own loss (softmax) and under ``bce``. Prints a Markdown table of
wall times and their ratio to all parameters in the same run, for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBSETS = {
    "all parameters": [],
    "interaction.*": ["--parameters", "interaction.*"],
    "interaction.hr1d.* (the fc block)": ["--parameters", "interaction.hr1d.*"],
    "entity_representations.*": ["--parameters", "entity_representations.*"],
}


def _timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kgtracin", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10, help="test triples explained")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "umls"
        subprocess.run(
            [sys.executable, "-m", "kgtracin", "train", "--dataset", "umls", "--model", "ConvE", "--output", str(run)],
            check=True,
            capture_output=True,
        )
        rows = []
        for loss in ("softmax", "bce"):
            times = {}
            for name, extra in SUBSETS.items():
                times[name] = _timed(
                    [
                        "explain",
                        str(run),
                        "--split",
                        "test",
                        "--limit",
                        str(options.limit),
                        "--loss",
                        loss,
                        *extra,
                        "--output",
                        str(Path(scratch) / "o.tsv"),
                    ]
                )
            rows += [(loss, name, t, t / times["all parameters"]) for name, t in times.items()]
    print(
        f"Measured by `python benchmarks/subsets.py` on {platform.processor() or platform.machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; UMLS ConvE (the README's run), "
        f"{options.limit} test triples, top-10, each command in its own process (start-up included).\n"
    )
    print("| loss | parameters | time | ratio to all parameters |\n| --- | --- | --- | --- |")
    for loss, name, seconds, ratio in rows:
        print(f"| {loss} | `{name}` | {seconds:.2f} s | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
