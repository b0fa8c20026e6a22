"""Which predictions survive an end-to-end arm, and what still links their two entities.

Usage: ``python benchmarks/e2e_survivors.py RUN_DIR WORKSPACE [--arm 0] [--explanation 0]``, after
``kgtracin evaluate RUN_DIR --protocol end-to-end --output WORKSPACE`` has finished that arm. For each of the
arm's predictions (those the run's model ranks first, drawn as the evaluation draws them) it prints whether the
prediction was still ranked first after the retraining, whether a fact directly linked its two entities before
the deletion, whether the explanation's top fact was that link, whether any link is left after deleting the union,
and how many 2-hop paths (a shared neighbour, any relation or direction) are left; then the survivors, labelled.
Graph arithmetic on the kept files: no model is trained.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path

from kgtracin.evaluation.deletion import choose_targets
from kgtracin.evaluation.workspace import MARKER
from kgtracin.predictions import KnownTriples
from kgtracin.runs import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--arm", type=int, default=0, help="the arm-N.json to read (0: the first variant)")
    parser.add_argument("--explanation", type=int, default=0, help="the explanation-N.json whose k facts it deleted")
    options = parser.parse_args()
    run = load_run(options.run)
    train = run.training_triples.tolist()
    marker = json.loads((options.workspace / MARKER).read_text())  # the evaluation's fingerprint
    arm = json.loads((options.workspace / f"arm-{options.arm}.json").read_text())
    explanation = json.loads((options.workspace / f"explanation-{options.explanation}.json").read_text())
    predictions = choose_targets(
        run.model,
        run.splits["testing"],
        KnownTriples(run.splits.values()),
        len(arm["ranks"]),
        marker["seed"],
    ).tolist()
    deleted = {row for rows in explanation["indices"] for row in rows[: arm["k"]]}
    left = [t for i, t in enumerate(train) if i not in deleted]
    neighbours, links = collections.defaultdict(set), collections.Counter()
    for h, _, t in left:
        neighbours[h].add(t)
        neighbours[t].add(h)
        links[frozenset((h, t))] += 1
    linked_before = collections.Counter(frozenset((h, t)) for h, _, t in train)
    rows = []
    for (h, r, t), rank, explained in zip(predictions, arm["ranks"], explanation["indices"]):
        top = train[explained[0]]
        rows.append(
            {
                "triple": (h, r, t),
                "top": top,
                "survived": rank == 1,
                "linked_before": linked_before[frozenset((h, t))] > 0,
                "top_is_link": {top[0], top[2]} == {h, t},
                "linked_after": links[frozenset((h, t))] > 0,
                "two_hop": len((neighbours[h] & neighbours[t]) - {h, t}),
            }
        )
    print(f"arm {arm['arm']}, k = {arm['k']}: {arm['deleted']} facts deleted, H@1 {arm['hits_at_1']:.2f}")
    for name, group in (("survived", True), ("removed", False)):
        chosen = [r for r in rows if r["survived"] == group]
        if not chosen:
            print(f"{name}: none")
            continue
        print(
            f"{name}: {len(chosen)}; linked before {sum(r['linked_before'] for r in chosen)}, top fact the link "
            f"{sum(r['top_is_link'] for r in chosen)}, a link left {sum(r['linked_after'] for r in chosen)}, a 2-hop "
            f"path left {sum(r['two_hop'] > 0 for r in chosen)} (median {statistics.median(r['two_hop'] for r in chosen)})"
        )
    labels = run.labels
    name = lambda t: f"{labels.entities[t[0]]} {labels.relations[t[1]]} {labels.entities[t[2]]}"
    for r in rows:
        if r["survived"]:
            print(f"  {name(r['triple'])}  <- deleted {name(r['top'])}  (2-hop paths left: {r['two_hop']})")


if __name__ == "__main__":
    main()
