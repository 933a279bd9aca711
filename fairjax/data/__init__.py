"""Interaction data: readers, splits, negatives and padded client batches.

`load(config.data)` is the one call an experiment needs:

  dataset = fairjax.data.load(config.data)
  clients = fairjax.data.client_datasets(dataset)
  candidates = fairjax.data.eval_candidates(dataset, 99, seed)
"""

import numbers

from fairjax.data.clients import client_datasets
from fairjax.data.clients import ClientData
from fairjax.data import completejourney
from fairjax.data.heavy import HEAVY
from fairjax.data.heavy import heaviest_users
from fairjax.data.heavy import heavy_split
from fairjax.data.heavy import write_adjacency
from fairjax.data.movielens import packaged_path
from fairjax.data.negatives import eval_candidates
from fairjax.data.negatives import sample_negatives
from fairjax.data.negatives import train_csr
from fairjax.data.readers import detect_format
from fairjax.data.readers import FORMATS
from fairjax.data.readers import RawInteractions
from fairjax.data.readers import read_interactions
from fairjax.data.readers import sniff_format
from fairjax.data.splits import by_popularity
from fairjax.data.splits import Dataset
from fairjax.data.splits import ITEM_ORDERS
from fairjax.data.splits import from_train_test
from fairjax.data.splits import keep_positives
from fairjax.data.splits import leave_one_out
from fairjax.data.splits import random_split
from fairjax.data.splits import reindex
from fairjax.data.splits import split_summary
from fairjax.errors import InputError

SPLITS = ("loo", "random")


def load(data_config) -> Dataset:
  """Reads and splits the dataset a config describes.

  Args:
    data_config: a `ml_collections.ConfigDict` (or dict) with `name`
      ("ml-100k", "ml-1m", "cj", a heavy-user set of `HEAVY` such as
      "ml-1m-heavy" or "cj-heavy", or "" for a file of one's own), `path`, `format`
      ("auto"), `test_path` ("": split `path` instead), `split` ("loo" or
      "random"; ignored with `test_path` and by a heavy-user set, which
      fixes its own split), `test_fraction` (0.2, for
      "random"), `min_rating` (0 keeps every interaction; otherwise those
      rated at least this are the positives) and `seed` (0). Missing fields
      take these defaults; `item_order` ("popularity": item 0 is the most
      popular in training, see `by_popularity`; "file": ids in sorted
      order of the file's ids).

  Returns:
    The re-indexed `Dataset`.

  Raises:
    InputError: the config is inconsistent or a file is bad.
  """
  order = data_config.get("item_order", "popularity")
  if order not in ITEM_ORDERS:
    raise InputError(f"data.item_order={order!r} is unknown; choose one of "
                     f"{', '.join(ITEM_ORDERS)}")
  dataset = _load(data_config)
  return by_popularity(dataset) if order == "popularity" else dataset


def _load(data_config) -> Dataset:
  """`load` before the items are put in `item_order`."""
  get = data_config.get
  name = get("name", "") or ""
  path = get("path", "") or ""
  fmt = get("format", "auto") or "auto"
  test_path = get("test_path", "") or ""
  split = get("split", "loo")
  test_fraction = get("test_fraction", 0.2)
  min_rating = get("min_rating", 0)
  seed = get("seed", 0)
  if name and path:
    raise InputError(f"data.name={name!r} and data.path={path!r} are both "
                     "set; give one")
  if not name and not path:
    raise InputError("no data: set data.name (ml-100k, ml-1m, cj, "
                     f"{', '.join(HEAVY)}) or data.path")
  if name and test_path:
    raise InputError(f"data.test_path is for data.path; data.name={name!r} "
                     "is split with data.split")
  if split not in SPLITS:
    raise InputError(f"data.split={split!r} is unknown; known splits: "
                     f"{', '.join(SPLITS)}")
  if (not isinstance(test_fraction, numbers.Real) or
      isinstance(test_fraction, bool) or not 0 < test_fraction < 1):
    raise InputError(f"data.test_fraction must be in (0, 1), got "
                     f"{test_fraction!r}")
  if (not isinstance(min_rating, numbers.Real) or
      isinstance(min_rating, bool) or min_rating < 0):
    raise InputError(f"data.min_rating must be >= 0 (0 keeps all), got "
                     f"{min_rating!r}")
  if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
    raise InputError(f"data.seed must be an integer, got {seed!r}")
  if name in HEAVY:
    spec = HEAVY[name]
    raw = _read_packaged(spec.source)
    try:
      return heavy_split(raw, spec, seed, min_rating)
    except InputError as e:
      raise InputError(f"data.name={name!r}: {e}") from None
  if name == completejourney.NAME:
    path = completejourney.transactions_path()
    raw = _positives(completejourney.read_transactions(path), min_rating, path)
  else:
    if name:
      path, fmt = packaged_path(name), "inter"
    if test_path and fmt == "auto":
      # A test.txt holding one item per user looks like a two-column table;
      # the train file shows the real format of both.
      fmt = sniff_format(path)
    raw = _positives(read_interactions(path, fmt), min_rating, path)
  if test_path:
    test = _positives(read_interactions(test_path, fmt), min_rating,
                      test_path)
    return from_train_test(raw, test)
  if split == "random":
    return random_split(raw, test_fraction, seed)
  return leave_one_out(raw, seed)


def _read_packaged(name: str) -> RawInteractions:
  """The whole packaged set `name` ("ml-100k", "ml-1m" or "cj")."""
  if name == completejourney.NAME:
    return completejourney.read_transactions(completejourney.transactions_path())
  return read_interactions(packaged_path(name), "inter")


def _positives(raw: RawInteractions, min_rating: float,
               path: str) -> RawInteractions:
  """`keep_positives` with errors that name the file."""
  try:
    kept = keep_positives(raw, min_rating)
  except InputError as e:
    raise InputError(f"{path}: {e}") from None
  if not len(kept.users):
    raise InputError(f"{path}: no interaction is rated >= min_rating="
                     f"{min_rating}")
  return kept
