"""Sparse inputs and labels in the shapes the model consumes.

Inputs are sparse feature ids per example, given as CSR `(ids, offsets)`
(optionally `(ids, offsets, values)`), a 2-D `jax.experimental.sparse.BCOO`
matrix, or a list of id lists. Labels are an int array `(n,)` or a list of
label lists (multi-label).
"""
from typing import NamedTuple, Optional

import numpy as np

from sparse.errors import InputError


class SparseInputs(NamedTuple):
  """CSR rows: example `i` has `ids[offsets[i]:offsets[i+1]]`."""
  ids: np.ndarray
  offsets: np.ndarray
  values: np.ndarray

  def __len__(self):
    return len(self.offsets) - 1

  def take(self, idx: np.ndarray) -> "SparseInputs":
    """Rows `idx`, as new CSR arrays."""
    starts, ends = self.offsets[idx], self.offsets[idx + 1]
    lens = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    flat = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1])
    return SparseInputs(self.ids[flat], offsets, self.values[flat])


def as_inputs(x, dim: Optional[int] = None) -> SparseInputs:
  """Normalises any accepted input form to `SparseInputs`."""
  if isinstance(x, SparseInputs):
    out = x
  elif hasattr(x, "indices") and hasattr(x, "data") and hasattr(x, "shape"):
    # A BCOO matrix (n, dim): indices are (nnz, 2) [row, col].
    idx = np.asarray(x.indices)
    data = np.asarray(x.data, np.float32)
    order = np.lexsort((idx[:, 1], idx[:, 0]))
    idx, data = idx[order], data[order]
    counts = np.bincount(idx[:, 0], minlength=x.shape[0])
    out = SparseInputs(idx[:, 1].astype(np.int32),
                       np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                       data)
  elif isinstance(x, tuple) and len(x) in (2, 3):
    ids = np.asarray(x[0], np.int32)
    offsets = np.asarray(x[1], np.int64)
    vals = (np.asarray(x[2], np.float32) if len(x) == 3
            else np.ones(len(ids), np.float32))
    out = SparseInputs(ids, offsets, vals)
  else:
    rows = [np.asarray(r, np.int32) for r in x]
    lens = np.array([len(r) for r in rows], np.int64)
    ids = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    out = SparseInputs(ids.astype(np.int32),
                       np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                       np.ones(len(ids), np.float32))
  if len(out.offsets) < 1 or out.offsets[-1] != len(out.ids):
    raise InputError("inputs: offsets do not match the number of ids")
  if dim is not None and len(out.ids) and (out.ids.min() < 0
                                           or out.ids.max() >= dim):
    raise InputError(f"inputs: feature ids must lie in [0, {dim})")
  return out


def as_labels(y, n_classes: Optional[int] = None) -> np.ndarray:
  """Labels as `(n, M)` int32, padded with -1, duplicates removed."""
  if isinstance(y, np.ndarray) and y.ndim == 2:
    out = y.astype(np.int32)
  elif isinstance(y, np.ndarray) or (len(y) and np.isscalar(y[0])):
    out = np.asarray(y, np.int32).reshape(-1, 1)
  else:
    m = max([len(r) for r in y] + [1])
    out = np.full((len(y), m), -1, np.int32)
    for i, r in enumerate(y):
      r = list(dict.fromkeys(int(v) for v in r))
      out[i, :len(r)] = r
  if n_classes is not None and out.size and out.max() >= n_classes:
    raise InputError(f"labels: label {out.max()} >= number of classes "
                     f"{n_classes}")
  return out


def _bucket(n: int, least: int = 8) -> int:
  """Next power of two, so that ragged shapes compile a few times only."""
  return max(least, 1 << max(int(n) - 1, 0).bit_length())


class InputBatch(NamedTuple):
  """Device-ready arrays of one batch of sparse inputs."""
  rows: np.ndarray   # (U,) distinct feature ids, padded with `dim`
  inv: np.ndarray    # (B, P) index into rows
  vals: np.ndarray   # (B, P) values, 0 for padding
  mask: np.ndarray   # (B,) 1 for real examples


def input_batch(x: SparseInputs, idx: np.ndarray, batch_size: int,
                dim: int) -> InputBatch:
  """Packs examples `idx` (at most `batch_size`) into padded arrays."""
  starts, ends = x.offsets[idx], x.offsets[idx + 1]
  lens = ends - starts
  p = _bucket(lens.max() if len(lens) else 1)
  flat = np.repeat(starts, lens) + (np.arange(lens.sum())
                                    - np.repeat(np.cumsum(lens) - lens, lens))
  ids = x.ids[flat]
  uniq, inv_flat = np.unique(ids, return_inverse=True)
  u = _bucket(len(uniq) + 1)
  rows = np.full(u, dim, np.int32)
  rows[:len(uniq)] = uniq
  inv = np.full((batch_size, p), len(uniq), np.int32)
  vals = np.zeros((batch_size, p), np.float32)
  r = np.repeat(np.arange(len(idx)), lens)
  c = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
  inv[r, c] = inv_flat
  vals[r, c] = x.values[flat]
  mask = np.zeros(batch_size, np.float32)
  mask[:len(idx)] = 1
  return InputBatch(rows, inv, vals, mask)
