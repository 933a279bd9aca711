"""Tests for fairjax.data: readers, splits, negatives, client batches."""

import gzip
import importlib.util

import chex
import ml_collections
import numpy as np
import pytest

from fairjax import data
from fairjax.errors import InputError


def _write(tmp_path, name, text, newline="\n"):
  path = tmp_path / name
  path.write_bytes(text.replace("\n", newline).encode("utf-8"))
  return str(path)


def _raw(users, items, timestamps=None, ratings=None):
  """RawInteractions from lists of ids (converted to str like a reader)."""
  as_ids = lambda xs: np.array([str(x) for x in xs], dtype=object)
  return data.RawInteractions(
      as_ids(users), as_ids(items),
      None if ratings is None else np.asarray(ratings, np.float32),
      None if timestamps is None else np.asarray(timestamps, np.float64))


def _pairs(users, items):
  return set(zip(np.asarray(users).tolist(), np.asarray(items).tolist()))


def _config(**kwargs):
  config = ml_collections.ConfigDict(dict(
      name="", path="", format="auto", test_path="", split="loo",
      test_fraction=0.2, min_rating=0.0, seed=0))
  config.update(kwargs)
  return config


# Readers.


def test_movielens_format(tmp_path):
  path = _write(tmp_path, "ratings.dat", "1::1193::5::978300760\n"
                "1::661::3::978302109\n2::1193::4::978298413\n")
  raw = data.read_interactions(path)
  assert raw.users.tolist() == ["1", "1", "2"]
  assert raw.items.tolist() == ["1193", "661", "1193"]
  assert raw.ratings.dtype == np.float32
  assert raw.timestamps.dtype == np.float64
  np.testing.assert_array_equal(raw.ratings, [5, 3, 4])
  np.testing.assert_array_equal(raw.timestamps,
                                [978300760, 978302109, 978298413])


def test_inter_columns_by_name_with_titles_and_crlf(tmp_path):
  # ML-1M's RecBole file: CRLF endings, items are titles with spaces and
  # commas; here the columns are also reordered and padded with extras.
  path = _write(
      tmp_path, "x.inter",
      "item_id:token\tgenre:token_seq\ttimestamp:float\tuser_id:token\t"
      "rating:float\n"
      "Toy Story (1995)\tAnimation Comedy\t10\t1m_1\t5\n"
      "\n"
      "$1,000,000 Duck (1971)\tComedy\t20\t1m_2\t3.5\n", newline="\r\n")
  raw = data.read_interactions(path)
  assert raw.users.tolist() == ["1m_1", "1m_2"]
  assert raw.items.tolist() == ["Toy Story (1995)", "$1,000,000 Duck (1971)"]
  np.testing.assert_array_equal(raw.ratings, [5, 3.5])
  np.testing.assert_array_equal(raw.timestamps, [10, 20])


def test_inter_without_rating_or_timestamp(tmp_path):
  path = _write(tmp_path, "x.inter", "user_id:token\titem_id:token\na\tb\n")
  raw = data.read_interactions(path)
  assert raw.ratings is None and raw.timestamps is None
  assert raw.items.tolist() == ["b"]


@pytest.mark.parametrize("text", [
    "u1,i1,4,100\nu2,i2,5,200\n",
    "user,item,rating,timestamp\nu1,i1,4,100\nu2,i2,5,200\n",
    "userId,movieId,rating,timestamp\nu1,i1,4,100\nu2,i2,5,200\n",
    "timestamp,movieId,userId,rating\n100,i1,u1,4\n200,i2,u2,5\n",
    "u1, i1, 4, 100\nu2, i2, 5, 200\n",
    '"u1","i1",4,100\n"u2","i2",5,200\n',
])
def test_csv_variants(tmp_path, text):
  raw = data.read_interactions(_write(tmp_path, "r.csv", text))
  assert raw.users.tolist() == ["u1", "u2"]
  assert raw.items.tolist() == ["i1", "i2"]
  np.testing.assert_array_equal(raw.ratings, [4, 5])
  np.testing.assert_array_equal(raw.timestamps, [100, 200])


def test_csv_two_columns_and_header_detected_by_names(tmp_path):
  raw = data.read_interactions(
      _write(tmp_path, "r.csv", "user_id,item_id\n7,8\n9,10\n"))
  assert raw.users.tolist() == ["7", "9"]
  assert raw.ratings is None and raw.timestamps is None
  raw = data.read_interactions(_write(tmp_path, "s.csv", "7,8\n9,10\n"))
  assert raw.users.tolist() == ["7", "9"]


