"""The synthetic FB15k-237-shaped graph: deterministic, unique, skewed, test disjoint from training."""

from __future__ import annotations

import torch

from kgtracin.synthetic import FB15K237_SHAPE, fb15k237_like


def test_small_graph_properties():
    graph = fb15k237_like(num_training=20_000, num_testing=300, num_entities=2_000, num_relations=40, seed=3)
    assert graph.training.shape == (20_000, 3) and graph.testing.shape == (300, 3)
    everything = torch.cat([graph.training, graph.testing])
    assert torch.unique(everything, dim=0).shape[0] == everything.shape[0]  # unique, test disjoint
    assert (everything[:, 0] != everything[:, 2]).all()
    assert everything[:, [0, 2]].max() < 2_000 and everything[:, 1].max() < 40
    degree = torch.bincount(graph.training[:, [0, 2]].reshape(-1), minlength=2_000).double()
    assert degree.max() > 10 * degree.median()  # skewed
    again = fb15k237_like(num_training=20_000, num_testing=300, num_entities=2_000, num_relations=40, seed=3)
    assert torch.equal(graph.training, again.training) and torch.equal(graph.testing, again.testing)
    other = fb15k237_like(num_training=20_000, num_testing=300, num_entities=2_000, num_relations=40, seed=4)
    assert not torch.equal(graph.training, other.training)


def test_default_shape_is_fb15k237():
    assert FB15K237_SHAPE == {
        "num_entities": 14_541,
        "num_relations": 237,
        "num_training": 272_115,
        "num_testing": 20_466,
    }
    graph = fb15k237_like(num_testing=10)
    assert graph.training.shape == (272_115, 3)
    assert int(graph.training[:, [0, 2]].max()) < 14_541 and int(graph.training[:, 1].max()) < 237
    factory = graph.triples_factory()
    assert factory.num_entities == 14_541 and factory.num_relations == 237
