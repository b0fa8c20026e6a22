"""Scoring all tails for training, against one matrix product: ``python benchmarks/train_scorer.py``.

For each model, built as ``kgtracin train`` builds it (its recipe: ComplEx at d = 100 complex without the
regulariser, DistMult at d = 200 without the entity constraint; PyKEEN's default dimension otherwise: 200 for
ConvE and RotatE, 50 for TransE), one LCWA step's scoring on a
WordNet-sized table (37,876 entities, 256 queries): the forward and backward pass of ``score_t`` followed by the
cross-entropy, timed with PyKEEN's own forward and with kgtracin's scorer (:mod:`kgtracin.scorers`: matrix
products, or direct distances for TransE and RotatE), beside the bound: the same loss computed from one plain
matrix product ``(B, D) @ (D, E)`` of leaf copies of the model's own entity rows (D: the rows' real width, 2 d
for complex rows). Best of 3 after a warm-up, in one process. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import platform
import time

import torch

from kgtracin.compat import embedding_table
from kgtracin.scorers import matrix_products

ENTITIES, QUERIES, RELATIONS = 37_876, 256, 11
TEMPORARY_BYTES = 10 * 2**30


def _best(step, repeats: int = 3) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def _model(name: str):
    from pykeen.models import model_resolver
    from pykeen.triples import TriplesFactory

    generator = torch.Generator().manual_seed(0)
    triples = torch.stack(
        [
            torch.randint(ENTITIES, (4 * ENTITIES,), generator=generator),
            torch.randint(RELATIONS, (4 * ENTITIES,), generator=generator),
            torch.randint(ENTITIES, (4 * ENTITIES,), generator=generator),
        ],
        dim=1,
    )
    from kgtracin.recipes import recipe_for

    factory = TriplesFactory(triples, {str(i): i for i in range(ENTITIES)}, {str(i): i for i in range(RELATIONS)})
    recipe = recipe_for(name)  # the model as `kgtracin train` builds it (ComplEx: d = 100 complex, no regulariser)
    kwargs = dict(recipe.model_kwargs)
    if recipe.embedding_dim is not None:  # otherwise PyKEEN's default, as `kgtracin train` leaves it
        kwargs["embedding_dim"] = recipe.embedding_dim
    return model_resolver.make(name, kwargs, triples_factory=factory, random_seed=0), triples


def main() -> None:
    targets = torch.randint(ENTITIES, (QUERIES,), generator=torch.Generator().manual_seed(1))
    print(
        f"Measured by `python benchmarks/train_scorer.py` on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n"
    )
    print(
        "| model | PyKEEN's forward | kgtracin's | one matrix product (bound) | kgtracin / bound |\n"
        "| --- | --- | --- | --- | --- |"
    )
    for name in ("DistMult", "ComplEx", "ConvE", "TransE", "RotatE"):
        model, triples = _model(name)
        model.train()
        hr = triples[:QUERIES, :2]

        def step(model=model, hr=hr):
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model.score_t(hr), targets).backward()

        # PyKEEN's forward broadcasts a (B, E, D) tensor; past TEMPORARY_BYTES it is not run (it would swap)
        table = embedding_table(model.entity_representations[0])
        temporary = QUERIES * table.shape[0] * table.shape[1] * table.element_size()
        theirs = _best(step) if temporary <= TEMPORARY_BYTES else None
        with matrix_products(model):
            ours = _best(step)
        # the bound uses the model's own entity rows, so that its numbers (and any denormal slowness of the
        # softmax's gradient they cause on a CPU) are the model's
        table = embedding_table(model.entity_representations[0]).detach().clone().requires_grad_(True)
        queries = table.detach()[:QUERIES].clone().requires_grad_(True)
        bound = _best(
            lambda queries=queries, table=table: torch.nn.functional.cross_entropy(
                queries @ table.T, targets
            ).backward()
        )
        pykeen = f"{theirs:.3f} s" if theirs is not None else f"not run ({temporary / 2**30:.1f} GB temporary)"
        print(f"| {name} | {pykeen} | {ours:.3f} s | {bound:.3f} s | {ours / bound:.1f}x |")


if __name__ == "__main__":
    main()
