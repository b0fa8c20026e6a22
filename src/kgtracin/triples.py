"""Labelled triples: reading TSV files, and mapping labels to dataset ids and back, with clear errors."""

from __future__ import annotations

import csv
import difflib
import os
import stat
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .errors import KGTracinError

__all__ = [
    "Labels",
    "read_labeled_triples",
    "read_triple_ids",
    "iter_triples",
    "write_labeled_triples",
    "unknown_label",
]


def _check_readable(path: Path) -> None:
    """Refuse what is not a readable regular file, saying what it is."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KGTracinError(f"triples file {path} does not exist") from None
    except OSError as error:
        raise KGTracinError(f"cannot read triples file {path}: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise KGTracinError(f"triples file {path} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise KGTracinError(f"triples file {path} is not a regular file (a FIFO, socket or device)")


def iter_triples(path: str | os.PathLike) -> Iterator[tuple[int, list[str]]]:
    """The triples of a TSV file, line by line: ``(line number, [head, relation, tail])``.

    A UTF-8 byte-order mark is skipped, blank lines are ignored, and each field is stripped.

    :raises KGTracinError: for a missing, unreadable or malformed file
    """
    path = Path(path)
    _check_readable(path)
    number = 0
    try:
        with open(path, encoding="utf-8-sig", newline=None) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\r\n").split("\t")
                if len(parts) != 3:
                    raise KGTracinError(
                        f"{path} line {number}: expected 3 tab-separated columns (head, relation, "
                        f"tail), got {len(parts)}"
                    )
                parts = [p.strip() for p in parts]
                if not all(parts):
                    raise KGTracinError(f"{path} line {number}: empty head, relation or tail")
                yield number, parts
    except UnicodeDecodeError:
        raise KGTracinError(f"{path} is not a UTF-8 text file of triples (line {number + 1})") from None
    except OSError as error:
        raise KGTracinError(f"cannot read triples file {path}: {error.strerror}") from None


def read_labeled_triples(path: str | os.PathLike) -> np.ndarray:
    """Read a TSV of ``head<TAB>relation<TAB>tail`` lines.

    :return: shape: (n, 3), dtype: object (str)
    :raises KGTracinError: for a missing, empty or malformed file
    """
    rows = [parts for _, parts in iter_triples(path)]
    if not rows:
        raise KGTracinError(f"{path} holds no triples")
    return np.asarray(rows, dtype=object).reshape(-1, 3)


def read_triple_ids(path: str | os.PathLike, labels: Labels) -> torch.Tensor:
    """Read a TSV of labelled triples straight into dataset ids, line by line (memory: 24 bytes a triple).

    :return: shape: (n, 3), dtype: long
    :raises KGTracinError: for a malformed file, an unknown label (with the closest known ones), a header line
    """
    e2i, r2i = labels.entity_to_id, labels.relation_to_id
    ids = array("q")
    try:
        for number, (h, r, t) in iter_triples(path):
            if not ids and h not in e2i and r not in r2i and t not in e2i:
                raise KGTracinError(
                    f"{path} line {number} looks like a header line ({h!r}, {r!r}, {t!r} are all "
                    "unknown labels); the file should hold triples only"
                )
            for label, table, kind in ((h, e2i, "entity"), (r, r2i, "relation"), (t, e2i, "entity")):
                if label not in table:
                    raise KGTracinError(f"{path} line {number}: {unknown_label(label, table, kind)}")
            ids.extend((e2i[h], r2i[r], e2i[t]))
    except MemoryError:
        raise KGTracinError(f"{path} is too large to hold in memory ({len(ids) // 3} triples read)") from None
    if not ids:
        raise KGTracinError(f"{path} holds no triples")
    return torch.frombuffer(bytearray(ids.tobytes()), dtype=torch.int64).view(-1, 3).clone()


def unknown_label(label: str, table: Mapping[str, int], kind: str) -> str:
    """``unknown entity label 'Brazil' (did you mean 'brazil'?)``: the message for a label not in ``table``."""
    message = f"unknown {kind} label {label!r}"
    folded = [known for known in table if known.casefold() == label.casefold()]
    close = folded or (difflib.get_close_matches(label, list(table), n=3, cutoff=0.75) if len(table) <= 200_000 else [])
    if close:
        message += f" (did you mean {', '.join(repr(c) for c in close[:3])}?)"
    return message


def write_labeled_triples(path: str | os.PathLike, labeled: np.ndarray) -> None:
    """Write ``(n, 3)`` string triples as TSV."""
    pd.DataFrame(labeled).to_csv(path, sep="\t", header=False, index=False, quoting=csv.QUOTE_NONE)


@dataclass(frozen=True)
class Labels:
    """Entity and relation labels, indexed by dataset id."""

    entities: tuple[str, ...]
    relations: tuple[str, ...]

    @classmethod
    def from_maps(cls, entity_to_id: Mapping[str, int], relation_to_id: Mapping[str, int]) -> Labels:
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
                    raise KGTracinError(f"{source}: {unknown_label(label, table, kind)} (triple {row})")
            ids.append((e2i[h], r2i[r], e2i[t]))
        return torch.tensor(ids, dtype=torch.long).view(-1, 3)

    def resolve(self, triple: Sequence[str], source: str = "--triple") -> tuple[int, int, int]:
        """One triple given as labels, or as dataset ids where a value is not a label.

        :raises KGTracinError: for an unknown label or an id out of range
        """
        out = []
        for value, table, kind in zip(
            triple, (self.entity_to_id, self.relation_to_id, self.entity_to_id), ("entity", "relation", "entity")
        ):
            if value in table:
                out.append(table[value])
                continue
            try:
                index = int(value)
            except ValueError:
                raise KGTracinError(f"{source}: {unknown_label(value, table, kind)}") from None
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
