"""Writing ``kgtracin evaluate``'s results: ``evaluation.json``, ``evaluation.md`` and ``evaluation.png``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

__all__ = ["write_outputs", "end_to_end_markdown"]


def _deletion_markdown(deletion: dict) -> list[str]:
    lines = [f"## Deletion ({deletion['mode']} retraining)", ""]
    config = deletion["retrain"]
    lines.append(
        "A stand-in model, not the run's own recipe (for that, `--protocol end-to-end`): "
        f"{config['model']} d={config['embedding_dim']}, "
        f"{'unit-norm constrained' if config['constrained'] else 'unconstrained'}, "
        f"{config['epochs']} {'full-batch steps' if deletion['mode'] == 'isolated' else 'epochs'}, "
        f"Adam lr {config['learning_rate']}, {config['checkpoints']} checkpoints."
    )
    for seed in deletion["seeds"]:
        base = seed["base"]
        lines.append(
            f"- seed {seed['seed']}: base model filtered test MRR {base['mrr']:.3f} "
            f"(Hits@1 {base['hits_at_1']:.3f}); {seed['num_targets']} targets ranked first"
        )
    spread = any("tc_std" in row for row in deletion["table"])
    lines += [
        "",
        "| arm | k | PD % | TC % |" + (" PD sd | TC sd |" if spread else ""),
        "| --- | --- | --- | --- |" + (" --- | --- |" if spread else ""),
    ]
    for row in sorted(deletion["table"], key=lambda r: (r["k"], -r["tc"], -r["pd"])):
        extra = f" {row['pd_std']:.1f} | {row['tc_std']:.1f} |" if "tc_std" in row else (" | |" if spread else "")
        lines.append(f"| {row['arm']} | {row['k']} | {row['pd']:.1f} | {row['tc']:.1f} |{extra}")
    return lines + [""]


def _noisy_markdown(noisy: dict) -> list[str]:
    lines = [
        "## Noisy facts",
        "",
        f"{noisy['fraction']:.0%} of training triples corrupted "
        f"({'tails only' if noisy.get('corruption') == 'tails' else 'head, relation or tail, chosen uniformly'}; "
        f"{noisy['num_noisy']} triples); retrained model filtered test MRR {noisy['base']['mrr']:.3f}; TracIn loss "
        f"{noisy['loss']}.",
        "",
        "| detector | ROC AUC | P@1% | R@1% | P@5% | R@5% | P@10% | R@10% |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in sorted(noisy["detectors"].items(), key=lambda kv: -kv[1]["auc"]):
        lines.append(
            f"| {name} | {v['auc']:.3f} | {v['precision_at_1pct']:.3f} | {v['recall_at_1pct']:.3f} | "
            f"{v['precision_at_5pct']:.3f} | {v['recall_at_5pct']:.3f} | {v['precision_at_10pct']:.3f} | "
            f"{v['recall_at_10pct']:.3f} |"
        )
    return lines + [""]


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deletions = [d for d in (result.get("deletion"),) if d]
    panels = len(deletions) + (1 if result.get("noisy") else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(6.5 * max(panels, 1), 4.2), squeeze=False)
    column = 0
    for deletion in deletions:
        ax = axes[0, column]
        rows = sorted(deletion["table"], key=lambda r: (r["k"], r["arm"]))
        labels = [f"{r['arm']}" + ("" if r["arm"].endswith(f"-{r['k']}") else f" (k={r['k']})") for r in rows]
        y = range(len(rows))
        ax.barh([i + 0.2 for i in y], [r["tc"] for r in rows], height=0.4, label="TC %", color="#c0392b")
        ax.barh([i - 0.2 for i in y], [r["pd"] for r in rows], height=0.4, label="PD %", color="#2980b9")
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_title(f"deletion, {deletion['mode']} retraining")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, fontsize=8, frameon=False)
        column += 1
    if result.get("noisy"):
        ax = axes[0, column]
        items = sorted(result["noisy"]["detectors"].items(), key=lambda kv: kv[1]["auc"])
        ax.barh([k for k, _ in items], [v["auc"] for _, v in items], color="#27ae60")
        ax.axvline(0.5, color="grey", linestyle=":")
        ax.set_xlim(0, 1)
        ax.set_title("noisy-fact detection (ROC AUC)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: dict, folder: str | Path) -> Path:
    """Write the JSON, Markdown and PNG into ``folder``, atomically: built aside, then renamed into place.

    :raises KGTracinError: when the files cannot be written (nothing is left behind), or when ``folder`` appeared
        during the evaluation and is not empty: the results then go to ``FOLDER-1`` (the error says where), and
        nothing is written over the other folder
    """
    from ..errors import KGTracinError
    from ..staging import ensure_folder, make_staging, publish_folder, remove_created

    target = Path(folder)
    created = ensure_folder(target.absolute().parent, str(target))
    staging = None
    try:
        staging = make_staging(target.absolute().parent, target.name)
        _write(result, staging)
        try:
            publish_folder(staging, target)
        except FileExistsError:
            number = 1
            while Path(f"{target}-{number}").exists():
                number += 1
            publish_folder(staging, Path(f"{target}-{number}"))
            raise KGTracinError(
                f"output {target} appeared during the evaluation and is not empty; nothing was "
                f"written over it: the results are in {target}-{number}"
            ) from None
    except OSError as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        remove_created(created)
        raise KGTracinError(f"cannot write the evaluation to {target}: {error.strerror or error}") from None
    except BaseException:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write(result: dict, folder: Path) -> None:
    (folder / "evaluation.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    lines = ["# kgtracin evaluation", "", f"Run: `{result['run']}`. Command: `{result['command']}`.", ""]
    if result.get("deletion"):
        lines += _deletion_markdown(result["deletion"])
    if result.get("noisy"):
        lines += _noisy_markdown(result["noisy"])
    lines.append(
        "PD: the target's probability dropped after deleting k triples and retraining. TC: its filtered "
        "top-1 tail changed. NH-k: k random training triples sharing an entity with the target; RG-k: k "
        "random triples sharing none."
    )
    (folder / "evaluation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _plot(result, folder / "evaluation.png")


def end_to_end_markdown(result: dict, labels=None, training=None, examples: int = 5) -> str:
    """``end-to-end.md``: the protocol's table, the explanations' cost and locality, and a few examples.

    :param result: :func:`kgtracin.evaluation.end_to_end.run_end_to_end`'s result, with ``run`` and ``command``
    :param labels: the run's labels, to show examples by name
    :param training: shape: (N, 3), the run's training triples, for the examples
    """
    recipe, before, control = result["recipe"], result["before"], result["control"]
    epochs = sorted(result.get("epoch_seconds") or [])
    epoch = epochs[len(epochs) // 2] if epochs else None  # the median: robust to an epoch slowed by other work
    lines = [
        "# kgtracin evaluation: end-to-end protocol",
        "",
        f"Run: `{result['run']}`. Command: `{result['command']}`.",
        "",
        f"{len(result['predictions'])} test predictions the model ranks first (filtered tail ranking): "
        f"H@1 {before['hits_at_1']:.3f}, MRR {before['mrr']:.3f}. Each arm deletes the union of the predictions' "
        f"k facts and retrains once with the run's own recipe and seed ({recipe['model']}, {recipe['epochs']} "
        f"epochs, seed {recipe['seed']}: `kgtracin train`'s code, read from the manifest). "
        + (
            "Batches: **the run's own**, less the deleted facts, so that only they differ (`--batches same`)."
            if result.get("batches") == "same"
            else "Batches: drawn afresh from the smaller training set, as a plain retraining does (`--batches "
            "reshuffled`; `--batches same` keeps the run's)."
        ),
        "",
    ]
    if control.get("reproducible"):
        lines.append(
            "Nothing deleted: retraining reproduces the run bit for bit (one epoch checked against the run's "
            "epoch-1 checkpoint), so the run's own model is the control."
        )
    else:
        lines.append(
            f"Nothing deleted, retrained (retraining is not bit-reproducible here): H@1 {control['hits_at_1']:.3f}, "
            f"MRR {control['mrr']:.3f}; the difference from 1.000 is retraining noise."
        )
    if result.get("check_skipped"):
        lines += ["", f"The check did not run: {result['check_skipped']}."]
    lines += [
        "",
        "| arm | k | facts deleted | H@1 | MRR | ΔH@1 | ΔMRR | ΔH@1 vs nothing deleted | retraining s "
        "| check: H@1 without / with |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(result["arms"], key=lambda r: (r["k"], r["delta_hits_at_1"])):
        check = row.get("check")
        checked = f"{check['hits_at_1_without']:.2f} / {check['hits_at_1_with']:.2f}" if check else ""
        lines.append(
            f"| {row['arm']} | {row['k']} | {row['deleted']} | {row['hits_at_1']:.3f} | {row['mrr']:.3f} | "
            f"**{row['delta_hits_at_1']:+.2f}** | {row['delta_mrr']:+.2f} | {row['delta_hits_at_1_vs_control']:+.2f} "
            f"| {row['seconds']:.0f} | {checked} |"
        )
    lines += [
        "",
        "| explanation | explain s | check s | both, x one training epoch (median) | predictions with a linking fact "
        "| linking fact in top 4 | top-1 is a linking fact |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, record in result["explanations"].items():
        local = record["locality"]
        checked = record.get("check_seconds") or 0.0
        ratio = f"{(record['seconds'] + checked) / epoch:.2f}" if epoch else "n/a"
        lines.append(
            f"| {name} | {record['seconds']:.1f} | {checked:.1f} | {ratio} | {local['linked_predictions']} | "
            f"{local['in_top_4']:.0%} | {local['top_1']:.0%} |"
        )
    lines += [
        "",
        "A linking fact joins the prediction's two entities directly (its reversed fact, or any fact between them). "
        "NH-k: k random facts mentioning the prediction's head (Kelpie's candidate pool); RG-k: k random facts "
        "sharing no entity with it (retraining noise). The check: a few Adam steps from the final model on the "
        "prediction's neighbourhood without and with its explanation (kgtracin.evaluation.check), and the share "
        "still ranked first after each: what the check predicts, beside what the retraining measured.",
        "",
    ]
    if labels is not None and examples:
        lines += ["## Examples", ""]
        for name, record in result["explanations"].items():
            lines.append(f"{name}:")
            for target, top in list(zip(result["predictions"], record["top_1"]))[:examples]:
                fact = " ".join(_label(labels, training[top])) if training is not None else f"training row {top}"
                lines.append(f"- `{' '.join(_label(labels, target))}` <- `{fact}`")
            lines.append("")
    return "\n".join(lines) + "\n"


def _label(labels, triple) -> tuple[str, str, str]:
    h, r, t = (int(x) for x in triple)
    return labels.entities[h], labels.relations[r], labels.entities[t]
