"""Frozen, validated configuration of a TracIn computation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import KGTracinError
from .losses import LOSS_NAMES
from .normalization import NORMALIZATIONS as _NORMALIZATIONS

if TYPE_CHECKING:  # torch is imported only where a computation needs it: the CLI starts without it
    import torch

__all__ = [
    "TracInConfig",
    "TrainingConfig",
    "METHODS",
    "DEFAULT_BATCH_SIZES",
    "PRECISIONS",
    "NORMALIZATIONS",
    "CANDIDATES",
    "EXPLAIN_CANDIDATES",
    "LOSS_NAMES",
    "TEST_BLOCK_BYTES",
    "DETECTORS",
    "RETRAINED_DETECTORS",
    "PLANTS",
    "CORRUPTIONS",
    "AUDIT_LOSS",
    "CalibrationConfig",
    "check_device",
]

#: The gradient methods, all exact. ``loop`` is the reference.
METHODS: tuple[str, ...] = ("fast", "vmap", "loop")

#: Compute dtypes by name: the name of the ``torch`` dtype.
PRECISIONS: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}

#: The audit's detectors, in the order of its columns (see :mod:`kgtracin.audit`).
DETECTORS: tuple[str, ...] = (
    "memorization",
    "validation_cosine",
    "validation",
    "self_influence",
    "support",
    "consistency",
    "loss",
)

#: Detectors that retrain the run's recipe (:mod:`kgtracin.evaluation.held_out`, :mod:`kgtracin.evaluation.learned`):
#: asked for by name, never chosen.
RETRAINED_DETECTORS: tuple[str, ...] = ("held_out", "learned")

#: The ways to corrupt training triples (:func:`kgtracin.evaluation.noisy.corrupt`): the field's fakes, plausible
#: fakes, replaced tails.
CORRUPTIONS: tuple[str, ...] = ("triples", "plausible", "tails")

#: The fakes ``audit --order-by auto`` can plant to choose a detector (see :mod:`kgtracin.evaluation.calibration`).
PLANTS: tuple[str, ...] = ("plausible", "triples")

#: The TracIn loss of the audit's detectors unless told otherwise: it found noisy facts best on every model measured
#: (docs/quality/).
AUDIT_LOSS = "bce"

#: ``kgtracin train`` defaults, measured on UMLS (README): LCWA, cross-entropy over all tails, Adam.
DEFAULT_EPOCHS = 50
DEFAULT_LEARNING_RATE = 0.01

#: The default normalisation of ``explain`` and ``from_run``: raw TracIn. ``kgtracin evaluate`` found no gain
#: from normalising the training gradients on Nations DistMult (README, "Explanation quality").
DEFAULT_NORMALIZE: str | None = None

#: How training gradients are scaled before the inner product: None (raw TracIn) or "train" (unit norm).
NORMALIZATIONS: tuple[str | None, ...] = tuple(_NORMALIZATIONS)
#: Candidate explanations: every training triple, or those sharing an entity with the test triple.
CANDIDATES = ("all", "neighbourhood")
#: The candidates ``kgtracin explain``, ``report`` and the evaluations' default explanation use. On the WordNet
#: graph the top proponent over all training triples lay in the neighbourhood for 100 of 100 DistMult predictions,
#: at a tenth of the cost (docs/quality/); ``TracIn`` itself defaults to ``all``, TracIn as defined.
EXPLAIN_CANDIDATES = "neighbourhood"

#: Training triples per batch when the user gives none. ``vmap`` and ``loop`` hold one dense gradient per
#: triple of a batch, so their batches are small. ``fast`` uses 1024 for models made of embedding rows only and
#: 256 for models with layers or the softmax loss (see ``FastComputer.batch_limit``).
DEFAULT_BATCH_SIZES: dict[str, int] = {"fast": 1024, "vmap": 16, "loop": 32}

#: The memory the automatic test block may fill: the test side's gradient factors of every checkpoint (held
#: while the training triples stream past) and the (test x batch) kernel blocks.
TEST_BLOCK_BYTES = 2 << 30


def check_device(device: str) -> None:
    """Refuse a device that does not exist or that this build of torch cannot use, in one line.

    :raises KGTracinError: for an unknown device, or CUDA (MPS) where torch has none
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise KGTracinError(f"unknown device {device!r}: {' '.join(str(error).split())}") from None
    if parsed.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise KGTracinError(
                f"device {device!r}: this build of torch has no CUDA support (a CPU build); "
                "use --device cpu or install a CUDA build of torch"
            )
        if not torch.cuda.is_available():
            raise KGTracinError(f"device {device!r}: no CUDA GPU is visible to torch")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise KGTracinError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise KGTracinError(f"device {device!r}: MPS is not available on this machine")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise KGTracinError(f"device {device!r}: kgtracin runs on cpu or cuda")


