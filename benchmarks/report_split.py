"""The whole-test-split rows of BENCHMARKS.md (exact and the approximate projection mode) and their plot."""

from __future__ import annotations

#: the issue's limits for the whole split: time as a multiple of one epoch, peak RSS in GB
SPLIT_EPOCHS, SPLIT_RSS_GB = 10.0, 8.0


def source_of(record: dict, key: str) -> tuple[dict, str]:
    """The results holding ``key``: the latest re-run that measured it, else the main run; and its name."""
    for rerun in reversed(record.get("reruns", [])):
        if key in rerun.get("results", {}):
            return rerun["results"], f"re-run `{rerun['command']}`, {rerun['started']}"
    return record["results"], "main run"


def entry_ok(results: dict, key: str) -> dict | None:
    entry = results.get(key)
    return None if entry is None or "error" in entry else entry


def _rows(results: dict, prefix: str) -> dict[int, dict]:
    """M -> entry for the keys ``f"{prefix} M={m}"``."""
    out = {}
    for key, entry in results.items():
        if key.startswith(prefix + " M=") and "error" not in entry:
            out[entry["spec"]["m"]] = entry
    return dict(sorted(out.items()))


def _overlap(entry: dict | None) -> str:
    if entry is None or "top10_overlap" not in entry:
        return "n/a"
    o = entry["top10_overlap"]
    return f"{o['proponents']:.3f} / {o['opponents']:.3f}"


def _time(entry: dict | None, epoch: dict | None) -> str:
    if entry is None:
        return "n/a"
    ratio = f" ({entry['seconds'] / epoch['seconds']:.2f}x)" if epoch else ""
    return f"{entry['seconds']:.1f} s{ratio}, {entry['peak_rss_gb']:.2f} GB"


def split_targets(record: dict) -> list[str]:
    """Target-table rows for the whole split."""
    res, _ = source_of(record, "split epoch")
    epoch = entry_ok(res, "split epoch")
    exact = _rows(res, "split exact")
    if not epoch or not exact:
        return []
    m = max(exact)
    lines = []
    e = exact[m]
    ratio = e["seconds"] / epoch["seconds"]
    miss = "" if ratio <= SPLIT_EPOCHS else f" (by {ratio / SPLIT_EPOCHS:.2f}x)"
    lines.append(
        f"| whole test split, exact: M={m:,} ConvE test triples x N={epoch['spec'].get('n_train') or 272115:,},"
        f" top-10, <= {SPLIT_EPOCHS:g}x one epoch | {ratio:.2f}x ({e['seconds']:.0f} s vs "
        f"{epoch['seconds']:.0f} s) | {'met' if not miss else '**missed**' + miss} |"
    )
    lines.append(
        f"| ... peak RSS <= {SPLIT_RSS_GB:g} GB | {e['peak_rss_gb']:.2f} GB | "
        f"{'met' if e['peak_rss_gb'] <= SPLIT_RSS_GB else '**missed**'} |"
    )
    for key in sorted(
        (k for k in res if k.startswith("split projected") and k.endswith(f"M={m}")),
        key=lambda k: -res[k]["spec"]["projection_dim"],
    ):
        p = entry_ok(res, key)
        if p is None:
            continue
        ratio = p["seconds"] / epoch["seconds"]
        ok = ratio <= SPLIT_EPOCHS and p["peak_rss_gb"] <= SPLIT_RSS_GB
        lines.append(
            f"| ... approximate, `--projection-dim {p['spec']['projection_dim']}`: <= {SPLIT_EPOCHS:g}x one "
            f"epoch and <= {SPLIT_RSS_GB:g} GB; top-10 overlap with exact (proponents / opponents) | "
            f"{ratio:.2f}x ({p['seconds']:.0f} s), {p['peak_rss_gb']:.2f} GB; overlap {_overlap(p)} | "
            f"{'met' if ok else '**missed**'} |"
        )
    return lines


