"""Per-user client data padded to one shape, so clients can be vmapped."""

from typing import NamedTuple, Optional

import numpy as np

from fairjax.data.negatives import train_csr
from fairjax.data.splits import Dataset
from fairjax.errors import InputError


class ClientData(NamedTuple):
  """Every user's training items, one row per user (the client index).

  Attributes:
    items: int32[U, L] the user's training items, sorted, padded with 0.
    mask: bool[U, L] True where `items` holds a real item.
    counts: int32[U] number of real items per row (`mask.sum(1)`), the
      client's example count for weighting.
  """
  items: np.ndarray
  mask: np.ndarray
  counts: np.ndarray


def client_datasets(dataset: Dataset, max_len: Optional[int] = None,
                    seed: int = 0) -> ClientData:
  """Pads each user's training items into a `[num_users, L]` array.

  Every user gets a row, including users without training items (all-False
  mask, count 0). Without `max_len`, `L` is the largest per-user count. With
  it, `L = max_len` (a shape fixed by the config, so compiled code is reused
  across datasets) and a user with more items keeps a seeded uniformly random
  subset of `max_len` of them; `counts` then reports the kept number.

  Args:
    dataset: the dataset.
    max_len: the row length, or None for no truncation.
    seed: seed of the subsets kept under truncation.

  Returns:
    The padded `ClientData`. `L` is at least 1, so every array has a shape
    that can be indexed even when no user has items.
  """
  if max_len is not None and max_len < 1:
    raise InputError(f"max_len must be a positive integer or None, got "
                     f"{max_len}")
  indptr, items = train_csr(dataset)
  num_users = dataset.num_users
  counts = np.diff(indptr)
  users = np.repeat(np.arange(num_users), counts)
  rank = np.arange(len(items)) - indptr[users]
  if max_len is not None:
    width = int(max_len)
    if counts.max(initial=0) > width:
      # Rank each user's items in a random order, keep the first `width`,
      # then restore item order among the kept ones.
      order = np.lexsort((np.random.default_rng(seed).random(len(items)),
                          users))
      random_rank = np.empty_like(rank)
      random_rank[order] = rank
      keep = random_rank < width
      users, items = users[keep], items[keep]
      counts = np.minimum(counts, width)
      starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
      rank = np.arange(len(items)) - starts[users]
  else:
    width = max(int(counts.max(initial=0)), 1)
  padded = np.zeros((num_users, width), dtype=np.int32)
  mask = np.zeros((num_users, width), dtype=bool)
  padded[users, rank] = items
  mask[users, rank] = True
  return ClientData(items=padded, mask=mask, counts=counts.astype(np.int32))