def test_tsv_and_whitespace_tables(tmp_path):
  raw = data.read_interactions(
      _write(tmp_path, "r.tsv", "a b\tx y\t3\nc\tz\t4\n"))
  assert raw.users.tolist() == ["a b", "c"]
  assert raw.items.tolist() == ["x y", "z"]
  raw = data.read_interactions(
      _write(tmp_path, "r.txt", "1 2 3.0 10\n4 5 1.0 20\n"))
  assert raw.users.tolist() == ["1", "4"]
  np.testing.assert_array_equal(raw.timestamps, [10, 20])


def test_adjacency_format(tmp_path):
  path = _write(tmp_path, "train.txt", "0 1 2 3\n1 2\n2\n3 0 4 4\n")
  raw = data.read_interactions(path)
  assert raw.users.tolist() == ["0", "0", "0", "1", "3", "3", "3"]
  assert raw.items.tolist() == ["1", "2", "3", "2", "0", "4", "4"]
  assert raw.ratings is None and raw.timestamps is None


def test_gzip(tmp_path):
  path = tmp_path / "r.csv.gz"
  with gzip.open(path, "wt") as f:
    f.write("1,2,3\n4,5,6\n")
  raw = data.read_interactions(str(path))
  assert raw.items.tolist() == ["2", "5"]


@pytest.mark.parametrize("name,text,fmt", [
    ("ratings.dat", "1::2::3::4\n", "movielens"),
    ("u.data", "1::2::3::4\n", "movielens"),
    ("x.inter", "user_id:token\titem_id:token\n1\t2\n", "inter"),
    ("noext", "user_id:token\titem_id:token\n1\t2\n", "inter"),
    ("x.csv", "1\t2\n", "csv"),
    ("x.tsv", "1,2\n", "tsv"),
    ("u.data", "196\t242\t3\t881250949\n", "tsv"),
    ("train.txt", "0 1 2\n1 3\n", "adjacency"),
    ("train.txt", "0 1\n1 3\n", "tsv"),
    ("train.txt", "0 1 2 3 4\n1 3 5 7 9\n", "adjacency"),  # every user holds 4 items
    ("u.data", "196 242 3 881250949\n186 302 3 891717742\n", "tsv"),
    ("pairs.txt", "a b\nc d e\n", "tsv"),
    ("x.data", "a,b\n", "csv"),
])
def test_detect_format(tmp_path, name, text, fmt):
  assert data.sniff_format(_write(tmp_path, name, text)) == fmt


_MALFORMED = {
    # id: (file name or None for a missing file, content, fmt, line).
    "missing_file": (None, "", "auto", None),
    "empty_file": ("r.csv", "", "auto", None),
    "blank_lines_only": ("r.csv", "\n  \n\n", "auto", None),
    "header_only": ("r.csv", "user,item,rating,timestamp\n", "auto", None),
    "inter_header_only": ("r.inter", "user_id:token\titem_id:token\n",
                          "auto", None),
    "inter_no_item_column": ("r.inter", "user_id:token\tx:float\n1\t2\n",
                             "auto", 1),
    "too_few_columns": ("r.csv", "1\n2\n", "auto", 1),
    "movielens_wrong_separator": ("ratings.dat", "1\t2\t3\t4\n",
                                  "movielens", 1),
    "non_numeric_rating": ("r.csv", "1,2,5,10\n1,3,4,11\n2,3,abc,12\n",
                           "auto", 3),
    "non_numeric_rating_first_line": ("r.csv", "1,2,abc\n1,3,4\n", "auto",
                                      1),
    "nan_rating": ("r.csv", "1,2,5\n2,3,nan\n", "auto", 2),
    "inf_rating": ("r.tsv", "1\t2\t5\n2\t3\tinf\n", "auto", 2),
    "empty_rating": ("r.csv", "1,2,5\n2,3,\n", "auto", 2),
    "non_numeric_timestamp": ("ratings.dat", "1::2::5::10\n2::3::4::x\n",
                              "auto", 2),
    "inconsistent_columns": ("r.csv", "1,2,5,10\n1,3,4\n", "auto", 2),
    "inconsistent_inter": ("r.inter", "user_id:token\titem_id:token\n"
                           "1\t2\n1\t2\t3\n", "auto", 3),
    "unclosed_quote": ("r.csv", '1,2\n1,"3\n', "auto", 2),
    "empty_id": ("r.csv", "1,2\n,3\n", "auto", 2),
    "negative_adjacency_id": ("train.txt", "0 1 2\n\n1 -3\n", "adjacency",
                              3),
    "non_integer_adjacency_id": ("train.txt", "0 1 2\n1 2.5\n", "adjacency",
                                 2),
    "word_adjacency_id": ("train.txt", "0 1 2\nx 2\n", "adjacency", 2),
    "adjacency_without_items": ("test.txt", "0\n1\n", "adjacency", None),
    "unknown_format": ("r.csv", "1,2\n", "parquet", None),
}


