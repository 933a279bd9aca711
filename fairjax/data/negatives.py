"""Negative items: training negatives, sampled-protocol candidates, masks.

A user's "seen" items are found in sorted int64 keys `user * num_items +
item` with `np.searchsorted`, so no per-user Python set is built. Negatives
are drawn by vectorised rejection sampling; the rare rows that keep being
rejected (users who have seen almost every item) are finished exactly from
their explicit list of unseen items, so sampling always terminates.
"""

from typing import Union

import numpy as np

from fairjax.data.splits import Dataset
from fairjax.errors import InputError

# Rejection rounds before the remaining rows are drawn exactly.
_MAX_REJECTION_ROUNDS = 32

# The keys of the last training set seen by `sample_negatives`: a training
# loop calls it once per minibatch with the same arrays, and rebuilding the
# keys costs more than drawing a batch. Identity (`is`) decides a hit.
_last_keys = [None, None, 0, None]  # train_users, train_items, num_items, keys


def _sorted_keys(users: np.ndarray, items: np.ndarray,
                 num_items: int) -> np.ndarray:
  """Sorted, unique int64 keys of (user, item) pairs."""
  keys = np.asarray(users, np.int64) * num_items + np.asarray(items, np.int64)
  # Dataset pairs are already sorted and unique; checking is O(E), sorting
  # is not.
  if len(keys) > 1 and not np.all(keys[1:] > keys[:-1]):
    keys = np.unique(keys)
  return keys


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """Elementwise membership of `keys` in `sorted_keys`."""
  if not len(sorted_keys):
    return np.zeros(keys.shape, dtype=bool)
  pos = np.searchsorted(sorted_keys, keys)
  return sorted_keys[np.minimum(pos, len(sorted_keys) - 1)] == keys


def _seen_counts(sorted_keys: np.ndarray, users: np.ndarray,
                 num_items: int) -> np.ndarray:
  """Number of distinct seen items of each user in `users`."""
  lo = np.searchsorted(sorted_keys, users * num_items)
  hi = np.searchsorted(sorted_keys, (users + 1) * num_items)
  return hi - lo


def _later_duplicates(rows: np.ndarray) -> np.ndarray:
  """Marks every entry that repeats an earlier entry of its row."""
  order = np.argsort(rows, axis=1, kind="stable")
  ordered = np.take_along_axis(rows, order, axis=1)
  repeat = np.zeros(rows.shape, dtype=bool)
  same = ordered[:, 1:] == ordered[:, :-1]
  r, c = np.nonzero(same)
  repeat[r, order[:, 1:][r, c]] = True
  return repeat


def _draw(rng: np.random.Generator, sorted_keys: np.ndarray, num_items: int,
          users: np.ndarray, num: int, distinct: bool) -> np.ndarray:
  """Draws `num` unseen items per user, uniformly; rows distinct if asked."""
  out = rng.integers(0, num_items, size=(len(users), num))
  bad = _contains(sorted_keys, users[:, None] * num_items + out)
  if distinct:
    bad |= _later_duplicates(out)
  for _ in range(_MAX_REJECTION_ROUNDS):
    rows, cols = np.nonzero(bad)
    if not len(rows):
      return out
    out[rows, cols] = rng.integers(0, num_items, size=len(rows))
    bad[rows, cols] = _contains(sorted_keys,
                                users[rows] * num_items + out[rows, cols])
    if distinct:
      touched = np.unique(rows)
      # A redrawn entry may repeat another entry of its row; the earliest
      # column keeps the value and the later one is drawn again.
      bad[touched] |= _later_duplicates(out[touched])
  for row in np.unique(np.nonzero(bad)[0]):
    user = users[row]
    lo, hi = np.searchsorted(sorted_keys, [user * num_items,
                                           (user + 1) * num_items])
    taken = sorted_keys[lo:hi] - user * num_items
    if distinct:
      taken = np.concatenate([taken, out[row][~bad[row]]])
    allowed = np.setdiff1d(np.arange(num_items), taken)
    out[row, bad[row]] = rng.choice(allowed, size=int(bad[row].sum()),
                                    replace=not distinct)
  return out


