"""Synthetic extreme classification with power-law labels and structure.

Each class owns a small random "prototype" set of feature ids; an example
of class `c` draws most of its features from `c`'s prototype and the rest
uniformly (noise). Classes follow a Zipf (power-law) distribution, so a few
are frequent and most are rare, as in real extreme-classification data.
"""
from typing import NamedTuple

import numpy as np

from sparse.data import SparseInputs


class XCData(NamedTuple):
  x_train: SparseInputs
  y_train: np.ndarray
  x_test: SparseInputs
  y_test: np.ndarray
  input_dim: int
  n_classes: int


def synthetic_xc(n_classes: int, input_dim: int = 100_000,
                 n_train: int = 50_000, n_test: int = 5_000,
                 features_per_example: int = 24, prototype_size: int = 16,
                 noise: float = 0.3, zipf: float = 1.0,
                 seed: int = 0) -> XCData:
  """Draws a train and a test set.

  Args:
    n_classes: N.
    input_dim: number of distinct feature ids.
    n_train, n_test: examples.
    features_per_example: nonzeros per example.
    prototype_size: feature ids owned by each class.
    noise: fraction of an example's features drawn uniformly.
    zipf: exponent of the class distribution p(c) ~ 1/(c+1)^zipf.
    seed: numpy seed.

  Returns:
    `XCData` (labels `(n,)` int32; inputs CSR with unit values).
  """
  rng = np.random.default_rng(seed)
  protos = rng.integers(0, input_dim, size=(n_classes, prototype_size),
                        dtype=np.int64)
  p = 1.0 / np.arange(1, n_classes + 1) ** zipf
  p /= p.sum()
  # Shuffle which class id is frequent so that ids carry no information.
  class_of_rank = rng.permutation(n_classes)

  def draw(n):
    y = class_of_rank[rng.choice(n_classes, size=n, p=p)]
    f = features_per_example
    pick = rng.integers(0, prototype_size, size=(n, f))
    ids = protos[y[:, None], pick]
    is_noise = rng.random((n, f)) < noise
    ids = np.where(is_noise, rng.integers(0, input_dim, size=(n, f)), ids)
    ids = np.sort(ids, axis=1)
    keep = np.ones_like(ids, bool)
    keep[:, 1:] = ids[:, 1:] != ids[:, :-1]
    lens = keep.sum(1)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    flat = ids[keep].astype(np.int32)
    return SparseInputs(flat, offsets, np.ones(len(flat), np.float32)), \
        y.astype(np.int32)

  x_tr, y_tr = draw(n_train)
  x_te, y_te = draw(n_test)
  return XCData(x_tr, y_tr, x_te, y_te, input_dim, n_classes)
