"""Fixed-shape LSH hash tables over neuron weights, and active-set queries.

A table set is `L x 2^range_pow buckets x reservoir` neuron ids (`-1` is an
empty slot). When more neurons hash to a bucket than it has slots, the
bucket keeps a uniform sample of them (reservoir sampling, as in BOLT).

The kernels are numba-compiled loops on the host: measured on 2 cores, a
full build of the 670k-neuron tables (L=164, 2^15 buckets, 82 slots) with
numpy sorts took 18 s and a batch query expressed in XLA (gather, scatter-add
of hit counts, top-k) was several times slower than these loops (see
BENCHMARKS.md). The functions are pure in spirit: `update` mutates the
arrays of the `Tables` it is given, which the caller owns.
"""
from typing import NamedTuple

import numba
import numpy as np


class Tables(NamedTuple):
  """Hash tables of one layer.

  Attributes:
    buckets: `(L, n_buckets, reservoir)` int32 neuron ids, -1 when empty.
    offered: `(L, n_buckets)` int64 neurons ever offered to each bucket
      (the reservoir counter).
    codes: `(N, L)` int32 bucket of each neuron in each table.
  """
  buckets: np.ndarray
  offered: np.ndarray
  codes: np.ndarray


@numba.njit(parallel=True, cache=True)
def _build(codes_t, n_buckets, reservoir, seed):
  # Counting sort per table (histogram, offsets, scatter into a CSR array
  # that fits in cache), then a sequential copy into the buckets with a
  # reservoir draw for overfull ones: 3x faster than inserting one by one.
  n_tables, n = codes_t.shape
  buckets = np.empty((n_tables, n_buckets, reservoir), np.int32)
  offered = np.zeros((n_tables, n_buckets), np.int64)
  for l in numba.prange(n_tables):
    np.random.seed(seed + l)
    counts = offered[l]
    for j in range(n):
      counts[codes_t[l, j]] += 1
    starts = np.empty(n_buckets + 1, np.int64)
    starts[0] = 0
    for c in range(n_buckets):
      starts[c + 1] = starts[c] + counts[c]
    fill = starts[:-1].copy()
    members = np.empty(n, np.int32)
    for j in range(n):
      c = codes_t[l, j]
      members[fill[c]] = j
      fill[c] += 1
    for c in range(n_buckets):
      size = counts[c]
      base = starts[c]
      for r in range(min(size, reservoir)):
        buckets[l, c, r] = members[base + r]
      for r in range(size, reservoir):
        buckets[l, c, r] = -1
      # Algorithm R over the rest of the bucket's members.
      for i in range(reservoir, size):
        r = np.random.randint(0, i + 1)
        if r < reservoir:
          buckets[l, c, r] = members[base + i]
  return buckets, offered


def build(codes: np.ndarray, n_buckets: int, reservoir: int,
          seed: int = 0) -> Tables:
  """Inserts every neuron `i` into bucket `codes[i, l]` of each table `l`.

  Args:
    codes: `(N, L)` int32 bucket ids of the neurons.
    n_buckets: buckets per table (2^range_pow).
    reservoir: slots per bucket.
    seed: seed of the reservoir draws.

  Returns:
    `Tables`.
  """
  codes = np.array(codes, np.int32, order="C")
  buckets, offered = _build(np.ascontiguousarray(codes.T), n_buckets,
                            reservoir, seed)
  return Tables(buckets, offered, codes)


@numba.njit(parallel=True, cache=True)
def _update(buckets, offered, codes, ids, new_codes, seed):
  n_tables = buckets.shape[0]
  reservoir = buckets.shape[2]
  for l in numba.prange(n_tables):
    np.random.seed(seed + l)
    for i in range(ids.shape[0]):
      j = ids[i]
      old = codes[j, l]
      new = new_codes[i, l]
      if old == new:
        continue
      for r in range(reservoir):
        if buckets[l, old, r] == j:
          buckets[l, old, r] = -1
          break
      seen = offered[l, new]
      placed = False
      for r in range(reservoir):
        if buckets[l, new, r] < 0:
          buckets[l, new, r] = j
          placed = True
          break
      if not placed:
        r = np.random.randint(0, seen + 1)
        if r < reservoir:
          buckets[l, new, r] = j
      offered[l, new] = seen + 1
      codes[j, l] = new


def update(tables: Tables, ids: np.ndarray, new_codes: np.ndarray,
           seed: int = 0) -> Tables:
  """Moves neurons `ids` to the buckets `new_codes` `(len(ids), L)`, in place.

  A rebuild after training steps only needs the rows that changed: the
  others would hash to where they already are.
  """
  ids = np.ascontiguousarray(ids, np.int64)
  new_codes = np.ascontiguousarray(new_codes, np.int32)
  _update(tables.buckets, tables.offered, tables.codes, ids, new_codes, seed)
  return tables