@pytest.mark.parametrize("case", sorted(_MALFORMED))
def test_malformed_files_raise_input_error(tmp_path, case):
  name, text, fmt, line = _MALFORMED[case]
  path = (str(tmp_path / "absent.csv") if name is None
          else _write(tmp_path, name, text))
  with pytest.raises(InputError) as info:
    data.read_interactions(path, fmt)
  message = str(info.value)
  assert (name or "absent.csv") in message
  if line is not None:
    assert f"line {line}" in message


# Splits.


def test_reindex_is_consistent_and_numeric():
  vocab, (a, b) = data.reindex(np.array(["10", "2", "2"], dtype=object),
                               np.array(["33", "10"], dtype=object))
  assert vocab.tolist() == ["2", "10", "33"]
  np.testing.assert_array_equal(a, [1, 0, 0])
  np.testing.assert_array_equal(b, [2, 1])
  chex.assert_type([a, b], np.int32)
  vocab, _ = data.reindex(np.array(["1m_10", "1m_2", "b"], dtype=object))
  assert vocab.tolist() == ["1m_2", "1m_10", "b"]


def test_leave_one_out_holds_out_latest():
  raw = _raw(users=["a", "a", "a", "b", "b", "c", "a"],
             items=["x", "y", "z", "x", "w", "y", "x"],
             timestamps=[1, 5, 3, 9, 2, 4, 0])  # ("a", "x") twice.
  ds = data.leave_one_out(raw, seed=0)
  u = {k: i for i, k in enumerate(ds.user_ids)}
  it = {k: i for i, k in enumerate(ds.item_ids)}
  assert (ds.num_users, ds.num_items) == (3, 4)
  assert _pairs(ds.test_users, ds.test_items) == {
      (u["a"], it["y"]), (u["b"], it["x"])}
  # "c" has a single interaction: it stays in train, no test item.
  assert _pairs(ds.train_users, ds.train_items) == {
      (u["a"], it["x"]), (u["a"], it["z"]), (u["b"], it["w"]),
      (u["c"], it["y"])}
  keys = ds.train_users.astype(np.int64) * ds.num_items + ds.train_items
  assert np.all(np.diff(keys) > 0)  # Sorted by user then item, unique.
  # The repeated pair keeps its latest timestamp.
  ax = np.flatnonzero((ds.train_users == u["a"]) &
                      (ds.train_items == it["x"]))
  assert ds.train_timestamps[ax].tolist() == [1.0]
  chex.assert_type([ds.train_users, ds.train_items, ds.test_users,
                    ds.test_items], np.int32)


def test_leave_one_out_without_timestamps_is_seeded():
  rng = np.random.default_rng(0)
  raw = _raw(rng.integers(0, 20, 500), rng.integers(0, 50, 500))
  first = data.leave_one_out(raw, seed=1)
  again = data.leave_one_out(raw, seed=1)
  other = data.leave_one_out(raw, seed=2)
  chex.assert_trees_all_equal(first, again)
  assert not np.array_equal(first.test_items, other.test_items)
  assert len(np.unique(first.test_users)) == len(first.test_users) == 20
  all_pairs = _pairs(first.train_users, first.train_items) | _pairs(
      first.test_users, first.test_items)
  assert not _pairs(first.train_users, first.train_items) & _pairs(
      first.test_users, first.test_items)
  assert len(all_pairs) == len(first.train_users) + len(first.test_users)


