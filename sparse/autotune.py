"""BOLT's autotuning rules for a sampled layer, every value overridable.

BOLT (ThirdAI) picks the sparsity from the layer size and derives the LSH
parameters from the sparsity, so that the expected number of neurons in the
probed buckets, `L * N / 2^range_pow`, is about the active-set size `s * N`.
"""
import math
from typing import List, NamedTuple, Optional


class LayerTuning(NamedTuple):
  """Everything a sampled layer needs to know about its LSH setup."""
  sparsity: float
  active_size: int        # k = floor(s * N), at least 1
  hashes_per_table: int   # K
  num_tables: int         # L
  range_pow: int          # log2 of the number of buckets per table
  reservoir: int          # slots per bucket


class Schedule(NamedTuple):
  """When to rebuild the tables and when to draw new hash functions."""
  rebuild_every: int   # batches between table rebuilds (re-insert neurons)
  rehash_every: int    # batches between new hash functions (full rehash)


def sparsity_for(n: int) -> float:
  """BOLT's default sparsity for an output layer of `n` neurons."""
  for limit, s in ((450, 1.0), (900, 0.2), (1800, 0.1), (4000, 0.05),
                   (10_000, 0.02), (20_000, 0.01)):
    if n < limit:
      return s
  return 0.005


def tune_layer(n: int, sparsity: Optional[float] = None,
               hashes_per_table: Optional[int] = None,
               num_tables: Optional[int] = None,
               range_pow: Optional[int] = None,
               reservoir: Optional[int] = None) -> LayerTuning:
  """BOLT's rules for a layer of `n` neurons; any argument given overrides.

  Args:
    n: number of neurons.
    sparsity: fraction of neurons active per example (default: by size).
    hashes_per_table: K, hashes concatenated into one bucket id.
    num_tables: L, number of hash tables.
    range_pow: log2 of buckets per table.
    reservoir: slots per bucket.

  Returns:
    A `LayerTuning`.
  """
  s = sparsity_for(n) if sparsity is None else float(sparsity)
  if not 0.0 < s <= 1.0:
    raise ValueError(f"sparsity must be in (0, 1], got {s}")
  if range_pow is None:
    range_pow = 3 * min(max(round(math.log2(128 / s) / 3), 2), 8)
  if hashes_per_table is None:
    hashes_per_table = max(range_pow // 3, 1)
  if num_tables is None:
    num_tables = max(round(s * 2**range_pow), 1)
  if reservoir is None:
    reservoir = int(4 * max(n / 2**range_pow, 1))
  return LayerTuning(sparsity=s, active_size=max(int(math.floor(s * n)), 1),
                     hashes_per_table=int(hashes_per_table),
                     num_tables=int(num_tables), range_pow=int(range_pow),
                     reservoir=int(reservoir))


def schedule(num_examples: int, batch_size: int,
             rebuild_every: Optional[int] = None,
             rehash_every: Optional[int] = None) -> Schedule:
  """BOLT's rebuild schedule, in batches; arguments given override.

  Tables are rebuilt every max(1, batches/100) batches for data sets of at
  least 100k examples (batches/20 below), and hash functions are redrawn
  every max(1, batches/4) batches, where `batches` is per epoch.
  """
  batches = max(num_examples // max(batch_size, 1), 1)
  factor = 100 if num_examples >= 100_000 else 20
  if rebuild_every is None:
    rebuild_every = max(batches // factor, 1)
  if rehash_every is None:
    rehash_every = max(batches // 4, 1)
  return Schedule(int(rebuild_every), int(rehash_every))


def tune_index(n: int, occupancy: int = 16, num_tables: int = 200
               ) -> LayerTuning:
  """LSH setup of the inference index of an output layer of `n` neurons.

  SimHash (one bit per hash) with `K = round(log2(n / occupancy))` bits per
  table, so that a bucket holds about `occupancy` neurons whatever `n`, and
  `num_tables` tables whose votes rank the candidates; the reservoir is 4x
  the mean bucket size. Measured on a trained N=100k model (BENCHMARKS.md):
  many tables mattered more than many probes.
  """
  k = min(max(int(round(math.log2(max(n, 2) / occupancy))), 1), 24)
  return LayerTuning(sparsity=1.0, active_size=int(n), hashes_per_table=k,
                     num_tables=int(num_tables), range_pow=k,
                     reservoir=int(4 * max(n / 2**k, 1)))


# What LSH inference's steps cost per example, in rows of the frequent
# block's matrix product (about 1.1 us per row for a batch of 256, as a
# numpy/BLAS product; 41-46 ms for 41,881 rows in XLA), measured once on an N=670,091, D=256 model trained on
# 100,000 examples, on this 2-core machine (BENCHMARKS.md, sparse_layer,
# "The frequent neurons as a block"): a voted candidate (a gathered row
# and a dot product) 13-26 us per batch, a table entry read while
# collecting the votes (probe codes included) about 3 us.
CANDIDATE_COST = 16.0
HIT_COST = 3.0


def vote_cost(n: int, tuning: LayerTuning, probes: int) -> float:
  """What collecting one example's votes costs, in frequent rows: the
  entries of its `L * (1 + probes)` buckets, `N / 2^K` each on average."""
  hits = tuning.num_tables * (1 + min(probes, tuning.hashes_per_table)) * (
      n / 2**tuning.range_pow)
  return HIT_COST * hits


def frequent_sizes(n: int) -> List[int]:
  """The frequent counts LSH calibration tries for an output of `n`: 0,
  32, and N/2^k for k = 0..10. F = N is dense scoring as a block, the
  setting of last resort: it always reaches the target recall."""
  sizes = {0, min(32, n)}
  sizes.update(-(-n // 2**k) for k in range(11))
  return sorted(sizes)