@numba.njit(cache=True)
def _batch_union(buckets, qcodes, labels, k, perm, start, n, random_slots):
  batch, n_tables = qcodes.shape
  reservoir = buckets.shape[2]
  counts = np.zeros(n, np.int32)
  chosen = np.zeros(n, np.bool_)
  active = np.empty(k, np.int32)
  label_pos = np.full(labels.shape, -1, np.int32)
  position = np.full(n, -1, np.int32)
  m = 0
  for b in range(batch):
    for j in range(labels.shape[1]):
      y = labels[b, j]
      if y < 0:
        continue
      if not chosen[y]:
        if m < k:
          chosen[y] = True
          position[y] = m
          active[m] = y
          m += 1
      label_pos[b, j] = position[y]
  touched = np.empty(batch * n_tables * reservoir, np.int32)
  t = 0
  max_count = 0
  for b in range(batch):
    for l in range(n_tables):
      c = qcodes[b, l]
      for r in range(reservoir):
        j = buckets[l, c, r]
        if j >= 0 and not chosen[j]:
          if counts[j] == 0:
            touched[t] = j
            t += 1
          counts[j] += 1
          if counts[j] > max_count:
            max_count = counts[j]
  # Most-hit candidates first: a counting sort by hit count.
  need = max(k - random_slots - m, 0)
  k_lsh = m + need
  hist = np.zeros(max_count + 2, np.int64)
  for i in range(t):
    hist[counts[touched[i]]] += 1
  threshold = max_count + 1
  total = 0
  while threshold > 1 and total + hist[threshold - 1] <= need:
    threshold -= 1
    total += hist[threshold]
  # Everything with count >= threshold fits; fill the rest from threshold-1.
  for i in range(t):
    j = touched[i]
    if counts[j] >= threshold and m < k_lsh:
      chosen[j] = True
      active[m] = j
      m += 1
  if threshold > 1:
    for i in range(t):
      j = touched[i]
      if m >= k_lsh:
        break
      if counts[j] == threshold - 1:
        chosen[j] = True
        active[m] = j
        m += 1
  n_fixed = m
  i = start
  while m < k:
    j = perm[i % n]
    if not chosen[j]:
      chosen[j] = True
      active[m] = j
      m += 1
    i += 1
  return active, label_pos, n_fixed


def batch_union(tables: Tables, qcodes: np.ndarray, labels: np.ndarray,
                k: int, perm: np.ndarray, rng: np.random.Generator,
                random_slots: int = 0, return_fixed: bool = False):
  """One active set of exactly `k` neurons shared by a batch.

  Labels first (deduplicated), then the neurons hit most often by the
  batch's probes (summed over examples and tables), leaving the last
  `random_slots` positions free, then a top-up from a fixed random
  permutation starting at a random offset: a sample of the neurons not
  chosen so far, each about equally likely.

  Args:
    tables: the layer's `Tables`.
    qcodes: `(B, L)` bucket ids of the queries.
    labels: `(B, M)` int32 labels, -1 for padding (M may be 0).
    k: active-set size, at most N and at least the number of labels.
    perm: `(N,)` fixed random permutation of the neurons.
    rng: numpy generator for the top-up offset.
    random_slots: positions kept for the top-up (uniform negatives) even
      when the probes hit more neurons than fit.
    return_fixed: also return `n_fixed`.

  Returns:
    `(active, label_pos)`: `(k,)` int32 neuron ids and `(B, M)` int32
    positions of each label in `active` (-1 for padding); with
    `return_fixed`, also `n_fixed`, the number of leading entries chosen
    as labels or by the probes (the rest, `active[n_fixed:]`, is the
    uniform top-up).
  """
  n = perm.shape[0]
  active, label_pos, n_fixed = _batch_union(
      tables.buckets, np.ascontiguousarray(qcodes, np.int32),
      np.ascontiguousarray(labels, np.int32), int(k), perm,
      int(rng.integers(n)), n, int(random_slots))
  if return_fixed:
    return active, label_pos, int(n_fixed)
  return active, label_pos


@numba.njit(parallel=True, cache=True)
def _per_example(buckets, qcodes, labels, k, perm, starts, n):
  batch, n_tables = qcodes.shape
  reservoir = buckets.shape[2]
  active = np.empty((batch, k), np.int32)
  n_chunks = min(batch, numba.get_num_threads())
  stamps = np.zeros((n_chunks, n), np.int32)
  per = -(-batch // n_chunks)
  for ch in numba.prange(n_chunks):
    for b in range(ch * per, min(batch, (ch + 1) * per)):
      stamp = b + 1
      m = 0
      for j in range(labels.shape[1]):
        y = labels[b, j]
        if y >= 0 and stamps[ch, y] != stamp and m < k:
          stamps[ch, y] = stamp
          active[b, m] = y
          m += 1
      for l in range(n_tables):
        if m >= k:
          break
        c = qcodes[b, l]
        for r in range(reservoir):
          j = buckets[l, c, r]
          if j >= 0 and stamps[ch, j] != stamp:
            stamps[ch, j] = stamp
            active[b, m] = j
            m += 1
            if m >= k:
              break
      i = starts[b]
      while m < k:
        j = perm[i % n]
        if stamps[ch, j] != stamp:
          stamps[ch, j] = stamp
          active[b, m] = j
          m += 1
        i += 1
  return active


def per_example(tables: Tables, qcodes: np.ndarray, labels: np.ndarray,
                k: int, perm: np.ndarray, rng: np.random.Generator
                ) -> np.ndarray:
  """BOLT's active sets: exactly `k` distinct neurons per example.

  The example's labels first (so label `j` of example `b` sits at position
  `j` when the labels are distinct), then the union of its `L` probed
  buckets in table order, truncated at `k`, then a top-up from a fixed
  random permutation.

  Returns:
    `(B, k)` int32 neuron ids.
  """
  n = perm.shape[0]
  starts = rng.integers(n, size=qcodes.shape[0])
  return _per_example(tables.buckets, np.ascontiguousarray(qcodes, np.int32),
                      np.ascontiguousarray(labels, np.int32), int(k), perm,
                      starts, n)

