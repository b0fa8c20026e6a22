"""The exact closed form: row gradients, outer products and a small remainder, from one backward per batch.

See ``docs/mathematics.md``. For a batch of ``B`` triples, one forward and one backward pass of the
summed loss give, through hooks:

* **rows**: the gradient of each looked-up embedding row (the lookup output is swapped for a leaf);
* **outer products**: each ``nn.Linear``'s input ``x`` and output gradient ``delta`` inside the interaction;
* **small dense parts**: per-triple gradients of ``nn.Conv2d`` (unfolded input x output gradient) and of
  eval-mode batch norm (normalised input x output gradient), materialised because they are small.

Any selected parameter that none of these covers is differentiated per triple with ``torch.func`` (exact,
slower); :meth:`FastComputer.describe` and the log say which path each parameter takes.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from ..adapters import ModelAdapter
from ..compat import embedding_module, is_plain_embedding, table_name
from ..errors import KGTracinError
from ._factors import DenseGroup, Features, OuterGroup, RowGroup
from .base import GradientComputer
from .candidates import attach_candidates
from .layers import LayerForm, layer_form
from .projection import Projection
from .vmap import vmap_dense_grads

__all__ = ["FastComputer"]

logger = logging.getLogger(__name__)


@dataclass
class _Plan:
    """Which module computes which selected parameter's gradient."""

    #: parameter name -> the torch ``nn.Embedding`` inside a plain PyKEEN ``Embedding`` representation
    rows: dict[str, nn.Embedding] = field(default_factory=dict)
    #: module name -> (linear, weight selected, bias selected)
    linears: dict[str, tuple[nn.Linear, bool, bool]] = field(default_factory=dict)
    #: module name -> (conv or batch norm, weight selected, bias selected)
    smalls: dict[str, tuple[nn.Module, bool, bool, LayerForm]] = field(default_factory=dict)
    #: parameters left to torch.func, in selection order
    remainder: list[str] = field(default_factory=list)
    #: parameter name -> path
    paths: dict[str, str] = field(default_factory=dict)
    #: for a 1-N loss: parameter name of a candidate entity table -> its representation index
    candidates: dict[str, int] = field(default_factory=dict)


#: The most numbers a dense per-triple fallback may hold for one batch (256 MiB of float32).
_DENSE_FALLBACK_LIMIT = 1 << 26


def _make_plan(adapter: ModelAdapter) -> _Plan:
    plan = _Plan()
    selected = adapter.parameters
    model = adapter.model
    reason = adapter.loss.fast_unsupported(model)
    if reason is not None:  # exact, slower: torch.func over every selected parameter
        plan.remainder = list(selected)
        plan.paths = {name: f"vmap ({adapter.loss.name}: {reason})" for name in selected}
        return plan
    plan.candidates = adapter.loss.candidate_tables(model)
    for group_name in ("entity_representations", "relation_representations"):
        for i, representation in enumerate(getattr(model, group_name, [])):
            name = table_name(group_name, i)
            if name in selected and is_plain_embedding(representation):
                plan.rows[name] = embedding_module(representation)
                plan.paths[name] = "rows"
    interaction = getattr(model, "interaction", None)
    if interaction is not None:
        for module_name, module in interaction.named_modules(prefix="interaction"):
            w, b = f"{module_name}.weight", f"{module_name}.bias"
            w_sel, b_sel = w in selected, b in selected
            if not (w_sel or b_sel):
                continue
            form = layer_form(module)
            if form is None:
                continue
            path = form.path
            if form.grads is None:  # the outer-product form of a linear layer
                plan.linears[module_name] = (module, w_sel, b_sel)
            else:
                plan.smalls[module_name] = (module, w_sel, b_sel, form)
            for name, sel in ((w, w_sel), (b, b_sel)):
                if sel:
                    plan.paths[name] = path
    for name in plan.candidates:
        if name in plan.rows:
            plan.paths[name] = "rows+candidates"
    plan.remainder = [name for name in selected if name not in plan.paths]
    for name in plan.remainder:
        plan.paths[name] = "vmap"
    return plan


