"""``kgtracin report``: a self-contained HTML page of explanations."""

from __future__ import annotations

import click

from .group import cli
from .options import (
    _setup_logging,
    _top_k,
    batch_option,
    candidates_option,
    device_option,
    loss_option,
    method_option,
    open_run,
    parameters_option,
    run_folders,
    run_options,
    run_tracin,
    triple_options,
    verbose_option,
)
from .selection import choose_triples


@cli.command()
@click.argument("run_dir", type=click.Path())
@triple_options
@click.option(
    "--top-k",
    type=int,
    default=5,
    show_default=True,
    callback=_top_k,
    help="proponents and opponents drawn and listed per triple",
)
@click.option(
    "--self-influence",
    "with_self_influence",
    is_flag=True,
    help="add a histogram of every training triple's self-influence",
)
@click.option(
    "--audit",
    type=int,
    default=0,
    show_default=True,
    help="add the audit's N most suspicious training triples (0: none)",
)
@parameters_option
@method_option
@batch_option
@device_option
@loss_option
@candidates_option
@click.option("--output", type=click.Path(), required=True, help="FILE.html")
@run_options
@verbose_option
def report(
    run_dir,
    triples,
    predict,
    predict_head,
    num_predictions,
    test_file,
    split,
    limit,
    top_k,
    with_self_influence,
    audit,
    parameters,
    method,
    batch_size,
    device,
    loss,
    candidates,
    output,
    run_source,
    verbose,
) -> None:
    """One self-contained HTML page (works offline) explaining predictions.

    For each triple: the model's score, filtered rank and top tails; a drawn subgraph of the triple with its top
    proponents (green) and opponents (red) as directed, labelled edges, width by the size of the influence; and
    their table. --self-influence and --audit N add run-level sections.
    """
    _setup_logging(verbose)
    from ..errors import KGTracinError
    from ..outputs import check_output, write_text
    from ..report import build_report

    if audit < 0:
        raise KGTracinError(f"--audit must be >= 0, got {audit}")
    check_output(
        output, (".html", ".htm"), inputs=[("the test file", test_file)], input_folders=run_folders(run_dir, run_source)
    )
    run = open_run(run_dir, run_source)
    test = choose_triples(run, triples, test_file, split, limit, predict, predict_head, num_predictions)
    tracin = run_tracin(
        run, parameters, loss, method=method, batch_size=batch_size, device=device, candidates=candidates
    )
    page = build_report(run, tracin, test, top_k=top_k, self_influence=with_self_influence, audit=audit)
    write_text(page, output, (".html", ".htm"))
    click.echo(f"wrote a report on {len(test)} triple(s) to {output} ({len(page) // 1024} KiB, self-contained)")
