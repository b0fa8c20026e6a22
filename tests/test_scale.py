"""Sharding, the resumable store, torchrun (gloo, 2 processes) and reduced precision."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from kgtracin import TracIn
from kgtracin.runs import load_run
from kgtracin.scoring import Scorer

from .test_cli import assert_clean_error, run_cli

LIMIT = "4"


@pytest.fixture(scope="module")
def run(nations_run):
    return load_run(nations_run)


@pytest.mark.parametrize("shard_size", [1, 100, 700, 100000])
def test_shards_give_the_top_k_of_the_matrix(run, shard_size):
    test = run.splits["testing"][:5]
    tracin = TracIn(
        run.model, run.training_triples, run.checkpoints, batch_size=64, shard_size=shard_size, progress=False
    )
    full = tracin.scores(test)
    result = tracin.influence(test, top_k=6)
    assert torch.equal(result.proponents.indices, torch.topk(full, 6, dim=1).indices)
    assert torch.equal(result.opponents.indices, torch.topk(full, 6, dim=1, largest=False).indices)
    assert torch.allclose(result.proponents.scores, torch.topk(full, 6, dim=1).values)


def test_killed_explain_resumes_with_identical_output(nations_run, tmp_path, capsys, monkeypatch, caplog):
    args = ["explain", nations_run, "--split", "test", "--limit", LIMIT, "--top-k", "5", "--shard-size", "200"]
    args += ["--candidates", "all"]  # the resumable store serves a pass over all training triples
    fresh = tmp_path / "fresh.tsv"
    code, _, err = run_cli(capsys, *args, "--output", fresh)
    assert code == 0, err
    assert not any(p.name.endswith("kgtracin-store") for p in tmp_path.iterdir())  # removed after success

    calls = []
    original = Scorer.run_range

    def dying(self, *a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as if the process were killed during its 4th shard
        return original(self, *a, **kw)

    store, out = tmp_path / "store", tmp_path / "resumed.tsv"
    monkeypatch.setattr(Scorer, "run_range", dying)
    code, _, err = run_cli(capsys, *args, "--store", store, "--output", out)
    assert code != 0 and not out.exists()
    assert len(list(store.glob("shard_*.pt"))) == 3

    calls.clear()
    monkeypatch.setattr(Scorer, "run_range", lambda self, *a, **kw: (calls.append(1), original(self, *a, **kw)))
    code, _, err = run_cli(capsys, *args, "--store", store, "--output", out)
    assert code == 0, err
    assert "resuming" in caplog.text and "3 of 8" in caplog.text
    assert len(calls) == 8 - 3
    assert out.read_bytes() == fresh.read_bytes()
    assert not store.exists()


def test_store_for_other_work_starts_afresh(nations_run, tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    base = ["explain", nations_run, "--split", "test", "--limit", LIMIT, "--shard-size", "400", "--store", store]
    base += ["--candidates", "all"]
    original = Scorer.run_range
    calls = []

    def dying(self, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(Scorer, "run_range", dying)
    run_cli(capsys, *base, "--top-k", "3", "--output", tmp_path / "a.tsv")
    assert len(list(store.glob("shard_*.pt"))) == 1
    calls.clear()
    monkeypatch.setattr(Scorer, "run_range", lambda self, *a, **kw: (calls.append(1), original(self, *a, **kw)))
    code, _, err = run_cli(capsys, *base, "--top-k", "4", "--output", tmp_path / "b.tsv")  # different work
    assert code == 0, err
    assert len(calls) == 4  # all shards recomputed


def _cli(*args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env)


def test_torchrun_gloo_two_processes_identical(nations_run, tmp_path):
    args = ["explain", str(nations_run), "--split", "test", "--limit", LIMIT, "--top-k", "7", "--shard-size", "300"]
    single = _cli("-m", "kgtracin", *args, "--output", str(tmp_path / "single.tsv"))
    assert single.returncode == 0, single.stderr
    dist = _cli(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "kgtracin",
        *args,
        "--output",
        str(tmp_path / "dist.tsv"),
    )
    assert dist.returncode == 0, dist.stderr
    assert (tmp_path / "dist.tsv").read_bytes() == (tmp_path / "single.tsv").read_bytes()
    assert dist.stdout.count("wrote ") == 1  # only rank 0 writes


def _relative_error(low: torch.Tensor, exact: torch.Tensor) -> float:
    """``|low - exact| / |exact|`` in the Frobenius norm: the rounding over all entries, not one entry's worst."""
    return float((low - exact).norm() / exact.norm())


