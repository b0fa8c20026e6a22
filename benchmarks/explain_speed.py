"""Explaining on a trained run, against one training epoch of the same run.

Usage: ``python benchmarks/explain_speed.py RUN_DIR [--limit 100] [--candidates all neighbourhood]``.

Times ``kgtracin explain RUN_DIR --split test --limit N --candidates C`` in its own process for each candidate
set (``all``: every training triple; ``neighbourhood``: those sharing an entity with the test triple), with its
peak RSS, and divides by the run's median training epoch (``epoch_seconds`` in its manifest, measured by
``kgtracin train`` on the same machine). Also reports how many training triples the neighbourhood holds, and
whether the two candidate sets give the same top proponent. Prints one JSON record (``--append FILE``: also
appends it to a JSON-lines file, as ``benchmarks/explain_speed.jsonl`` holds them).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from real_graph import _run  # benchmarks/ is on the path when this script runs


def _explain(run: Path, limit: int, candidates: str, output: Path) -> tuple[float, float]:
    args = ["explain", str(run), "--split", "test", "--candidates", candidates, "--output", str(output)]
    if limit > 0:
        args += ["--limit", str(limit)]
    seconds, peak, _ = _run(args)
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--limit", type=int, default=100, help="test triples (-1: the whole test split)")
    parser.add_argument("--candidates", nargs="+", default=["neighbourhood", "all"])
    parser.add_argument("--append", type=Path, help="also append the record as one line to this JSON-lines file")
    args = parser.parse_args()
    import pandas as pd
    import torch

    from kgtracin.runners.neighbourhood import neighbourhood_rows
    from kgtracin.runs import load_run

    run = load_run(args.run)
    epoch = statistics.median(run.manifest["epoch_seconds"])
    test = run.splits["testing"] if args.limit < 0 else run.splits["testing"][: args.limit]
    record = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "run": str(args.run),
        "model": run.manifest["model"],
        "training_triples": int(run.training_triples.shape[0]),
        "test_triples": int(test.shape[0]),
        "neighbourhood_triples": int(neighbourhood_rows(run.training_triples, test).numel()),
        "checkpoints": len(run.checkpoints),
        "median_epoch_seconds": epoch,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
    }
    tops = {}
    with tempfile.TemporaryDirectory() as scratch:
        for candidates in args.candidates:
            output = Path(scratch) / f"{candidates}.tsv"
            seconds, peak = _explain(args.run, args.limit, candidates, output)
            record[candidates] = {"seconds": round(seconds, 1), "epochs": round(seconds / epoch, 2), "peak_gb": peak}
            frame = pd.read_csv(output, sep="\t")
            first = frame[(frame["kind"] == "proponent") & (frame["rank"] == 1)]
            tops[candidates] = dict(zip(first["test_index"], first["train_index"]))
    if len(tops) == 2:
        a, b = tops.values()
        record["same_top_proponent"] = sum(a.get(i) == b.get(i) for i in a) / max(1, len(a))
    print(json.dumps(record, indent=1))
    if args.append is not None:
        with args.append.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
