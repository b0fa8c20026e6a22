"""PyKEEN datasets by name: any name ``dataset_resolver`` knows, loaded once, with one clear line when it fails.

Nations, Kinships and UMLS ship inside PyKEEN. Every other dataset (``wn18rr``, ``fb15k237``, ``codexsmall``,
``hetionet``, ...) is downloaded by PyKEEN on first use into its cache folder; offline, that fails, and the error
names the folder where the files can be put by hand.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .errors import KGTracinError

__all__ = ["SHIPPED", "dataset_names", "load_dataset", "labelled_splits", "dataset_cache_folder"]

#: The datasets shipped inside PyKEEN's package (no download).
SHIPPED = ("nations", "kinships", "umls")


def dataset_names() -> list[str]:
    """Every dataset name PyKEEN's ``dataset_resolver`` knows, sorted."""
    from pykeen.datasets import dataset_resolver

    return sorted(dataset_resolver.options)


def dataset_cache_folder(name: str) -> Path:
    """PyKEEN's cache folder for a dataset (under ``PYSTOW_HOME``, by default ``~/.data``)."""
    from pykeen.constants import PYKEEN_DATASETS

    return Path(PYKEEN_DATASETS) / name.lower()


@functools.lru_cache(maxsize=4)
def load_dataset(name: str):
    """The PyKEEN dataset called ``name`` (case-insensitive), built once per process.

    :raises KGTracinError: for a name PyKEEN does not know, or a dataset that cannot be downloaded or read
    """
    from pykeen.datasets import dataset_resolver

    try:
        cls = dataset_resolver.lookup(name)
    except (KeyError, ValueError):
        names = dataset_names()
        raise KGTracinError(f"unknown dataset {name!r}; PyKEEN knows {', '.join(names)}") from None
    import contextlib
    import io
    import logging

    logging.getLogger(__name__).info("loading dataset %s (PyKEEN downloads it on first use)", name)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # a failed download's progress bar is not the error
            dataset = cls()
            for split in ("training", "validation", "testing"):  # PyKEEN downloads and reads lazily
                getattr(dataset, split)
        return dataset
    except Exception as error:
        reason = " ".join(str(error).split())[:160]
        raise KGTracinError(
            f"cannot load dataset {name!r}: PyKEEN could not download or read it ({type(error).__name__}: "
            f"{reason}); without a network, put its files in PyKEEN's cache folder {dataset_cache_folder(name)} "
            "(set PYSTOW_HOME to move it), or give --training/--validation/--testing TSV files"
        ) from None


def labelled_splits(name: str) -> dict[str, np.ndarray]:
    """The labelled ``training``, ``validation`` and ``testing`` triples of a dataset. :return: (n, 3) strings"""
    ds = load_dataset(name.lower())
    return {
        split: ds.training.label_triples(getattr(ds, split).mapped_triples)
        for split in ("training", "validation", "testing")
    }
