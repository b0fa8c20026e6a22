"""``CheckpointCallback``: TracIn checkpoints from PyKEEN's own training (``pipeline()`` or a training loop).

Usage::

    from pykeen.pipeline import pipeline
    from kgtracin import CheckpointCallback

    result = pipeline(dataset="nations", model="DistMult", training_kwargs=dict(
        num_epochs=50, callbacks=CheckpointCallback("run/checkpoints", every=10)))
    result.save_to_directory("run")
    # kgtracin explain run --trust-pickle --dataset nations --split test --output influence.tsv

Each checkpoint file ``epoch_00010.pt`` holds a dict that ``torch.load(weights_only=True)`` reads::

    format          "kgtracin-checkpoint/1"
    epoch           1-based epoch after which it was saved
    learning_rate   the optimizer's learning rate during that epoch (the value any scheduler set for it)
    state_dict      the model's state dict
    num_entities, num_relations     the model's sizes
    entity_to_id, relation_to_id    the label maps of the training triples, when the callback is given the
                                    training ``triples_factory`` (PyKEEN does not show it to callbacks)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from pykeen.training.callbacks import TrainingCallback

from .checkpoints import CHECKPOINT_FORMAT
from .errors import KGTracinError

__all__ = ["CheckpointCallback", "CHECKPOINT_FORMAT", "checkpoint_name", "learning_rate_of"]

logger = logging.getLogger(__name__)


def checkpoint_name(epoch: int) -> str:
    """The file name of the checkpoint saved after ``epoch``."""
    return f"epoch_{epoch:05d}.pt"


def learning_rate_of(optimizer: torch.optim.Optimizer) -> float:
    """The optimizer's current learning rate.

    :raises KGTracinError: when its parameter groups have different learning rates (TracIn needs one per step)
    """
    rates = {float(group["lr"]) for group in optimizer.param_groups}
    if len(rates) != 1:
        raise KGTracinError(
            f"the optimizer's parameter groups have different learning rates {sorted(rates)}; "
            "TracIn weighs each checkpoint by one learning rate"
        )
    return rates.pop()


class CheckpointCallback(TrainingCallback):
    """Save a TracIn checkpoint every ``every`` epochs and after the last one, with its learning rate and labels.

    It is kgtracin's one checkpoint writer: ``kgtracin train`` saves through it too.

    :param directory: the folder to write ``epoch_*.pt`` files into (created if needed)
    :param every: save after every ``every``-th epoch (1-based); the last epoch is always saved
    :param epochs: instead of ``every``, exactly these epochs (1-based; ``kgtracin train``'s schedule)
    :param triples_factory: the training triples; their label maps are then saved in every checkpoint, and
        loading checks them against the run's
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every: int = 1,
        triples_factory=None,
        *,
        epochs: Iterable[int] | None = None,
    ):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise KGTracinError(f"CheckpointCallback: every must be an integer >= 1, got {every!r}")
        self.epochs = None if epochs is None else {int(e) for e in epochs}
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise KGTracinError(f"CheckpointCallback: {self.directory} exists and is not a directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.every = every
        self.triples_factory = triples_factory
        #: paths written so far, in order
        self.saved: list[Path] = []
        #: per saved checkpoint: ``{"file": path, "epoch", "learning_rate", "loss"}`` (the epoch's mean loss)
        self.records: list[dict] = []
        self._epoch_loss: float | None = None
        self._epoch: int | None = None
        self._epoch_learning_rate: float | None = None
        self._last_learning_rate: float | None = None
        self._saved_epoch: int | None = None

    def on_batch(self, epoch: int, batch, batch_loss: float, **kwargs: Any) -> None:
        # the rate in force while this epoch's steps are taken, whatever order the scheduler's callback runs in
        self._epoch_learning_rate = learning_rate_of(self.optimizer)

    def post_epoch(self, epoch: int, epoch_loss: float, **kwargs: Any) -> None:
        if self._epoch_learning_rate is None:  # an epoch without batches
            self._epoch_learning_rate = learning_rate_of(self.optimizer)
        self._epoch, self._last_learning_rate = epoch, self._epoch_learning_rate
        self._epoch_loss = float(epoch_loss)
        self._epoch_learning_rate = None
        stopping = bool(getattr(self.training_loop, "_should_stop", False))
        due = epoch % self.every == 0 if self.epochs is None else epoch in self.epochs
        if due or stopping:
            self._save(epoch)

    def post_train(self, losses: list[float], **kwargs: Any) -> None:
        if self.epochs is None and self._epoch is not None and self._saved_epoch != self._epoch:
            self._save(self._epoch)

    def _save(self, epoch: int) -> None:
        lr = self._last_learning_rate  # the rate of the epoch just finished, not the next one's
        model = self.model
        payload = {
            "format": CHECKPOINT_FORMAT,
            "epoch": int(epoch),
            "learning_rate": float(lr),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "num_entities": int(model.num_entities),
            "num_relations": int(model.num_relations),
        }
        factory = self.triples_factory
        if factory is not None and hasattr(factory, "entity_to_id"):
            payload["entity_to_id"] = dict(factory.entity_to_id)
            payload["relation_to_id"] = dict(factory.relation_to_id)
        path = self.directory / checkpoint_name(epoch)
        partial = path.with_name(f".{path.name}.partial")
        torch.save(payload, partial)
        os.replace(partial, path)  # never a half-written checkpoint
        self.saved.append(path)
        self.records.append({"file": path, "epoch": int(epoch), "learning_rate": float(lr), "loss": self._epoch_loss})
        self._saved_epoch = epoch
        logger.info("saved checkpoint %s (epoch %d, learning rate %g)", path, epoch, lr)
