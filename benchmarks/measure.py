"""One benchmark measurement, run in its own process: ``python benchmarks/measure.py '<json spec>'``.

Prints ``RESULT <json>`` with the seconds taken and the process's peak RSS.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from kgtracin import Checkpoint, TracIn
from kgtracin.adapters import ModelAdapter
from workloads import WORK, load

FC = ["interaction.hr1d.0.weight", "interaction.hr1d.0.bias"]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def params_of(spec):
    return FC if spec.get("parameters") == "fc" else "all"


def one_epoch(spec) -> dict:
    """Forward + backward of the summed per-triple loss over the training triples, all parameters.

    Timed at each batch size of ``spec["batch_sizes"]`` after a warm-up batch; the fastest is the floor.
    """
    w = load(spec["workload"])
    train = w.train[: spec.get("n_train")]
    adapter = ModelAdapter(w.model, loss=spec.get("loss", "bce"))
    times = {}
    for batch in spec.get("batch_sizes", [256, 1024]):
        adapter.losses(train[:batch]).sum().backward()  # warm-up
        start = time.perf_counter()
        for lo in range(0, train.shape[0], batch):
            w.model.zero_grad(set_to_none=True)
            adapter.losses(train[lo : lo + batch]).sum().backward()
        times[batch] = time.perf_counter() - start
    best = min(times, key=times.get)
    return {"seconds": times[best], "batch_size": best, "by_batch_size": times}


def tracin(spec) -> dict:
    w = load(spec["workload"])
    train, test = w.train[: spec.get("n_train")], w.test[: spec["m"]]
    kwargs = dict(
        parameters=params_of(spec),
        method=spec["method"],
        progress=False,
        precision=spec.get("precision"),
        compile=spec.get("compile", False),
        loss=spec.get("loss", "bce"),
        projection_dim=spec.get("projection_dim"),
    )
    if spec.get("slices"):  # time two slices of training triples, extrapolate linearly to all of them
        times = []
        for n in spec["slices"]:
            t = TracIn(w.model, train[:n], **kwargs)
            t._scorer()  # load the checkpoint outside the timing, as for the full runs
            best = float("inf")
            for _ in range(2):  # best of two
                start = time.perf_counter()
                t.scores(test)
                best = min(best, time.perf_counter() - start)
            times.append(best)
        (n1, n2), (t1, t2) = spec["slices"], times
        per_triple = (t2 - t1) / (n2 - n1)
        if per_triple <= 0:
            raise RuntimeError(f"slice timings {times} are not increasing in N; the machine was busy")
        fixed = max(t1 - per_triple * n1, 0.0)
        return {
            "seconds": fixed + per_triple * train.shape[0],
            "extrapolated": True,
            "slice_seconds": times,
            "per_triple_seconds": per_triple,
            "fixed_seconds": fixed,
        }
    TracIn(w.model, train[:2048], **kwargs).influence(test[:2], top_k=10)  # warm-up on a small slice
    t = TracIn(w.model, train, **kwargs)
    t._scorer()
    start = time.perf_counter()
    if spec.get("api") == "scores":
        t.scores(test)
        return {"seconds": time.perf_counter() - start, "extrapolated": False}
    result = t.influence(test, top_k=10)
    out = {"seconds": time.perf_counter() - start, "extrapolated": False}
    if spec.get("save"):  # the exact top-10, for the approximate runs of the same work to compare with
        torch.save(
            {"test": test, "proponents": result.proponents.indices, "opponents": result.opponents.indices},
            WORK / spec["save"],
        )
    if spec.get("compare"):
        exact = torch.load(WORK / spec["compare"], weights_only=True)
        if not torch.equal(exact["test"], test):
            raise RuntimeError(f"{spec['compare']} holds other test triples")
        out["top10_overlap"] = {
            kind: _overlap(getattr(result, kind).indices, exact[kind]) for kind in ("proponents", "opponents")
        }
    return out


def _overlap(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean over test triples of |approximate top-k & exact top-k| / k. Shapes: (M, k)."""
    return sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact)) / exact.numel()


