"""``kgtracin train``'s defaults per model: recipes that train a model worth explaining, on a small graph (Nations,
UMLS) and on a real one (the WordNet graph of ``benchmarks/wordnet_graph.py``, 38k entities), on two cores.

Two things in PyKEEN's own defaults keep a model from learning under kgtracin's LCWA cross-entropy training on a
graph of that size (measured on the WordNet graph, BENCHMARKS.md):

* **DistMult** normalises every entity row to unit length after each step (``entity_constrainer``). With unit
  rows a score is at most the largest relation weight, so the softmax over 38k tails stays flat: the loss
  barely moves from ``log(38k)`` (MRR 0.005 after one epoch; 0.187 without the constraint).
* **ComplEx** draws its rows from a standard normal and regularises every row it scores, which under LCWA is
  every entity: initial scores of about +-10 make the first epochs undo the initialisation (MRR 0.000 after two
  epochs; 0.337 with Xavier-normal rows and no regulariser).

The recipe also sets a dimension where PyKEEN's default is too small for a real graph. Whatever the user gives
(``--embedding-dim``) wins. **Epochs**: by default as many as make about :data:`DEFAULT_STEPS` optimiser steps,
at most :data:`~kgtracin.config.DEFAULT_EPOCHS`: 50 epochs on Nations or UMLS (a few batches each), about 17 on
the WordNet graph, so that a real graph trains in minutes, not hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Recipe", "RECIPES", "recipe_for", "DEFAULT_STEPS", "default_epochs"]

#: optimiser steps the default number of epochs aims at
DEFAULT_STEPS = 4000


@dataclass(frozen=True)
class Recipe:
    """What ``kgtracin train`` adds to PyKEEN's defaults for one model.

    :param embedding_dim: the default dimension (None: PyKEEN's)
    :param model_kwargs: PyKEEN model arguments (JSON values: they are stored in the run's manifest)
    """

    embedding_dim: int | None = None
    model_kwargs: dict = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "DistMult": Recipe(embedding_dim=200, model_kwargs={"entity_constrainer": None}),
    "ComplEx": Recipe(
        embedding_dim=100,
        model_kwargs={
            "entity_initializer": "xavier_normal",
            "relation_initializer": "xavier_normal",
            "regularizer": None,
        },
    ),
}


def recipe_for(model: str) -> Recipe:
    """The model's recipe (an empty one: PyKEEN's defaults, for models without one)."""
    return RECIPES.get(model, Recipe())


def default_epochs(batches_per_epoch: int, cap: int) -> int:
    """``min(cap, ceil(DEFAULT_STEPS / batches_per_epoch))``, at least 1."""
    return max(1, min(cap, math.ceil(DEFAULT_STEPS / max(1, batches_per_epoch))))
