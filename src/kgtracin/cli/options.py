"""Options shared by the commands, and the one way they open a run."""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from pathlib import Path

import click

from ..config import EXPLAIN_CANDIDATES, TracInConfig
from ..errors import KGTracinError

__all__ = [
    "run_options",
    "open_run",
    "run_tracin",
    "triple_options",
    "run_folders",
    "dataset_option",
    "field_option",
    "candidates_option",
    "audit_loss_option",
]


def _setup_logging(verbose: bool) -> None:
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    if not verbose:  # PyKEEN's advice on its own settings; -v shows it
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pykeen(\.|$)")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    import pykeen  # noqa: F401 - PyKEEN sets its own logger level on import, so import it first

    logging.getLogger("pykeen").setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("torch_max_mem").setLevel(logging.ERROR)


def _top_k(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"must be >= 1, got {value}", param_hint="--top-k")
    return value


def _positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"must be >= 1, got {value}", param_hint=param.opts[0])
    return value


def _device(ctx, param, value):
    if value is not None:
        from ..config import check_device

        check_device(value)
    return value


def _triples(ctx, param, value):
    for triple in value or ():
        flags = [v for v in triple if v.startswith("--")]
        if flags:
            raise click.BadParameter(
                f"takes three values H R T, got {' '.join(triple)!r}: {flags[0]} is an option, so a value is missing",
                param_hint="--triple",
            )
    return value


def dataset_option(*decls, **kwargs):
    """``--dataset NAME``: any PyKEEN ``dataset_resolver`` name (checked when the dataset is loaded)."""
    return click.option(*decls, type=str, default=None, metavar="NAME", **kwargs)


def _field_type(annotation: str):
    """The click type of a configuration field, from its annotation (a string, as the module postpones them)."""
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if annotation.split(" | ")[0] == name:
            return kind
    return str


def field_option(config_cls, name: str, *decls: str, **overrides):
    """A click option made from a field of a frozen configuration dataclass: its flag (``--batch-size`` for
    ``batch_size``), default, help text and choices (``metadata["choices"]``; a ``None`` choice is spelled
    ``none`` on the command line) are the field's, so that the command line cannot drift from the API.

    :param decls: the option's declarations, if not ``--field-name``
    :param overrides: click.option keywords that differ from the field's (e.g. the CLI's own default)
    """
    spec = {f.name: f for f in dataclasses.fields(config_cls)}[name]
    meta = spec.metadata
    kind = _field_type(spec.type)
    kwargs: dict = {"help": meta.get("help"), "default": spec.default, "show_default": spec.default is not None}
    choices = meta.get("choices")
    if kind is bool:
        kwargs.update(is_flag=True, show_default=False)
    elif choices is not None:
        spelled = ["none" if c is None else c for c in choices]
        default = "none" if spec.default is None and None in choices else spec.default
        kwargs.update(
            type=click.Choice(spelled), default=default, show_default=default is not None, callback=_none_choice
        )
    elif spec.default is not None or kind is not str:
        kwargs["type"] = kind
    kwargs.update(overrides)
    return click.option(*(decls or ("--" + name.replace("_", "-"),)), **kwargs)


def _none_choice(ctx, param, value):
    return None if value == "none" else value


method_option = field_option(TracInConfig, "method")
parameters_option = field_option(
    TracInConfig,
    "parameters",
    "--parameters",
    "parameters",
    multiple=True,
    metavar="PATTERN",
    default=(),
    show_default=False,
)
batch_option = field_option(TracInConfig, "batch_size", callback=_positive)
device_option = field_option(TracInConfig, "device", callback=_device)
precision_option = field_option(TracInConfig, "precision", show_default=False)
compile_option = field_option(TracInConfig, "compile", "--compile", "compile_")
shard_option = field_option(TracInConfig, "shard_size", callback=_positive)
loss_option = field_option(
    TracInConfig,
    "loss",
    default=None,
    show_default=False,
    help="TracIn loss [default: follows the run: softmax for a model trained with a softmax / cross-entropy "
    "loss, else bce]",
)
audit_loss_option = field_option(
    TracInConfig,
    "loss",
    default=None,
    show_default=False,
    help="TracIn loss [default: bce, which found noisy facts best on every model measured "
    "(docs/quality/umls-noisy-field-protocol.md)]",
)
normalize_option = field_option(TracInConfig, "normalize")
candidates_option = field_option(
    TracInConfig,
    "candidates",
    default=EXPLAIN_CANDIDATES,
    help="neighbourhood: explain with the training triples that share an entity with the test triple (Kelpie's "
    "candidates; exact scores, a fraction of the time); all: every training triple, TracIn over all of them",
)


def projection_option(command):
    """``--projection-dim K`` and ``--projection-seed S``: the opt-in approximate mode."""
    command = field_option(TracInConfig, "projection_seed")(command)
    return field_option(TracInConfig, "projection_dim", metavar="K", callback=_positive)(command)


