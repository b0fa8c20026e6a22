"""Retraining for deletion tests: isolated (only the deleted triples differ) or reshuffled (PyKEEN's own loop).

**Isolated.** Full-batch training from one fixed initial state: every step sums the 1-N cross-entropy of
every kept triple in both directions (the ``softmax`` loss of :mod:`kgtracin.losses`), divided by the size
of the *full* training set, and takes one Adam step. Deleting triples removes exactly their terms and
nothing else: no batch changes, no negative sample moves, and deleting nothing reproduces the base model
bit for bit. Dropout and batch-norm statistics would couple the triples, so the model trains in ``eval()``
mode (exact isolation for models without them, such as DistMult).

**Reshuffled.** PyKEEN's LCWA loop with the run's loss, batch size and a seed, as a user retrains in
practice: deleting triples reshuffles every batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from ..checkpoints import Checkpoint
from ..compat import to_internal
from ..losses import SoftmaxLoss

__all__ = ["RetrainConfig", "Retrainer"]


@dataclass(frozen=True)
class RetrainConfig:
    """How the model under test is (re)trained."""

    model: str = field(default="DistMult", metadata={"help": "PyKEEN model name"})
    embedding_dim: int = field(default=32, metadata={"help": "embedding dimension"})
    inverse_triples: bool = field(default=False, metadata={"help": "train with inverse triples"})
    #: keep PyKEEN's default constrainers (DistMult: unit-norm entities after every step)
    constrained: bool = field(default=False, metadata={"help": "apply the model's default constrainer"})
    #: isolated: full-batch steps; reshuffled: epochs
    epochs: int = field(default=200, metadata={"help": "training steps (isolated) or epochs (reshuffled)"})
    learning_rate: float = field(default=0.01, metadata={"help": "Adam learning rate"})
    checkpoints: int = field(default=6, metadata={"help": "checkpoints kept for TracIn"})
    seed: int = field(default=0, metadata={"help": "initialisation seed"})
    batch_size: int = field(default=256, metadata={"help": "batch size of the reshuffled loop"})

    def checkpoint_steps(self) -> list[int]:
        return sorted({round(self.epochs * (k + 1) / self.checkpoints) for k in range(self.checkpoints)})


class Retrainer:
    """Trains the same architecture on subsets of one training set.

    :param config: the training recipe
    :param factory: the full training set as a PyKEEN ``TriplesFactory`` (ids and inverse triples)
    """

    def __init__(self, config: RetrainConfig, factory):
        from pykeen.models import model_resolver
        from pykeen.utils import set_random_seed

        self.config, self.factory = config, factory
        kwargs = {"embedding_dim": config.embedding_dim}
        if not config.constrained and config.model == "DistMult":
            kwargs.update(entity_constrainer=None, regularizer=None)
        set_random_seed(config.seed)
        self.model = model_resolver.make(config.model, kwargs, triples_factory=factory, random_seed=config.seed)
        self.initial = copy.deepcopy(self.model.state_dict())
        self.triples = factory.mapped_triples

    def _fresh(self):
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.initial)
        return model

    def isolated(self, deleted: torch.Tensor | None = None) -> tuple[torch.nn.Module, list[Checkpoint]]:
        """Full-batch training without the ``deleted`` training rows.

        :param deleted: shape: (k,), dtype: long, rows of the training triples to leave out
        :return: the final model and its checkpoints (states in memory, with the learning rate)
        """
        model = self._fresh().eval()
        keep = torch.ones(self.triples.shape[0], dtype=torch.bool)
        if deleted is not None:
            keep[deleted] = False
        internal = to_internal(model, self.triples[keep])
        loss_fn, size = SoftmaxLoss(), float(self.triples.shape[0])
        optimizer = torch.optim.Adam(model.get_grad_params(), lr=self.config.learning_rate)
        saves, checkpoints = set(self.config.checkpoint_steps()), []
        for step in range(1, self.config.epochs + 1):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, internal).sum() / size
            loss.backward()
            optimizer.step()
            if self.config.constrained:
                model.post_parameter_update()
            if step in saves:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                checkpoints.append(Checkpoint(state, float(optimizer.param_groups[0]["lr"])))
        return model.eval(), checkpoints

    def reshuffled(self, deleted: torch.Tensor | None = None, seed: int = 0):
        """PyKEEN's LCWA loop with cross-entropy, Adam and ``seed``, without the ``deleted`` rows."""
        from pykeen.training import LCWATrainingLoop
        from pykeen.training.callbacks import TrainingCallback
        from pykeen.triples import TriplesFactory
        from pykeen.utils import set_random_seed

        keep = torch.ones(self.triples.shape[0], dtype=torch.bool)
        if deleted is not None:
            keep[deleted] = False
        factory = TriplesFactory(
            self.triples[keep],
            self.factory.entity_to_id,
            self.factory.relation_to_id,
            create_inverse_triples=self.factory.create_inverse_triples,
        )
        set_random_seed(seed)
        model = self._fresh()
        model.reset_parameters_()  # a new seed draws a new initialisation, as a user's retraining does
        optimizer = torch.optim.Adam(model.get_grad_params(), lr=self.config.learning_rate)
        saves, checkpoints = set(self.config.checkpoint_steps()), []

        class _Keep(TrainingCallback):
            def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
                if epoch in saves:
                    state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    checkpoints.append(Checkpoint(state, float(self.optimizer.param_groups[0]["lr"])))

        loop = LCWATrainingLoop(model=model, triples_factory=factory, optimizer=optimizer)
        loop.train(
            triples_factory=factory,
            num_epochs=self.config.epochs,
            batch_size=self.config.batch_size,
            callbacks=[_Keep()],
            use_tqdm=False,
            use_tqdm_batch=False,
        )
        return model.eval(), checkpoints
