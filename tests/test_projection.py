"""The opt-in approximate mode (``projection_dim``) and the automatic test block.

The projection is approximate by design, so it is checked for being exactly what it documents: TracIn over
gradients in which every dense factor longer than K is CountSketched (``S_out dW S_in^T`` for a linear
layer, ``S g`` for a materialised small-layer gradient) and embedding rows are untouched. The reference
builds those sketched gradients from an independent per-triple ``torch.autograd.grad``, with each sketch
as a dense matrix.
"""

from __future__ import annotations

import pytest
import torch

from kgtracin import Checkpoint, KGTracinError, TracIn
from kgtracin.checkpoints import materialize
from kgtracin.gradients import Projection
from kgtracin.runs import load_run

from .conftest import assert_exact, relative_error
from .test_cli import assert_clean_error, run_cli
from .test_models import _reference_loss


def _sketch_matrix(sketch) -> torch.Tensor:
    """The documented CountSketch as a dense matrix S (dim, d): coordinate ``perm[j]`` goes, with sign
    ``signs[j]``, to bucket ``j mod dim``, so that ``apply(x) == x @ S.T``."""
    d = sketch.perm.shape[0]
    out = torch.zeros(sketch.dim, d, dtype=torch.float64)
    for j in range(d):
        out[j % sketch.dim, int(sketch.perm[j])] = float(sketch.signs[j])
    return out


def test_sketch_is_the_documented_matrix_and_reproducible():
    x = torch.randn(5, 3, 100, dtype=torch.float64)
    projection = Projection(16, seed=7)
    sketch = projection.sketch("layer.inputs", 100)
    assert torch.allclose(sketch.apply(x), x @ _sketch_matrix(sketch).T)
    # one nonzero (a sign) per coordinate, buckets balanced (100 coordinates over 16 buckets: 6 or 7 each)
    matrix = _sketch_matrix(sketch)
    assert ((matrix != 0).sum(dim=0) == 1).all() and set(matrix[matrix != 0].tolist()) == {-1.0, 1.0}
    assert set((matrix != 0).sum(dim=1).tolist()) == {6, 7}
    again = Projection(16, seed=7).sketch("layer.inputs", 100)
    assert torch.equal(again.perm, sketch.perm) and torch.equal(again.signs, sketch.signs)
    assert not torch.equal(_sketch_matrix(Projection(16, seed=8).sketch("layer.inputs", 100)), matrix)
    assert not torch.equal(_sketch_matrix(projection.sketch("other.inputs", 100)), matrix)
    assert projection.sketch("short", 16) is None and projection.apply("short", x[..., :16]) is not None


def _sketched_gradient(model, projection: Projection, hrt, loss) -> torch.Tensor:
    """One triple's gradient over all parameters, with each factor sketched as documented: embedding tables
    exact, a linear layer's weight gradient ``delta x^T`` as ``S_out delta (S_in x)^T``, and any other parameter's
    gradient sketched whole, by its name. Decided here from the modules' types. Shape (P',)."""
    named = dict(model.named_parameters())
    owners = dict(model.named_modules())
    grads = torch.autograd.grad(_reference_loss(model, hrt, loss), list(named.values()), allow_unused=True)
    parts = []
    for (name, param), grad in zip(named.items(), grads):
        grad = torch.zeros_like(param) if grad is None else grad
        owner = owners[name.rpartition(".")[0]]
        if isinstance(owner, torch.nn.Embedding):
            parts.append(grad.reshape(-1))
            continue
        if type(owner) is torch.nn.Linear:
            module = name.rpartition(".")[0]
            deltas = projection.sketch(f"{module}.deltas", param.shape[0])
            if name.endswith(".weight"):
                inputs = projection.sketch(f"{module}.inputs", param.shape[1])
                grad = grad if inputs is None else grad @ _sketch_matrix(inputs).T  # (d_out, K)
            if deltas is not None:
                grad = _sketch_matrix(deltas) @ grad
            parts.append(grad.reshape(-1))
            continue
        sketch = projection.sketch(name, param.numel())
        parts.append(grad.reshape(-1) if sketch is None else _sketch_matrix(sketch) @ grad.reshape(-1))
    return torch.cat(parts)


@pytest.fixture(
    scope="module",
    params=[("ConvE", True, "bce"), ("ConvE", True, "softmax"), ("ERMLP", False, "bce")],
    ids=lambda p: "-".join(str(x) for x in p),
)
def case(run_factory, request):
    name, inverse, loss = request.param
    run = load_run(run_factory(name, inverse))
    model = run.model.double().eval()
    checkpoints = [Checkpoint(c.state, lr) for c, lr in zip(run.checkpoints, (0.3, 0.05))]
    return model, checkpoints, run.training_triples[:40], run.splits["testing"][:4], loss