def test_random_split_fractions():
  users = np.repeat(np.arange(4), [10, 5, 2, 1])
  items = np.concatenate([np.arange(10), np.arange(5), np.arange(2), [0]])
  ds = data.random_split(_raw(users, items), test_fraction=0.2, seed=0)
  test_counts = np.bincount(ds.test_users, minlength=4)
  train_counts = np.bincount(ds.train_users, minlength=4)
  np.testing.assert_array_equal(test_counts, [2, 1, 0, 0])
  np.testing.assert_array_equal(train_counts + test_counts, [10, 5, 2, 1])
  again = data.random_split(_raw(users, items), test_fraction=0.2, seed=0)
  chex.assert_trees_all_equal(ds, again)
  with pytest.raises(InputError, match="test_fraction"):
    data.random_split(_raw(users, items), test_fraction=1.0)


def test_from_train_test_reindexes_over_both():
  train = _raw(["0", "0", "1"], ["5", "6", "5"])
  test = _raw(["1", "2", "0"], ["9", "6", "5"])  # ("0", "5") is in train.
  ds = data.from_train_test(train, test)
  assert ds.user_ids.tolist() == ["0", "1", "2"]
  assert ds.item_ids.tolist() == ["5", "6", "9"]
  assert _pairs(ds.test_users, ds.test_items) == {(1, 2), (2, 1)}
  np.testing.assert_array_equal(ds.user_ids[ds.train_users], train.users)
  np.testing.assert_array_equal(ds.item_ids[ds.train_items], train.items)


def test_keep_positives():
  raw = _raw(["a", "a", "b"], ["x", "y", "x"], ratings=[5, 2, 4])
  kept = data.keep_positives(raw, 4)
  assert _pairs(kept.users, kept.items) == {("a", "x"), ("b", "x")}
  assert data.keep_positives(raw, 0) is raw
  with pytest.raises(InputError, match="ratings"):
    data.keep_positives(_raw(["a"], ["x"]), 4)


# Negatives.


def _toy_dataset(num_users=30, num_items=40, per_user=10, seed=0):
  rng = np.random.default_rng(seed)
  users = np.repeat(np.arange(num_users), per_user)
  items = np.concatenate([rng.choice(num_items, per_user, replace=False)
                          for _ in range(num_users)])
  raw = _raw(users, items, timestamps=rng.random(len(users)))
  return data.leave_one_out(raw, seed)


def test_sample_negatives_avoid_train_items_and_are_seeded():
  ds = _toy_dataset()
  users = np.repeat(np.arange(ds.num_users), 3)
  neg = data.sample_negatives(ds.train_users, ds.train_items, ds.num_items,
                              users, 50, np.random.default_rng(0))
  chex.assert_shape(neg, (len(users), 50))
  chex.assert_type(neg, np.int32)
  train = _pairs(ds.train_users, ds.train_items)
  assert not {(u, i) for u, row in zip(users.tolist(), neg.tolist())
              for i in row} & train
  assert neg.min() >= 0 and neg.max() < ds.num_items
  again = data.sample_negatives(ds.train_users, ds.train_items, ds.num_items,
                                users, 50, np.random.default_rng(0))
  np.testing.assert_array_equal(neg, again)
  other = data.sample_negatives(ds.train_users, ds.train_items, ds.num_items,
                                users, 50, 1)
  assert not np.array_equal(neg, other)


def test_sample_negatives_when_almost_everything_is_seen():
  # User 0 has seen every item but 3: rejection sampling alone would need
  # many rounds; the exact fallback finishes the job.
  items = np.array([i for i in range(200) if i != 3])
  neg = data.sample_negatives(np.zeros(len(items), np.int32), items, 200,
                              np.zeros(5, np.int32), 20, 0)
  np.testing.assert_array_equal(neg, 3)
  with pytest.raises(InputError, match="every item|all"):
    data.sample_negatives(np.zeros(3, np.int32), np.arange(3), 3,
                          np.zeros(1, np.int32), 1, 0)


def test_eval_candidates_distinct_and_unseen():
  ds = _toy_dataset()
  cands = data.eval_candidates(ds, num_negatives=25, seed=0)
  chex.assert_shape(cands, (len(ds.test_users), 26))
  chex.assert_type(cands, np.int32)
  np.testing.assert_array_equal(cands[:, 0], ds.test_items)
  seen = _pairs(ds.train_users, ds.train_items) | _pairs(ds.test_users,
                                                         ds.test_items)
  for user, row in zip(ds.test_users.tolist(), cands.tolist()):
    assert len(set(row)) == len(row)
    assert not {(user, i) for i in row[1:]} & seen
  np.testing.assert_array_equal(
      cands, data.eval_candidates(ds, num_negatives=25, seed=0))
  # Exactly 40 - 10 = 30 unseen items per user: every one must be drawn.
  full = data.eval_candidates(ds, num_negatives=30, seed=0)
  assert all(len(set(row)) == 31 for row in full.tolist())
  with pytest.raises(InputError, match="unseen"):
    data.eval_candidates(ds, num_negatives=31)


