"""Shared fixtures: small models trained for two epochs on Nations, saved as kgtracin runs."""

from __future__ import annotations

import shutil

import pytest
import torch

from kgtracin.training import TrainingConfig, train_run

# Small dimensions keep the loop reference quick; every parameter is still differentiated.
MODEL_KWARGS = {"ConvE": 32, "DistMult": 16, "TransE": 16, "ComplEx": 8, "RotatE": 8, "ERMLP": 16, "TuckER": 8}


@pytest.fixture(scope="session")
def run_factory(tmp_path_factory):
    """Train (once per session) a model on Nations with 2 checkpoints: ``run_factory(model, inverse)``."""
    cache = {}

    def make(model: str, inverse: bool):
        key = (model, inverse)
        if key not in cache:
            path = tmp_path_factory.mktemp(f"run-{model}-{int(inverse)}") / "run"
            config = TrainingConfig(
                model=model,
                epochs=2,
                checkpoints=2,
                embedding_dim=MODEL_KWARGS[model],
                inverse_triples=inverse,
                batch_size=128,
                seed=1,
            )
            cache[key] = train_run(path, config, dataset="nations", progress=False)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def nations_run(run_factory):
    """A ConvE run with inverse triples, for API and CLI tests."""
    return run_factory("ConvE", True)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|"""
    return float((actual - expected).abs().max() / expected.abs().max())


def die_on_call(monkeypatch, n: int) -> list:
    """Make ``Scorer.run_range`` raise KeyboardInterrupt on its ``n``-th call, as if the process were killed then.

    :return: the list of calls so far (clear it to count again); undo with ``monkeypatch.undo()`` or by setting
        ``Scorer.run_range`` back
    """
    from kgtracin.scoring import Scorer

    original = Scorer.run_range
    calls = []

    def dying(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Scorer, "run_range", dying)
    return calls


@pytest.fixture(scope="module")
def distmult_run(run_factory):
    """A small DistMult run on Nations (no inverse triples); copy it before changing it."""
    return run_factory("DistMult", False)


@pytest.fixture
def distmult_run_copy(distmult_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(distmult_run, copy)
    return copy