trust_option = click.option(
    "--trust-pickle",
    is_flag=True,
    help="UNSAFE for files you did not make: unpickle model and checkpoint files fully (a "
    "PyKEEN folder's trained_model.pkl, PyKEEN training-loop checkpoints, and every file of "
    "--checkpoint-dir), which can run code. Without it every file is read with "
    "torch.load(weights_only=True), which cannot",
)
verbose_option = click.option("-v", "--verbose", is_flag=True, help="log which gradient path each parameter uses")


_RUN_OPTIONS = (
    trust_option,
    click.option(
        "--checkpoint-dir",
        type=click.Path(),
        default=None,
        help="a folder of checkpoints to use: kgtracin.CheckpointCallback files, PyKEEN "
        "CheckpointTrainingCallback or training-loop (checkpoint_name) files [default: the run's; for a "
        "PyKEEN folder its checkpoints/ subfolder]",
    ),
    click.option(
        "--learning-rate",
        "checkpoint_learning_rate",
        type=float,
        default=None,
        help="learning rate of every checkpoint, for files that do not record one (PyKEEN's callback files)",
    ),
    dataset_option(
        "--dataset",
        "run_dataset",
        help="the PyKEEN dataset a PyKEEN folder was trained on (any "
        "dataset_resolver name): its test and validation splits",
    ),
)


def run_options(command):
    """Add --trust-pickle, --checkpoint-dir, --learning-rate and --dataset; the command gets ``run_source``."""

    @functools.wraps(command)
    def wrapper(*args, trust_pickle, checkpoint_dir, checkpoint_learning_rate, run_dataset, **kwargs):
        if checkpoint_learning_rate is not None and not 0 < checkpoint_learning_rate < float("inf"):
            raise click.BadParameter(
                f"must be a positive number, got {checkpoint_learning_rate}", param_hint="--learning-rate"
            )
        source = dict(
            trust_pickle=trust_pickle,
            checkpoint_dir=checkpoint_dir,
            learning_rate=checkpoint_learning_rate,
            dataset=run_dataset,
        )
        return command(*args, run_source=source, **kwargs)

    for option in reversed(_RUN_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def run_folders(run_dir, run_source: dict) -> list[tuple[str, object]]:
    """The run's input folders, ``(what, path)``, inside which no output may be written; the run directory is
    checked first, so that a wrong one is named as such."""
    from ..runs import check_run_dir

    check_run_dir(run_dir)
    return [("the run directory", run_dir), ("the checkpoint folder", run_source.get("checkpoint_dir"))]


def run_tracin(run, parameters=(), loss=None, **options):
    """``TracIn`` over a run's model, training triples, checkpoints and labels, with the command's options
    (``--parameters`` as given, ``--loss`` defaulting to the run's, any other ``TracInConfig`` field by name)."""
    from ..tracin import TracIn

    return TracIn(
        run.model,
        run.training_triples,
        run.checkpoints,
        labels=run.labels,
        parameters=list(parameters) or "all",
        loss=loss or run.tracin_loss,
        **options,
    )


def open_run(run_dir, run_source: dict):
    """The run, loaded with the command's run options."""
    from ..runs import MANIFEST, load_run

    if (
        run_source.get("learning_rate") is not None
        and run_source.get("checkpoint_dir") is None
        and (Path(run_dir) / MANIFEST).is_file()
    ):
        raise KGTracinError(
            "--learning-rate is for checkpoint files that record none (a PyKEEN folder's, or "
            "--checkpoint-dir); a kgtracin run's checkpoints record their own"
        )
    return load_run(run_dir, **run_source)


_TRIPLE_OPTIONS = (
    click.option(
        "--triple",
        "triples",
        nargs=3,
        multiple=True,
        metavar="H R T",
        callback=_triples,
        help="a test triple (repeatable)",
    ),
    click.option("--test-file", type=click.Path(), default=None, help="labelled TSV of test triples"),
    click.option("--split", type=click.Choice(["test", "validation"]), default=None, help="explain a saved split"),
    click.option("--limit", type=int, default=None, callback=_positive, help="with --split: the first N triples"),
    click.option(
        "--predict",
        nargs=2,
        default=None,
        metavar="H R",
        help="explain the model's top --n tails of (H, R, ?) that are not training triples",
    ),
    click.option(
        "--predict-head",
        nargs=2,
        default=None,
        metavar="R T",
        help="explain the model's top --n heads of (?, R, T) that are not training triples",
    ),
    click.option(
        "--n",
        "num_predictions",
        type=int,
        default=None,
        callback=_positive,
        help="with --predict / --predict-head: how many predictions [default: 3]",
    ),
)


def triple_options(command):
    """Add the ways to choose the triples to explain: --triple, --test-file, --split/--limit, --predict,
    --predict-head and --n."""
    for option in reversed(_TRIPLE_OPTIONS):
        command = option(command)
    return command