def test_train_csr():
  ds = _toy_dataset()
  indptr, items = data.train_csr(ds)
  assert indptr[0] == 0 and indptr[-1] == len(ds.train_items)
  for u in range(ds.num_users):
    np.testing.assert_array_equal(
        items[indptr[u]:indptr[u + 1]],
        np.sort(ds.train_items[ds.train_users == u]))


# Clients.


def test_client_datasets_padding_mask_counts():
  train = _raw(["0", "0", "0", "2"], ["1", "3", "2", "1"])
  test = _raw(["1"], ["0"])  # User 1 has no training items.
  ds = data.from_train_test(train, test)
  clients = data.client_datasets(ds)
  np.testing.assert_array_equal(clients.items, [[1, 2, 3], [0, 0, 0],
                                                [1, 0, 0]])
  np.testing.assert_array_equal(clients.mask, [[1, 1, 1], [0, 0, 0],
                                               [1, 0, 0]])
  np.testing.assert_array_equal(clients.counts, [3, 0, 1])
  chex.assert_type([clients.items, clients.counts], np.int32)
  assert clients.mask.dtype == bool


def test_client_datasets_truncation_is_a_seeded_subset():
  ds = _toy_dataset(per_user=12)
  clients = data.client_datasets(ds, max_len=5, seed=3)
  chex.assert_shape([clients.items, clients.mask], (ds.num_users, 5))
  np.testing.assert_array_equal(clients.counts, 5)
  indptr, items = data.train_csr(ds)
  for u in range(ds.num_users):
    kept = clients.items[u][clients.mask[u]]
    assert set(kept.tolist()) <= set(items[indptr[u]:indptr[u + 1]].tolist())
    assert len(set(kept.tolist())) == 5
  again = data.client_datasets(ds, max_len=5, seed=3)
  chex.assert_trees_all_equal(clients, again)
  other = data.client_datasets(ds, max_len=5, seed=4)
  assert not np.array_equal(clients.items, other.items)
  wide = data.client_datasets(ds, max_len=20)
  chex.assert_shape(wide.items, (ds.num_users, 20))
  np.testing.assert_array_equal(wide.counts, 11)


# load().


def test_load_user_files(tmp_path):
  path = _write(tmp_path, "r.csv", "u,i,r,t\na,x,5,1\na,y,1,2\na,z,4,3\n"
                "b,x,4,1\nb,y,5,2\n")
  ds = data.load(_config(path=path, min_rating=4))
  assert ds.num_users == 2 and len(ds.test_users) == 2
  assert set(ds.item_ids[ds.test_items].tolist()) == {"z", "y"}
  ds = data.load(_config(path=path, split="random", test_fraction=0.5))
  assert len(ds.train_users) + len(ds.test_users) == 5
  train = _write(tmp_path, "train.txt", "0 1 2\n1 2\n")
  test = _write(tmp_path, "test.txt", "0 3\n1 1\n2 0\n")
  ds = data.load(_config(path=train, test_path=test))
  assert (ds.num_users, ds.num_items) == (3, 4)
  # Items are numbered by popularity (data.item_order): compare original ids.
  assert {(int(ds.user_ids[u]), int(ds.item_ids[i])) for u, i in
          zip(ds.test_users, ds.test_items)} == {(0, 3), (1, 1), (2, 0)}


@pytest.mark.parametrize("overrides,match", [
    (dict(name="ml-100k", path="x.csv"), "both"),
    (dict(), "data.name"),
    (dict(name="ml-10m"), "ml-100k"),
    (dict(path="x.csv", split="temporal"), "split"),
    (dict(path="x.csv", test_fraction=0.0), "test_fraction"),
    (dict(path="x.csv", test_fraction=1.5), "test_fraction"),
    (dict(path="x.csv", min_rating=-1), "min_rating"),
    (dict(name="ml-100k", test_path="t.txt"), "test_path"),
    (dict(name="ml-1m-heavy", test_path="t.txt"), "test_path"),
    (dict(name="ml-1m-heavier"), "ml-1m-heavier.*ml-1m-heavy"),
    (dict(path="x.csv", format="xml"), "xml"),
])
def test_load_rejects_bad_configs(tmp_path, overrides, match):
  if "path" in overrides:
    overrides["path"] = _write(tmp_path, "x.csv", "1,2\n1,3\n")
  with pytest.raises(InputError, match=match):
    data.load(_config(**overrides))


