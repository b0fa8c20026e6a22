"""The public entry point: :class:`TracIn`."""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from .adapters import ModelAdapter
from .checkpoints import Checkpoint, materialize
from .config import TEST_BLOCK_BYTES, TracInConfig
from .errors import KGTracinError
from .gradients import Projection, make_computer
from .results import InfluenceResult, TopK
from .scoring import DenseSink, Scorer, SumSink, VectorSink, test_block_size
from .triples import Labels

__all__ = ["TracIn"]

logger = logging.getLogger(__name__)


def _open_store(store: str | os.PathLike):
    """Open a store: rank 0 first (it makes and marks the folder), then, under torch.distributed, the others."""
    from .runners import StoreFolder, world
    from .runners.distributed import barrier

    rank, size = world()
    if size == 1:
        return StoreFolder(store, rank=0)
    folder = StoreFolder(store, rank=rank) if rank == 0 else None
    barrier()
    return folder or StoreFolder(store, rank=rank)


class TracIn:
    """Exact TracIn influence of training triples on test triples for a PyKEEN ``ERModel``.

    ``TracIn(z -> z') = sum_c lr_c <grad l_{w_c}(z), grad l_{w_c}(z')>``, gradients over the selected
    parameters in ``eval()`` mode, with ``l`` the ``bce`` loss ``softplus(-score)`` or the ``softmax`` loss (the
    1-N cross-entropy in both directions; see :mod:`kgtracin.losses`).

    :param model: any PyKEEN ``ERModel``; its architecture is reused for every checkpoint
    :param training_triples: shape: (N, 3), dtype: long, dataset ids; or a ``TriplesFactory``
    :param checkpoints: ``Checkpoint(state, learning_rate)`` list; ``None`` uses the model's current weights
        with learning rate 1.0, with a warning (that is not TracIn over training)
    :param config: how the scores are computed (:class:`~kgtracin.config.TracInConfig`: parameters, method,
        batch size, device, precision, loss, normalisation, shards, test blocks, projection, progress)
    :param labels: entity / relation labels for :meth:`InfluenceResult.to_frame` (taken from a
        ``TriplesFactory`` when one is given)
    :param options: any field of :class:`~kgtracin.config.TracInConfig` by name, replacing the config's
        (``TracIn(model, triples, checkpoints, method="loop", loss="softmax")``)
    """

    def __init__(
        self,
        model: nn.Module,
        training_triples,
        checkpoints: Sequence[Checkpoint] | None = None,
        config: TracInConfig | None = None,
        *,
        labels: Labels | None = None,
        **options,
    ):
        self.config = TracInConfig.with_options(config, **options)
        if not isinstance(model, nn.Module):
            raise KGTracinError(f"kgtracin needs a PyKEEN ERModel, got {type(model).__name__}")
        if checkpoints is None:
            warnings.warn(
                "TracIn without checkpoints uses the model's current weights with learning rate 1.0, "
                "which is not TracIn over training; give checkpoints=[Checkpoint(state, lr), ...]",
                stacklevel=2,
            )
            checkpoints = [Checkpoint({k: v.detach().clone() for k, v in model.state_dict().items()}, 1.0)]
        # a private copy: kgtracin puts it in eval mode and turns off unique lookups; the caller's model is untouched
        model = copy.deepcopy(model)
        self.model = model
        reference = ModelAdapter(model, self.config.parameters, self.config.loss)  # validates the model and patterns
        if hasattr(training_triples, "mapped_triples"):
            if labels is None and hasattr(training_triples, "entity_to_id"):
                labels = Labels.from_maps(training_triples.entity_to_id, training_triples.relation_to_id)
            training_triples = training_triples.mapped_triples
        self.training_triples = reference.check_triples(training_triples, "training triples")
        self.labels = labels
        checkpoints = list(checkpoints)
        if not checkpoints or not all(isinstance(c, Checkpoint) for c in checkpoints):
            raise KGTracinError("checkpoints must be a non-empty list of Checkpoint(state, learning_rate)")
        self.checkpoints = checkpoints
        self._reference = reference
        projection = (
            None
            if self.config.projection_dim is None
            else Projection(self.config.projection_dim, self.config.projection_seed)
        )
        self._computer = make_computer(self.config.method, projection)
        self._adapters: list[ModelAdapter] | None = None
        self._train_norms: dict[int, torch.Tensor] = {}  # per checkpoint, once a self-influence pass has run

    # -- construction from saved runs ---------------------------------------------------------------
    @classmethod
    def from_run(cls, path: str | os.PathLike, trust_pickle: bool = False, **kwargs) -> TracIn:
        """Load a ``kgtracin train`` run directory or a PyKEEN ``save_to_directory`` folder.

        As ``kgtracin explain`` does, the loss follows the run's training loss unless given otherwise.

        :param trust_pickle: allow a PyKEEN folder's ``trained_model.pkl``, a pickled model that can run code
        :param kwargs: passed to :class:`TracIn`: ``config``, ``labels``, or configuration fields by name
        """
        from .runs import load_run

        run = load_run(path, trust_pickle=trust_pickle)
        kwargs.setdefault("labels", run.labels)
        if kwargs.get("config") is None:
            kwargs.setdefault("loss", run.tracin_loss)
        return cls(run.model, run.training_triples, checkpoints=run.checkpoints, **kwargs)

    # -- internals ----------------------------------------------------------------------------------
    def _scorer(self) -> Scorer:
        if self._adapters is None:  # each checkpoint is loaded once and kept
            device = torch.device(self.config.device) if self.config.device else self._reference.device
            self._adapters = [
                ModelAdapter(
                    materialize(self.model, c, device, self.config.dtype), self.config.parameters, self.config.loss
                ).freeze_unselected()
                for c in self.checkpoints
            ]
            if self.config.compile:
                for adapter in self._adapters:
                    adapter.scorer = torch.compile(adapter.scorer)
            logger.info(
                "TracIn with %d checkpoint(s), method=%s, paths: %s",
                len(self._adapters),
                self.config.method,
                self.describe(),
            )
        batch_size = self.config.effective_batch_size
        if self.config.batch_size is None:  # a default batch stays within the computer's memory bound
            limit = self._computer.batch_limit(self._adapters[0])
            batch_size = batch_size if limit is None else max(1, min(batch_size, limit))
        return Scorer(
            adapters=self._adapters,
            learning_rates=[c.learning_rate for c in self.checkpoints],
            computer=self._computer,
            batch_size=batch_size,
            progress=self.config.progress,
            normalize=self.config.normalize,
            train_norms=self._train_norms,
        )

    def _blocks(self, test: torch.Tensor, pairs: bool = False) -> tuple[Scorer, list[torch.Tensor]]:
        """The scorer, and the test triples in blocks of :func:`~kgtracin.scoring.test_block_size`: every
        public computation loops over these, one pass over the training triples per block."""
        scorer = self._scorer()  # loads the checkpoints first: a bad one fails before anything is stored
        block = test_block_size(scorer, test, self.config.test_block_size, TEST_BLOCK_BYTES, self._dtype, pairs)
        return scorer, list(test.split(block))

    @property
    def _dtype(self) -> torch.dtype:
        """The results' dtype: the wider of the model's and the compute precision's (fp64 on a float32 model
        gives float64 scores; bf16 keeps float32 ones)."""
        return torch.promote_types(self._reference.dtype, self.config.dtype or self._reference.dtype)

    def _check_test(self, test_triples) -> torch.Tensor:
        if hasattr(test_triples, "mapped_triples"):
            test_triples = test_triples.mapped_triples
        return self._reference.check_triples(test_triples, "test triples")

    # -- public API ---------------------------------------------------------------------------------
    @property
    def parameter_names(self) -> list[str]:
        """The differentiated parameters' names."""
        return list(self._reference.parameters)

    def describe(self) -> dict[str, str]:
        """Which gradient path computes each selected parameter: name -> path."""
        return self._computer.describe(self._reference)

    def scores(self, test_triples: torch.Tensor) -> torch.Tensor:
        """The full TracIn matrix.

        :param test_triples: shape: (M, 3), dtype: long, dataset ids
        :return: shape: (M, N); entry (j, i) is the influence of training triple i on test triple j
        """
        test = self._check_test(test_triples)
        scorer, blocks = self._blocks(test)
        out = torch.empty(test.shape[0], self.training_triples.shape[0], dtype=self._dtype)
        for part, rows in zip(blocks, out.split([b.shape[0] for b in blocks])):
            scorer.run(self.training_triples, part, DenseSink(rows))
        return out

    def influence(
        self, test_triples: torch.Tensor, top_k: int = 10, store: str | os.PathLike | None = None
    ) -> InfluenceResult:
        """Top-k proponents and opponents of each test triple, streamed (memory independent of N).

        Under ``torchrun`` (an initialised process group) the training shards are split over the ranks and
        every rank returns the same, merged result, identical to one process.

        :param test_triples: shape: (M, 3), dtype: long, dataset ids
        :param top_k: k >= 1 (capped at N)
        :param store: a folder for finished shards (new, empty, or a kgtracin store); re-running the same work
            with the same store resumes where an interrupted run stopped. One process at a time may use it. The
            caller removes it when done with :func:`kgtracin.remove_store`, which deletes only the
            store's own files.

        With ``candidates="neighbourhood"`` each test triple's candidates are the training triples sharing an
        entity with it (:mod:`kgtracin.runners.neighbourhood`); where fewer than k have an influence of a sign,
        the rest are filler entries (index -1, influence -inf / +inf), which ``to_frame`` leaves out.
        """
        from .runners import sharded_topk
        from .runners.store import with_test

        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise KGTracinError(f"top_k must be an integer >= 1, got {top_k!r}")
        test = self._check_test(test_triples)
        k = min(top_k, self.training_triples.shape[0])
        if self.config.candidates == "neighbourhood" and store is not None:
            raise KGTracinError("a store is for candidates='all' (a neighbourhood is a small part of one pass)")
        scorer, blocks = self._blocks(test, pairs=self.config.candidates == "neighbourhood")
        if self.config.candidates == "neighbourhood":
            from .runners.neighbourhood import neighbourhood_topk

            return self._result(
                test, [neighbourhood_topk(scorer, self.training_triples, p, k, self._dtype) for p in blocks]
            )
        folder = None if store is None else _open_store(store)
        identity = None if folder is None else self._fingerprint(None, k)  # files hashed once, not per block
        parts = []
        try:
            for index, part in enumerate(blocks):
                shard_store = None
                if folder is not None:
                    shard_store = folder.block(None if len(blocks) == 1 else index, with_test(identity, part))
                parts.append(
                    sharded_topk(
                        scorer,
                        self.training_triples,
                        part,
                        k,
                        self._dtype,
                        self.config.shard_size,
                        shard_store,
                    )
                )
        finally:
            if folder is not None:
                folder.close()
        return self._result(test, parts)

    def _result(self, test: torch.Tensor, parts) -> InfluenceResult:
        """One result from the test blocks' sinks (``top_indices``, ``top_values``, ``bottom_*``: (m, k) each)."""
        return InfluenceResult(
            proponents=TopK(torch.cat([p.top_indices for p in parts]), torch.cat([p.top_values for p in parts])),
            opponents=TopK(torch.cat([p.bottom_indices for p in parts]), torch.cat([p.bottom_values for p in parts])),
            test_triples=test,
            training_triples=self.training_triples,
            labels=self.labels,
        )

    def _fingerprint(self, test: torch.Tensor | None, k: int) -> dict:
        """What identifies a top-k computation, for the resumable store (``test=None``: without the test block)."""
        from .runners.store import fingerprint

        return fingerprint(
            model=self.model,
            config=self.config,
            parameters=list(self._reference.parameters),
            k=k,
            train=self.training_triples,
            test=test,
            checkpoints=self.checkpoints,
        )

    def total_influence(self, test_triples: torch.Tensor) -> torch.Tensor:
        """Each training triple's influence on the summed loss of all test triples, ``sum_j TracIn(z_i -> z'_j)``.

        TracIn is linear in the test gradient, so this is computed along one summed test gradient per checkpoint
        (:meth:`~kgtracin.scoring.Scorer.run_summed`: a few passes over the training triples, whatever the number
        of test triples). ``method="loop"`` (the reference) and a projection sum the (test x training) kernels
        instead.

        :param test_triples: shape: (M, 3), dtype: long, dataset ids (e.g. the validation split)
        :return: shape: (N,); negative: training on z_i raised the test loss (a harmful triple)
        """
        test = self._check_test(test_triples)
        if self.config.method != "loop" and self.config.projection_dim is None:
            sink = VectorSink(self.training_triples.shape[0], self._dtype)
            self._scorer().run_summed(self.training_triples, test, sink)
            return sink.values
        scorer, blocks = self._blocks(test)
        sink = SumSink(self.training_triples.shape[0], self._dtype)
        for part in blocks:
            scorer.run(self.training_triples, part, sink)
        return sink.values

    def share_gradient_norms(self, other: TracIn) -> None:
        """Reuse the training gradients' norms that ``other`` found in its self-influence pass (same model,
        training triples, checkpoints, parameters and precision; any loss of the same name), so that a normalised
        :meth:`total_influence` does not differentiate every training triple again.

        :raises KGTracinError: when the two do not describe the same gradients
        """
        mine = (self.config.parameters, self.config.loss, self.config.dtype, self.config.method)
        theirs = (other.config.parameters, other.config.loss, other.config.dtype, other.config.method)
        same = (
            mine == theirs
            and torch.equal(self.training_triples, other.training_triples)
            and len(self.checkpoints) == len(other.checkpoints)
            and all(
                a.state is b.state and a.learning_rate == b.learning_rate
                for a, b in zip(self.checkpoints, other.checkpoints)
            )
        )
        if not same:
            raise KGTracinError("gradient norms can be shared only between TracIns of the same gradients")
        self._train_norms = other._train_norms

    def self_influence(self) -> torch.Tensor:
        """``TracIn(z -> z)`` for every training triple: high values flag candidate noisy facts.

        :return: shape: (N,)
        """
        sink = VectorSink(self.training_triples.shape[0], self._dtype)
        self._scorer().run_self(self.training_triples, sink)
        return sink.values
