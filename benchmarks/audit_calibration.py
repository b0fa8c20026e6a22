"""The audit's default order costs one training the first time and nothing after: measured in one run.

Usage: ``python benchmarks/audit_calibration.py RUN_DIR [--append FILE]``, RUN_DIR made by ``kgtracin train``.
Times, each in its own process and one after another, with a cache folder of its own (``KGTRACIN_CACHE_DIR``):

1. ``kgtracin audit RUN --order-by memorization``: the detectors alone;
2. ``kgtracin audit RUN``, the first time: the calibration (one retraining of the run's recipe with planted fakes,
   and the detectors on it), then the detectors;
3. ``kgtracin audit RUN`` again: the choice read back.

Prints one JSON record with the seconds, their ratios to (1) and to the run's own training (the sum of its
``epoch_seconds``), and the detector chosen (``--append FILE`` also appends it as one line).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from real_graph import _run  # benchmarks/ is on the path when this script runs


def about_run(run: Path, manifest: dict) -> dict:
    """The machine, the run's model and its number of training triples, for a benchmark record."""
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} threads",
        "model": manifest.get("model"),
        "training_triples": len((run / "triples" / "training.tsv").read_text(encoding="utf-8").splitlines()),
    }


def emit(record: dict, append: Path | None) -> None:
    """Print the record, and append it as one line to ``append`` when given."""
    print(json.dumps(record, indent=2))
    if append:
        with open(append, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--append", type=Path, help="also append the record as one line to this JSON-lines file")
    options = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    manifest = json.loads((options.run / "manifest.json").read_text())
    training = sum(manifest.get("epoch_seconds") or [])
    with tempfile.TemporaryDirectory(prefix="kgtracin-bench-") as scratch:
        os.environ["KGTRACIN_CACHE_DIR"] = str(Path(scratch) / "cache")
        out = str(Path(scratch) / "audit.tsv")
        named, _, _ = _run(["audit", str(options.run), "--order-by", "memorization", "--output", out])
        first, _, said = _run(["audit", str(options.run), "--output", out])
        again, _, said_again = _run(["audit", str(options.run), "--output", out])
    chosen = said.split("ordering by ")[1].split()[0] if "ordering by " in said else None
    record = {
        "started": started,
        "command": f"python benchmarks/audit_calibration.py {options.run.name}",
        **about_run(options.run, manifest),
        "run_training_seconds": round(training, 1),
        "named_order_seconds": round(named, 1),
        "first_audit_seconds": round(first, 1),
        "next_audit_seconds": round(again, 1),
        "first_over_named": round(first / named, 2),
        "next_over_named": round(again / named, 2),
        "first_over_run_training": round(first / training, 2) if training else None,
        "chosen": chosen,
        "read_back": "read back from" in said_again,
    }
    emit(record, options.append)


if __name__ == "__main__":
    main()
