"""The command line: ``kgtracin train | explain | self-influence | audit | evaluate | report | demo``."""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import click

from ..config import DEFAULT_EPOCHS, DEFAULT_LEARNING_RATE
from ..errors import KGTracinError
from .options import (projection_option, _positive, _setup_logging, _top_k, batch_option, compile_option, device_option, loss_option,
                      method_option, normalize_option, open_run, parameters_option, precision_option, run_options,
                      shard_option, triple_options, verbose_option)

__all__ = ["cli", "main"]

logger = logging.getLogger("kgtracin")


@click.group()
@click.version_option(package_name="kgtracin")
def cli() -> None:
    """kgtracin: which training triples made a PyKEEN model predict (h, r, t)? Exact TracIn, fast."""


@cli.command()
@click.option("--dataset", type=click.Choice(["nations", "kinships", "umls"], case_sensitive=False), default=None,
              help="a dataset shipped inside PyKEEN")
@click.option("--training", type=click.Path(), default=None, help="labelled TSV: head<TAB>relation<TAB>tail")
@click.option("--validation", type=click.Path(), default=None, help="labelled TSV")
@click.option("--testing", type=click.Path(), default=None, help="labelled TSV")
@click.option("--model", default="ConvE", show_default=True, help="PyKEEN model name")
@click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True)
@click.option("--checkpoints", type=int, default=None, help="checkpoints spread over training [default: min(5, epochs)]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE, show_default=True, help="Adam learning rate")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--embedding-dim", type=int, default=None, help="embedding dimension (model default)")
@click.option("--inverse-triples/--no-inverse-triples", default=None, help="default: on for ConvE only")
@click.option("--training-loop", type=click.Choice(["lcwa", "slcwa"]), default="lcwa", show_default=True)
@click.option("--loss", default="crossentropy", show_default=True,
              help="PyKEEN training loss (crossentropy, softplus, bcewithlogits, marginranking, ...)")
@click.option("--checkpoint-schedule", type=click.Choice(["linear", "log"]), default="log", show_default=True,
              help="spread the checkpoints evenly, or geometrically from epoch 1")
@click.option("--output", type=click.Path(), required=True, help="run directory to create")
@verbose_option
def train(dataset, training, validation, testing, model, epochs, checkpoints, seed, learning_rate, batch_size,
          embedding_dim, inverse_triples, training_loop, loss, checkpoint_schedule, output, verbose) -> None:
    """Train a PyKEEN model, save checkpoints with their learning rates, and report its filtered test MRR.

    The defaults (LCWA, cross-entropy over all tails, Adam at 0.01, 50 epochs) train models worth explaining
    on the shipped datasets; the MRR and Hits@k are printed and kept in the run's manifest.
    """
    _setup_logging(verbose)
    from ..training import TrainingConfig, format_evaluation, train_run

    if (dataset is None) == (training is None):
        raise KGTracinError("give exactly one of --dataset or --training FILE")
    if dataset is not None and (validation or testing):
        raise KGTracinError("--validation and --testing go with --training, not --dataset")
    config = TrainingConfig(model=model, epochs=epochs, checkpoints=checkpoints, seed=seed,
                            learning_rate=learning_rate, batch_size=batch_size, embedding_dim=embedding_dim,
                            inverse_triples=inverse_triples, training_loop=training_loop, loss=loss,
                            checkpoint_schedule=checkpoint_schedule)
    path = train_run(output, config, dataset=dataset, training=training, validation=validation,
                     testing=testing)
    from ..runs import read_manifest

    click.echo(f"trained {config.model} for {epochs} epochs ({config.training_loop}, {config.loss}); "
               f"{format_evaluation(read_manifest(path).get('evaluation'))}")
    click.echo(f"run saved to {path}")


