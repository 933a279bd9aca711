"""Re-indexing and train/test splits of implicit-feedback interactions.

Every kept interaction is a positive (implicit feedback); `keep_positives`
turns explicit ratings into that by a threshold. A user/item pair that occurs
several times counts once (the latest timestamp is kept), so a split can
never put the same pair in train and test.
"""

import itertools
import re
from typing import NamedTuple, Optional

from absl import logging
import numpy as np

from fairjax.data.readers import RawInteractions
from fairjax.errors import InputError

_DIGITS = re.compile(r"(\d+)")


class Dataset(NamedTuple):
  """Re-indexed train and test interactions.

  Attributes:
    num_users: users are 0..num_users-1 (train ∪ test).
    num_items: items are 0..num_items-1 (train ∪ test).
    train_users: int32[E] user of each training pair.
    train_items: int32[E] item of each training pair; pairs are unique and
      sorted by user, then item.
    test_users: int32[T] user of each test pair, sorted by user then item.
    test_items: int32[T] item of each test pair; no test pair is a train
      pair.
    user_ids: object[num_users], index -> original user id.
    item_ids: object[num_items], index -> original item id.
    train_timestamps: float64[E] aligned with the train pairs, or None.
  """
  num_users: int
  num_items: int
  train_users: np.ndarray
  train_items: np.ndarray
  test_users: np.ndarray
  test_items: np.ndarray
  user_ids: np.ndarray
  item_ids: np.ndarray
  train_timestamps: Optional[np.ndarray] = None