def sample_negatives(train_users: np.ndarray, train_items: np.ndarray,
                     num_items: int, users: np.ndarray, num: int,
                     rng: Union[np.random.Generator, int]) -> np.ndarray:
  """Samples training negatives: items a user has not interacted with.

  Each entry is uniform over the user's unseen items, independently (a row
  may repeat an item, as in the usual BPR/BCE samplers). The lookup keys of
  the last training arrays are reused when called again with the very same
  array objects, so per-minibatch calls are cheap; do not modify those
  arrays in place between calls.

  Args:
    train_users: int[E] users of the training pairs.
    train_items: int[E] items of the training pairs.
    num_items: the number of items.
    users: int[B] users to sample for (repeats allowed).
    num: negatives per user.
    rng: a numpy Generator, or a seed for one.

  Returns:
    int32[B, num] negative items.

  Raises:
    InputError: a user in `users` has interacted with every item.
  """
  rng = np.random.default_rng(rng)
  users = np.asarray(users, np.int64)
  cached_users, cached_items, cached_num_items, keys = _last_keys
  if (train_users is not cached_users or train_items is not cached_items or
      num_items != cached_num_items):
    keys = _sorted_keys(train_users, train_items, num_items)
    _last_keys[:] = [train_users, train_items, num_items, keys]
  full = _seen_counts(keys, users, num_items) >= num_items
  if full.any():
    raise InputError(f"user {users[full][0]} has interacted with all "
                     f"{num_items} items: no negative item to sample")
  return _draw(rng, keys, num_items, users, num, distinct=False).astype(
      np.int32)


def eval_candidates(dataset: Dataset, num_negatives: int = 99,
                    seed: int = 0) -> np.ndarray:
  """Candidate items for the sampled protocol, one row per test pair.

  Args:
    dataset: the dataset; its test pairs are ranked.
    num_negatives: negatives per test pair (99 in the NCF protocol).
    seed: seed of the draw.

  Returns:
    int32[T, 1 + num_negatives]: column 0 is the test item, the others are
    distinct items that the user has neither in train nor in test.

  Raises:
    InputError: some user has fewer unseen items than `num_negatives`.
  """
  if num_negatives < 0:
    raise InputError(f"num_negatives must be >= 0, got {num_negatives}")
  num_items = dataset.num_items
  keys = _sorted_keys(
      np.concatenate([dataset.train_users, dataset.test_users]),
      np.concatenate([dataset.train_items, dataset.test_items]), num_items)
  users = np.asarray(dataset.test_users, np.int64)
  unseen = num_items - _seen_counts(keys, users, num_items)
  short = unseen < num_negatives
  if short.any():
    i = int(np.flatnonzero(short)[0])
    raise InputError(
        f"sampled evaluation needs {num_negatives} unseen items per user, "
        f"but user {dataset.user_ids[users[i]]!r} has only {unseen[i]} of "
        f"{num_items} items unseen ({int(short.sum())} test pairs affected); "
        "lower the number of negatives or use the full protocol")
  negatives = _draw(np.random.default_rng(seed), keys, num_items, users,
                    num_negatives, distinct=True)
  return np.concatenate([np.asarray(dataset.test_items)[:, None], negatives],
                        axis=1).astype(np.int32)


def train_csr(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
  """Each user's training items in CSR form, for masking in full ranking.

  Args:
    dataset: the dataset.

  Returns:
    `(indptr, items)`: int64[num_users + 1] and int32[E]; user `u`'s
    training items are `items[indptr[u]:indptr[u + 1]]`, sorted.
  """
  keys = _sorted_keys(dataset.train_users, dataset.train_items,
                      dataset.num_items)
  users = keys // dataset.num_items
  indptr = np.zeros(dataset.num_users + 1, dtype=np.int64)
  np.cumsum(np.bincount(users, minlength=dataset.num_users), out=indptr[1:])
  return indptr, (keys % dataset.num_items).astype(np.int32)