def _test_triples(run, triples, test_file, split, limit, predict=None, predict_head=None, n=3):
    import torch

    from ..triples import read_labeled_triples

    chosen = sum(x is not None and x != () for x in (triples, test_file, split, predict, predict_head))
    if chosen != 1:
        raise KGTracinError("give exactly one of --triple H R T, --test-file FILE, --split test|validation, "
                            "--predict H R or --predict-head R T")
    if predict or predict_head:
        from ..predictions import KnownTriples, top_predictions

        h, r, t = run.labels.resolve((predict[0], predict[1], predict[0]) if predict else
                                     (predict_head[1], predict_head[0], predict_head[1]),
                                     source="--predict" if predict else "--predict-head")
        known = KnownTriples([run.training_triples])
        found = top_predictions(run.model, (h, r) if predict else (r, t), n, known, head=bool(predict_head))
        if found.shape[0] == 0:
            raise KGTracinError("every candidate is already a training triple; nothing new to explain")
        return found
    if triples:
        return torch.tensor([run.labels.resolve(t) for t in triples], dtype=torch.long)
    if test_file is not None:
        return run.labels.to_ids(read_labeled_triples(test_file), source=str(test_file))
    name = {"test": "testing", "validation": "validation"}[split]
    if name not in run.splits:
        raise KGTracinError(f"the run has no {split} split; give --dataset nations|kinships|umls (the shipped "
                            "dataset a PyKEEN folder was trained on), --test-file FILE or --triple H R T")
    test = run.splits[name]
    if limit is not None:
        test = test[:limit]
    return test


def _print_table(frame, per_kind: int = 3, max_tests: int = 5) -> None:
    shown = frame[frame["rank"] <= per_kind]
    tests = shown["test_index"].unique()
    for test_index in tests[:max_tests]:
        rows = shown[shown["test_index"] == test_index]
        first = rows.iloc[0]
        click.echo(f"\n{first.test_head}  {first.test_relation}  {first.test_tail}")
        if "test_rank" in rows.columns:
            click.echo(f"  model: score {first.test_score:+.4f}, filtered rank {first.test_rank:g} among all tails")
        for kind in ("proponent", "opponent"):
            for row in rows[rows["kind"] == kind].itertuples():
                click.echo(f"  {kind:<9} {row.rank:>2}  {row.influence:+.4e}  "
                           f"{row.train_head}  {row.train_relation}  {row.train_tail}")
    if len(tests) > max_tests:
        click.echo(f"\n... and {len(tests) - max_tests} more test triples in the output file")


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
@projection_option
@click.option("--store", type=click.Path(), default=None,
              help="folder for finished shards (default: beside the output); a re-run resumes from it")
@click.option("--output", type=click.Path(), required=True, help="FILE.tsv or FILE.jsonl")
@run_options
@verbose_option
def explain(run_dir, triples, test_file, split, limit, predict, predict_head, num_predictions, top_k, parameters,
            method, batch_size, device, precision, compile_, shard_size, loss, normalize, projection_dim,
            projection_seed, store, output, run_source, verbose) -> None:
    """Top-k proponents and opponents of test triples, labelled.

    Finished training shards are kept in a store until the output is written, so a killed run re-run with the
    same arguments resumes. Under torchrun (torchrun --nproc-per-node K -m kgtracin explain ...) the shards
    are split over the processes; rank 0 writes the output, identical to one process.
    """
    _setup_logging(verbose)
    from ..outputs import check_output, write_table
    from ..runners import ShardStore
    from ..runners.distributed import init_from_env, local_device, world
    from ..tracin import TracIn

    output_path = check_output(output)
    device = local_device(device)
    distributed = init_from_env(device)
    rank, _ = world()
    run = open_run(run_dir, run_source)
    test = _test_triples(run, triples, test_file, split, limit, predict, predict_head, num_predictions)
    tracin = TracIn(run.model, run.training_triples, checkpoints=run.checkpoints,
                    parameters=list(parameters) or "all", method=method, batch_size=batch_size, device=device,
                    precision=precision, compile=compile_, shard_size=shard_size, labels=run.labels,
                    progress=rank == 0, loss=loss or run.tracin_loss,
                    normalize=None if normalize == "none" else normalize, projection_dim=projection_dim,
                    projection_seed=projection_seed)
    store = Path(store) if store else output_path.absolute().parent / f".{output_path.name}.kgtracin-store"
    result = tracin.influence(test, top_k=top_k, store=store)
    if rank == 0:
        from ..predictions import KnownTriples, tail_view

        scores, ranks = tail_view(run.model, test, KnownTriples(run.splits.values()))
        frame = result.to_frame(model_view=(scores, ranks))
        write_table(frame, output_path)
        ShardStore.remove_folder(store)
        _print_table(frame)
        if projection_dim is not None:
            click.echo(f"\napproximate: dense gradient factors projected to {projection_dim} numbers "
                       f"(seed {projection_seed}); influences are estimates")
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
def self_influence(run_dir, top_k, parameters, method, batch_size, device, precision, loss, output, run_source,
                   verbose) -> None:
    """Training triples ranked by self-influence: candidates for noisy facts."""
    _setup_logging(verbose)
    import pandas as pd
    import torch

    from ..outputs import check_output, write_table
    from ..tracin import TracIn

    check_output(output)
    run = open_run(run_dir, run_source)
    tracin = TracIn(run.model, run.training_triples, checkpoints=run.checkpoints,
                    parameters=list(parameters) or "all", method=method, batch_size=batch_size, device=device,
                    precision=precision, loss=loss or run.tracin_loss)
    values = tracin.self_influence()
    order = torch.argsort(values, descending=True, stable=True)
    if top_k is not None:
        order = order[:top_k]
    labeled = run.labels.to_labels(run.training_triples[order])
    frame = pd.DataFrame({"rank": range(1, len(order) + 1), "head": labeled[:, 0], "relation": labeled[:, 1],
                          "tail": labeled[:, 2], "self_influence": values[order].double().numpy()})
    write_table(frame, output)
    for row in frame.head(5).itertuples():
        click.echo(f"{row.rank:>3}  {row.self_influence:.4e}  {row.head}  {row.relation}  {row.tail}")
    click.echo(f"wrote {len(frame)} training triples to {output}")


