"""A deterministic synthetic graph with FB15k-237's shape, for benchmarks at full-graph scale.

FB15k-237 cannot be downloaded here; this graph has its size (14,541 entities, 237 relations, 272,115
training triples) and skewed, power-law entity and relation frequencies, which is what drives the cost of
TracIn (shared rows between test and training triples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SyntheticGraph", "fb15k237_like"]

FB15K237_SHAPE = {"num_entities": 14_541, "num_relations": 237, "num_training": 272_115, "num_testing": 20_466}


@dataclass(frozen=True)
class SyntheticGraph:
    """Training and test triples (dataset ids) of a synthetic graph."""

    training: torch.Tensor  # (N, 3), long
    testing: torch.Tensor  # (M, 3), long, disjoint from training
    num_entities: int
    num_relations: int

    def triples_factory(self, create_inverse_triples: bool = False):
        """A PyKEEN ``TriplesFactory`` over the training triples (labels ``e{i}`` and ``r{j}``)."""
        from pykeen.triples import TriplesFactory

        return TriplesFactory(
            self.training,
            entity_to_id={f"e{i}": i for i in range(self.num_entities)},
            relation_to_id={f"r{j}": j for j in range(self.num_relations)},
            create_inverse_triples=create_inverse_triples,
        )


def _zipf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Power-law probabilities over ``n`` ids, assigned to ids in random order."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.permutation(weights / weights.sum())


def fb15k237_like(
    num_training: int = FB15K237_SHAPE["num_training"],
    num_testing: int = 1000,
    num_entities: int = FB15K237_SHAPE["num_entities"],
    num_relations: int = FB15K237_SHAPE["num_relations"],
    seed: int = 0,
    entity_exponent: float = 0.7,
    relation_exponent: float = 0.7,
) -> SyntheticGraph:
    """Generate the graph; the same arguments always give the same triples.

    :return: unique training triples without self-loops, and test triples drawn from the same
        distribution but absent from training
    """
    rng = np.random.default_rng(seed)
    p_entity = _zipf(rng, num_entities, entity_exponent)
    p_relation = _zipf(rng, num_relations, relation_exponent)
    wanted = num_training + num_testing
    seen: dict[int, None] = {}
    while len(seen) < wanted:
        n = int((wanted - len(seen)) * 1.3) + 1000
        h = rng.choice(num_entities, n, p=p_entity)
        r = rng.choice(num_relations, n, p=p_relation)
        t = rng.choice(num_entities, n, p=p_entity)
        keys = (h * num_relations + r) * num_entities + t
        for key in keys[h != t].tolist():
            if key not in seen:
                seen[key] = None
                if len(seen) == wanted:
                    break
    keys = np.fromiter(seen, dtype=np.int64, count=wanted)
    triples = np.stack(
        [keys // (num_relations * num_entities), (keys // num_entities) % num_relations, keys % num_entities], axis=1
    )
    triples = torch.from_numpy(triples)
    return SyntheticGraph(triples[:num_training], triples[num_training:], num_entities, num_relations)