def captum(spec) -> dict:
    """Captum TracInCP (per-sample grads on the fc layer) vs kgtracin fast on the same work."""
    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    w = load("umls-conve")
    model, train, test = w.model, w.train, w.test[: spec["m"]]
    adapter = ModelAdapter(model)

    class Scores(torch.nn.Module):
        def __init__(self, kge):
            super().__init__()
            self.model = kge

        def forward(self, hrt):
            return self.model.score_hrt(hrt).view(-1)

    wrapper = Scores(model).eval()
    path = WORK / "captum-checkpoint.pt"
    torch.save(model.state_dict(), path)

    def load_checkpoint(module, file):
        module.model.load_state_dict(torch.load(file, weights_only=True))
        return 1.0

    internal_train, internal_test = adapter.to_internal(train), adapter.to_internal(test)

    def captum_influence(n_train, n_test):
        dataset = TensorDataset(internal_train[:n_train], torch.ones(n_train))
        tracer = TracInCP(
            wrapper,
            dataset,
            checkpoints=[str(path)],
            checkpoints_load_func=load_checkpoint,
            layers=["model.interaction.hr1d.0"],
            loss_fn=torch.nn.BCEWithLogitsLoss(reduction="sum"),
            batch_size=spec.get("batch_size", 128),
            sample_wise_grads_per_batch=True,
        )
        return tracer.influence((internal_test[:n_test], torch.ones(n_test)), k=None)

    captum_influence(256, 2)  # warm-up on a small slice, as for every contender
    start = time.perf_counter()
    theirs = captum_influence(train.shape[0], test.shape[0])
    captum_seconds = time.perf_counter() - start
    TracIn(model, train[:256], [Checkpoint(str(path), 1.0)], parameters=FC, progress=False).scores(test[:2])
    ours_tracin = TracIn(model, train, [Checkpoint(str(path), 1.0)], parameters=FC, progress=False)
    start = time.perf_counter()
    ours_tracin._scorer()
    ours = ours_tracin.scores(test)
    ours_seconds = time.perf_counter() - start
    error = float((ours - theirs).abs().max() / theirs.abs().max())
    return {"seconds": captum_seconds, "kgtracin_seconds": ours_seconds, "relative_error": error}


def precision(spec) -> dict:
    """Speed and error against exact fp32 of bf16, fp16 (fast) and torch.compile (vmap slice)."""
    w = load("umls-conve")
    test = w.test[: spec["m"]]
    out = {}
    results = {}
    for name in ("fp32", "bf16", "fp16"):
        t = TracIn(w.model, w.train, precision=name, progress=False)
        t._scorer()
        start = time.perf_counter()
        results[name] = t.scores(test)
        out[name] = {"seconds": time.perf_counter() - start}
    exact = results["fp32"]
    for name in ("bf16", "fp16"):
        out[name].update(_agreement(results[name], exact))
    n = spec.get("compile_slice", 256)
    for compile_ in (False, True):
        t = TracIn(w.model, w.train[:n], method="vmap", compile=compile_, progress=False)
        t._scorer()
        t.scores(test[:2])  # warm-up (compilation) outside the timing
        start = time.perf_counter()
        scores = t.scores(test)
        key = "vmap_compiled" if compile_ else "vmap_eager"
        out[key] = {"seconds": time.perf_counter() - start, "n_train": n}
        results[key] = scores
    out["vmap_compiled"].update(_agreement(results["vmap_compiled"], results["vmap_eager"]))
    out["seconds"] = out["fp32"]["seconds"]
    return out


def _agreement(approx: torch.Tensor, exact: torch.Tensor, k: int = 10) -> dict:
    top_a = torch.topk(approx, k, dim=1).indices
    top_e = torch.topk(exact, k, dim=1).indices
    overlap = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(top_a, top_e)) / (k * exact.shape[0])

    def ranks(x):
        return torch.argsort(torch.argsort(x, dim=1), dim=1).double()

    ra, re = ranks(approx), ranks(exact)
    ra, re = ra - ra.mean(1, keepdim=True), re - re.mean(1, keepdim=True)
    spearman = float(((ra * re).sum(1) / (ra.norm(dim=1) * re.norm(dim=1))).mean())
    return {
        "top10_overlap": overlap,
        "spearman": spearman,
        "relative_error": float((approx - exact).abs().max() / exact.abs().max()),
    }


KINDS = {"epoch": one_epoch, "tracin": tracin, "captum": captum, "precision": precision}

if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    import pykeen  # noqa: F401

    logging.getLogger("pykeen").setLevel(logging.ERROR)
    spec = json.loads(sys.argv[1])
    result = KINDS[spec["kind"]](spec)
    result["peak_rss_gb"] = peak_rss_gb()
    print("RESULT " + json.dumps(result), flush=True)
