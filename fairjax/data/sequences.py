"""Next-item prediction: each user's recent items -> the next item.

Builds inputs for `sparse/` (CSR arrays of item ids) from interactions read
by `fairjax.data.readers`. For each user, interactions are ordered by time;
every position `t >= 1` gives an example whose input is the (up to)
`history` items before it and whose label is item `t`. The user's last
item is the test example (leave-one-out), the others train.
"""
import os
from typing import Tuple

import numpy as np

from fairjax.data import movielens
from fairjax.data import readers
from fairjax.errors import InputError


def _csr(hist_lists):
  lens = np.array([len(h) for h in hist_lists], np.int64)
  ids = (np.concatenate(hist_lists).astype(np.int32) if len(hist_lists)
         else np.zeros(0, np.int32))
  offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
  return ids, offsets


def next_item_task(source: str, history: int = 10) -> Tuple:
  """Builds the next-item task from a packaged name or a file path.

  Args:
    source: "ml-1m"/"ml-100k" (packaged) or a path to an interactions file.
    history: number of most recent items in the input.

  Returns:
    `(x_train, y_train, x_test, y_test, n_items, n_items)` with inputs as
    `(ids, offsets)` CSR tuples over re-indexed items.
  """
  if history < 1:
    raise InputError(f"data.history: must be >= 1, got {history}")
  path = source if os.path.exists(source) else movielens.packaged_path(source)
  raw = readers.read_interactions(path)
  items, item_idx = np.unique(raw.items, return_inverse=True)
  users, user_idx = np.unique(raw.users, return_inverse=True)
  ts = (raw.timestamps if raw.timestamps is not None
        else np.arange(len(user_idx), dtype=np.float64))
  order = np.lexsort((np.arange(len(ts)), ts, user_idx))
  u_sorted, i_sorted = user_idx[order], item_idx[order]
  starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
  ends = np.r_[starts[1:], len(u_sorted)]
  tr_h, tr_y, te_h, te_y = [], [], [], []
  for s, e in zip(starts, ends):
    seq = i_sorted[s:e]
    for t in range(1, len(seq)):
      h = seq[max(0, t - history):t]
      if t == len(seq) - 1:
        te_h.append(h)
        te_y.append(seq[t])
      else:
        tr_h.append(h)
        tr_y.append(seq[t])
  del users
  n = len(items)
  return (_csr(tr_h), np.asarray(tr_y, np.int32), _csr(te_h),
          np.asarray(te_y, np.int32), n, n)