@dataclass(frozen=True)
class CalibrationConfig:
    """How the audit's detector is chosen from a run (:mod:`kgtracin.evaluation.calibration`)."""

    #: planted fakes, as a fraction of the run's training triples (the field's protocol uses 5%)
    fraction: float = 0.05
    seed: int = 0
    progress: bool = True
    #: ``plausible``: fakes that fit the relations' heads and tails
    #: (:func:`~kgtracin.evaluation.noisy.corrupt_plausible`), like a wrong fact in a real graph; ``triples``: the
    #: field's protocol (:func:`~kgtracin.evaluation.noisy.corrupt_triples`), whose fakes mostly ask queries no
    #: fact asks. Planting the field's fakes into a run whose errors were plausible chose ``support``, with nothing
    #: at the top of its order (docs/quality/umls-noisy-field-protocol.md)
    plant: str = "plausible"
    #: keep the outcome in kgtracin's cache folder and read a kept one back instead of retraining
    #: (:mod:`kgtracin.calibrations`); ``False`` retrains every time and keeps nothing
    keep: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise KGTracinError(f"the planted fraction must be between 0 and 1, got {self.fraction}")
        if self.plant not in PLANTS:
            raise KGTracinError(f"unknown kind of planted fakes {self.plant!r}; choose from {', '.join(PLANTS)}")


