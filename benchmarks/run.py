"""The kgtracin benchmark suite: ``python benchmarks/run.py`` (``--quick`` for a small smoke run).

Every measurement runs in its own process (so peak RSS is its own), one after another, on this machine.
Writes ``benchmarks/results.json``, ``BENCHMARKS.md`` and ``benchmarks/scaling.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
COMMAND = "python benchmarks/run.py"
SYN_N = 272_115
#: the models benchmarked on the synthetic graph
MODELS = ("conve", "distmult", "transe", "complex", "rotate")


def suite(quick: bool) -> list[dict]:
    """The measurements, each a spec for ``measure.py``. Keys name them in the report."""
    ms = [1, 10, 100] if quick else [1, 10, 100, 1000]
    slices = [16, 48] if quick else [32, 96]
    specs = [
        {"key": "umls epoch", "kind": "epoch", "workload": "umls-conve"},
        {"key": "umls captum fc", "kind": "captum", "m": 20 if quick else 100, "batch_size": 128},
        {
            "key": "umls fast fc",
            "kind": "tracin",
            "workload": "umls-conve",
            "method": "fast",
            "parameters": "fc",
            "m": 20 if quick else 100,
        },
        {
            "key": "umls vmap fc",
            "kind": "tracin",
            "workload": "umls-conve",
            "method": "vmap",
            "parameters": "fc",
            "m": 20 if quick else 100,
            "slices": slices,
        },
        {
            "key": "umls precision",
            "kind": "precision",
            "m": 20 if quick else 100,
            "compile_slice": 64 if quick else 256,
        },
    ]
    specs.append(
        {
            "key": "umls fast scores M=100",
            "kind": "tracin",
            "workload": "umls-conve",
            "method": "fast",
            "m": 100,
            "api": "scores",
        }
    )
    for m in ms:
        specs.append(
            {"key": f"umls fast all M={m}", "kind": "tracin", "workload": "umls-conve", "method": "fast", "m": m}
        )
    for m in ms[:3]:
        for method in ("vmap", "loop"):
            specs.append(
                {
                    "key": f"umls {method} all M={m}",
                    "kind": "tracin",
                    "workload": "umls-conve",
                    "method": method,
                    "m": m,
                    "slices": slices,
                }
            )
    n_syn = 20_000 if quick else SYN_N
    for model in MODELS:
        workload = f"synthetic-{model}"
        specs.append({"key": f"{workload} epoch", "kind": "epoch", "workload": workload, "n_train": n_syn})
        for m in ms:
            specs.append(
                {
                    "key": f"{workload} fast M={m}",
                    "kind": "tracin",
                    "workload": workload,
                    "method": "fast",
                    "m": m,
                    "n_train": n_syn,
                }
            )
    for m in ms[:3] if quick else [1, 10, 100]:
        for method in ("vmap", "loop"):
            specs.append(
                {
                    "key": f"synthetic-conve {method} M={m}",
                    "kind": "tracin",
                    "workload": "synthetic-conve",
                    "method": method,
                    "m": m,
                    "n_train": n_syn,
                    "slices": slices,
                }
            )
    # the softmax loss (1-N cross-entropy, both directions), against one bce epoch: a PyKEEN-style 1-N epoch
    # (score_t runs ConvE's interaction once per candidate) takes hours here, so it is measured with --quick only
    if quick:
        specs.append(
            {
                "key": "synthetic-conve softmax epoch",
                "kind": "epoch",
                "workload": "synthetic-conve",
                "n_train": n_syn,
                "loss": "softmax",
                "batch_sizes": [256],
            }
        )
    specs.append(
        {
            "key": "synthetic-conve softmax fast M=100",
            "kind": "tracin",
            "workload": "synthetic-conve",
            "method": "fast",
            "m": 100,
            "n_train": n_syn,
            "loss": "softmax",
        }
    )
    specs += split_suite(quick)
    fractions = [0.125, 0.25, 0.5]
    for f in fractions:
        n = int(n_syn * f)
        specs.append(
            {"key": f"synthetic-conve epoch N={n}", "kind": "epoch", "workload": "synthetic-conve", "n_train": n}
        )
        specs.append(
            {
                "key": f"synthetic-conve fast M=100 N={n}",
                "kind": "tracin",
                "workload": "synthetic-conve",
                "method": "fast",
                "m": 100,
                "n_train": n,
            }
        )
    return specs


#: test triples of the whole-split rows; the last is all of FB15k-237's test split
SPLIT_MS = (100, 1000, 4000, 20_466)
#: projection dimensions of the approximate mode: the first at every M, all at the whole split
SPLIT_KS = (1024, 256)


def split_suite(quick: bool) -> list[dict]:
    """The whole test split (ConvE, top-10): exact, then the approximate mode compared with it; and the same
    comparison on UMLS, whose ConvE is trained."""
    n = 20_000 if quick else None
    ms = SPLIT_MS[:2] if quick else SPLIT_MS
    base = {"kind": "tracin", "workload": "synthetic-conve-split", "method": "fast", "n_train": n}
    specs = [{"key": "split epoch", "kind": "epoch", "workload": "synthetic-conve-split", "n_train": n}]
    for m in ms:
        exact = f"split-exact-N{n or 'all'}-M{m}.pt"
        specs.append({"key": f"split exact M={m}", **base, "m": m, "save": exact})
        for k in SPLIT_KS if m == ms[-1] else SPLIT_KS[:1]:
            specs.append({"key": f"split projected K={k} M={m}", **base, "m": m, "projection_dim": k, "compare": exact})
    umls = {"kind": "tracin", "workload": "umls-conve", "method": "fast", "m": 1230}
    specs.append({"key": "umls whole exact", **umls, "save": "umls-exact-M1230.pt"})
    for k in SPLIT_KS:
        specs.append(
            {"key": f"umls whole projected K={k}", **umls, "projection_dim": k, "compare": "umls-exact-M1230.pt"}
        )
    return specs


def measure(spec: dict) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    start = time.time()
    proc = subprocess.run(
        [sys.executable, str(HERE / "measure.py"), json.dumps(spec)], capture_output=True, text=True, env=env, cwd=ROOT
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1], "wall": time.time() - start}
    result = json.loads(lines[-1][len("RESULT ") :])
    result["wall"] = time.time() - start
    return result


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, no GPU; Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--render-only", action="store_true", help="re-render from benchmarks/results.json")
    parser.add_argument(
        "--only", default=None, help="run only specs whose key is one of these comma-separated keys, or contains one"
    )
    args = parser.parse_args()
    results_file = HERE / ("results-quick.json" if args.quick else "results.json")
    record = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if not args.render_only:
        now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        if args.only and not record:  # no full run yet: this run's header
            record = {"machine": machine(), "quick": args.quick, "started": now, "results": {}}
        if args.only:  # keep the full run's header; say which rows this run re-measured
            rerun = {"command": f"{COMMAND} --only {args.only!r}", "machine": machine(), "started": now, "keys": []}
            record.setdefault("reruns", []).append(rerun)
        else:
            record = {"machine": machine(), "quick": args.quick, "started": now, "results": {}}
        for spec in suite(args.quick):
            wanted = args.only.split(",") if args.only else []
            if wanted and not (spec["key"] in wanted or any(w in spec["key"] for w in wanted)):
                continue
            print(f"{spec['key']} ...", end=" ", flush=True)
            if args.only:
                rerun["keys"].append(spec["key"])
            target = rerun.setdefault("results", {}) if args.only else record["results"]
            target[spec["key"]] = {"spec": spec, **measure(spec)}
            result = target[spec["key"]]
            print(
                result.get("error") or f"{result['seconds']:.2f} s, peak RSS {result['peak_rss_gb']:.2f} GB", flush=True
            )
            results_file.write_text(json.dumps(record, indent=1))
        (rerun if args.only else record)["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results_file.write_text(json.dumps(record, indent=1))
    from report import render

    render(
        record,
        ROOT / ("BENCHMARKS-quick.md" if args.quick else "BENCHMARKS.md"),
        HERE / ("scaling-quick.png" if args.quick else "scaling.png"),
        COMMAND + (" --quick" if args.quick else ""),
    )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
