"""Delete each prediction's second-ranked proponent instead of its first, retrain once, and rank again.

Usage: ``python benchmarks/e2e_second_proponent.py RUN_DIR WORKSPACE``, after ``kgtracin evaluate RUN_DIR
--protocol end-to-end --k 1 --output WORKSPACE``. Where the first proponent is the fact linking the prediction's
two entities, this asks what one other fact does with the link left in place: a bound on what any single-fact
explanation can remove. One retraining with the run's own recipe and seed (the evaluation's own code), on the
evaluation's predictions (its seed and number); prints the share still ranked first, split by whether a link is
left, and writes ``second-proponent.json`` into the workspace.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from kgtracin.evaluation.deletion import choose_targets
from kgtracin.evaluation.end_to_end import _ranks, _Retrainer, linking_rows
from kgtracin.evaluation.workspace import MARKER
from kgtracin.predictions import KnownTriples
from kgtracin.runs import load_run


def main() -> None:
    run, work = load_run(sys.argv[1]), Path(sys.argv[2])
    marker = json.loads((work / MARKER).read_text())
    known = KnownTriples(run.splits.values())
    targets = choose_targets(run.model, run.splits["testing"], known, marker["predictions"], marker["seed"])
    explanation = json.loads((work / "explanation-0.json").read_text())
    train = run.training_triples
    deleted = sorted({rows[1] for rows in explanation["indices"]})
    links = [set(linking_rows(train, t).tolist()) for t in targets]
    print(
        f"deleted {len(deleted)}, of which {sum(any(d in link for link in links) for d in deleted)} link a prediction"
    )
    ranks = _ranks(_Retrainer(run, progress=True)(deleted), targets, known)
    first = ranks == 1
    linked = torch.tensor([bool(link) for link in links])
    link_left = torch.tensor([bool(link - set(deleted)) for link in links])
    print(f"H@1 after: {first.float().mean().item():.2f}")
    print(
        f"linked predictions {int(linked.sum())}, still first {int((first & linked).sum())}; with a link left "
        f"{int(link_left.sum())}, still first {int((first & link_left).sum())}"
    )
    print(f"unlinked predictions {int((~linked).sum())}, still first {int((first & ~linked).sum())}")
    (work / "second-proponent.json").write_text(json.dumps({"ranks": ranks.tolist(), "deleted": deleted}))


if __name__ == "__main__":
    main()
