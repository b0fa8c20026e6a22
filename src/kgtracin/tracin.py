"""The public entry point: :class:`TracIn`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from torch import nn

from .adapters import ModelAdapter
from .checkpoints import Checkpoint, materialize
from .config import TracInConfig
from .errors import KGTracinError
from .gradients import make_computer
from .results import InfluenceResult, TopK
from .scoring import DenseSink, Scorer, TopKSink, VectorSink
from .triples import Labels

__all__ = ["TracIn"]

logger = logging.getLogger(__name__)


class TracIn:
    """Exact TracIn influence of training triples on test triples for a PyKEEN ``ERModel``.

    ``TracIn(z -> z') = sum_c lr_c <grad l_{w_c}(z), grad l_{w_c}(z')>`` with ``l = softplus(-score)``
    (BCE-with-logits against label 1), gradients over the selected parameters in ``eval()`` mode.

    :param model: any PyKEEN ``ERModel``; its architecture is reused for every checkpoint
    :param training_triples: shape: (N, 3), dtype: long, dataset ids; or a ``TriplesFactory``
    :param checkpoints: ``Checkpoint(state, learning_rate)`` list; ``None`` uses the model's current weights
        with learning rate 1.0
    :param parameters: ``"all"`` or names / glob patterns over ``model.named_parameters()``
    :param method: ``"fast"`` (exact closed form, default), ``"vmap"`` or ``"loop"`` (the reference)
    :param batch_size: training triples per batch (default depends on the method)
    :param device: torch device (default: the model's)
    :param progress: show tqdm progress bars
    :param labels: entity / relation labels for :meth:`InfluenceResult.to_frame` (taken from a
        ``TriplesFactory`` when one is given)
    """

    def __init__(
        self,
        model: nn.Module,
        training_triples,
        checkpoints: Sequence[Checkpoint] | None = None,
        parameters: str | Sequence[str] = "all",
        method: str = "fast",
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        *,
        progress: bool = True,
        labels: Labels | None = None,
    ):
        self.config = TracInConfig(
            parameters=parameters if isinstance(parameters, str) else tuple(parameters),
            method=method, batch_size=batch_size,
            device=None if device is None else str(device), progress=progress,
        )
        self.model = model
        reference = ModelAdapter(model, self.config.parameters)  # validates the model and parameter patterns
        if hasattr(training_triples, "mapped_triples"):
            if labels is None and hasattr(training_triples, "entity_to_id"):
                labels = Labels.from_maps(training_triples.entity_to_id, training_triples.relation_to_id)
            training_triples = training_triples.mapped_triples
        self.training_triples = reference.check_triples(training_triples, "training triples")
        self.labels = labels
        if checkpoints is None:
            checkpoints = [Checkpoint(model.state_dict(), 1.0)]
        checkpoints = list(checkpoints)
        if not checkpoints or not all(isinstance(c, Checkpoint) for c in checkpoints):
            raise KGTracinError("checkpoints must be a non-empty list of Checkpoint(state, learning_rate)")
        self.checkpoints = checkpoints
        self._reference = reference
        self._computer = make_computer(self.config.method)
        self._adapters: list[ModelAdapter] | None = None

    # -- construction from saved runs ---------------------------------------------------------------
    @classmethod
    def from_run(cls, path: str | os.PathLike, **kwargs) -> "TracIn":
        """Load a ``kgtracin train`` run directory or a PyKEEN ``save_to_directory`` folder.

        :param kwargs: passed to :class:`TracIn` (``parameters``, ``method``, ``batch_size``, ``device``, ...)
        """
        from .runs import load_run

        run = load_run(path)
        kwargs.setdefault("labels", run.labels)
        return cls(run.model, run.training_triples, checkpoints=run.checkpoints, **kwargs)

    # -- internals ----------------------------------------------------------------------------------
    def _scorer(self) -> Scorer:
        if self._adapters is None:  # each checkpoint is loaded once and kept
            device = torch.device(self.config.device) if self.config.device else self._reference.device
            self._adapters = [
                ModelAdapter(materialize(self.model, c, device), self.config.parameters) for c in self.checkpoints
            ]
            logger.info("TracIn with %d checkpoint(s), method=%s, paths: %s", len(self._adapters),
                        self.config.method, self.describe())
        return Scorer(
            adapters=self._adapters,
            learning_rates=[c.learning_rate for c in self.checkpoints],
            computer=self._computer,
            batch_size=self.config.effective_batch_size,
            progress=self.config.progress,
        )

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
        sink = DenseSink(test.shape[0], self.training_triples.shape[0], self._reference.dtype)
        self._scorer().run(self.training_triples, test, sink)
        return sink.scores

    def influence(self, test_triples: torch.Tensor, top_k: int = 10) -> InfluenceResult:
        """Top-k proponents and opponents of each test triple, streamed (memory independent of N).

        :param test_triples: shape: (M, 3), dtype: long, dataset ids
        :param top_k: k >= 1 (capped at N)
        """
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise KGTracinError(f"top_k must be an integer >= 1, got {top_k!r}")
        test = self._check_test(test_triples)
        sink = TopKSink(test.shape[0], min(top_k, self.training_triples.shape[0]), self._reference.dtype)
        self._scorer().run(self.training_triples, test, sink)
        return InfluenceResult(
            proponents=TopK(sink.top_indices, sink.top_values),
            opponents=TopK(sink.bottom_indices, sink.bottom_values),
            test_triples=test, training_triples=self.training_triples, labels=self.labels,
        )

    def self_influence(self) -> torch.Tensor:
        """``TracIn(z -> z)`` for every training triple: high values flag candidate noisy facts.

        :return: shape: (N,)
        """
        sink = VectorSink(self.training_triples.shape[0], self._reference.dtype)
        self._scorer().run_self(self.training_triples, sink)
        return sink.values
