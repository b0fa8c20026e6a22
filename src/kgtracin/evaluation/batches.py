"""Retraining in the run's own batches, so that only the deleted triples differ.

A plain retraining without some facts (Kelpie's protocol, ``--batches reshuffled``) draws every epoch's batches
afresh from a smaller training set: from the first epoch on, no batch is one the run saw, and the retrained model
differs from the run's even where the deleted facts do not matter. On the strict WordNet graph, deleting 100
random far facts that way loses 20-27% of the predictions (RG-1).

``--batches same`` keeps the run's batches instead. Each epoch draws the same permutation of the **full** training
set's LCWA instances (the (head, relation) pairs, and with inverse triples the (tail, inverse relation) pairs) from
the same random state that the run's own loop drew it from, cuts it into the same batches, and then leaves out
what was deleted: a deleted fact is no longer among its pair's targets, and a pair left with no target drops out
of its batch (which is then one shorter). Every other instance is in the batch, at the step, that it was in the
run; with the mean loss a batch that lost an instance weighs the others by ``B / (B - 1)``, and a batch that lost
all of them is no step. Measured (ComplEx on the strict graph, ``docs/quality``): it barely lowers that noise,
RG-1 −0.18 against −0.20, so the noise is not the reshuffling and ``reshuffled`` stays the default.
The training starts from the run's random state even where building the model draws by its triples (NodePiece's
tokens). Deleting nothing reproduces the run bit for bit.

On a GPU, PyKEEN's memory probe tries batch sizes before training, drawing from the same random state: where the
run needed smaller sub-batches than a retraining, their batches part. On the CPU it tries once.

Only PyKEEN's LCWA loop (``kgtracin train``'s default) and models without dropout are supported: the sLCWA loop
draws its negatives per batch, and dropout its masks, from the global random state that also orders the next
epoch's batches, so a shorter batch would move every later one. Those are refused
(:func:`same_batches_unsupported`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

__all__ = ["SameBatches", "same_batches_loop", "same_batches_unsupported"]


class SameBatches(Sampler[list[int]]):
    """The full training set's batches, drawn as ``DataLoader(shuffle=True)`` draws them, less the deleted
    instances.

    :param slots: shape: (F,), for each instance of the full training set, its index among the kept instances,
        or -1 where it was deleted
    :param batch_size: instances per batch of the full set
    :param drop_last: drop the full set's last, incomplete batch (PyKEEN does for models with batch norm)
    """

    def __init__(self, slots: torch.Tensor, batch_size: int, drop_last: bool):
        self.slots, self.batch_size, self.drop_last = slots, batch_size, drop_last
        self._order = RandomSampler(range(slots.shape[0]))  # the same draws from the global generator

    def __len__(self) -> int:
        n = self.slots.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.as_tensor(list(self._order), dtype=torch.long)
        for number in range(len(self)):
            chunk = self.slots[order[number * self.batch_size : (number + 1) * self.batch_size]]
            kept = chunk[chunk >= 0]
            if kept.numel():  # a batch whose every instance was deleted is no step at all
                yield kept.tolist()


def _slots(full_pairs, kept_pairs) -> torch.Tensor:
    """For each row of ``full_pairs`` (F, 2), its row in ``kept_pairs`` (K, 2), or -1."""
    index = {tuple(pair): i for i, pair in enumerate(kept_pairs.tolist())}
    return torch.tensor([index.get(tuple(pair), -1) for pair in full_pairs.tolist()], dtype=torch.long)


def same_batches_loop(full: torch.Tensor):
    """A PyKEEN LCWA training loop class whose batches are those of ``full``, less what its factory lacks.

    :param full: shape: (F, 3), the run's whole training set (ids), of which the loop's factory holds a subset
    :return: a subclass of :class:`pykeen.training.LCWATrainingLoop`
    """
    from pykeen.training import LCWATrainingLoop
    from pykeen.triples.instances import LCWAInstances

    cache: dict = {}  # the whole set's pairs per (inverse triples, target): the memory probe and training both ask

    class SameBatchesLoop(LCWATrainingLoop):
        """PyKEEN's LCWA loop over the run's own batches (:mod:`kgtracin.evaluation.batches`)."""

        def _create_training_data_loader(self, triples_factory, sampler, **kwargs) -> DataLoader:
            if sampler:
                raise NotImplementedError("the same batches are drawn without a batch sampler")
            options = {"target": self.target}
            kept = LCWAInstances.from_triples_factory(
                triples_factory,
                loss_weighter=self.loss_weighter,
                loss_weighter_kwargs=self.loss_weighter_kwargs,
                **options,
            )
            key = (bool(triples_factory.create_inverse_triples), self.target)
            if key not in cache:
                cache[key] = LCWAInstances.from_triples(
                    triples_factory._add_inverse_triples_if_necessary(mapped_triples=full),
                    num_entities=triples_factory.num_entities,
                    num_relations=triples_factory.num_relations,
                    **options,
                ).pairs
            batches = SameBatches(
                _slots(cache[key], kept.pairs), kwargs.pop("batch_size"), bool(kwargs.pop("drop_last", False))
            )
            kwargs.pop("shuffle", None)
            return DataLoader(dataset=kept, batch_sampler=batches, **kwargs)

    return SameBatchesLoop


def same_batches_unsupported(training_loop: str, model) -> str | None:
    """Why a run cannot be retrained in its own batches, or None.

    :param training_loop: the run's training loop, ``lcwa`` or ``slcwa``
    :param model: the run's model; dropout (ConvE's) draws from the random state that orders the next epoch's
        batches, and a shorter batch draws less, so every later batch would move
    """
    if training_loop != "lcwa":
        return (
            f"--batches same needs the lcwa training loop; this run trained with {training_loop}, whose negatives "
            "are drawn per batch; use --batches reshuffled"
        )
    dropout = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0
    ]
    if dropout:
        return (
            f"--batches same cannot keep {type(model).__name__}'s batches: its dropout ({dropout[0]}) draws from the "
            "random state that orders the next epoch's batches; use --batches reshuffled"
        )
    return None
