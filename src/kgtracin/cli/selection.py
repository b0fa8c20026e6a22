"""Choosing the triples a command explains, and printing explanations: shared by ``explain``, ``report`` and
``demo``."""

from __future__ import annotations

import click

from ..errors import KGTracinError

__all__ = [
    "choose_triples",
    "print_table",
    "model_view",
    "check_store_path",
    "refuse_check",
    "add_check",
    "SHOWN_PER_KIND",
]

#: proponents and opponents printed per test triple (the output file holds all of them)
SHOWN_PER_KIND = 3


def choose_triples(run, triples, test_file, split, limit, predict=None, predict_head=None, n=None):
    """The test triples the user chose, as dataset ids. :return: shape: (M, 3), dtype: long"""
    import torch

    from ..triples import read_triple_ids

    chosen = sum(x is not None and x != () for x in (triples, test_file, split, predict, predict_head))
    if chosen != 1:
        raise KGTracinError(
            "give exactly one of --triple H R T, --test-file FILE, --split test|validation, "
            "--predict H R or --predict-head R T"
        )
    if limit is not None and split is None:
        raise KGTracinError("--limit goes with --split (the first N triples of a saved split)")
    if n is not None and not (predict or predict_head):
        raise KGTracinError("--n goes with --predict or --predict-head")
    n = 3 if n is None else n
    if predict or predict_head:
        from ..predictions import KnownTriples, top_predictions

        h, r, t = run.labels.resolve(
            (predict[0], predict[1], predict[0]) if predict else (predict_head[1], predict_head[0], predict_head[1]),
            source="--predict" if predict else "--predict-head",
        )
        known = KnownTriples([run.training_triples])
        found = top_predictions(run.model, (h, r) if predict else (r, t), n, known, head=bool(predict_head))
        if found.shape[0] == 0:
            raise KGTracinError("every candidate is already a training triple; nothing new to explain")
        return found
    if triples:
        return torch.tensor([run.labels.resolve(t) for t in triples], dtype=torch.long)
    if test_file is not None:
        return read_triple_ids(test_file, run.labels)
    name = {"test": "testing", "validation": "validation"}[split]
    if name not in run.splits:
        raise KGTracinError(
            f"the run has no {split} split; give --dataset NAME (the PyKEEN dataset a PyKEEN folder "
            "was trained on), --test-file FILE or --triple H R T"
        )
    test = run.splits[name]
    if limit is not None:
        test = test[:limit]
    return test


def check_store_path(store, output, folders) -> None:
    """Refuse a ``--store`` that is or holds the output, lies inside an input folder, or is a symbolic link."""
    import os

    from ..outputs import check_not_input

    real_store, real_output = os.path.realpath(store), os.path.realpath(output)
    if real_store == real_output or real_output.startswith(real_store.rstrip(os.sep) + os.sep):
        raise KGTracinError(f"--store {store} would hold the output {output}; give the store its own folder")
    try:
        check_not_input(store, folders=folders)
    except KGTracinError:
        raise KGTracinError(
            f"--store {store} lies inside an input folder (the run directory or the checkpoint "
            "folder); give a folder outside it"
        ) from None


def model_view(run, test, head: bool = False):
    """The model's score and filtered rank of each test triple (of its head with ``head``), for the output."""
    from ..predictions import KnownTriples, head_view, tail_view

    return (head_view if head else tail_view)(run.model, test, KnownTriples(run.splits.values()))


def refuse_check(run, k: int, top_k: int, head: bool) -> None:
    """Refuse ``--check K`` where the check cannot run, in one line, before any explaining."""
    from ..evaluation.check import check_unsupported

    if head:
        raise KGTracinError("--check ranks tails after relearning the head; it cannot take --predict-head")
    if k > top_k:
        raise KGTracinError(f"--check {k} checks the first {k} proponents; --top-k {top_k} keeps fewer")
    reason = check_unsupported(run.model)
    if reason is not None:
        raise KGTracinError(f"--check cannot run: {reason}")


def add_check(run, test, result, k: int, frame):
    """Add the check's ranks of each test triple (``check_rank_with``, ``check_rank_without``) to the frame.

    All the test triples' heads are relearned together, without the first ``k`` proponents of every test triple
    (:func:`kgtracin.evaluation.check.check_ranks`), so a triple's ranks depend on the others checked with it.
    The configuration is :func:`kgtracin.evaluation.check.run_check_config`'s; ``frame.attrs`` records
    ``check_k``, ``check_rate`` and ``check_steps``.
    """
    import numpy as np

    from ..evaluation.check import check_ranks, run_check_config
    from ..predictions import KnownTriples

    config = run_check_config(run)
    with_, without = check_ranks(
        run.model,
        run.training_triples,
        test,
        result.proponents.indices,
        result.proponents.scores,
        k,
        KnownTriples(run.splits.values()),
        config,
    )
    frame = frame.copy()
    rows = frame["test_index"].to_numpy()
    for name, ranks in (("check_rank_with", with_), ("check_rank_without", without)):
        ranks = ranks.numpy()
        if np.all(ranks == np.round(ranks)):  # whole numbers unless tied scores make a half, as test_rank
            ranks = ranks.astype(np.int64)
        frame.insert(frame.columns.get_loc("kind"), name, ranks[rows])
    frame.attrs.update(check_k=k, check_rate=config.learning_rate, check_steps=config.steps)
    return frame


def print_table(frame, per_kind: int = SHOWN_PER_KIND, max_tests: int = 5, top_k: int | None = None) -> None:
    """Print each test triple with its model view and first ``per_kind`` proponents and opponents."""
    shown = frame[frame["rank"] <= per_kind]
    tests = frame["test_index"].unique()
    for test_index in tests[:max_tests]:
        rows = shown[shown["test_index"] == test_index]
        first = frame[frame["test_index"] == test_index].iloc[0]
        click.echo(f"\n{first.test_head}  {first.test_relation}  {first.test_tail}")
        if "test_rank" in frame.columns:
            click.echo(f"  model: score {first.test_score:+.4f}, filtered rank {first.test_rank:g} among all tails")
        if "test_head_rank" in frame.columns:
            click.echo(
                f"  model: head score {first.test_score:+.4f}, filtered rank {first.test_head_rank:g} among all heads"
            )
        if "check_rank_without" in frame.columns:
            click.echo(
                f"  check: filtered rank {first.check_rank_with:g} with the heads relearned from all their facts, "
                f"{first.check_rank_without:g} without the first {frame.attrs.get('check_k', 'K')} proponent(s) of "
                "each checked triple"
            )
        if "test_note" in frame.columns and first.test_note:
            click.echo(f"  note: {first.test_note}")
        for kind in ("proponent", "opponent"):
            for row in rows[rows["kind"] == kind].itertuples():
                click.echo(
                    f"  {kind:<9} {row.rank:>2}  {row.influence:+.4e}  "
                    f"{row.train_head}  {row.train_relation}  {row.train_tail}"
                )
    if len(tests) > max_tests:
        click.echo(f"\n... and {len(tests) - max_tests} more test triples in the output file")
    if top_k is not None and top_k > per_kind:
        click.echo(
            f"\n(printed: the first {per_kind} proponents and opponents of each; the output file holds all {top_k})"
        )