def reindex(*ids: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
  """Maps original ids to 0..n-1, consistently across several arrays.

  Ids are numbered in sorted order: numerically when every id is a decimal
  integer (so "2" < "10", and 0-based integer ids usually keep their
  values), otherwise in natural order (digit runs compare as numbers, so
  "1m_2" < "1m_10").

  Args:
    *ids: arrays of original ids (e.g. train users and test users).

  Returns:
    `(vocab, codes)`: `vocab` is an object array with `vocab[k]` the original
    id of index `k`; `codes` holds one int32 array per input, aligned with it.
  """
  lists = [np.asarray(a, dtype=object).tolist() for a in ids]
  # A dict is the fastest exact set of str here: np.unique would sort all E
  # ids as Python objects, this only sorts the few distinct ones.
  distinct = list(dict.fromkeys(itertools.chain.from_iterable(lists)))
  if all(isinstance(k, str) and k.isascii() and k.isdigit() for k in distinct):
    distinct.sort(key=int)
  else:
    distinct.sort(key=_natural_key)
  index = {k: i for i, k in enumerate(distinct)}
  codes = tuple(np.fromiter(map(index.__getitem__, a), np.int32, len(a))
                for a in lists)
  vocab = np.empty(len(distinct), dtype=object)
  vocab[:] = distinct
  return vocab, codes


def _natural_key(token) -> tuple:
  # re.split with a group alternates text and digit runs, starting with text,
  # so equal positions always hold comparable types.
  parts = _DIGITS.split(str(token))
  return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def keep_positives(raw: RawInteractions,
                   min_rating: float) -> RawInteractions:
  """Keeps the interactions rated at least `min_rating`.

  Args:
    raw: interactions with ratings.
    min_rating: threshold; 0 keeps everything.

  Returns:
    The kept interactions, in their original order.

  Raises:
    InputError: `min_rating` is negative, or positive for a file without
      ratings.
  """
  if min_rating < 0:
    raise InputError(f"min_rating must be >= 0 (0 keeps all), got "
                     f"{min_rating}")
  if min_rating == 0:
    return raw
  if raw.ratings is None:
    raise InputError(f"min_rating={min_rating} needs ratings, but the "
                     "interaction file has none")
  keep = raw.ratings >= min_rating
  return RawInteractions(
      raw.users[keep], raw.items[keep], raw.ratings[keep],
      None if raw.timestamps is None else raw.timestamps[keep])


def _check_nonempty(raw: RawInteractions, what: str = "") -> None:
  if not len(raw.users):
    raise InputError(f"no {what}interactions to split")


def _unique_pairs(users: np.ndarray, items: np.ndarray, num_items: int,
                  timestamps: Optional[np.ndarray] = None):
  """Drops repeated (user, item) pairs, keeping the latest timestamp.

  Returns:
    `(users, items, timestamps)` sorted by user then item (timestamps None
    when given None).
  """
  keys = users.astype(np.int64) * num_items + items
  if timestamps is None:
    order = np.argsort(keys, kind="stable")
  else:
    order = np.lexsort((timestamps, keys))
  sorted_keys = keys[order]
  last = np.append(sorted_keys[1:] != sorted_keys[:-1], True)
  keep = order[last]
  if len(keep) < len(keys):
    logging.info("Dropped %d repeated user/item pairs.", len(keys) - len(keep))
  return (users[keep], items[keep],
          None if timestamps is None else timestamps[keep])


def _dataset(user_ids, item_ids, train, test_mask=None, test=None) -> Dataset:
  """Assembles a `Dataset` from sorted unique pairs and a test selection."""
  users, items, timestamps = train
  if test_mask is not None:
    test = (users[test_mask], items[test_mask])
    keep = ~test_mask
    users, items = users[keep], items[keep]
    timestamps = None if timestamps is None else timestamps[keep]
  return Dataset(
      num_users=len(user_ids), num_items=len(item_ids),
      train_users=users.astype(np.int32), train_items=items.astype(np.int32),
      test_users=test[0].astype(np.int32), test_items=test[1].astype(np.int32),
      user_ids=user_ids, item_ids=item_ids, train_timestamps=timestamps)


def _group_starts(sorted_users: np.ndarray) -> np.ndarray:
  """For users sorted ascending: the position where each one's run starts."""
  new = np.append(True, sorted_users[1:] != sorted_users[:-1])
  run = np.cumsum(new) - 1
  return np.flatnonzero(new)[run]


def leave_one_out(raw: RawInteractions, seed: int = 0) -> Dataset:
  """Holds out each user's latest interaction as the test item.

  The NCF protocol. Ties at the latest timestamp, and files without
  timestamps, pick the held-out interaction at random (seeded). A user with a
  single interaction keeps it in train and has no test item: holding it out
  would leave the user nothing to learn from, and such users still count as
  clients.

  Args:
    raw: interactions (after `keep_positives`).
    seed: seed for tie-breaking.

  Returns:
    A `Dataset` with at most one test item per user.
  """
  _check_nonempty(raw)
  user_ids, (users,) = reindex(raw.users)
  item_ids, (items,) = reindex(raw.items)
  users, items, timestamps = _unique_pairs(users, items, len(item_ids),
                                           raw.timestamps)
  tie = np.random.default_rng(seed).random(len(users))
  time = timestamps if timestamps is not None else np.zeros(len(users))
  order = np.lexsort((tie, time, users))
  ordered_users = users[order]
  is_last = np.append(ordered_users[1:] != ordered_users[:-1], True)
  counts = np.bincount(users, minlength=len(user_ids))
  held_out = order[is_last & (counts[ordered_users] >= 2)]
  test_mask = np.zeros(len(users), dtype=bool)
  test_mask[held_out] = True
  return _dataset(user_ids, item_ids, (users, items, timestamps), test_mask)


def random_split(raw: RawInteractions, test_fraction: float,
                 seed: int = 0) -> Dataset:
  """Moves a random fraction of each user's interactions to test.

  A user with `n` distinct items gets `round(test_fraction * n)` of them in
  test (halves round up), but always keeps at least one in train; so a user
  with one interaction has no test items.

  Args:
    raw: interactions (after `keep_positives`).
    test_fraction: in (0, 1).
    seed: seed of the per-user draw.

  Returns:
    A `Dataset`.
  """
  if not 0 < test_fraction < 1:
    raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
  _check_nonempty(raw)
  user_ids, (users,) = reindex(raw.users)
  item_ids, (items,) = reindex(raw.items)
  users, items, timestamps = _unique_pairs(users, items, len(item_ids),
                                           raw.timestamps)
  counts = np.bincount(users, minlength=len(user_ids))
  num_test = np.minimum(np.floor(test_fraction * counts + 0.5), counts - 1)
  order = np.lexsort((np.random.default_rng(seed).random(len(users)), users))
  ordered_users = users[order]
  rank = np.arange(len(order)) - _group_starts(ordered_users)
  test_mask = np.zeros(len(users), dtype=bool)
  test_mask[order[rank < num_test[ordered_users]]] = True
  return _dataset(user_ids, item_ids, (users, items, timestamps), test_mask)


def from_train_test(train_raw: RawInteractions,
                    test_raw: RawInteractions) -> Dataset:
  """Builds a `Dataset` from separate train and test files.

  Ids are numbered over train ∪ test, so a test item (or user) that never
  occurs in train is still a valid index. Test pairs that are also train
  pairs are dropped from test (logged): ranking an item the model was
  trained on as a held-out positive would inflate every metric.

  Args:
    train_raw: training interactions.
    test_raw: test interactions.

  Returns:
    A `Dataset`.
  """
  _check_nonempty(train_raw, "training ")
  user_ids, (train_users, test_users) = reindex(train_raw.users,
                                                test_raw.users)
  item_ids, (train_items, test_items) = reindex(train_raw.items,
                                                test_raw.items)
  num_items = len(item_ids)
  train = _unique_pairs(train_users, train_items, num_items,
                        train_raw.timestamps)
  test_users, test_items, _ = _unique_pairs(test_users, test_items, num_items)
  train_keys = train[0].astype(np.int64) * num_items + train[1]
  test_keys = test_users.astype(np.int64) * num_items + test_items
  in_train = np.isin(test_keys, train_keys, assume_unique=True)
  if in_train.any():
    logging.warning("Dropped %d test pairs that are also train pairs.",
                    int(in_train.sum()))
  fresh = ~in_train
  return _dataset(user_ids, item_ids, train,
                  test=(test_users[fresh], test_items[fresh]))


def split_summary(dataset: Dataset) -> str:
  """One line describing a dataset's sizes, for logs."""
  return (f"{dataset.num_users} users, {dataset.num_items} items, "
          f"{len(dataset.train_users)} train and {len(dataset.test_users)} "
          "test interactions")


ITEM_ORDERS = ("popularity", "file")


def by_popularity(dataset: Dataset) -> Dataset:
  """The same interactions with items numbered by training popularity.

  Item 0 is the item with the most training interactions; ties keep the
  previous order (stable sort), items seen only in tests come last. A
  catalogue numbered this way lets a device know an item's popularity rank
  from its id alone, which is what `fairjax.models`' popularity prior reads
  (docs/design.md, "A popularity prior").

  Args:
    dataset: a `Dataset`.

  Returns:
    A `Dataset` whose `item_ids[k]` is the original id of the item of rank k;
    train pairs stay sorted by user, then item.
  """
  counts = np.bincount(dataset.train_items, minlength=dataset.num_items)
  order = np.argsort(-counts, kind="stable")  # new id -> old id
  new_of = np.empty_like(order)
  new_of[order] = np.arange(len(order))
  tr_u, tr_i = dataset.train_users, new_of[dataset.train_items].astype(np.int32)
  sort = np.lexsort((tr_i, tr_u))
  ts = dataset.train_timestamps
  te_u, te_i = dataset.test_users, new_of[dataset.test_items].astype(np.int32)
  te_sort = np.lexsort((te_i, te_u))
  return dataset._replace(
      train_users=tr_u[sort], train_items=tr_i[sort],
      test_users=te_u[te_sort], test_items=te_i[te_sort],
      item_ids=dataset.item_ids[order],
      train_timestamps=None if ts is None else ts[sort])
