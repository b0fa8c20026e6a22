"""The ``held_out`` detector costs about K trainings of the run's recipe: measured in one run.

Usage: ``python benchmarks/audit_held_out.py RUN_DIR [--folds K] [--append FILE]``, RUN_DIR made by ``kgtracin
train``. Times, each in its own process and one after another, with a cache folder of its own
(``KGTRACIN_CACHE_DIR``, empty at the start):

1. ``kgtracin audit RUN --order-by memorization``: the TracIn detectors alone;
2. ``kgtracin audit RUN --order-by held_out --folds K``: the same detectors, then K retrainings, each without a
   fold of the training triples (each kept in the cache folder), the ranking of each fold, and the ``learned``
   column;
3. the same audit again: the K retrainings read back (:mod:`kgtracin.retrainings`);
4. one retraining of the run's recipe with nothing left out (the code the detector retrains with).

Prints one JSON record with the seconds and the ratios ``(2 - 1) / 4`` (the detector's own cost in trainings,
about K less a fold's share of each), ``2 / 1`` and ``3 / 1`` (``--append FILE`` also appends it as one line).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from audit_calibration import about_run, emit  # benchmarks/ is on the path when this script runs
from real_graph import _run

_RETRAIN = """
import sys, time
from kgtracin.evaluation.end_to_end import _Retrainer
from kgtracin.runs import load_run
retrain = _Retrainer(load_run(sys.argv[1]), progress=False)
start = time.perf_counter()
retrain([])
print(time.perf_counter() - start)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--append", type=Path, help="also append the record as one line to this JSON-lines file")
    options = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    manifest = json.loads((options.run / "manifest.json").read_text())
    with tempfile.TemporaryDirectory(prefix="kgtracin-bench-") as scratch:
        os.environ["KGTRACIN_CACHE_DIR"] = str(Path(scratch) / "cache")
        out = str(Path(scratch) / "audit.tsv")
        named, _, _ = _run(["audit", str(options.run), "--order-by", "memorization", "--output", out])
        cross_fitted = ["audit", str(options.run), "--order-by", "held_out", "--folds", str(options.folds)]
        held, _, _ = _run([*cross_fitted, "--output", out])
        kept = len(list((Path(scratch) / "cache" / "retrainings").glob("*.pt")))
        if kept != options.folds:
            raise SystemExit(f"the audit kept {kept} retrainings, not {options.folds}")
        again, _, _ = _run([*cross_fitted, "--output", out])
    done = subprocess.run(
        [sys.executable, "-c", _RETRAIN, str(options.run)], capture_output=True, text=True, check=True
    )
    retraining = float(done.stdout.strip().splitlines()[-1])
    record = {
        "started": started,
        "command": f"python benchmarks/audit_held_out.py {options.run.name} --folds {options.folds}",
        **about_run(options.run, manifest),
        "folds": options.folds,
        "named_order_seconds": round(named, 1),
        "held_out_audit_seconds": round(held, 1),
        "held_out_again_seconds": round(again, 1),
        "one_retraining_seconds": round(retraining, 1),
        "held_out_cost_in_retrainings": round((held - named) / retraining, 2),
        "held_out_over_named": round(held / named, 2),
        "held_out_again_over_named": round(again / named, 2),
    }
    emit(record, options.append)


if __name__ == "__main__":
    main()