@dataclass(frozen=True)
class TracInConfig:
    """How TracIn scores are computed. Validated on construction."""

    #: ``"all"``, or parameter names / glob patterns over ``model.named_parameters()``.
    parameters: str | tuple[str, ...] = field(
        default="all", metadata={"help": "parameter name or glob (repeatable); default: all parameters"}
    )
    #: ``"fast"`` (closed form, default), ``"vmap"`` (torch.func) or ``"loop"`` (one backward per triple).
    method: str = field(
        default="fast", metadata={"help": "gradient method; all are exact, loop is the reference", "choices": METHODS}
    )
    #: Training triples per batch; ``None`` picks a method-specific default.
    batch_size: int | None = field(default=None, metadata={"help": "training triples per batch"})
    #: Torch device; ``None`` keeps the model's device.
    device: str | None = field(default=None, metadata={"help": "torch device, e.g. cpu or cuda:0"})
    #: Compute dtype: ``None`` keeps the model's; ``fp32``, ``bf16``, ``fp16`` or ``fp64`` casts the checkpoints.
    #: Lower precision is opt-in and inexact (see BENCHMARKS.md for its measured error).
    precision: str | None = field(
        default=None,
        metadata={
            "help": "compute dtype [default: the model's]; bf16 / fp16 are faster on some hardware and "
            "approximate (see BENCHMARKS.md)",
            "choices": tuple(PRECISIONS),
        },
    )
    #: torch.compile the model's scoring for ``vmap`` / ``loop``. The fast path's hooks cannot be traced.
    compile: bool = field(default=False, metadata={"help": "torch.compile the scorer (vmap, loop)"})
    #: Training triples per shard: the unit of resumable storage and of work split across processes.
    shard_size: int = field(
        default=16384, metadata={"help": "training triples per shard (unit of resuming and of torchrun sharding)"}
    )
    #: Test triples per block: the test side's factors and the (batch x block) kernel are held one block at a
    #: time, so memory stays bounded however many predictions are explained. ``None`` (default): as many as
    #: fit in :data:`TEST_BLOCK_BYTES`, measured on the first few test triples; every block costs one pass
    #: over the training triples.
    test_block_size: int | None = field(default=None, metadata={"help": "test triples held at once"})
    #: Show tqdm progress bars.
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    #: The per-triple loss: ``bce`` (``softplus(-score)``) or ``softmax`` (1-N cross-entropy, both directions).
    loss: str = field(default="bce", metadata={"help": "TracIn loss", "choices": LOSS_NAMES})
    #: ``None`` (raw TracIn); ``"train"``: each training gradient divided by its norm at each checkpoint
    #: (RelatIF-style), so that large-gradient outliers stop being everyone's proponents; ``"cosine"``: both
    #: gradients divided by their norms.
    normalize: str | None = field(
        default=DEFAULT_NORMALIZE,
        metadata={
            "help": "train: divide each training gradient by its norm (RelatIF-style), so high-gradient "
            "outliers stop dominating every explanation; cosine: both gradients",
            "choices": NORMALIZATIONS,
        },
    )

    #: Which training triples may explain a test triple: ``all`` of them, or its ``neighbourhood``: those that
    #: share an entity with it (Kelpie's candidates; exact scores, far cheaper: only they are differentiated).
    candidates: str = field(
        default="all",
        metadata={
            "help": "all training triples, or the neighbourhood: those sharing an entity with the test triple "
            "(exact scores over fewer candidates, much faster)",
            "choices": CANDIDATES,
        },
    )
    #: Opt-in, approximate: sketch every dense gradient factor longer than this to this many numbers
    #: (CountSketch; embedding rows stay exact). ``None`` (default): exact. ``fast`` only.
    projection_dim: int | None = field(
        default=None,
        metadata={
            "help": "APPROXIMATE: sketch every dense gradient factor longer than K to K numbers (embedding rows "
            "stay exact); for very many test triples on models with wide layers (ConvE). Default: exact"
        },
    )
    #: The seed of the projection's random signs and buckets.
    projection_seed: int = field(default=0, metadata={"help": "with --projection-dim: the seed of the projection"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise KGTracinError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise KGTracinError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise KGTracinError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.compile and self.method == "fast":
            raise KGTracinError(
                "compile applies to method 'vmap' or 'loop': torch.compile cannot trace the hooks of the fast "
                "path (it gave wrong results when tried), and the fast path needs no compilation"
            )
        if self.projection_dim is not None:
            if (
                not isinstance(self.projection_dim, int)
                or isinstance(self.projection_dim, bool)
                or self.projection_dim < 1
            ):
                raise KGTracinError(f"projection dimension must be a positive integer, got {self.projection_dim!r}")
            if self.method != "fast":
                raise KGTracinError(f"a projection applies to method 'fast' only, not {self.method!r}")
        if not isinstance(self.projection_seed, int) or isinstance(self.projection_seed, bool):
            raise KGTracinError(f"projection seed must be an integer, got {self.projection_seed!r}")
        if self.loss not in LOSS_NAMES:
            raise KGTracinError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSS_NAMES)}")
        if self.candidates not in CANDIDATES:
            raise KGTracinError(f"unknown candidates {self.candidates!r}; choose one of {', '.join(CANDIDATES)}")
        if self.normalize not in NORMALIZATIONS:
            raise KGTracinError(f"unknown normalisation {self.normalize!r}; choose none, train or cosine")
        if self.test_block_size is not None and (not isinstance(self.test_block_size, int) or self.test_block_size < 1):
            raise KGTracinError(f"test block size must be a positive integer, got {self.test_block_size!r}")
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise KGTracinError(f"shard size must be a positive integer, got {self.shard_size!r}")
        params = self.parameters
        if isinstance(params, str):
            if params != "all":
                object.__setattr__(self, "parameters", (params,))
        else:
            params = tuple(params)
            if not params:
                raise KGTracinError("parameters: give 'all' or at least one name or glob pattern")
            if not all(isinstance(p, str) and p for p in params):
                raise KGTracinError(f"parameters must be non-empty strings, got {params!r}")
            object.__setattr__(self, "parameters", params)
        if self.device is not None:
            check_device(self.device)

    @classmethod
    def with_options(cls, config: TracInConfig | None = None, **options) -> TracInConfig:
        """``config`` (default: the defaults) with the named fields replaced, validated.

        :raises KGTracinError: for a name that is not a field, or an invalid value
        """
        from dataclasses import fields, replace

        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise KGTracinError(f"unknown TracIn option {unknown[0]!r}; the options are {', '.join(sorted(names))}")
        if config is not None and not isinstance(config, cls):
            raise KGTracinError(f"config must be a TracInConfig, got {type(config).__name__}")
        if "parameters" in options and not isinstance(options["parameters"], str):
            options["parameters"] = tuple(options["parameters"])
        if options.get("device") is not None:
            options["device"] = str(options["device"])
        return replace(config, **options) if config is not None else cls(**options)

    @property
    def dtype(self) -> torch.dtype | None:
        """The compute dtype, or None to keep the model's."""
        import torch

        return None if self.precision is None else getattr(torch, PRECISIONS[self.precision])

    @property
    def effective_batch_size(self) -> int:
        """The batch size in use: the user's, or the method's default."""
        return self.batch_size if self.batch_size is not None else DEFAULT_BATCH_SIZES[self.method]


