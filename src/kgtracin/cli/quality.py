"""``kgtracin audit`` and ``kgtracin evaluate``: finding noisy facts and measuring explanation quality."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from ..config import CORRUPTIONS, DETECTORS, PLANTS
from ..errors import KGTracinError
from .group import cli
from .options import (
    _positive,
    _setup_logging,
    _top_k,
    audit_loss_option,
    batch_option,
    device_option,
    method_option,
    open_run,
    parameters_option,
    run_folders,
    run_options,
    trust_option,
    verbose_option,
)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--top-k", type=int, default=None, callback=_top_k, help="only the K most suspicious (default: all)")
@click.option(
    "--order-by",
    type=click.Choice([*DETECTORS, "auto"]),
    default=None,
    help="the detector that orders the rows; auto: retrain the run's recipe once with 5% planted fakes "
    "(--plant) and take the detector that finds them best (ROC AUC), kept for the next audit of the run "
    "[default: auto for a run made by kgtracin train, else memorization]",
)
@click.option(
    "--plant",
    type=click.Choice(PLANTS),
    default=None,
    help="with --order-by auto, the fakes planted: plausible (a head or tail the relation already has there, like "
    "a wrong fact in a real graph) or triples (the field's protocol: a head, relation or tail replaced by a random "
    "one) [default: plausible]",
)
@parameters_option
@method_option
@batch_option
@device_option
@audit_loss_option
@click.option("--output", type=click.Path(), required=True, help="FILE.tsv or FILE.jsonl")
@run_options
@verbose_option
def audit(
    run_dir, top_k, order_by, plant, parameters, method, batch_size, device, loss, output, run_source, verbose
) -> None:
    """Rank every training triple by how suspicious it is (noisy or wrong facts first).

    Columns: rank head relation tail train_index, then one per detector: memorization (the share of the triple's
    own steps in its learning, self-influence over the summed influence of all training triples on it),
    validation_cosine (harm to the validation loss, gradient-cosine TracIn), validation (the same, raw TracIn),
    self_influence, support (few other facts share the triple's head and relation, or its relation and tail: the
    graph's own baseline, no model) and loss (the final model's loss of the triple alone: the model's baseline).
    The TracIn loss is bce unless --loss says otherwise: it found noisy facts best on every model measured.

    No detector leads on every graph and model, so for a run made by kgtracin train the rows are ordered by the
    detector chosen from the run (--order-by auto, the default there): its recipe is retrained once with planted
    fakes, and the detector that finds them best is kept for the next audit of the same run and settings (in
    $KGTRACIN_CACHE_DIR, else $XDG_CACHE_HOME/kgtracin, else ~/.cache/kgtracin; never inside the run's folder). It
    chooses for the fakes it plants (--plant): by default plausible ones, a head or tail the relation already has
    there. Other runs, or --order-by memorization, take memorization, the only detector above chance in every
    setting measured.
    """
    _setup_logging(verbose)
    from ..audit import AUDIT_LOSS, audit_frame, detector_scores, detectors_for
    from ..outputs import check_output, write_table

    if plant is not None and order_by not in (None, "auto"):
        raise KGTracinError(f"--plant chooses the fakes that --order-by auto plants, not {order_by}; drop one")
    check_output(output, input_folders=run_folders(run_dir, run_source))
    run = open_run(run_dir, run_source)
    validation = run.splits.get("validation")
    detectors, default_order = detectors_for(validation is not None)
    if order_by is None:
        order_by = _default_order(run, default_order, plant)
    options = dict(
        parameters=list(parameters) or "all",
        method=method,
        batch_size=batch_size,
        device=device,
        loss=loss or AUDIT_LOSS,
    )
    if order_by == "auto":
        from ..evaluation.calibration import CalibrationConfig, calibrate

        config = CalibrationConfig() if plant is None else CalibrationConfig(plant=plant)

        def announce() -> None:
            click.echo(
                f"choosing the detector: retraining the run's recipe once with {config.fraction:.0%} planted "
                f"{config.plant} fakes{_training_time(run)} (kept for the next audit; --order-by {default_order} "
                "skips this)",
                err=True,
            )

        calibration = calibrate(run, detectors, config, before_training=announce, **options)
        order_by = calibration.chosen
        found = ", ".join(f"{name} {auc:.3f}" for name, auc in calibration.aucs.items())
        how = f"read back from {calibration.path}" if calibration.reused else "calibration retraining"
        click.echo(f"planted fakes found (ROC AUC, {how}): {found}; ordering by {order_by}")
    scores = detector_scores(
        run.model,
        run.training_triples,
        validation,
        run.checkpoints,
        detectors,
        labels=run.labels,
        **options,
    )
    frame = audit_frame(scores, run.training_triples, run.labels, order_by=order_by, top_k=top_k)
    write_table(frame, output)
    for row in frame.head(5).itertuples():
        click.echo(f"{row.rank:>3}  {getattr(row, order_by):+.4e}  {row.head}  {row.relation}  {row.tail}")
    click.echo(f"wrote {len(frame)} training triples, most suspicious first by {order_by}, to {output}")


def _training_time(run) -> str:
    """``", about as long as the run's own training (N min)"``, from the manifest's epoch times; else ``""``."""
    times = run.manifest.get("epoch_seconds")
    if not isinstance(times, list) or not times or not all(isinstance(t, (int, float)) for t in times):
        return ""
    total = sum(times)
    said = f"{total:.0f} s" if total < 120 else f"{total / 60:.0f} min"
    return f", about as long as the run's own training ({said})"


def _default_order(run, fallback: str, plant: str | None) -> str:
    """``auto`` for a run whose manifest holds a training recipe, else ``fallback`` (said in one line)."""
    if run.has_recipe:
        return "auto"  # a recipe kgtracin cannot read is refused by the calibration, in one line
    if plant is not None:
        raise KGTracinError(
            "--plant chooses the detector by retraining the run's recipe, which only a run made by kgtracin train "
            "records; this run has none"
        )
    click.echo(
        f"ordering by {fallback}: choosing the detector from the run (--order-by auto) retrains its recipe, which "
        "only a run made by kgtracin train records",
        err=True,
    )
    return fallback


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--output", type=click.Path(), required=True, help="folder for the results")
@click.option(
    "--protocol",
    type=click.Choice(["deletion", "end-to-end"]),
    default="deletion",
    show_default=True,
    help="deletion: per target, on a small stand-in model; end-to-end: delete the union of N explanations and "
    "retrain once per arm with the run's own recipe (Kelpie's protocol; resumable)",
)
@click.option(
    "--retrain",
    type=click.Choice(["isolated", "reshuffled"]),
    default=None,
    help="deletion protocol: isolated (only the deleted triples differ) or reshuffled (PyKEEN's loop, new "
    "seeds) [default: isolated]",
)
@click.option(
    "--targets",
    type=int,
    default=None,
    callback=_positive,
    help="test triples ranked first to explain [default: 20; end-to-end: 100]",
)
@click.option(
    "--k",
    "ks",
    type=int,
    multiple=True,
    help="facts deleted per target (repeatable) [default: 1 and 10; end-to-end: 1]",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    help="end-to-end: an explanation to test, 'default' or TracIn options such as "
    "'loss=bce' or 'parameters=entity_representations.*', and 'selection=greedy' (sets built one fact at a time "
    "by the check) or 'checkpoints=last' (or first) (repeatable) [default: default]",
)
@click.option(
    "--batches",
    type=click.Choice(["reshuffled", "same"]),
    default=None,
    help="end-to-end: reshuffled (each retraining draws its batches afresh, Kelpie's) or same (the run's own "
    "batches less the deleted facts, so that only they differ; lcwa runs) [default: reshuffled]",
)
@click.option("--seeds", type=int, default=None, callback=_positive, help="seeds [default: 1 isolated, 3 reshuffled]")
@click.option(
    "--steps",
    type=int,
    default=None,
    callback=_positive,
    help="full-batch steps (isolated) or epochs (reshuffled) [default: 200 / 50]",
)
@click.option(
    "--embedding-dim", type=int, default=None, callback=_positive, help="deletion's stand-in model [default: 32]"
)
@click.option("--learning-rate", type=float, default=None, help="Adam learning rate [default: the run's]")
@click.option(
    "--constrained/--unconstrained",
    default=False,
    show_default=True,
    help="keep PyKEEN's default constrainer (DistMult: unit-norm entities)",
)
@click.option(
    "--arms",
    type=click.Choice(["all", "default"]),
    default="all",
    show_default=True,
    help="all: every TracIn loss x normalisation; default: kgtracin's default explanation only",
)
@click.option(
    "--noisy", type=float, default=None, help="also corrupt this fraction of training triples and score detectors"
)
@click.option(
    "--corruption",
    type=click.Choice(CORRUPTIONS),
    default="triples",
    show_default=True,
    help="with --noisy: add fakes, each a real triple with its head, relation or tail replaced (the field's "
    "protocol); plausible: its head or tail replaced by one the relation already has there; tails: replace tails",
)
@click.option("--no-deletion", is_flag=True, help="only the noisy-fact part (with --noisy)")
@trust_option
@verbose_option
def evaluate(
    run_dir,
    output,
    protocol,
    retrain,
    targets,
    ks,
    variants,
    batches,
    seeds,
    steps,
    embedding_dim,
    learning_rate,
    constrained,
    arms,
    noisy,
    corruption,
    no_deletion,
    trust_pickle,
    verbose,
) -> None:
    """Measure explanation quality for a run's model, beside baselines.

    Deletion: for test triples the model ranks first, delete k training triples (TracIn's proponents under
    each loss and normalisation, NH-k random neighbours, RG-k random far triples), retrain, and report PD
    (probability dropped) and TC (top-1 changed). The deletion protocol retrains a small stand-in model (DistMult
    d=32 by default), not the run's recipe. --noisy F: corrupt a fraction F of training triples, retrain, and report
    each audit detector's ROC AUC and precision / recall at 1%, 5% and 10% beside the plain-loss baseline.

    --protocol end-to-end: the field's protocol (Kelpie, eXpath) with the run's own recipe and seed. Explain N
    predictions ranked first with k facts each, delete the union, retrain once per arm (each --variant, NH-k
    random neighbours of the head, RG-k random far facts), and report ΔH@1 and ΔMRR. --batches same keeps the
    run's own batches in every retraining, so that only the deleted facts differ. Finished arms are kept in
    --output: the same command resumes an interrupted evaluation.
    """
    _setup_logging(verbose)
    if protocol == "end-to-end":
        ignored = {
            "--retrain": retrain,
            "--seeds": seeds,
            "--steps": steps,
            "--embedding-dim": embedding_dim,
            "--learning-rate": learning_rate,
            "--noisy": noisy,
        }
        given = [name for name, value in ignored.items() if value is not None] + (
            ["--no-deletion"] if no_deletion else []
        )
        if given:
            raise KGTracinError(
                f"{given[0]} is for the deletion protocol; --protocol end-to-end retrains with the run's recipe"
            )
        _end_to_end(
            run_dir, output, targets or 100, ks or (1,), variants or ("default",), batches or "reshuffled", trust_pickle
        )
        return
    if variants:
        raise KGTracinError("--variant is for --protocol end-to-end")
    if batches:
        raise KGTracinError("--batches is for --protocol end-to-end; --retrain sets the deletion protocol's training")
    retrain = retrain or "isolated"
    targets = targets or 20
    ks = ks or (1, 10)
    embedding_dim = embedding_dim or 32
    import shlex

    from pykeen.triples import TriplesFactory

    from ..config import DEFAULT_NORMALIZE
    from ..evaluation import (
        DEFAULT_ARMS,
        EvaluationConfig,
        RetrainConfig,
        TracInArm,
        run_deletion,
        run_noisy,
    )
    from ..evaluation.outputs import write_outputs
    from ..outputs import check_new_folder, check_not_input
    from ..runs import load_run

    if noisy is not None and not 0 < noisy < 1:
        raise KGTracinError(f"--noisy must be a fraction between 0 and 1, got {noisy}")
    if no_deletion and noisy is None:
        raise KGTracinError("--no-deletion needs --noisy")
    if any(k < 1 for k in ks):
        raise KGTracinError("--k must be >= 1")
    if learning_rate is not None and not 0 < learning_rate < math.inf:
        raise KGTracinError(f"--learning-rate must be a positive number, got {learning_rate}")
    out = Path(output)
    check_new_folder(out)
    check_not_input(out, folders=[("the run directory", run_dir)])
    run = load_run(run_dir, trust_pickle=trust_pickle)
    if "testing" not in run.splits:
        raise KGTracinError("the run has no test split to draw targets from")
    num_train = run.training_triples.shape[0]
    if max(ks) > num_train:
        raise KGTracinError(f"--k {max(ks)} exceeds the run's {num_train} training triples")
    if noisy is not None and round(noisy * num_train) < 1:
        raise KGTracinError(
            f"--noisy {noisy} corrupts no triple of the run's {num_train} training triples; give at "
            f"least {1.5 / num_train:.2g}"
        )
    factory = TriplesFactory(
        run.training_triples,
        run.labels.entity_to_id,
        run.labels.relation_to_id,
        create_inverse_triples=bool(run.model.use_inverse_triples),
    )
    mode_steps = steps or (200 if retrain == "isolated" else 50)
    lr = (
        learning_rate
        if learning_rate is not None
        else float((run.manifest.get("training") or {}).get("learning_rate", 0.01))
    )
    recipe = RetrainConfig(
        model=type(run.model).__name__,
        embedding_dim=embedding_dim,
        inverse_triples=bool(run.model.use_inverse_triples),
        constrained=constrained,
        epochs=mode_steps,
        learning_rate=lr,
    )
    default_arm = TracInArm(run.tracin_loss, DEFAULT_NORMALIZE)
    config = EvaluationConfig(
        retrain=recipe,
        mode=retrain,
        targets=targets,
        ks=tuple(sorted(set(ks))),
        arms=DEFAULT_ARMS if arms == "all" else (default_arm,),
        seeds=tuple(range(seeds or (1 if retrain == "isolated" else 3))),
    )
    result = {"run": str(run_dir), "command": "kgtracin " + shlex.join(sys.argv[1:])}
    if not no_deletion:
        result["deletion"] = run_deletion(factory, dict(run.splits), config)
    if noisy is not None:
        result["noisy"] = run_noisy(factory, dict(run.splits), config, noisy, run.tracin_loss, corruption)
    write_outputs(result, out)
    click.echo((out / "evaluation.md").read_text(encoding="utf-8"))
    click.echo(f"wrote {out / 'evaluation.md'}, evaluation.json and evaluation.png")


def _end_to_end(run_dir, output, predictions, ks, variant_texts, batches, trust_pickle) -> None:
    import shlex

    from ..evaluation.batches import same_batches_unsupported
    from ..evaluation.end_to_end import (
        EndToEndConfig,
        fingerprint,
        parse_variant,
        retraining_config,
        run_end_to_end,
        variants_unsupported,
    )
    from ..evaluation.outputs import end_to_end_markdown
    from ..evaluation.workspace import Workspace
    from ..outputs import check_not_input
    from ..runs import load_run

    if any(k < 1 for k in ks):
        raise KGTracinError("--k must be >= 1")
    variants = tuple(dict.fromkeys(parse_variant(text) for text in variant_texts))
    check_not_input(output, folders=[("the run directory", run_dir)])
    run = load_run(run_dir, trust_pickle=trust_pickle)
    config = EndToEndConfig(predictions=predictions, ks=tuple(sorted(set(ks))), variants=variants, batches=batches)
    recipe, _ = retraining_config(run)  # refuse a run without a recipe before anything is written
    reason = same_batches_unsupported(recipe.training_loop, run.model) if batches == "same" else None
    reason = reason or variants_unsupported(run, variants)
    if reason:
        raise KGTracinError(reason)
    workspace = Workspace(output, fingerprint(run, config))
    if workspace.resumed:
        click.echo(f"resuming the evaluation in {output}", err=True)
    result = run_end_to_end(run, workspace, config)
    result = {"run": str(run_dir), "command": "kgtracin " + shlex.join(sys.argv[1:]), **result}
    workspace.write("end-to-end.json", result)
    text = end_to_end_markdown(result, run.labels, run.training_triples)
    workspace.write("end-to-end.md", text)
    click.echo(text)
    click.echo(f"wrote {Path(output) / 'end-to-end.md'} and end-to-end.json")
