"""GPU speed rows: one training epoch against explaining 100 test triples, exact and in half precision.

Usage: ``python benchmarks/gpu.py --device cuda [--quick] [--output BENCHMARKS-GPU.md]`` (``benchmarks/gpu.sh`` runs
it with the GPU tests). On the FB15k-237-shaped synthetic graph (random weights: for speed only), for DistMult and
ConvE: the wall time of one LCWA training epoch (cross-entropy, Adam, kgtracin's matrix-product scorers), and of
``TracIn.influence`` of 100 test triples, top 10, over all parameters, in the model's precision (exact) and in fp16
and bf16 (approximate: the top-10 overlap with the exact result is given). ``--device cpu --quick`` runs the same
code on a small graph, as the test suite does.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from kgtracin import Checkpoint, TracIn
from kgtracin.scorers import matrix_products
from kgtracin.synthetic import fb15k237_like


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epoch_seconds(model, factory, device: torch.device, batch_size: int = 256) -> float:
    from pykeen.training import LCWATrainingLoop

    loop = LCWATrainingLoop(model=model, triples_factory=factory, optimizer=torch.optim.Adam(model.parameters()))
    with matrix_products(model):
        _sync(device)
        start = time.perf_counter()
        loop.train(triples_factory=factory, num_epochs=1, batch_size=batch_size, use_tqdm=False)
        _sync(device)
    return time.perf_counter() - start


def _explain(model, graph, device: torch.device, tests: int, precision: str | None) -> tuple[float, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tracin = TracIn(
        model, graph.training, [Checkpoint(state, 0.01)], device=str(device), precision=precision, progress=False
    )
    _sync(device)
    start = time.perf_counter()
    result = tracin.influence(graph.testing[:tests], top_k=10)
    _sync(device)
    return time.perf_counter() - start, result.proponents.indices


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="a small graph (for a smoke run on the CPU)")
    parser.add_argument("--output", default="BENCHMARKS-GPU.md")
    options = parser.parse_args(argv)
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU is visible to torch")
    sizes = dict(num_training=1000, num_entities=200, num_relations=10) if options.quick else {}
    graph = fb15k237_like(num_testing=20 if options.quick else 100, **sizes)
    tests = graph.testing.shape[0]
    dim = 32 if options.quick else 200
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    rows = []
    from pykeen.models import model_resolver

    for name, inverse in (("DistMult", False), ("ConvE", True)):
        factory = graph.triples_factory(create_inverse_triples=inverse)
        torch.manual_seed(0)
        model = model_resolver.make(name, {"embedding_dim": dim}, triples_factory=factory, random_seed=0).to(device)
        epoch = _epoch_seconds(model, factory, device)
        exact_seconds, exact = _explain(model, graph, device, tests, None)
        row = {"model": name, "epoch": epoch, "exact": exact_seconds}
        for precision in ("fp16", "bf16"):
            seconds, top = _explain(model, graph, device, tests, precision)
            overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top, exact)) / exact.numel()
            row[precision] = (seconds, overlap)
        rows.append(row)
        print(row, flush=True)
    lines = [
        "# kgtracin on a GPU",
        "",
        f"Machine: {machine}; torch {torch.__version__}. Command: `python benchmarks/gpu.py --device {options.device}"
        + (" --quick" if options.quick else "")
        + "` (run by `bash benchmarks/gpu.sh`).",
        f"Graph: FB15k-237-shaped synthetic, {graph.training.shape[0]:,} training triples, {graph.num_entities:,} "
        f"entities (random weights: for speed only). {tests} test triples, top 10, all parameters, d = {dim}.",
        "",
        "| model | one LCWA epoch | explain, exact | ratio | fp16 | fp16 top-10 overlap | bf16 | bf16 top-10 overlap |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        (f16, o16), (b16, ob16) = row["fp16"], row["bf16"]
        lines.append(
            f"| {row['model']} | {row['epoch']:.1f} s | {row['exact']:.1f} s | {row['exact'] / row['epoch']:.2f}x | "
            f"{f16:.1f} s | {o16:.2f} | {b16:.1f} s | {ob16:.2f} |"
        )
    with open(options.output, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print(f"wrote {options.output}")


if __name__ == "__main__":
    main()
