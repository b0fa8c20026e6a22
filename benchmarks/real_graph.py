"""kgtracin on a real graph: ``python benchmarks/real_graph.py --model DistMult [--epochs N] [--explain 100]``.

Without ``--epochs`` (and ``--embedding-dim``, ...) ``kgtracin train`` runs with its defaults.

Builds the WN18RR-like WordNet graph (``benchmarks/wordnet_graph.py``, Debian's ``wordnet-base``), trains one
model on it with ``kgtracin train`` (timing every epoch and recording the filtered test MRR), then times
``kgtracin explain`` of the first ``--explain`` test triples and, with ``--audit``, ``kgtracin audit`` of every
training triple, each in its own process, with its peak RSS. Ratios are to the mean training epoch of the same
run. Appends one JSON record per run to ``benchmarks/real_graph.jsonl`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def _run(args: list[str]) -> tuple[float, float, str]:
    """Run ``python -m kgtracin ARGS`` under GNU time: (wall seconds, peak RSS in GB, stdout)."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "peak-kb %M", sys.executable, "-m", "kgtracin", *args], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"kgtracin {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    peak = int(done.stderr.strip().splitlines()[-1].split()[-1])
    return seconds, peak / 2**20, done.stdout


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="DistMult")
    parser.add_argument("--epochs", type=int, default=None, help="default: kgtracin train's")
    parser.add_argument("--embedding-dim", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--strict", action="store_true", help="the graph with FB15k-237's test rule")
    parser.add_argument("--explain", type=int, default=0, help="test triples to explain (0: none; -1: all)")
    parser.add_argument("--audit", action="store_true", help="also time the audit of every training triple")
    parser.add_argument("--keep", default=None, help="keep the graph and the run in this folder")
    options = parser.parse_args()
    work = Path(options.keep) if options.keep else Path(tempfile.mkdtemp(prefix="kgtracin-real-"))
    graph = work / ("wordnet-strict" if options.strict else "wordnet")
    if not (graph / "train.tsv").is_file():
        subprocess.run(
            [sys.executable, str(HERE / "wordnet_graph.py"), "--output", str(graph)]
            + (["--strict"] if options.strict else []),
            check=True,
        )
    run = work / f"run-{options.model.lower()}-{options.epochs or 'default'}-{time.strftime('%Y%m%d-%H%M%S')}"
    train = [
        "train",
        "--training",
        str(graph / "train.tsv"),
        "--validation",
        str(graph / "valid.tsv"),
        "--testing",
        str(graph / "test.tsv"),
        "--model",
        options.model,
        "--output",
        str(run),
    ]
    for flag, value in (
        ("--epochs", options.epochs),
        ("--embedding-dim", options.embedding_dim),
        ("--learning-rate", options.learning_rate),
        ("--batch-size", options.batch_size),
    ):
        if value is not None:
            train += [flag, str(value)]
    seconds, rss, _stdout = _run(train)
    manifest = json.loads((run / "manifest.json").read_text())
    record = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "graph": graph.name,
        "model": options.model,
        "epochs": manifest["training"]["epochs"],
        "training": manifest["training"],
        "train_seconds": round(seconds, 1),
        "train_peak_rss_gb": round(rss, 2),
        "evaluation": manifest["evaluation"],
        "command": "kgtracin " + " ".join(train),
    }
    epochs = manifest["epoch_seconds"]  # each epoch's wall time, from kgtracin train's manifest
    epoch = sum(epochs) / len(epochs)
    record["epoch_seconds"] = round(epoch, 1)
    if options.explain:
        limit = [] if options.explain < 0 else ["--limit", str(options.explain)]
        seconds, rss, _ = _run(
            ["explain", str(run), "--split", "test", *limit, "--output", str(work / "influence.tsv")]
        )
        record["explain"] = {
            "triples": options.explain if options.explain > 0 else len(_lines(graph / "test.tsv")),
            "seconds": round(seconds, 1),
            "peak_rss_gb": round(rss, 2),
            "epochs": round(seconds / epoch, 2),
        }
    if options.audit:
        # the detectors' cost: a named order skips the calibration (one training of the recipe, the first time)
        order = ["--order-by", "memorization"]
        seconds, rss, _ = _run(["audit", str(run), *order, "--output", str(work / "audit.tsv")])
        record["audit"] = {
            "seconds": round(seconds, 1),
            "peak_rss_gb": round(rss, 2),
            "epochs": round(seconds / epoch, 2),
        }
    with open(HERE / "real_graph.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