def test_load_min_rating_without_ratings(tmp_path):
  path = _write(tmp_path, "x.csv", "1,2\n1,3\n")
  with pytest.raises(InputError, match="x.csv.*ratings"):
    data.load(_config(path=path, min_rating=4))


def test_packaged_path_missing_package(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(InputError, match="pip install --no-deps recbole==1.2.1"):
    data.packaged_path("ml-100k")


def test_movielens_100k():
  if importlib.util.find_spec("recbole") is None:
    pytest.skip("recbole is not installed (pip install --no-deps "
                "recbole==1.2.1)")
  raw = data.read_interactions(data.packaged_path("ml-100k"))
  assert len(raw.users) == 100_000
  ds = data.load(_config(name="ml-100k"))
  assert (ds.num_users, ds.num_items) == (943, 1682)
  assert len(ds.train_users) + len(ds.test_users) == 100_000
  assert len(ds.test_users) == 943


# Heavy-user sets.


def _heavy_raw(seed=0):
  """12 users with 3..36 distinct items; u7 repeats one of its items."""
  rng = np.random.default_rng(seed)
  users, items = [], []
  for u in range(12):
    n = 3 * (u + 1) if u != 5 else 36  # u5 and u11 tie at 36
    users += [f"u{u}"] * n
    items += [f"i{i}" for i in rng.choice(60, n, replace=False)]
  items += [items[users.index("u7")]] * 2  # a repeated pair counts once
  users += ["u7"] * 2
  return _raw(users, items)


def test_heaviest_users_by_distinct_items_ties_by_id():
  raw = _heavy_raw()
  kept = data.heaviest_users(raw, 3)
  assert set(kept.users.tolist()) == {"u11", "u5", "u10"}
  # u5 and u11 tie at 36 items; the tie goes to the id that sorts first.
  assert set(data.heaviest_users(raw, 1).users.tolist()) == {"u11"}
  assert len(data.heaviest_users(raw, 100).users) == len(raw.users)
  with pytest.raises(InputError, match="num_users"):
    data.heaviest_users(raw, 0)


def test_heavy_split_is_seeded_and_per_user():
  spec = data.heavy.HeavySpec("synthetic", 4, 0.3)
  ds = data.heavy_split(_heavy_raw(), spec, seed=1)
  assert ds.num_users == 4
  train, test = np.bincount(ds.train_users), np.bincount(ds.test_users)
  np.testing.assert_array_equal(test, np.floor(0.3 * (train + test) + 0.5))
  chex.assert_trees_all_equal(ds, data.heavy_split(_heavy_raw(), spec, seed=1))
  other = data.heavy_split(_heavy_raw(), spec, seed=2)
  assert _pairs(ds.test_users, ds.test_items) != _pairs(other.test_users, other.test_items)


def test_heavy_split_min_rating_after_choosing_users():
  raw = _heavy_raw()
  ratings = np.where(np.arange(len(raw.users)) % 2, 5.0, 1.0).astype(np.float32)
  rated = raw._replace(ratings=ratings)
  spec = data.heavy.HeavySpec("synthetic", 3, 0.3)
  ds = data.heavy_split(rated, spec, seed=0, min_rating=4)
  # The same three users as without a threshold, holding only their 5s.
  assert set(ds.user_ids.tolist()) == {"u11", "u5", "u10"}
  kept = data.heaviest_users(rated, 3)
  assert len(ds.train_users) + len(ds.test_users) == len(
      _pairs(kept.users[kept.ratings >= 4], kept.items[kept.ratings >= 4]))


def test_write_adjacency_reads_back_as_the_same_dataset(tmp_path):
  ds = data.heavy_split(_heavy_raw(), data.heavy.HeavySpec("synthetic", 5, 0.3), seed=0)
  train, test = data.write_adjacency(ds, str(tmp_path / "adj"))
  first = open(train).readline().split()
  assert first[0] == "0" and len(first) == 1 + (ds.train_users == 0).sum()
  back = data.load(_config(path=train, test_path=test, item_order="file"))
  for field in ("num_users", "num_items", "train_users", "train_items", "test_users",
                "test_items"):
    chex.assert_trees_all_equal(getattr(back, field), getattr(ds, field))