class _Recorder:
    """Forward hooks that capture what the closed form needs during one batched forward pass."""

    def __init__(self, plan: _Plan, batch: int):
        self.batch = batch
        self.rows: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {k: [] for k in plan.rows}
        self.calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {k: [] for k in (*plan.linears, *plan.smalls)}
        self.handles = []
        for key, embedding in plan.rows.items():
            self.handles.append(embedding.register_forward_hook(self._row_hook(key)))
        for key, (module, *_) in (*plan.linears.items(), *plan.smalls.items()):
            self.handles.append(module.register_forward_hook(self._call_hook(key)))

    def _check_batch(self, key: str, tensor: torch.Tensor, ndim: int | None = None) -> None:
        if tensor.ndim == 0 or tensor.shape[0] != self.batch or (ndim is not None and tensor.ndim != ndim):
            raise KGTracinError(
                f"method='fast' cannot attribute {key} per triple (leading dimension {tuple(tensor.shape)} "
                f"is not the batch of {self.batch}); use method='vmap'"
            )

    def _row_hook(self, key: str):
        def hook(module, inputs, output):
            index = inputs[0]
            self._check_batch(key, index, ndim=1)
            leaf = output.detach().requires_grad_(True)
            self.rows[key].append((index, leaf))
            return leaf

        return hook

    def _call_hook(self, key: str):
        def hook(module, inputs, output):
            self._check_batch(key, inputs[0])
            self.calls[key].append((inputs[0].detach(), output))

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _stack_calls(tensors, batch: int) -> torch.Tensor:
    """A layer's per-call tensors (B, ..., d) as one (B, P, d) tensor; no copy for a single call."""
    parts = [t.reshape(batch, -1, t.shape[-1]) for t in tensors]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class FastComputer(GradientComputer):
    """Exact per-triple gradient factors from one batched backward pass (the default method)."""

    name = "fast"

    def __init__(self, projection: Projection | None = None) -> None:
        """:param projection: None (exact, the default), or sketch every dense factor longer than its dimension
        (opt-in, approximate; see :mod:`kgtracin.gradients.projection`)"""
        # keyed by the adapter itself (not its id, which a later adapter could reuse)
        self._plans: weakref.WeakKeyDictionary[ModelAdapter, _Plan] = weakref.WeakKeyDictionary()
        self.projection = projection

    def _plan(self, adapter: ModelAdapter) -> _Plan:
        if adapter not in self._plans:
            self._plans[adapter] = _make_plan(adapter)
            counts: dict[str, int] = {}
            for path in self._plans[adapter].paths.values():
                counts[path] = counts.get(path, 0) + 1
            logger.info(
                "fast path for %s: %s",
                type(adapter.model).__name__,
                ", ".join(f"{n} parameter(s) by {p}" for p, n in counts.items()),
            )
        return self._plans[adapter]

    def describe(self, adapter: ModelAdapter) -> dict[str, str]:
        plan = self._plan(adapter)
        paths = dict(plan.paths)
        if self.projection is None:
            return paths
        dim = self.projection.dim
        for name, path in paths.items():  # rows stay exact; longer factors than dim are sketched
            module_name, _, kind = name.rpartition(".")
            if module_name in plan.linears:
                linear = plan.linears[module_name][0]
                sketched = linear.out_features > dim or (kind == "weight" and linear.in_features > dim)
            else:
                sketched = not path.startswith("rows") and adapter.parameters[name].numel() > dim
            if sketched:
                paths[name] = f"{path}, projected to {dim}"
        return paths

    def batch_limit(self, adapter: ModelAdapter) -> int | None:
        """The default batch: 1024 for models made of embedding rows only (fewer, larger row-kernel operations
        pay), 256 for models with layers or a loss that scores every entity (``softmax``; measured faster on
        ConvE), and never so large
        that a batch's dense fallback gradients pass ``_DENSE_FALLBACK_LIMIT`` numbers."""
        plan = self._plan(adapter)
        limit = 256 if (plan.linears or plan.smalls or plan.remainder or adapter.loss.scores_all_entities) else None
        size = sum(adapter.parameters[name].numel() for name in plan.remainder)
        if size:
            limit = min(limit, max(1, _DENSE_FALLBACK_LIMIT // size))
        return limit

    def featurize(self, adapter: ModelAdapter, hrt: torch.Tensor) -> Features:
        plan = self._plan(adapter)
        batch = hrt.shape[0]
        groups: dict = {}
        dense: list[tuple[str, torch.Tensor]] = []  # (parameter name, per-triple gradients (B, numel))
        if plan.rows or plan.linears or plan.smalls:
            recorder = _Recorder(plan, batch)
            try:
                with torch.enable_grad():
                    loss, candidates = self._forward(adapter, hrt)
            finally:
                recorder.remove()
            row_targets = [leaf for calls in recorder.rows.values() for _, leaf in calls]
            call_targets = [out for calls in recorder.calls.values() for _, out in calls]
            tables = [adapter.parameters[name] for name in plan.rows]
            targets = row_targets + call_targets
            grads = (
                torch.autograd.grad(loss, targets + tables, allow_unused=True)
                if loss.requires_grad
                else [None] * len(targets + tables)
            )
            # a table reached other than through the hooked lookups would get a gradient here
            if any(g is not None and bool(g.any()) for g in grads[len(targets) :]):
                raise KGTracinError(
                    f"{type(adapter.model).__name__} uses an embedding table outside per-triple lookups; "
                    "use method='vmap'"
                )
            grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, targets)]
            position = 0
            for name, calls in recorder.rows.items():
                table = adapter.parameters[name]
                if calls:
                    index = torch.stack([idx for idx, _ in calls], dim=1)
                    row_grads = torch.stack([g.reshape(batch, -1) for g in grads[position : position + len(calls)]], 1)
                else:  # a table that only the candidate side reaches (e.g. ConvE's tail bias)
                    index = hrt.new_zeros(batch, 0)
                    row_grads = table.new_zeros(batch, 0, table.shape[1])
                position += len(calls)
                groups[name] = RowGroup(index, row_grads)
            for name, calls in recorder.calls.items():
                deltas = grads[position : position + len(calls)]
                position += len(calls)
                if name in plan.linears:
                    _, w_sel, b_sel = plan.linears[name]
                    xs = _stack_calls([x for x, _ in calls], batch) if w_sel else None
                    ds = _stack_calls(deltas, batch)
                    if self.projection is not None:
                        xs = None if xs is None else self.projection.apply(f"{name}.inputs", xs)
                        ds = self.projection.apply(f"{name}.deltas", ds)
                    groups[name] = OuterGroup(xs, ds, b_sel)
                    continue
                module, w_sel, b_sel, form = plan.smalls[name]
                parts = [form.grads(module, x, d) for (x, _), d in zip(calls, deltas)]
                if w_sel:
                    dense.append((f"{name}.weight", sum(p[0] for p in parts)))
                if b_sel:
                    dense.append((f"{name}.bias", sum(p[1] for p in parts)))
            attach_candidates(groups, plan.candidates, [d for d, _ in candidates], [q for _, q in candidates])
        if plan.remainder:
            sizes = [adapter.parameters[name].numel() for name in plan.remainder]
            dense.extend(zip(plan.remainder, self._remainder(plan, adapter, hrt).split(sizes, dim=1)))
        if dense:
            if self.projection is not None:
                dense = [(name, self.projection.apply(name, grads)) for name, grads in dense]
            groups["dense"] = DenseGroup(torch.cat([grads for _, grads in dense], dim=1))
        return Features(groups)

    @staticmethod
    def _forward(adapter: ModelAdapter, hrt: torch.Tensor):
        """The loss's fast objective on the batch (:meth:`kgtracin.losses.base.TripleLoss.fast_objective`).

        :return: the scalar to differentiate, and per direction (delta (B, E), {table index: q (B, D)})
        """
        return adapter.fast_objective(hrt)

    @staticmethod
    def _remainder(plan: _Plan, adapter: ModelAdapter, hrt: torch.Tensor) -> torch.Tensor:
        size = sum(adapter.parameters[name].numel() for name in plan.remainder)
        if size * hrt.shape[0] > _DENSE_FALLBACK_LIMIT:
            raise KGTracinError(
                f"{type(adapter.model).__name__}: {len(plan.remainder)} parameter(s) ({size} numbers) have no closed "
                f"form here ({plan.paths[plan.remainder[0]]}); their per-triple gradients would exceed the memory "
                "bound: select fewer --parameters or use a smaller --batch-size"
            )
        return vmap_dense_grads(adapter, hrt, plan.remainder)
