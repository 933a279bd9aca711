"""Hash tables and active sets."""
import numpy as np

from sparse import autotune
from sparse import tables


def _tables(n=500, n_tables=4, n_buckets=16, reservoir=8, seed=0):
  rng = np.random.default_rng(seed)
  codes = rng.integers(0, n_buckets, (n, n_tables)).astype(np.int32)
  return tables.build(codes, n_buckets, reservoir, seed), codes


def _query(seed, batch, labels_per, n=500, n_buckets=16, n_tables=4):
  """A seeded rng, a neuron permutation, bucket queries and labels for one batch."""
  rng = np.random.default_rng(seed)
  perm = rng.permutation(n).astype(np.int32)
  q = rng.integers(0, n_buckets, (batch, n_tables)).astype(np.int32)
  labels = rng.integers(0, n, (batch, labels_per)).astype(np.int32)
  return rng, perm, q, labels


def test_build_places_each_neuron_in_its_bucket_and_samples_when_full():
  t, codes = _tables()
  for l in range(4):
    for c in range(16):
      members = t.buckets[l, c][t.buckets[l, c] >= 0]
      assert len(set(members)) == len(members)
      assert (codes[members, l] == c).all()
      want = min(8, int((codes[:, l] == c).sum()))
      assert len(members) == want


def test_update_moves_neurons():
  t, codes = _tables()
  ids = np.array([1, 2, 3])
  new = (codes[ids] + 1) % 16
  tables.update(t, ids, new)
  for l in range(4):
    for i, j in enumerate(ids):
      assert j not in t.buckets[l, codes[j, l]]
  np.testing.assert_array_equal(t.codes[ids], new)


def test_batch_union_has_exactly_k_and_every_label():
  t, _ = _tables()
  rng = np.random.default_rng(0)
  perm = rng.permutation(500).astype(np.int32)
  for k in (64, 100, 500):
    q = rng.integers(0, 16, (32, 4)).astype(np.int32)
    labels = rng.integers(0, 500, (32, 2)).astype(np.int32)
    labels[::3, 1] = -1
    active, pos = tables.batch_union(t, q, labels, k, perm, rng)
    assert active.shape == (k,) and len(set(active.tolist())) == k
    valid = labels >= 0
    np.testing.assert_array_equal(active[pos[valid]], labels[valid])
    assert (pos[~valid] == -1).all()


def test_per_example_has_exactly_k_labels_first():
  t, _ = _tables()
  rng, perm, q, labels = _query(1, 16, 3)
  for k in (3, 20, 200):
    active = tables.per_example(t, q, labels, k, perm, rng)
    assert active.shape == (16, k)
    for b in range(16):
      assert len(set(active[b].tolist())) == k
      np.testing.assert_array_equal(active[b, :3], labels[b])


def test_autotune_follows_bolt():
  t = autotune.tune_layer(670_091)
  assert (t.sparsity, t.range_pow, t.hashes_per_table, t.num_tables) == (
      0.005, 15, 5, 164)
  assert t.active_size == 3350
  assert autotune.tune_layer(300).sparsity == 1.0
  assert autotune.tune_layer(3706).sparsity == 0.05
  assert autotune.tune_layer(1000, num_tables=7).num_tables == 7
  s = autotune.schedule(200_000, 256)
  assert s == autotune.Schedule(7, 195)
  assert autotune.schedule(10_000, 256, rebuild_every=3).rebuild_every == 3


def test_batch_union_keeps_random_slots_for_the_top_up():
  t, _ = _tables()
  rng, perm, q, labels = _query(2, 32, 1)
  n_labels = len(np.unique(labels))
  seen = np.zeros(500, bool)
  for k, slots in ((100, 30), (100, 0), (64, 64), (500, 10)):
    active, pos, n_fixed = tables.batch_union(
        t, q, labels, k, perm, rng, random_slots=slots, return_fixed=True)
    assert active.shape == (k,) and len(set(active.tolist())) == k
    np.testing.assert_array_equal(active[pos[:, 0]], labels[:, 0])
    assert (pos < n_fixed).all()
    # Labels always stay; the probes fill up to k - slots at most.
    assert n_labels <= n_fixed <= max(k - slots, n_labels)
    if slots:
      assert n_fixed == max(k - slots, n_labels) or k == 500
    seen[active[n_fixed:]] = True
  # Over many batches the top-up reaches neurons the probes never return.
  for _ in range(50):
    active, _, n_fixed = tables.batch_union(
        t, q, labels, 100, perm, rng, random_slots=50, return_fixed=True)
    seen[active[n_fixed:]] = True
  assert seen.mean() > 0.9
