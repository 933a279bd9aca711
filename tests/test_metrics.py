"""Ranking metrics: hand-computed cases, tie handling, the full protocol."""
import numpy as np
import pytest

from fairjax import metrics


def test_sampled_rank_counts_ties_against_the_model():
  scores = np.array([[1.0, 0.5, 2.0, 1.0],   # one higher, one tie -> rank 2
                     [3.0, 0.0, 1.0, 2.0],   # best -> rank 0
                     [0.0, 0.0, 0.0, 0.0]])  # constant scorer -> worst
  np.testing.assert_array_equal(np.asarray(metrics.sampled_ranks(scores)), [2, 0, 3])


def test_hit_and_ndcg_values():
  hit, ndcg = metrics.hit_and_ndcg(np.array([0, 1, 9, 10]), k=10)
  np.testing.assert_array_equal(hit, [1, 1, 1, 0])
  np.testing.assert_allclose(ndcg, [1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0])


def test_evaluate_sampled_with_perfect_and_reversed_scorers():
  rng = np.random.default_rng(0)
  users = np.arange(50)
  cands = np.stack([rng.permutation(100) for _ in users])
  target = {u: cands[u, 0] for u in users}
  perfect = lambda u, items: (np.asarray(items) == np.array([target[x] for x in u])[:, None]) * 1.0
  out = metrics.evaluate_sampled(perfect, users, cands, batch_size=16)
  assert out["hr@10"].mean() == 1.0 and out["ndcg@10"].mean() == 1.0
  worst = lambda u, items: -perfect(u, items)
  out = metrics.evaluate_sampled(worst, users, cands, batch_size=16)
  assert out["hr@10"].mean() == 0.0


def test_full_protocol_masks_training_items_and_matches_hand_values():
  num_items = 30
  # User 0 trained on items 0..4; its test items are 5 and 29.
  indptr = np.array([0, 5])
  train_items = np.arange(5)
  # The scorer likes low ids best: training items 0..4 must be skipped, so
  # the top 20 is 5..24: item 5 hits at position 0, item 29 misses.
  score = lambda u, items: -np.asarray(items, np.float32)
  users, out = metrics.evaluate_full(score, num_items, np.array([0, 0]), np.array([5, 29]),
                                     indptr, train_items, batch_size=4)
  assert list(users) == [0]
  idcg = 1 + 1 / np.log2(3)
  np.testing.assert_allclose(out["ndcg@20"], [1.0 / idcg])
  np.testing.assert_allclose(out["recall@20"], [0.5])


def test_summarise_per_level():
  per = {"hr@10": np.array([1.0, 0.0, 1.0, 1.0])}
  out = metrics.summarise(per, groups=np.array([0, 0, 1, 1]), group_names=["1x", "8x"])
  assert out["hr@10"] == 0.75
  assert out["level/1x/hr@10"] == 0.5 and out["level/8x/hr@10"] == 1.0


@pytest.mark.parametrize("c,name", [(1, "1x"), (8.0, "8x"), (2.5, "2.5x")])
def test_level_name(c, name):
  assert metrics.level_name(c) == name


def test_both_protocols_report_the_union_of_sampled_and_full(small_csv):
  from fairjax import data as data_lib  # pylint: disable=g-import-not-at-top
  from fairjax import evaluation  # pylint: disable=g-import-not-at-top
  from conftest import small_config  # pylint: disable=g-import-not-at-top
  ds = data_lib.load(small_config(small_csv).data)
  score = lambda users, items: (items * 7919 % 101).astype(np.float32)
  levels = np.arange(ds.num_users) % 2
  names = ["1x", "4x"]
  both = evaluation.Evaluator(ds, "both", 9, seed=3)(score, levels, names)
  sampled = evaluation.Evaluator(ds, "sampled", 9, seed=3)(score, levels, names)
  full = evaluation.Evaluator(ds, "full", 9, seed=3)(score, levels, names)
  assert both == {**sampled, **full}
  assert set(metrics.metric_names("both")) == set(metrics.metric_names("sampled")) | set(
      metrics.metric_names("full"))
  assert {"hr@10", "ndcg@20", "level/4x/recall@20"} <= set(both)



def _unchunked_topk(scores, users, indptr, train_items, k=metrics.FULL_K):
  """The protocol before chunking: one mask over every item, one top-k."""
  import jax  # pylint: disable=g-import-not-at-top
  mask = np.zeros(scores.shape, bool)
  for r, u in enumerate(users):
    mask[r, train_items[indptr[u]:indptr[u + 1]]] = True
  return np.asarray(jax.lax.top_k(np.where(mask, -np.inf, scores), k)[1])


@pytest.mark.parametrize("chunk", [1, 7, 20, 64, 1000])
def test_full_topk_in_chunks_is_one_topk_over_every_item(chunk):
  rng = np.random.default_rng(0)
  num_users, num_items = 9, 101
  # Few distinct values: many ties, which must go to the lower item id.
  table = rng.integers(0, 6, (num_users, num_items)).astype(np.float32)
  counts = rng.integers(0, 90, num_users)
  counts[3] = num_items - 5  # fewer than 20 unmasked items: -inf fills the tail
  train = [np.sort(rng.choice(num_items, c, replace=False)) for c in counts]
  indptr = np.concatenate([[0], np.cumsum(counts)])
  train_items = np.concatenate(train).astype(np.int32)
  users = np.array([4, 0, 3, 3, 8])
  score = lambda u, items: table[np.asarray(u)[:, None], np.asarray(items)]
  want = _unchunked_topk(table[users], users, indptr, train_items)
  got = metrics.full_topk(score, users, num_items, indptr, train_items, item_chunk=chunk)
  # A user with fewer than 20 unmasked items (user 3 has 5) gets no item
  # (-1) after them, where one top-k over all items lists masked training
  # items there (never a test item): the same metrics.
  unmasked = np.minimum(num_items - counts[users], metrics.FULL_K)
  assert unmasked.min() == 5 and unmasked.max() == metrics.FULL_K
  for r, n in enumerate(unmasked):
    np.testing.assert_array_equal(got[r, :n], want[r, :n])
    assert (got[r, n:] == -1).all()
  # The grid form (every user against the same items) gives the same.
  score.grid = lambda u, items: table[np.asarray(u)][:, np.asarray(items)]
  np.testing.assert_array_equal(
      metrics.full_topk(score, users, num_items, indptr, train_items, item_chunk=chunk), got)
  # A scorer that disagrees gives another answer: the comparison can fail.
  other = lambda u, items: -table[np.asarray(u)[:, None], np.asarray(items)]
  assert (metrics.full_topk(other, users, num_items, indptr, train_items,
                            item_chunk=chunk) != want).any()


def test_full_protocol_metrics_do_not_depend_on_the_chunks(small_csv, monkeypatch):
  from fairjax import data as data_lib  # pylint: disable=g-import-not-at-top
  from fairjax import evaluation  # pylint: disable=g-import-not-at-top
  from conftest import small_config  # pylint: disable=g-import-not-at-top
  ds = data_lib.load(small_config(small_csv).data)
  score = lambda users, items: (items * 7919 % 101 + users[:, None] % 7).astype(np.float32)
  full = evaluation.Evaluator(ds, "full", seed=3)
  whole = full(score)
  monkeypatch.setattr(metrics, "PAIRS_PER_CHUNK", 64)  # chunks of 1 or 2 items
  assert full(score) == whole
