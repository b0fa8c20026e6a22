"""Structural support as a noisy-fact detector, the model-free half of CKRL's triple confidence.

Usage: ``python benchmarks/noisy_structure.py RUN``, where RUN is a run kept by ``benchmarks/noisy_facts.py --keep
DIR`` (``DIR/MODEL``, holding ``noisy-truth.pt``). A triple with little support in the rest of the graph is ranked
more suspicious. Prints the share of fakes and of real triples with each kind of support, then the ROC AUC and the
precision / recall at 1%, 5% and 10% of the training triples of each detector:

- ``pair``: other facts between the same two entities (either direction);
- ``paths``: undirected two-hop paths between them;
- ``resource allocation``: the pair first, then the two-hop paths each weighted by 1 / degree of the middle entity
  (CKRL's prior path confidence, to two hops);
- ``relation seen``: whether the head has another fact with the relation as head, and the tail as tail.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch


def main(path: Path) -> None:
    from kgtracin.evaluation.noisy import detection_metrics
    from kgtracin.runs import load_run

    run = load_run(path)
    truth = torch.load(path / "noisy-truth.pt")
    triples = run.training_triples.numpy()
    heads, relations, tails = triples.T
    n, m = run.model.num_entities, int(relations.max()) + 1
    ones = np.ones(len(triples))
    directed = sp.csr_matrix((ones, (heads, tails)), shape=(n, n))
    both = directed + directed.T
    adjacency = (both > 0).astype(np.float64).tocsr()
    degree = np.asarray(adjacency.sum(1)).ravel()
    pair = np.asarray(both[heads, tails]).ravel() - 1  # the triple itself removed
    paths = np.asarray((adjacency @ adjacency)[heads, tails]).ravel()  # a direct edge is never on a 2-hop path
    weighted = adjacency @ sp.diags(1.0 / np.maximum(degree, 1)) @ adjacency
    allocation = np.asarray(weighted[heads, tails]).ravel()
    as_head = sp.csr_matrix((ones, (heads, relations)), shape=(n, m))
    as_tail = sp.csr_matrix((ones, (tails, relations)), shape=(n, m))
    seen = np.minimum(np.asarray(as_head[heads, relations]).ravel() - 1, 1)
    seen += np.minimum(np.asarray(as_tail[tails, relations]).ravel() - 1, 1)

    fake = truth.numpy()
    for name, support in (("pair", pair), ("paths", paths), ("relation seen", seen)):
        print(f"{name}: fakes {float((support[fake] > 0).mean()):.3f}, real {float((support[~fake] > 0).mean()):.3f}")
    scores = {
        "pair": torch.tensor(-pair),
        "paths": torch.tensor(-paths),
        "resource allocation": torch.tensor(-(pair * 1e3 + allocation)),
        "relation seen": torch.tensor(-seen),
    }
    for name, figures in detection_metrics(scores, truth).items():
        print(name, json.dumps({key: round(value, 3) for key, value in figures.items()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    main(parser.parse_args().run)
