"""Labelled triples: reading TSV files, and mapping labels to dataset ids and back, with clear errors."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .errors import KGTracinError

__all__ = ["Labels", "read_labeled_triples", "write_labeled_triples"]


def read_labeled_triples(path: str | os.PathLike) -> np.ndarray:
    """Read a TSV of ``head<TAB>relation<TAB>tail`` lines.

    :return: shape: (n, 3), dtype: object (str)
    :raises KGTracinError: for a missing, empty or malformed file
    """
    path = Path(path)
    if not path.is_file():
        raise KGTracinError(f"triples file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise KGTracinError(f"{path} is not a UTF-8 text file of triples") from None
    except OSError as error:
        raise KGTracinError(f"cannot read {path}: {error.strerror}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 3:
            raise KGTracinError(
                f"{path} line {number}: expected 3 tab-separated columns (head, relation, tail), got {len(parts)}"
            )
        if not all(p.strip() for p in parts):
            raise KGTracinError(f"{path} line {number}: empty head, relation or tail")
        rows.append([p.strip() for p in parts])
    if not rows:
        raise KGTracinError(f"{path} holds no triples")
    return np.asarray(rows, dtype=object)


def write_labeled_triples(path: str | os.PathLike, labeled: np.ndarray) -> None:
    """Write ``(n, 3)`` string triples as TSV."""
    pd.DataFrame(labeled).to_csv(path, sep="\t", header=False, index=False, quoting=csv.QUOTE_NONE)


@dataclass(frozen=True)
class Labels:
    """Entity and relation labels, indexed by dataset id."""

    entities: tuple[str, ...]
    relations: tuple[str, ...]

    @classmethod
    def from_maps(cls, entity_to_id: Mapping[str, int], relation_to_id: Mapping[str, int]) -> "Labels":
        entities = sorted(entity_to_id, key=entity_to_id.__getitem__)
        relations = sorted(relation_to_id, key=relation_to_id.__getitem__)
        return cls(tuple(entities), tuple(relations))

    @property
    def entity_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.entities)}

    @property
    def relation_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.relations)}

    def to_ids(self, labeled: np.ndarray | Sequence[Sequence[str]], source: str = "triples") -> torch.Tensor:
        """Map labelled triples to dataset ids.

        :param labeled: shape: (n, 3), strings
        :return: shape: (n, 3), dtype: long
        :raises KGTracinError: naming the first unknown label and where it came from
        """
        e2i, r2i = self.entity_to_id, self.relation_to_id
        ids = []
        for row, (h, r, t) in enumerate(labeled, start=1):
            for label, table, kind in ((h, e2i, "entity"), (r, r2i, "relation"), (t, e2i, "entity")):
                if label not in table:
                    raise KGTracinError(f"{source}: unknown {kind} label {label!r} (triple {row})")
            ids.append((e2i[h], r2i[r], e2i[t]))
        return torch.tensor(ids, dtype=torch.long).view(-1, 3)

    def resolve(self, triple: Sequence[str], source: str = "--triple") -> tuple[int, int, int]:
        """One triple given as labels, or as dataset ids where a value is not a label.

        :raises KGTracinError: for an unknown label or an id out of range
        """
        out = []
        for value, table, kind in zip(triple, (self.entity_to_id, self.relation_to_id, self.entity_to_id),
                                      ("entity", "relation", "entity")):
            if value in table:
                out.append(table[value])
                continue
            try:
                index = int(value)
            except ValueError:
                raise KGTracinError(f"{source}: unknown {kind} label {value!r}") from None
            if not 0 <= index < len(table):
                raise KGTracinError(f"{source}: {kind} id {index} is out of range [0, {len(table)})")
            out.append(index)
        return tuple(out)

    def to_labels(self, hrt: torch.Tensor) -> np.ndarray:
        """:param hrt: shape: (n, 3), dtype: long; :return: shape: (n, 3), strings"""
        ent = np.asarray(self.entities, dtype=object)
        rel = np.asarray(self.relations, dtype=object)
        hrt = hrt.cpu().numpy()
        return np.stack([ent[hrt[:, 0]], rel[hrt[:, 1]], ent[hrt[:, 2]]], axis=1)