def split_section(record: dict) -> list[str]:
    """The whole-split section: time and memory against M, exact and approximate, and the UMLS check."""
    res, source = source_of(record, "split epoch")
    epoch = entry_ok(res, "split epoch")
    exact = _rows(res, "split exact")
    if not exact:
        return []
    ks = sorted({e["spec"]["projection_dim"] for k, e in res.items() if k.startswith("split projected")}, reverse=True)
    projected = {k: _rows(res, f"split projected K={k}") for k in ks}
    n = epoch["spec"].get("n_train") if epoch else None
    lines = [
        "## The whole test split (ConvE, top-10)",
        "",
        f"The synthetic graph drawn with FB15k-237's 20,466 test triples (`fb15k237_like(num_testing=20_466)`: "
        f"a different random draw from the tables above, so it has its own epoch), N={n or 272115:,}, d=200, "
        "random initial weights, all parameters, one checkpoint, `influence(top_k=10)`. From the "
        f"{source}. One epoch: {epoch['seconds']:.1f} s."
        if epoch
        else "One epoch: n/a.",
        "",
        "Exact is the default. The approximate mode (`--projection-dim K`) CountSketches every dense gradient "
        "factor longer than K (ConvE's fc input, 10,368 numbers) and keeps embedding rows exact. Its top-10 "
        "overlap is the mean over test triples of |approximate top-10 & exact top-10| / 10, against the exact "
        "run of the same row.",
        "",
        "| M | exact: time (x epoch), peak RSS | "
        + " | ".join(f"K={k}: time (x epoch), peak RSS | K={k}: top-10 overlap (proponents / opponents)" for k in ks)
        + " |",
        "| --- | --- | " + " | ".join("--- | ---" for _ in ks) + " |",
    ]
    for m, e in exact.items():
        cells = []
        for k in ks:
            p = projected[k].get(m)
            cells += [_time(p, epoch), _overlap(p)]
        lines.append(f"| {m:,} | {_time(e, epoch)} | " + " | ".join(cells) + " |")
    umls, umls_source = source_of(record, "umls whole exact")
    ue = entry_ok(umls, "umls whole exact")
    if ue:
        lines += [
            "",
            f"The same comparison on UMLS ConvE d=200, *trained* (5 epochs), all 1,230 test and validation "
            f"triples x N=5,216 ({umls_source}):",
            "",
            "| setting | time | top-10 overlap (proponents / opponents) |",
            "| --- | --- | --- |",
            f"| exact | {ue['seconds']:.2f} s | 1 / 1 |",
        ]
        for key in sorted(
            (k for k in umls if k.startswith("umls whole projected")), key=lambda k: -umls[k]["spec"]["projection_dim"]
        ):
            p = entry_ok(umls, key)
            if p:
                lines.append(
                    f"| `--projection-dim {p['spec']['projection_dim']}` | {p['seconds']:.2f} s | {_overlap(p)} |"
                )
    return lines + [""]


def plot_split(axis, record: dict) -> None:
    """Time against M up to the whole split, exact and approximate, with one and ten epochs."""
    res, _ = source_of(record, "split epoch")
    exact = _rows(res, "split exact")
    if not exact:
        axis.set_visible(False)
        return
    axis.plot(list(exact), [e["seconds"] for e in exact.values()], marker="o", color="C0", label="exact")
    ks = sorted({e["spec"]["projection_dim"] for k, e in res.items() if k.startswith("split projected")}, reverse=True)
    for i, k in enumerate(ks):
        rows = _rows(res, f"split projected K={k}")
        axis.plot(
            list(rows),
            [e["seconds"] for e in rows.values()],
            marker="s",
            color=f"C{i + 1}",
            label=f"approximate, K={k}",
        )
    epoch = entry_ok(res, "split epoch")
    if epoch:
        axis.axhline(epoch["seconds"], color="grey", linewidth=1, label="one epoch")
        axis.axhline(
            SPLIT_EPOCHS * epoch["seconds"], color="grey", linestyle=":", linewidth=1, label=f"{SPLIT_EPOCHS:g} epochs"
        )
    axis.set(
        xscale="log",
        yscale="log",
        xlabel="test triples M",
        ylabel="seconds",
        title=f"Whole split: time vs M, up to {max(exact):,}",
    )
    axis.legend(fontsize=7)
