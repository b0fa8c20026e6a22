"""Shared fixtures: small models trained for two epochs on Nations, saved as kgtracin runs."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from kgtracin.training import TrainingConfig, train_run

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core: one thread each, or the workers' thread pools oversubscribe the cores.
    torch.set_num_threads(1)

# Small dimensions keep the loop reference quick; every parameter is still differentiated.
MODEL_KWARGS = {"ConvE": 32, "DistMult": 16, "TransE": 16, "ComplEx": 8, "RotatE": 8, "ERMLP": 16, "TuckER": 8}


@pytest.fixture(scope="session", autouse=True)
def _session_cache_folder(tmp_path_factory):
    """Kept calibrations of session- and module-scoped fixtures go to a folder of the session, never to the
    user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KGTRACIN_CACHE_DIR", str(tmp_path_factory.mktemp("kgtracin-cache")))
        yield


@pytest.fixture(autouse=True)
def _own_cache_folder(tmp_path_factory, monkeypatch):
    """Kept calibrations go to a folder of each test's own, never to the user's cache."""
    monkeypatch.setenv("KGTRACIN_CACHE_DIR", str(tmp_path_factory.mktemp("kgtracin-cache")))


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


#: Exactness in float64, element-wise: ``|actual - expected| <= EXACT_ATOL * max|expected| + EXACT_RTOL * |expected|``.
#: Measured: ``fast`` against ``loop`` agrees to about 1e-15 of the largest score and 2e-13 element-wise, so this
#: allows a few orders of rounding and still catches a float32 leak (1e-7) or a small missing term.
EXACT_ATOL, EXACT_RTOL = 1e-12, 1e-11


def assert_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float64 rounding, element by element (both must be float64)."""
    assert actual.dtype == torch.float64 and expected.dtype == torch.float64, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(expected.abs().max())
    error = (actual - expected).abs()
    bound = EXACT_ATOL * scale + EXACT_RTOL * expected.abs()
    assert bool((error <= bound).all()), (
        f"max error {float(error.max()):.3e}, {float((error / bound.clamp_min(1e-300)).max()):.1f} times the bound "
        f"(largest value {scale:.3e})"
    )


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