def test_projection_is_tracin_of_the_sketched_gradients(case):
    model, checkpoints, train, test, loss = case
    tracin = TracIn(
        model, train, checkpoints, projection_dim=8, projection_seed=3, progress=False, loss=loss, batch_size=16
    )
    paths = tracin.describe()
    assert any("projected to 8" in p for p in paths.values())  # something is sketched
    actual = tracin.scores(test)
    projection = Projection(8, seed=3)
    expected = torch.zeros_like(actual)
    for checkpoint in checkpoints:
        model = materialize(model, checkpoint, torch.device("cpu"), torch.float64)
        g_train = torch.stack([_sketched_gradient(model, projection, z, loss) for z in train])
        g_test = torch.stack([_sketched_gradient(model, projection, z, loss) for z in test])
        expected += checkpoint.learning_rate * g_test @ g_train.T
    assert_exact(actual, expected)
    exact = TracIn(model, train, checkpoints, method="loop", progress=False, loss=loss).scores(test)
    assert relative_error(actual, exact) > 1e-3  # and it is an approximation: sketched, not the exact scores


def test_projection_longer_than_every_factor_is_exact(case):
    model, checkpoints, train, test, loss = case
    tracin = TracIn(model, train, checkpoints, projection_dim=1 << 20, progress=False, loss=loss)
    assert not any("projected" in p for p in tracin.describe().values())
    exact = TracIn(model, train, checkpoints, method="loop", progress=False, loss=loss).scores(test)
    assert_exact(tracin.scores(test), exact)


def test_projection_top_k_is_top_k_of_its_scores(case):
    model, checkpoints, train, test, loss = case
    tracin = TracIn(model, train, checkpoints, projection_dim=8, progress=False, loss=loss)
    scores = tracin.scores(test)
    result = tracin.influence(test, top_k=5)
    assert torch.allclose(result.proponents.scores, scores.topk(5, dim=1).values)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(projection_dim=0), "projection dimension must be a positive integer"),
        (dict(projection_dim=2.5), "projection dimension must be a positive integer"),
        (dict(projection_dim=8, method="loop"), "projection applies to method 'fast' only"),
        (dict(projection_dim=8, method="vmap"), "projection applies to method 'fast' only"),
        (dict(projection_dim=8, projection_seed="a"), "projection seed must be an integer"),
    ],
)
def test_bad_projection_options(case, kwargs, match):
    model, checkpoints, train, *_ = case
    with pytest.raises(KGTracinError, match=match):
        TracIn(model, train, checkpoints, progress=False, **kwargs)


def test_cli_projection(nations_run, tmp_path, capsys):
    args = ["explain", nations_run, "--split", "test", "--limit", "3", "--top-k", "3"]
    code, out, _ = run_cli(capsys, *args, "--projection-dim", "64", "--output", tmp_path / "a.tsv")
    assert code == 0 and "approximate: dense gradient factors projected to 64" in out
    code, _, err = run_cli(capsys, *args, "--projection-dim", "0", "--output", tmp_path / "b.tsv")
    assert_clean_error(code, err, "--projection-dim")
    code, _, err = run_cli(capsys, *args, "--projection-dim", "8", "--method", "loop", "--output", tmp_path / "c.tsv")
    assert_clean_error(code, err, "method 'fast' only")
    assert not (tmp_path / "b.tsv").exists() and not (tmp_path / "c.tsv").exists()


def test_automatic_test_block(case, monkeypatch):
    """By default every test triple is one block (one training pass); a smaller memory budget gives smaller
    blocks (never below one triple, never above all of them), each block one training pass, with the same
    results."""
    from kgtracin.scoring import test_block_size

    model, checkpoints, train, _, loss = case
    test = train[:40]  # more test triples than the probe
    tracin = TracIn(model, train, checkpoints, progress=False, loss=loss)
    scorer = tracin._scorer()
    dtype = torch.float64
    assert test_block_size(scorer, test, None, 2 << 30, dtype) == test.shape[0]
    assert test_block_size(scorer, test, 7, 1, dtype) == 7  # a configured size is kept
    assert test_block_size(scorer, test, None, 1, dtype) == 1
    budgets = [int(1.25**k) for k in range(20, 120)]
    sizes = [test_block_size(scorer, test, None, budget, dtype) for budget in budgets]
    assert sizes == sorted(sizes) and sizes[0] == 1 and sizes[-1] == test.shape[0]
    whole = tracin.influence(test, top_k=3)
    budget, block = next((b, size) for b, size in zip(budgets, sizes) if 10 < size < 20)
    monkeypatch.setattr("kgtracin.tracin.TEST_BLOCK_BYTES", budget)
    calls = []
    run_range = scorer.run_range
    monkeypatch.setattr(type(scorer), "run_range", lambda self, *a, **k: (calls.append(1), run_range(*a, **k)))
    split = tracin.influence(test, top_k=3)
    assert len(calls) == -(-test.shape[0] // block)  # one training pass per block
    assert torch.equal(split.proponents.indices, whole.proponents.indices)
    assert torch.allclose(split.proponents.scores, whole.proponents.scores, rtol=1e-12, atol=0)
    assert torch.equal(split.opponents.indices, whole.opponents.indices)
