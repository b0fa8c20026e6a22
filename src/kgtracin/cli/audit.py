"""``kgtracin audit``: every training triple ranked by how suspicious it is (noisy or wrong facts first)."""

from __future__ import annotations

import click

from ..config import DETECTORS, PLANTS, RETRAINED_DETECTORS
from ..errors import KGTracinError
from .group import cli
from .options import (
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
    verbose_option,
)

#: the held_out detector's retrainings unless --folds says otherwise
DEFAULT_FOLDS = 5


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--top-k", type=int, default=None, callback=_top_k, help="only the K most suspicious (default: all)")
@click.option(
    "--order-by",
    type=click.Choice([*DETECTORS, *RETRAINED_DETECTORS, "auto"]),
    default=None,
    help="the detector that orders the rows; auto: retrain the run's recipe once with 5% planted fakes "
    "(--plant) and take the detector that finds them best (ROC AUC), kept for the next audit of the run "
    "(unless --no-cache) "
    "[default: auto for a run made by kgtracin train, else memorization]",
)
@click.option(
    "--plant",
    type=click.Choice(PLANTS),
    default=None,
    help="the fakes planted by --order-by auto and by the learned column: plausible (a head or tail the relation "
    "already has there, like a wrong fact in a real graph) or triples (the field's protocol: a head, relation or "
    "tail replaced by a random one) [default: plausible for auto, triples for learned]",
)
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=None,
    help="add the held_out and learned columns: retrain the run's recipe K times, each without 1/K of the training "
    "triples, and score each triple by the log ranks it gets from the model that never saw it (K times the run's "
    "training), standardised among its relation's triples (held_out), and weighed with the graph's own cues by a "
    "classifier learned from planted fakes (learned) "
    f"[default with --order-by held_out or learned: {DEFAULT_FOLDS}]",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="retrain whatever the audit retrains (--order-by auto, --folds), reading nothing back from kgtracin's "
    "cache folder and keeping nothing there",
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
    run_dir,
    top_k,
    order_by,
    plant,
    folds,
    no_cache,
    parameters,
    method,
    batch_size,
    device,
    loss,
    output,
    run_source,
    verbose,
) -> None:
    """Rank every training triple by how suspicious it is (noisy or wrong facts first).

    Columns: rank head relation tail train_index, then one per detector: memorization (the share of the triple's
    own steps in its learning, self-influence over the summed influence of all training triples on it),
    validation_cosine (harm to the validation loss, gradient-cosine TracIn), validation (the same, raw TracIn),
    self_influence, support (few other facts share the triple's head and relation, or its relation and tail: the
    graph's own baseline, no model), consistency (an entity in a role its other roles rarely come with, or a pair
    linked by two relations that rarely link one pair: no model) and loss (the final model's loss of the triple
    alone: the model's baseline). With --folds K, --order-by held_out or --order-by learned, also held_out: the
    triple's log ranks under a model retrained without it (K retrainings of the run's recipe, no TracIn; the
    judgement TracIn's self-influence estimates), standardised among the training triples of its relation; and
    learned: held_out and the graph's cues weighed by a classifier that learns from fakes planted in the run
    (--plant, the field's by default) which of them find fakes in this graph. Each retrained model is kept in
    the cache folder below (retrainings/, one file the size of the run's model per fold; not with --no-cache), so
    an interrupted audit resumes at its fold and the next audit of the run with the same --folds retrains
    nothing.
    The TracIn loss is bce unless --loss says otherwise: it found noisy facts best on every model measured.

    No detector leads on every graph and model, so for a run made by kgtracin train the rows are ordered by the
    detector chosen from the run (--order-by auto, the default there): its recipe is retrained once with planted
    fakes, and the detector that finds them best is kept for the next audit of the same run and settings (in
    $KGTRACIN_CACHE_DIR, else $XDG_CACHE_HOME/kgtracin, else ~/.cache/kgtracin; never inside the run's folder). It
    chooses for the fakes it plants (--plant): by default plausible ones, a head or tail the relation already has
    there. Other runs, or --order-by memorization, take memorization, above chance in every setting measured.
    --no-cache retrains the calibration and the folds, reading nothing back from the cache folder and keeping
    nothing there.
    """
    _setup_logging(verbose)
    from ..audit import AUDIT_LOSS, audit_frame, detector_scores, detectors_for
    from ..outputs import check_output, write_table

    if plant is not None and order_by not in (None, "auto", *RETRAINED_DETECTORS) and folds is None:
        raise KGTracinError(
            f"--plant chooses the fakes that --order-by auto or the learned column plants, not {order_by}; drop one"
        )
    check_output(output, input_folders=run_folders(run_dir, run_source))
    run = open_run(run_dir, run_source)
    validation = run.splits.get("validation")
    detectors, default_order = detectors_for(validation is not None)
    if order_by in DETECTORS and order_by not in detectors:  # before any computation
        raise KGTracinError(f"--order-by {order_by} needs the run's validation triples; this run has none")
    if order_by in RETRAINED_DETECTORS and folds is None:
        folds = DEFAULT_FOLDS
    learned = fakes = None
    if folds is not None:
        held_out, learned, fakes = _cross_fitting(run, folds, plant, order_by == "learned", not no_cache)
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

        config = CalibrationConfig(keep=not no_cache, **({} if plant is None else {"plant": plant}))
        kept = "not kept: --no-cache" if no_cache else "kept for the next audit"

        def announce() -> None:
            click.echo(
                f"choosing the detector: retraining the run's recipe once with {config.fraction:.0%} planted "
                f"{config.plant} fakes{_training_time(run)} ({kept}; --order-by {default_order} skips this)",
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
    if folds is not None:
        from ..evaluation.held_out import held_out_scores, kept_folds
        from ..evaluation.learned import cross_fitted_detectors
        from ..retrainings import cache_folder as retrainings_folder

        kept = kept_folds(run, held_out)
        retraining = _retraining_said(run, folds, kept, retrainings_folder())
        if learned is None:
            click.echo(f"held_out: {retraining}", err=True)
            scores["held_out"] = held_out_scores(run, held_out)
        else:
            how = f"{learned.plantings} plantings of {learned.fraction:.0%} fakes ({learned.plant})"
            click.echo(f"held_out and learned: {retraining}; then learning from {how}", err=True)
            scores.update(cross_fitted_detectors(run, held_out, learned, fakes))
    frame = audit_frame(scores, run.training_triples, run.labels, order_by=order_by, top_k=top_k)
    write_table(frame, output)
    for row in frame.head(5).itertuples():
        click.echo(f"{row.rank:>3}  {getattr(row, order_by):+.4e}  {row.head}  {row.relation}  {row.tail}")
    click.echo(f"wrote {len(frame)} training triples, most suspicious first by {order_by}, to {output}")


def _cross_fitting(run, folds: int, plant: str | None, learned_asked: bool, keep: bool):
    """The configurations of the held_out and learned columns and the learned column's planted fakes, refused
    before any computation where the run cannot give them. A run too small to plant a fake in, or where every fake
    drawn is a known triple, gets the held_out column alone (said in one line), unless learned was asked for.
    ``keep``: keep the retrainings and read kept ones back.

    :return: ``(HeldOutConfig, LearnedConfig or None, fakes or None)``
    """
    from ..evaluation.held_out import HeldOutConfig, check_held_out
    from ..evaluation.learned import LearnedConfig, check_learned, plant_fakes

    held_out = HeldOutConfig(folds=folds, keep=keep)
    learned = LearnedConfig() if plant is None else LearnedConfig(plant=plant)
    try:
        check_learned(run, held_out, learned)
        return held_out, learned, plant_fakes(run, learned)
    except KGTracinError as refusal:
        if learned_asked:
            raise
        check_held_out(run, held_out)  # a refusal of held_out itself stops here
        click.echo(f"no learned column: {refusal}", err=True)
        return held_out, None, None


def _retraining_said(run, folds: int, kept: int, folder) -> str:
    """What the cross-fitting will do: retrain ``folds - kept`` times, read ``kept`` retrainings back."""
    left = folds - kept
    each = "without" if left == 1 else "each without"
    retraining = f"{each} 1/{folds} of the training triples{_training_time(run, left)}"
    if not kept:
        return f"retraining the run's recipe {folds} times, {retraining}"
    if not left:
        return f"the run's {folds} retrainings read back from {folder}"
    other = "the other one" if left == 1 else f"the other {left}"
    return f"{kept} of the run's {folds} retrainings read back from {folder}; retraining {other}, {retraining}"


def _training_time(run, times: int = 1) -> str:
    """``", about as long as the run's own training (N min)"`` (or ``"about K times ..."``), from the manifest's
    epoch times; else ``""``."""
    epochs = run.manifest.get("epoch_seconds")
    if not isinstance(epochs, list) or not epochs or not all(isinstance(t, (int, float)) for t in epochs):
        return ""
    total = sum(epochs) * times
    said = f"{total:.0f} s" if total < 120 else f"{total / 60:.0f} min"
    how = "as long as" if times == 1 else f"{times} times as long as"
    return f", about {how} the run's own training ({said})"


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
