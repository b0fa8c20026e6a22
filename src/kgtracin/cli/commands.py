"""The commands ``train``, ``explain``, ``self-influence`` and ``demo``."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import click

from ..config import TrainingConfig
from ..datasets import SHIPPED
from ..errors import KGTracinError
from .group import cli
from .options import (
    _positive,
    _setup_logging,
    _top_k,
    batch_option,
    candidates_option,
    compile_option,
    dataset_option,
    device_option,
    field_option,
    loss_option,
    method_option,
    normalize_option,
    open_run,
    parameters_option,
    precision_option,
    projection_option,
    run_folders,
    run_options,
    run_tracin,
    shard_option,
    triple_options,
    verbose_option,
)
from .selection import add_check, check_store_path, choose_triples, model_view, print_table, refuse_check

__all__ = ["train", "explain", "self_influence", "demo"]

logger = logging.getLogger("kgtracin")


@cli.command()
@dataset_option(
    "--dataset",
    "dataset",
    help=f"a PyKEEN dataset by name ({', '.join(SHIPPED)} are shipped; "
    "others, such as wn18rr or fb15k237, are downloaded into PyKEEN's cache on first use)",
)
@click.option("--training", type=click.Path(), default=None, help="labelled TSV: head<TAB>relation<TAB>tail")
@click.option("--validation", type=click.Path(), default=None, help="labelled TSV")
@click.option("--testing", type=click.Path(), default=None, help="labelled TSV")
@field_option(TrainingConfig, "model")
@field_option(TrainingConfig, "epochs")
@field_option(TrainingConfig, "checkpoints")
@field_option(TrainingConfig, "seed")
@field_option(TrainingConfig, "learning_rate")
@field_option(TrainingConfig, "batch_size")
@field_option(TrainingConfig, "embedding_dim")
@field_option(TrainingConfig, "inverse_triples", "--inverse-triples/--no-inverse-triples")
@field_option(TrainingConfig, "training_loop")
@field_option(TrainingConfig, "loss")
@field_option(TrainingConfig, "checkpoint_schedule")
@click.option("--output", type=click.Path(), required=True, help="run directory to create")
@verbose_option
def train(
    dataset,
    training,
    validation,
    testing,
    model,
    epochs,
    checkpoints,
    seed,
    learning_rate,
    batch_size,
    embedding_dim,
    inverse_triples,
    training_loop,
    loss,
    checkpoint_schedule,
    output,
    verbose,
) -> None:
    """Train a PyKEEN model, save checkpoints with their learning rates, and report its filtered test MRR.

    The defaults (LCWA, cross-entropy over all tails, Adam at 0.01, about 4000 steps and at most 50 epochs, and a
    recipe per model: kgtracin.recipes) train models worth explaining on the shipped datasets and on a 38k-entity
    WordNet graph; the MRR and Hits@k are printed and kept in the run's manifest.
    """
    _setup_logging(verbose)
    from ..training import format_evaluation, train_run

    if (dataset is None) == (training is None):
        raise KGTracinError("give exactly one of --dataset or --training FILE")
    if dataset is not None and (validation or testing):
        raise KGTracinError("--validation and --testing go with --training, not --dataset")
    config = TrainingConfig(
        model=model,
        epochs=epochs,
        checkpoints=checkpoints,
        seed=seed,
        learning_rate=learning_rate,
        batch_size=batch_size,
        embedding_dim=embedding_dim,
        inverse_triples=inverse_triples,
        training_loop=training_loop,
        loss=loss,
        checkpoint_schedule=checkpoint_schedule,
    )
    path = train_run(output, config, dataset=dataset, training=training, validation=validation, testing=testing)
    from ..runs import read_manifest

    manifest = read_manifest(path)
    click.echo(
        f"trained {config.model} for {manifest['training']['epochs']} epochs ({config.training_loop}, "
        f"{config.loss}); {format_evaluation(manifest.get('evaluation'))}"
    )
    click.echo(f"run saved to {path}")


@cli.command()
@click.argument("run_dir", type=click.Path())
@triple_options
@click.option("--top-k", type=int, default=10, show_default=True, callback=_top_k)
@parameters_option
@method_option
@batch_option
@device_option
@precision_option
@compile_option
@shard_option
@loss_option
@normalize_option
@candidates_option
@projection_option
@click.option(
    "--store",
    type=click.Path(),
    default=None,
    help="folder for finished shards (default: beside the output); a re-run resumes from it",
)
@click.option(
    "--check",
    "check_k",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="also relearn the test triples' heads (10 Adam steps from the final model, all heads together, Kelpie's "
    "mimic) from all their facts, and again without the first K proponents of every test triple; report each "
    "triple's filtered tail rank after both (check_rank_with, check_rank_without): how much the explanations "
    "matter to the predictions",
)
@click.option("--output", type=click.Path(), required=True, help="FILE.tsv or FILE.jsonl")
@run_options
@verbose_option
def explain(
    run_dir,
    triples,
    test_file,
    split,
    limit,
    predict,
    predict_head,
    num_predictions,
    top_k,
    parameters,
    method,
    batch_size,
    device,
    precision,
    compile_,
    shard_size,
    loss,
    normalize,
    candidates,
    projection_dim,
    projection_seed,
    store,
    check_k,
    output,
    run_source,
    verbose,
) -> None:
    """Top-k proponents and opponents of test triples, labelled.

    Finished training shards are kept in a store until the output is written, so a killed run re-run with the
    same arguments resumes. Under torchrun (torchrun --nproc-per-node K -m kgtracin explain ...) the shards
    are split over the processes; rank 0 writes the output, identical to one process.
    """
    _setup_logging(verbose)
    from ..outputs import check_output, write_table
    from ..predictions import unseen_notes
    from ..runners import remove_store
    from ..runners.distributed import init_from_env, local_device, world
    from ..staging import short_name

    folders = run_folders(run_dir, run_source)
    output_path = check_output(output, inputs=[("the test file", test_file)], input_folders=folders)
    if store is not None:
        check_store_path(store, output_path, folders)
    device = local_device(device)
    distributed = init_from_env(device)
    rank, _ = world()
    run = open_run(run_dir, run_source)
    test = choose_triples(run, triples, test_file, split, limit, predict, predict_head, num_predictions)
    if check_k is not None:
        refuse_check(run, check_k, top_k, bool(predict_head))
    loss = loss or run.tracin_loss
    tracin = run_tracin(
        run,
        parameters,
        loss,
        method=method,
        batch_size=batch_size,
        device=device,
        precision=precision,
        compile=compile_,
        shard_size=shard_size,
        progress=rank == 0,
        normalize=normalize,
        candidates=candidates,
        projection_dim=projection_dim,
        projection_seed=projection_seed,
    )
    if candidates == "neighbourhood":  # a small part of one pass: nothing worth storing
        if store is not None:
            raise KGTracinError("--store is for --candidates all (a neighbourhood is a small part of one pass)")
    elif store is None:  # one store per output: a second process writing the same output is refused
        store = Path(os.path.abspath(output_path)).parent / f".{short_name(output_path.name)}.kgtracin-store"
    try:
        result = tracin.influence(test, top_k=top_k, store=store)
    except KGTracinError:
        if store is not None:
            remove_store(store, unless_resumable=True)  # a store with finished shards is kept for the re-run
        raise
    if rank == 0:
        scores, ranks = model_view(run, test, head=bool(predict_head))
        notes = unseen_notes(test, run.training_triples)
        frame = result.to_frame(model_view=(scores, ranks), notes=notes, rank_of="head" if predict_head else "tail")
        if check_k is not None:
            frame = add_check(run, test, result, check_k, frame)
        write_table(frame, output_path)
        if check_k is not None:
            click.echo(
                f"check: the {len(test)} test triple(s)' heads relearned together by {frame.attrs['check_steps']} Adam "
                f"steps at learning rate "
                f"{frame.attrs['check_rate']:g}, with all their facts and without the first {check_k} proponent(s) "
                "of every test triple"
            )
            per_test = frame.drop_duplicates("test_index")
            kept = int((per_test["check_rank_with"] <= per_test["test_rank"]).sum())
            click.echo(
                f"check: with all their facts the relearned heads reach the model's own rank for {kept} of "
                f"{len(per_test)} test triple(s); where they do not, the check's ranks say little"
            )
        if store is not None:
            remove_store(store)
        normalised = f"; training gradients normalised ({normalize})" if normalize is not None else ""
        click.echo(f"TracIn loss: {loss} (the model was trained with {run.training_loss}){normalised}")
        print_table(frame, top_k=top_k)
        unseen = sum(bool(note) for note in notes)
        if unseen:
            click.echo(
                f"\nnote: {unseen} test triple(s) mention an entity that never occurs in training: its "
                "embedding is untrained, so its score, rank and explanation say little (see test_note)"
            )
        if projection_dim is not None:
            click.echo(
                f"\napproximate: dense gradient factors projected to {projection_dim} numbers "
                f"(seed {projection_seed}); influences are estimates"
            )
        click.echo(f"\nwrote {len(frame)} rows for {len(test)} test triple(s) to {output_path}")
    if distributed:
        import torch.distributed as dist

        dist.destroy_process_group()


@cli.command("self-influence")
@click.argument("run_dir", type=click.Path())
@click.option("--top-k", type=int, default=None, callback=_top_k, help="only the K highest (default: all)")
@parameters_option
@method_option
@batch_option
@device_option
@precision_option
@loss_option
@click.option("--output", type=click.Path(), required=True, help="FILE.tsv or FILE.jsonl")
@run_options
@verbose_option
def self_influence(
    run_dir, top_k, parameters, method, batch_size, device, precision, loss, output, run_source, verbose
) -> None:
    """Training triples ranked by self-influence: candidates for noisy facts."""
    _setup_logging(verbose)

    from ..audit import self_influence_frame
    from ..outputs import check_output, write_table

    check_output(output, input_folders=run_folders(run_dir, run_source))
    run = open_run(run_dir, run_source)
    tracin = run_tracin(run, parameters, loss, method=method, batch_size=batch_size, device=device, precision=precision)
    frame = self_influence_frame(tracin.self_influence(), run.training_triples, run.labels, top_k)
    write_table(frame, output)
    for row in frame.head(5).itertuples():
        click.echo(f"{row.rank:>3}  {row.self_influence:.4e}  {row.head}  {row.relation}  {row.tail}")
    click.echo(f"wrote {len(frame)} training triples to {output}")


@cli.command()
@click.option("--model", default="ConvE", show_default=True, help="PyKEEN model name")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--num-test", type=int, default=3, show_default=True, callback=_positive, help="test triples to explain")
@click.option("--top-k", type=int, default=5, show_default=True, callback=_top_k)
@click.option("--output", type=click.Path(), default=None, help="keep the run directory here")
@verbose_option
def demo(model, epochs, num_test, top_k, output, verbose) -> None:
    """Train a small model on Nations with checkpoints, then explain a few test predictions."""
    _setup_logging(verbose)
    from ..runs import load_run
    from ..tracin import TracIn
    from ..training import format_evaluation, train_run

    with tempfile.TemporaryDirectory(prefix="kgtracin-demo-") as scratch:
        run_dir = Path(output) if output else Path(scratch) / "run"
        config = TrainingConfig(
            model=model,
            epochs=epochs,
            checkpoints=min(3, epochs),
            embedding_dim=64 if model.lower() != "conve" else 200,
        )
        click.echo(f"training {config.model} on Nations for {epochs} epochs with {config.checkpoints} checkpoints ...")
        train_run(run_dir, config, dataset="nations")
        run = load_run(run_dir)
        click.echo(format_evaluation(run.manifest.get("evaluation")))
        test = run.splits["testing"][:num_test]
        tracin = TracIn.from_run(run_dir)
        click.echo(
            f"TracIn ({tracin.config.loss} loss) over all "
            f"{sum(p.numel() for p in run.model.parameters())} parameters, {len(run.checkpoints)} "
            f"checkpoints, {len(run.training_triples)} training triples"
        )
        frame = tracin.influence(test, top_k=top_k).to_frame(model_view=model_view(run, test))
        print_table(frame, per_kind=top_k, max_tests=num_test)
    if output:
        click.echo(
            f"\nrun saved to {output}; try: kgtracin explain {output} --split test --limit 10 --output influence.tsv"
        )