@cli.command()
@click.option("--model", default="ConvE", show_default=True, help="PyKEEN model name")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--num-test", type=int, default=3, show_default=True, callback=_positive,
              help="test triples to explain")
@click.option("--top-k", type=int, default=5, show_default=True, callback=_top_k)
@click.option("--output", type=click.Path(), default=None, help="keep the run directory here")
@verbose_option
def demo(model, epochs, num_test, top_k, output, verbose) -> None:
    """Train a small model on Nations with checkpoints, then explain a few test predictions."""
    _setup_logging(verbose)
    from ..predictions import KnownTriples, tail_view
    from ..runs import load_run
    from ..tracin import TracIn
    from ..training import TrainingConfig, format_evaluation, train_run

    with tempfile.TemporaryDirectory(prefix="kgtracin-demo-") as scratch:
        run_dir = Path(output) if output else Path(scratch) / "run"
        config = TrainingConfig(model=model, epochs=epochs, checkpoints=min(3, epochs),
                                embedding_dim=64 if model.lower() != "conve" else 200)
        click.echo(f"training {config.model} on Nations for {epochs} epochs with {config.checkpoints} checkpoints ...")
        train_run(run_dir, config, dataset="nations")
        run = load_run(run_dir)
        click.echo(format_evaluation(run.manifest.get("evaluation")))
        test = run.splits["testing"][:num_test]
        tracin = TracIn.from_run(run_dir)
        click.echo(f"TracIn ({tracin.config.loss} loss) over all "
                   f"{sum(p.numel() for p in run.model.parameters())} parameters, {len(run.checkpoints)} "
                   f"checkpoints, {len(run.training_triples)} training triples")
        scores, ranks = tail_view(run.model, test, KnownTriples(run.splits.values()))
        frame = tracin.influence(test, top_k=top_k).to_frame(model_view=(scores, ranks))
        _print_table(frame, per_kind=top_k, max_tests=num_test)
    if output:
        click.echo(f"\nrun saved to {output}; try: kgtracin explain {output} --split test --limit 10 "
                   "--output influence.tsv")


from . import quality, report  # noqa: E402,F401 - registers audit, evaluate and report


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input ends with one line ``error: ...`` and a non-zero exit, never a traceback."""
    try:
        cli.main(args=argv, prog_name="kgtracin", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        message = " ".join(error.format_message().split())
        click.echo(f"error: {message}", err=True)
        sys.exit(error.exit_code if error.exit_code else 2)
    except KGTracinError as error:
        click.echo(f"error: {' '.join(str(error).split())}", err=True)
        sys.exit(1)
    except RuntimeError as error:  # e.g. a model the chosen method cannot handle
        click.echo(f"error: {' '.join(str(error).split())[:500]}", err=True)
        sys.exit(1)
