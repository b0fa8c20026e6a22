"""Render benchmark results as BENCHMARKS.md and a PNG plot."""

from __future__ import annotations

from pathlib import Path

from report_split import entry_ok as _r
from report_split import plot_split, source_of, split_section, split_targets


def _s(entry, field="seconds"):
    if entry is None:
        return "n/a"
    value = entry[field]
    text = f"{value:.2f} s" if value < 100 else f"{value:.0f} s"
    return text + (" *" if entry.get("extrapolated") else "")


def _ratio(a, b):
    return "n/a" if a is None or b is None else f"{a['seconds'] / b['seconds']:.2f}x"


def _check(ok):
    return "met" if ok else "**missed**"


def render(record: dict, markdown: Path, plot: Path, command: str) -> None:
    res = record["results"]
    ms = sorted({e["spec"]["m"] for k, e in res.items() if k.startswith("umls fast all")})
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `{command}` on {record['machine']}, started {record['started']}"
        + (f", finished {record.get('finished')}." if record.get("finished") else " (unfinished)."),
        "Every figure below comes from that one run, except the rows listed under *Re-measured rows*; each",
        "measurement ran in its own process, one at a time.",
        "Times marked * are extrapolated linearly from two timed slices of training triples (the fixed cost of",
        "the test side plus a per-training-triple cost); the slices are in `benchmarks/results.json`.",
        "`fast` is timed through `TracIn.influence(top_k=10)`; `loop` and `vmap` through `TracIn.scores` on the",
        "slices. Every timed measurement (Captum's too) follows a warm-up on a small slice of the same work.",
        "One checkpoint, float32, all parameters unless said otherwise; `fast` uses its default batch: 1024 for models made of embedding rows only, 256 for ConvE and for the softmax loss.",
        "The epoch is forward + backward of the same per-triple loss (`softplus(-score)`, eval mode) over the",
        "same training triples, all parameters, timed at batch sizes 256 and 1024: the faster is the floor.",
        "",
    ]
    for rerun in record.get("reruns", []):
        lines += [
            f"*Re-measured rows*: `{rerun['command']}` on {rerun['machine']}, {rerun['started']} to "
            f"{rerun.get('finished', '(unfinished)')}, measured {', '.join(rerun['keys'])}. They are kept "
            "apart (`reruns` in `benchmarks/results.json`); a ratio that uses them takes both sides from that "
            "run, and the tables below show the main run only, except a section that names the run it comes from.",
            "",
        ]
    # -- targets
    cap, fast_fc = _r(res, "umls captum fc"), _r(res, "umls fast fc")
    syn_ep = _r(res, "synthetic-conve epoch")
    syn100, syn1000 = _r(res, "synthetic-conve fast M=100"), _r(res, "synthetic-conve fast M=1000")
    lines += ["## Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    if cap:
        speed = cap["seconds"] / cap["kgtracin_seconds"]
        lines.append(
            f"| >= 100x faster than Captum TracInCP, UMLS ConvE fc layer, M=100 x N=5,216 (both give the "
            f"full matrix, timed in one process) | {speed:.0f}x ({cap['seconds']:.1f} s vs "
            f"{cap['kgtracin_seconds']:.2f} s) | {_check(speed >= 100)} |"
        )
        lines.append(
            f"| agrees with Captum to 1e-4 relative | {cap['relative_error']:.1e} | "
            f"{_check(cap['relative_error'] <= 1e-4)} |"
        )
    if syn_ep and syn100:
        ratio = syn100["seconds"] / syn_ep["seconds"]
        lines.append(
            f"| synthetic 272k ConvE d=200, all parameters, M=100 <= 1.5x one epoch | {ratio:.2f}x "
            f"({syn100['seconds']:.0f} s vs {syn_ep['seconds']:.0f} s) | {_check(ratio <= 1.5)} |"
        )
        lines.append(
            f"| ... with peak RSS <= 4 GB | {syn100['peak_rss_gb']:.2f} GB | {_check(syn100['peak_rss_gb'] <= 4)} |"
        )
    if syn_ep and syn1000:
        ratio = syn1000["seconds"] / syn_ep["seconds"]
        lines.append(
            f"| ... M=1000 <= 3x one epoch (issue 8 asks 1.3x: see *every model* below) | "
            f"{ratio:.2f}x ({syn1000['seconds']:.0f} s) | "
            f"{_check(ratio <= 3)} |"
        )
    # the softmax rows and their epoch come from one run: the latest re-run that measured them, else the main run
    soft_res, _ = source_of(record, "synthetic-conve softmax fast M=100")
    soft_ep, soft100 = _r(soft_res, "synthetic-conve softmax epoch"), _r(soft_res, "synthetic-conve softmax fast M=100")
    soft_bce_ep = _r(soft_res, "synthetic-conve epoch")
    models = ("conve", "distmult", "transe", "complex", "rotate")
    per_model = {
        m: (
            _r(res, f"synthetic-{m} epoch"),
            _r(res, f"synthetic-{m} fast M=100"),
            _r(res, f"synthetic-{m} fast M=1000"),
        )
        for m in models
    }
    if all(e and f for e, f, _ in per_model.values()):
        ratios = {m: f["seconds"] / e["seconds"] for m, (e, f, _) in per_model.items()}
        lines.append(
            "| every model (synthetic 272k, d=200, all parameters): M=100 <= 1.2x one epoch | "
            + ", ".join(f"{m} {r:.2f}x" for m, r in ratios.items())
            + f" | {_check(max(ratios.values()) <= 1.2)} |"
        )
    if all(e and f for e, _, f in per_model.values()):
        ratios = {m: f["seconds"] / e["seconds"] for m, (e, _, f) in per_model.items()}
        limits = {m: 1.3 if m == "conve" else 2.0 for m in models}
        missed = [m for m in models if ratios[m] > limits[m]]
        lines.append(
            "| every model: M=1000 <= 2x one epoch, ConvE <= 1.3x | "
            + ", ".join(f"{m} {r:.2f}x" for m, r in ratios.items())
            + f" | {_check(not missed)}{' (' + ', '.join(missed) + ')' if missed else ''} |"
        )
    if soft100 and soft_bce_ep:
        ratio = soft100["seconds"] / soft_bce_ep["seconds"]
        lines.append(
            f"| `softmax` loss: synthetic 272k ConvE d=200, M=100 <= 1.5x one epoch | "
            f"{ratio:.2f}x one bce epoch ({soft100['seconds']:.0f} s vs {soft_bce_ep['seconds']:.0f} s)"
            + (
                f"; {soft100['seconds'] / soft_ep['seconds']:.2f}x one softmax (1-N, both directions) "
                f"epoch of {soft_ep['seconds']:.0f} s"
                if soft_ep
                else ""
            )
            + f" | {_check(ratio <= 1.5)} |"
        )
        lines.append(
            f"| ... with peak RSS <= 4 GB | {soft100['peak_rss_gb']:.2f} GB | {_check(soft100['peak_rss_gb'] <= 4)} |"
        )
    lines += split_targets(record)
    scaling = sorted(
        (e["spec"]["n_train"], e)
        for k, e in res.items()
        if k.startswith("synthetic-conve fast M=100 N=") and "error" not in e
    )
    if syn100:
        scaling.append((syn100["spec"].get("n_train"), syn100))
    if len(scaling) >= 2:
        per = [e["seconds"] / n for n, e in scaling]
        spread = max(per) / min(per)
        lines.append(
            f"| cost grows linearly in N | seconds per 1k training triples from N={scaling[0][0]:,} to "
            f"{scaling[-1][0]:,}: {', '.join(f'{1000 * p:.3f}' for p in per)} (max/min {spread:.2f}) | "
            f"{_check(spread <= 1.25)} |"
        )
    lines += [
        "",
        "Why the misses:",
        "- ConvE at M=1000: the fc layer's exact kernel `<delta, delta'> (<x, x'> + 1)` costs N x M x "
        "10,368 multiply-adds for its input x' alone, the largest term in this run.",
        "- The whole split, exact: the same term is N x M x 10,368 = 272,115 x 20,466 x 10,368 = 5.8e13 "
        "multiply-adds, one matrix product that runs near this CPU's peak already; no exact reformulation "
        "is cheaper (the test gradients themselves have 2.07M numbers each). Hence the opt-in approximate "
        "mode.",
        "- DistMult and TransE at M=1000: their epoch is short (see the table), and beside it the top-k "
        "selection over N x M = 272M scores (`torch.topk`) and the row kernel's per-operation overhead "
        "remain (seen in profiles, not timed in this run).",
        "- `softmax`: per batch of 256, three products of B x E x d = 256 x 14,541 x 200 per pair of "
        "directions (all E scores from the query, `delta @ table`, and the kernel's E-length "
        "`<delta, delta'>`): 4.5e9 multiply-adds, against about 1.6e9 for a whole bce forward and backward "
        "of ConvE, and each of the two directions needs its own forward and backward pass. The exact loss "
        "needs all three products; no exact way to 1.5x is known here.",
        "- Epochs on this machine vary by tens of percent between runs, so ratios near a limit are not "
        "settled by one run.",
        "",
    ]
    # -- UMLS
    ep = _r(res, "umls epoch")
    lines += [
        "## UMLS, ConvE d=200, all 2.1M parameters, N=5,216",
        "",
        f"One training epoch: {_s(ep)}.",
        "",
        "| M | fast | vmap | loop | fast / epoch | vmap / fast | loop / fast | fast peak RSS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in ms:
        f, v, lo = (_r(res, f"umls {x} all M={m}") for x in ("fast", "vmap", "loop"))
        lines.append(
            f"| {m} | {_s(f)} | {_s(v)} | {_s(lo)} | {_ratio(f, ep)} | {_ratio(v, f)} | {_ratio(lo, f)} | "
            f"{f['peak_rss_gb']:.2f} GB |"
            if f
            else f"| {m} | n/a |"
        )
    lines += [
        "",
        "vmap and loop at M=1000 are not run: both hold the M x P test-gradient matrix (1000 x 2.1M floats, 8.4 GB).",
        "",
    ]
    vfc = _r(res, "umls vmap fc")
    if cap and fast_fc:
        lines += [
            "### fc layer only (2.07M weights), M=100, against Captum",
            "",
            "| method | time | vs fast |",
            "| --- | --- | --- |",
            f"| kgtracin fast, `scores` (full matrix), in the Captum process | {cap['kgtracin_seconds']:.2f} s | 1x |",
            f"| kgtracin fast, `influence` (top-10), own process | {_s(fast_fc)} | "
            f"{fast_fc['seconds'] / cap['kgtracin_seconds']:.2f}x |",
            f"| kgtracin vmap | {_s(vfc)} | {vfc['seconds'] / cap['kgtracin_seconds']:.0f}x |"
            if vfc
            else "| kgtracin vmap | n/a | |",
            f"| Captum 0.9 TracInCP, sample_wise_grads_per_batch=True, batch 128, influence(k=None) | "
            f"{_s(cap)} | {cap['seconds'] / cap['kgtracin_seconds']:.0f}x |",
            "",
            f"Captum peak RSS {cap['peak_rss_gb']:.1f} GB. Captum's scores and kgtracin's agree to "
            f"{cap['relative_error']:.1e} relative.",
            "",
        ]
    # -- synthetic
    lines += [
        "## Synthetic FB15k-237-shaped graph (14,541 entities, 237 relations, 272,115 training triples)",
        "",
        "Generated by `kgtracin.synthetic.fb15k237_like()` (power-law entity and relation frequencies; "
        "max entity degree about 9k, median 20). d=200, random initial weights, ConvE with inverse "
        "triples. Time of `fast`, as a ratio to one epoch, and peak RSS:",
        "",
        "| model | epoch | " + " | ".join(f"M={m}" for m in ms) + " | peak RSS (largest M) |",
        "| --- | --- | " + " | ".join("---" for _ in ms) + " | --- |",
    ]
    for model in models:
        e = _r(res, f"synthetic-{model} epoch")
        cells = []
        for m in ms:
            f = _r(res, f"synthetic-{model} fast M={m}")
            cells.append("n/a" if f is None else f"{_s(f)} ({_ratio(f, e)})")
        last = _r(res, f"synthetic-{model} fast M={ms[-1]}") if ms else None
        lines.append(
            f"| {model} | {_s(e)} | " + " | ".join(cells) + f" | {last['peak_rss_gb']:.2f} GB |"
            if last
            else f"| {model} | {_s(e)} | n/a |"
        )
    lines += [
        "",
        "### ConvE on the synthetic graph: against the loop and vmap methods",
        "",
        "| M | fast | vmap | loop | vmap / fast | loop / fast |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in ms:
        f, v, lo = (_r(res, f"synthetic-conve {x} M={m}") for x in ("fast", "vmap", "loop"))
        if v or lo:
            lines.append(f"| {m} | {_s(f)} | {_s(v)} | {_s(lo)} | {_ratio(v, f)} | {_ratio(lo, f)} |")
    if len(scaling) >= 2:
        lines += [
            "",
            "### Scaling in N (ConvE, M=100)",
            "",
            "| N | fast | epoch | fast / epoch |",
            "| --- | --- | --- | --- |",
        ]
        for n, f in scaling:
            e = _r(res, f"synthetic-conve epoch N={n}") or (syn_ep if n == scaling[-1][0] else None)
            lines.append(f"| {n:,} | {_s(f)} | {_s(e)} | {_ratio(f, e)} |")
    lines += split_section(record)
    # -- precision
    prec = _r(res, "umls precision")
    if prec:
        lines += [
            "",
            "## Precision and compilation (UMLS ConvE, all parameters)",
            "",
            "Error is measured against exact fp32 on the same work: top-10 overlap of proponents, Spearman "
            "rank correlation of each test triple's scores, and max relative error.",
            "",
            "| setting | time | top-10 overlap | Spearman | max rel. error |",
            "| --- | --- | --- | --- | --- |",
            f"| fast fp32 (default, exact) | {_s(prec['fp32'])} | 1 | 1 | 0 |",
        ]
        for name in ("bf16", "fp16"):
            p = prec[name]
            lines.append(
                f"| fast {name} | {_s(p)} | {p['top10_overlap']:.3f} | {p['spearman']:.4f} | "
                f"{p['relative_error']:.1e} |"
            )
        ve, vc = prec["vmap_eager"], prec["vmap_compiled"]
        lines.append(f"| vmap eager, N={ve['n_train']} | {_s(ve)} | 1 | 1 | 0 |")
        lines.append(
            f"| vmap --compile, N={vc['n_train']} (after warm-up) | {_s(vc)} | {vc['top10_overlap']:.3f} | "
            f"{vc['spearman']:.4f} | {vc['relative_error']:.1e} |"
        )
        lines += [
            "",
            "`--compile` is refused for `fast`: torch.compile does not trace its hooks correctly "
            "(it gave a 4e-3 relative error when tried), and `fast` spends its time in matrix products "
            "that compilation does not speed up. "
            + ", ".join(
                f"{n} ran at {prec['fp32']['seconds'] / prec[n]['seconds']:.2f}x the speed of fp32"
                for n in ("bf16", "fp16")
            )
            + " here; low precision is opt-in because it is inexact.",
            "",
        ]
    errors = {k: e["error"] for k, e in res.items() if "error" in e}
    if errors:
        lines += ["## Measurements that failed", ""] + [f"- {k}: {v}" for k, v in errors.items()] + [""]
    markdown.write_text("\n".join(lines) + "\n")
    _plot(res, ms, scaling, plot, record)


def _plot(res, ms, scaling, path: Path, record: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (left, right, split) = plt.subplots(1, 3, figsize=(16, 4.4))
    for workload, style in (("umls", "-"), ("synthetic-conve", "--")):
        prefix = "umls {} all M={}" if workload == "umls" else "synthetic-conve {} M={}"
        for method, color in (("fast", "C0"), ("vmap", "C1"), ("loop", "C3")):
            pts = [
                (m, res[prefix.format(method, m)]["seconds"])
                for m in ms
                if prefix.format(method, m) in res and "error" not in res[prefix.format(method, m)]
            ]
            if pts:
                left.plot(*zip(*pts), style, marker="o", color=color, label=f"{workload} {method}")
        epoch = res.get(f"{workload} epoch")
        if epoch and "error" not in epoch:
            left.axhline(epoch["seconds"], linestyle=style, color="grey", linewidth=1)
    left.set(xscale="log", yscale="log", xlabel="test triples M", ylabel="seconds", title="Time vs M (grey: one epoch)")
    left.legend(fontsize=7)
    if scaling:
        ns = [n for n, _ in scaling]
        right.plot(ns, [e["seconds"] for _, e in scaling], marker="o", label="fast, M=100")
        epochs = [
            (n, res[f"synthetic-conve epoch N={n}"]["seconds"])
            for n in ns
            if f"synthetic-conve epoch N={n}" in res and "error" not in res[f"synthetic-conve epoch N={n}"]
        ]
        if "synthetic-conve epoch" in res and "error" not in res["synthetic-conve epoch"]:
            epochs.append((ns[-1], res["synthetic-conve epoch"]["seconds"]))
        if epochs:
            right.plot(*zip(*sorted(set(epochs))), marker="s", color="grey", label="one epoch")
    right.set(xlabel="training triples N", ylabel="seconds", title="Time vs N (synthetic ConvE)")
    right.legend(fontsize=8)
    plot_split(split, record)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