@pytest.mark.parametrize("precision, tolerance", [("bf16", 0.3), ("fp16", 0.1)])
def test_low_precision_is_close_and_opt_in(run, precision, tolerance):
    """Low precision is used when asked for (the scores are not exact) and stays close. The error depends on the
    CPU's half-precision arithmetic, and bf16 keeps 3 significand bits fewer than fp16, so its error is about 8
    times as large. Measured (relative Frobenius error of the scores / of the summed path): fp16 0.009 / 0.006 and
    bf16 0.072 / 0.023 on an AMD EPYC without AVX-512 (2026-12-02; the worst single entry, relative to the largest,
    was 0.19 for bf16 there). The bounds are loose: they catch a precision ignored (error 0) or misapplied (error
    near 1), not a slightly worse rounding."""
    test = run.splits["testing"][:4]
    train = run.training_triples[:300]
    exact = TracIn(run.model, train, run.checkpoints, progress=False).scores(test)
    low = TracIn(run.model, train, run.checkpoints, precision=precision, progress=False).scores(test)
    assert low.dtype == torch.float32
    assert 0 < _relative_error(low, exact) < tolerance  # not exact, but close
    valid = run.splits["validation"][:20]  # the summed path (one summed gradient, forward mode) too
    exact = TracIn(run.model, train, run.checkpoints, progress=False).total_influence(valid)
    low = TracIn(run.model, train, run.checkpoints, precision=precision, progress=False).total_influence(valid)
    assert low.dtype == torch.float32
    assert 0 < _relative_error(low, exact) < tolerance


def test_bad_precision(run, nations_run, capsys, tmp_path):
    from kgtracin import KGTracinError

    with pytest.raises(KGTracinError, match="precision"):
        TracIn(run.model, run.training_triples, precision="fp8")
    code, _, err = run_cli(
        capsys, "explain", nations_run, "--split", "test", "--precision", "fp8", "--output", tmp_path / "x.tsv"
    )
    assert_clean_error(code, err, "fp8")


def test_compile_is_exact_for_loop_and_refused_for_fast(run, nations_run, capsys, tmp_path):
    from kgtracin import KGTracinError

    test, train = run.splits["testing"][:2], run.training_triples[:20]
    exact = TracIn(run.model, train, run.checkpoints, method="loop", progress=False).scores(test)
    compiled = TracIn(run.model, train, run.checkpoints, method="loop", compile=True, progress=False).scores(test)
    assert float((compiled - exact).abs().max() / exact.abs().max()) < 1e-5
    with pytest.raises(KGTracinError, match="compile applies to method"):
        TracIn(run.model, train, compile=True)
    code, _, err = run_cli(
        capsys, "explain", nations_run, "--split", "test", "--compile", "--output", tmp_path / "x.tsv"
    )
    assert_clean_error(code, err, "compile")


def test_test_blocks_do_not_change_results(run, tmp_path):
    test, train = run.splits["testing"][:7], run.training_triples[:300]
    whole = TracIn(run.model, train, run.checkpoints, progress=False)
    blocked = TracIn(run.model, train, run.checkpoints, test_block_size=3, progress=False)
    expected = whole.scores(test)
    assert float((blocked.scores(test) - expected).abs().max() / expected.abs().max()) < 1e-5
    a, b = whole.influence(test, top_k=4), blocked.influence(test, top_k=4, store=tmp_path / "store")
    assert torch.equal(a.proponents.indices, b.proponents.indices)
    assert torch.equal(a.opponents.indices, b.opponents.indices)
    assert len(list((tmp_path / "store").glob("test_block_*"))) == 3


def test_store_is_not_reused_for_changed_in_memory_weights(run, tmp_path):
    import copy

    from kgtracin import Checkpoint

    test, train, store = run.splits["testing"][:3], run.training_triples[:400], tmp_path / "store"
    state = run.model.state_dict()
    changed = copy.deepcopy(state)
    name = "interaction.hr1d.0.weight"
    changed[name] = changed[name] * 1.5
    first = TracIn(run.model, train, [Checkpoint(state, 1.0)], shard_size=100, progress=False)
    first.influence(test, top_k=3, store=store)
    assert len(list(store.glob("shard_*.pt"))) == 4
    second = TracIn(run.model, train, [Checkpoint(changed, 1.0)], shard_size=100, progress=False)
    from_store = second.influence(test, top_k=3, store=store)
    fresh = second.influence(test, top_k=3)
    assert torch.equal(from_store.proponents.indices, fresh.proponents.indices)
    assert torch.equal(from_store.proponents.scores, fresh.proponents.scores)
    old = first.influence(test, top_k=3)
    assert not torch.equal(old.proponents.scores, fresh.proponents.scores)