@dataclass(frozen=True)
class TrainingConfig:
    """How ``kgtracin train`` trains. Validated on construction."""

    model: str = field(default="ConvE", metadata={"help": "PyKEEN model name"})
    epochs: int | None = field(
        default=None,
        metadata={
            "help": f"training epochs [default: as many as make about 4000 optimiser steps, at most {DEFAULT_EPOCHS}]"
        },
    )
    checkpoints: int | None = field(
        default=None, metadata={"help": "checkpoints spread over training [default: min(5, epochs)]"}
    )
    seed: int = field(default=0, metadata={"help": "random seed"})
    learning_rate: float = field(default=DEFAULT_LEARNING_RATE, metadata={"help": "Adam learning rate"})
    batch_size: int = field(default=256, metadata={"help": "training batch size"})
    embedding_dim: int | None = field(
        default=None, metadata={"help": "embedding dimension [default: kgtracin's recipe for the model, else PyKEEN's]"}
    )
    inverse_triples: bool | None = field(
        default=None, metadata={"help": "train with inverse triples [default: on for ConvE only]"}
    )
    training_loop: str = field(default="lcwa", metadata={"help": "training loop", "choices": ("lcwa", "slcwa")})
    loss: str = field(
        default="crossentropy",
        metadata={"help": "PyKEEN training loss (crossentropy, softplus, bcewithlogits, marginranking, ...)"},
    )
    #: "linear": checkpoints evenly spread; "log": geometrically spread, so early training is represented
    checkpoint_schedule: str = field(
        default="log",
        metadata={
            "help": "spread the checkpoints evenly, or geometrically from epoch 1",
            "choices": ("linear", "log"),
        },
    )

    def __post_init__(self) -> None:
        from pykeen.models import model_resolver

        try:
            model_cls = model_resolver.lookup(self.model)
        except (KeyError, ValueError):
            raise KGTracinError(f"unknown model {self.model!r}") from None
        from pykeen.models import ERModel

        if not issubclass(model_cls, ERModel):
            raise KGTracinError(f"model {self.model!r} is not an ERModel, which kgtracin needs")
        object.__setattr__(self, "model", model_cls.__name__)
        from pykeen.losses import loss_resolver

        try:
            object.__setattr__(self, "loss", loss_resolver.lookup(self.loss).__name__)
        except (KeyError, ValueError):
            raise KGTracinError(f"unknown loss {self.loss!r}; e.g. crossentropy, softplus, bcewithlogits") from None
        if isinstance(self.epochs, int) and self.epochs >= 1 and self.checkpoints is None:
            object.__setattr__(self, "checkpoints", min(5, self.epochs))
        for name in ("epochs", "checkpoints", "batch_size"):
            if name != "batch_size" and getattr(self, name) is None:  # resolved from the data by train_run
                continue
            if not 1 <= getattr(self, name) < 2**31:
                flag = f"--{name.replace('_', '-')}"
                raise KGTracinError(f"{flag} must be from 1 to 2**31 - 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise KGTracinError(f"--seed must be from 0 to 2**32 - 1, got {self.seed}")
        if self.epochs is not None and self.checkpoints > self.epochs:
            raise KGTracinError(f"--checkpoints ({self.checkpoints}) cannot exceed --epochs ({self.epochs})")
        if not 0 < self.learning_rate < float("inf"):
            raise KGTracinError(f"--learning-rate must be a positive number, got {self.learning_rate}")
        if self.embedding_dim is not None and self.embedding_dim < 1:
            raise KGTracinError(f"--embedding-dim must be >= 1, got {self.embedding_dim}")
        if self.checkpoint_schedule not in ("linear", "log"):
            raise KGTracinError(f"--checkpoint-schedule must be linear or log, got {self.checkpoint_schedule!r}")
        if self.training_loop not in ("lcwa", "slcwa"):
            raise KGTracinError(f"--training-loop must be lcwa or slcwa, got {self.training_loop!r}")
        if self.inverse_triples is None:  # ConvE is meant to be trained with inverse triples
            object.__setattr__(self, "inverse_triples", self.model == "ConvE")

    def with_epochs(self, batches_per_epoch: int) -> TrainingConfig:
        """The config with its epochs resolved: the given ones, or by default as many as make about
        :data:`kgtracin.recipes.DEFAULT_STEPS` steps of ``batches_per_epoch`` batches, at most ``DEFAULT_EPOCHS``."""
        from dataclasses import replace

        from .recipes import default_epochs

        if self.epochs is not None:
            return self
        return replace(self, epochs=default_epochs(batches_per_epoch, DEFAULT_EPOCHS))

    def checkpoint_epochs(self) -> list[int]:
        """``checkpoints`` epochs spread over training (evenly, or geometrically from epoch 1), the last one
        being the final epoch. A geometric schedule may give fewer distinct epochs on short training.

        :raises ValueError: before the epochs are known (``with_epochs`` resolves the default)
        """
        if self.epochs is None:
            raise ValueError("the number of epochs is not resolved yet: call with_epochs(batches_per_epoch) first")
        n = self.checkpoints
        if self.checkpoint_schedule == "log" and n > 1:
            return sorted({max(1, round(self.epochs ** (k / (n - 1)))) for k in range(n)})
        return sorted({round(self.epochs * (k + 1) / n) for k in range(n)})
