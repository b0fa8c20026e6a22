"""Benchmark workloads: a model, its training triples and test triples, built deterministically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

WORK = Path(__file__).parent / "_work"


@dataclass
class Workload:
    name: str
    model: torch.nn.Module
    train: torch.Tensor  # (N, 3)
    test: torch.Tensor  # (M_max, 3)


def _umls_conve() -> Workload:
    """ConvE d=200 on UMLS with inverse triples, trained 5 epochs by ``kgtracin train`` (cached)."""
    from kgtracin.runs import load_run
    from kgtracin.training import TrainingConfig, train_run

    run_dir = WORK / "umls-conve"
    if not (run_dir / "manifest.json").is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        train_run(
            run_dir,
            TrainingConfig(model="ConvE", epochs=5, checkpoints=1, embedding_dim=200),
            dataset="umls",
            progress=False,
        )
    run = load_run(run_dir)
    test = torch.cat([run.splits["testing"], run.splits["validation"]])  # 661 + 569 = 1230 test triples
    return Workload("umls-conve", run.model, run.training_triples, test)


def _synthetic(model_name: str, whole_split: bool = False) -> Workload:
    """A model with d=200 (random initial weights) on the synthetic FB15k-237-shaped graph.

    :param whole_split: draw FB15k-237's 20,466 test triples (with 1,000, the default, the random draw and
        so the training triples differ: the whole-split rows have their own epoch)
    """
    from pykeen.models import model_resolver

    from kgtracin.synthetic import FB15K237_SHAPE, fb15k237_like

    graph = fb15k237_like(num_testing=FB15K237_SHAPE["num_testing"]) if whole_split else fb15k237_like()
    inverse = model_name == "ConvE"
    model = model_resolver.make(
        model_name,
        {"embedding_dim": 200},
        triples_factory=graph.triples_factory(create_inverse_triples=inverse),
        random_seed=0,
    )
    name = f"synthetic-{model_name.lower()}" + ("-split" if whole_split else "")
    return Workload(name, model.eval(), graph.training, graph.testing)


def load(name: str) -> Workload:
    if name == "umls-conve":
        return _umls_conve()
    if name == "synthetic-conve-split":
        return _synthetic("ConvE", whole_split=True)
    prefix = "synthetic-"
    if name.startswith(prefix):
        models = {
            "conve": "ConvE",
            "distmult": "DistMult",
            "transe": "TransE",
            "complex": "ComplEx",
            "rotate": "RotatE",
        }
        return _synthetic(models[name[len(prefix) :]])
    raise KeyError(name)
