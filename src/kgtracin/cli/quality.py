"""``kgtracin evaluate``: measuring explanation quality (deletion, end to end, noisy facts)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from ..config import CORRUPTIONS
from ..errors import KGTracinError
from .group import cli
from .options import (
    _positive,
    _setup_logging,
    trust_option,
    verbose_option,
)


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
