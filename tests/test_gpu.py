"""The CUDA, fp16 and NCCL paths (run by ``benchmarks/gpu.sh`` on a GPU; skipped without one, and a failure with
``KGTRACIN_REQUIRE_GPU=1``), and the GPU benchmark's own code run on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kgtracin import Checkpoint, TracIn
from kgtracin.runs import load_run

from .conftest import assert_exact

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        if os.environ.get("KGTRACIN_REQUIRE_GPU"):
            pytest.fail("KGTRACIN_REQUIRE_GPU is set, but no CUDA GPU is visible to torch")
        pytest.skip("no CUDA GPU")
    return "cuda:0"


@pytest.fixture(scope="module")
def distmult(run_factory):
    run = load_run(run_factory("DistMult", False))
    checkpoints = [Checkpoint(c.state, lr) for c, lr in zip(run.checkpoints, (0.3, 0.05))]
    return run.model.double(), checkpoints, run.training_triples[:200], run.splits["testing"][:8]


@pytest.mark.parametrize("method", ["fast", "vmap"])
@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_cuda_is_exact(cuda, distmult, method, loss):
    model, checkpoints, train, test = distmult
    reference = TracIn(model, train, checkpoints, method="loop", loss=loss, progress=False).scores(test)
    on_gpu = TracIn(model, train, checkpoints, method=method, loss=loss, device=cuda, progress=False)
    assert_exact(on_gpu.scores(test).cpu(), reference)
    result = on_gpu.influence(test, top_k=5)
    assert torch.equal(result.proponents.indices, reference.topk(5, dim=1).indices)


@pytest.mark.parametrize("normalize", [None, "cosine"])
@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_cuda_summed_influence_is_exact(cuda, distmult, loss, normalize):
    """``total_influence`` along one summed gradient (forward mode on the GPU) against the CPU loop's sums."""
    model, checkpoints, train, test = distmult
    options = {"loss": loss, "normalize": normalize, "progress": False}
    reference = TracIn(model, train, checkpoints, method="loop", **options).scores(test).sum(dim=0)
    on_gpu = TracIn(model, train, checkpoints, device=cuda, **options)
    assert_exact(on_gpu.total_influence(test).cpu(), reference)


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_cuda_neighbourhood_pairs_are_exact(cuda, distmult, loss):
    """The neighbourhood's pair path (sampled products, gathers) on the GPU, against the CPU's dense scores."""
    from kgtracin.runners.neighbourhood import neighbourhood_pairs

    model, checkpoints, train, test = distmult
    reference = TracIn(model, train, checkpoints, loss=loss, progress=False).scores(test)
    rows, tests = neighbourhood_pairs(train, test)
    on_gpu = TracIn(model, train, checkpoints, loss=loss, device=cuda, progress=False)
    assert_exact(on_gpu._scorer().run_pairs(train, test, rows, tests).cpu(), reference[tests, rows])


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cuda_is_close_and_opt_in(cuda, distmult, precision):
    model, checkpoints, train, test = distmult
    exact = TracIn(model.float(), train, checkpoints, device=cuda, progress=False).scores(test).cpu()
    low = TracIn(model.float(), train, checkpoints, device=cuda, precision=precision, progress=False).scores(test)
    error = float((low.cpu().float() - exact).norm() / exact.norm())  # as test_scale's CPU case
    assert 0 < error < {"fp16": 0.1, "bf16": 0.3}[precision]


def test_nccl_torchrun_matches_one_process(cuda, nations_run, tmp_path):
    """torchrun with the NCCL backend (one process per visible GPU) writes what one process writes."""
    count = torch.cuda.device_count()
    common = ["explain", str(nations_run), "--split", "test", "--limit", "4", "--top-k", "3", "--device", "cuda"]
    single = subprocess.run(
        [sys.executable, "-m", "kgtracin", *common, "--output", str(tmp_path / "single.tsv")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert single.returncode == 0, single.stderr
    dist = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={count}",
            "-m",
            "kgtracin",
            *common,
            "--output",
            str(tmp_path / "dist.tsv"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert dist.returncode == 0, dist.stderr
    assert (tmp_path / "dist.tsv").read_bytes() == (tmp_path / "single.tsv").read_bytes()


def test_gpu_benchmark_runs_on_the_cpu(tmp_path):
    """``benchmarks/gpu.py`` is the script ``gpu.sh`` runs on a GPU: here its code runs on a small graph."""
    out = tmp_path / "gpu.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    table = [
        line for line in out.read_text().splitlines() if line.startswith("| DistMult") or line.startswith("| ConvE")
    ]
    assert len(table) == 2
