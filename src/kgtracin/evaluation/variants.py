"""Explanation variants of the end-to-end protocol: TracIn options by name, and how each prediction's facts are
chosen from its proponents (``selection``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import KGTracinError

__all__ = ["SELECTIONS", "CHECKPOINTS", "Variant", "parse_variant", "variants_unsupported"]

#: ``top``: the k best proponents (TracIn's order); ``greedy``: a set built one fact at a time by the cheap check
#: (:mod:`.greedy`)
SELECTIONS = ("top", "greedy")
#: which of the run's checkpoints TracIn sums over: ``all`` (TracIn's), or only the ``first`` or the ``last``
CHECKPOINTS = ("all", "first", "last")


@dataclass(frozen=True)
class Variant:
    """An explanation variant: TracIn options by name (``TracInConfig`` fields), over what ``kgtracin explain``
    does by default (the run's TracIn loss, :data:`~kgtracin.config.EXPLAIN_CANDIDATES`), and how the k facts are
    chosen from the proponents.

    :param options: ``((name, value), ...)``; empty for kgtracin's default explanation
    :param selection: one of :data:`SELECTIONS`
    :param checkpoints: one of :data:`CHECKPOINTS`
    """

    options: tuple[tuple[str, object], ...] = ()
    selection: str = "top"
    checkpoints: str = "all"

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise KGTracinError(f"selection must be {' or '.join(SELECTIONS)}, got {self.selection!r}")
        if self.checkpoints not in CHECKPOINTS:
            raise KGTracinError(f"checkpoints must be {', '.join(CHECKPOINTS)}, got {self.checkpoints!r}")

    def pick_checkpoints(self, checkpoints: list) -> list:
        """The run's checkpoints (oldest first) that TracIn sums over."""
        return {"all": checkpoints, "first": checkpoints[:1], "last": checkpoints[-1:]}[self.checkpoints]

    @property
    def name(self) -> str:
        items = [f"{k}={'+'.join(v) if isinstance(v, tuple) else v}" for k, v in self.options]
        if self.checkpoints != "all":
            items.append(f"checkpoints={self.checkpoints}")
        if self.selection != "top":
            items.append(f"selection={self.selection}")
        return f"TracIn ({', '.join(items)})" if items else "TracIn (default)"


def parse_variant(text: str) -> Variant:
    """``default``, or comma-separated ``name=value`` items: TracIn options such as ``loss=bce``,
    ``normalize=none`` or ``parameters=entity_representations.*`` (several globs joined by ``+``), and
    ``selection=greedy`` and ``checkpoints=first`` or ``last``.

    :raises KGTracinError: for a malformed item or an unknown option (named)
    """
    from ..config import TracInConfig

    text = text.strip()
    if text == "default":
        return Variant()
    options, selection, checkpoints = {}, "top", "all"
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise KGTracinError(f"--variant {text!r}: give 'default' or name=value items, e.g. loss=bce")
        if name == "selection":
            if value not in SELECTIONS:
                raise KGTracinError(f"--variant {text!r}: selection must be {' or '.join(SELECTIONS)}")
            selection = value
        elif name == "checkpoints":
            if value not in CHECKPOINTS:
                raise KGTracinError(f"--variant {text!r}: checkpoints must be {', '.join(CHECKPOINTS)}")
            checkpoints = value
        elif name == "parameters":
            options[name] = tuple(v for v in value.split("+") if v)
        else:
            options[name] = None if value.lower() == "none" else value
    TracInConfig.with_options(**options)  # validates names and values
    return Variant(tuple(sorted(options.items())), selection, checkpoints)


def variants_unsupported(run, variants) -> str | None:
    """Why these variants cannot run on this run, or None: a greedy one where the check cannot run, or one over
    its first or last checkpoint where it has fewer than two."""
    if any(v.checkpoints != "all" for v in variants) and len(run.checkpoints) < 2:
        return (
            f"checkpoints=first or last needs a run with two checkpoints or more; this one has {len(run.checkpoints)}"
        )
    from .greedy import greedy_unsupported

    return greedy_unsupported(run.model, variants)
