"""Datasets and batching (the ``pivad.data.datasets`` interface), gathered from small modules.

- :class:`TrainSet`, :class:`TestSet`, :class:`TestVideo`: in-memory feature sets (:mod:`.feature_sets`).
- :class:`BalancedLoader`, :class:`Batch`: balanced, resumable training batches (:mod:`.loader`).
- :func:`split_train_val`, :func:`build_datasets`, :class:`DataBundle`: a run's data from its config
  (:mod:`.bundle`).
"""

from pivad.data.bundle import DataBundle, build_datasets, split_train_val
from pivad.data.feature_sets import TestSet, TestVideo, TrainSet
from pivad.data.lists import class_names
from pivad.data.loader import BalancedLoader, Batch

__all__ = [
    "BalancedLoader",
    "Batch",
    "DataBundle",
    "TestSet",
    "TestVideo",
    "TrainSet",
    "build_datasets",
    "class_names",
    "split_train_val",
]
