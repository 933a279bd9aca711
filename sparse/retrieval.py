"""LSH inference: retrieve candidates from the hash tables, score them exactly.

Per example: every neuron in the example's probed buckets (its own bucket
in each of the `L` tables, and with multi-probe the buckets at the nearest
neighbouring codes) gets one vote per hit; the candidates are a fixed set
of `frequent` neurons (highest output bias: the classes seen most in
training), then the others by decreasing vote count, cut at `budget`. Only
the candidates are scored, exactly (`w . h + b`), and the top-k of those
scores is the answer. With `budget >= N` every neuron is a candidate and
the answer is the dense one.

Scoring the candidates of a batch of examples is a gather of `(B, budget)`
weight rows and a dot product each; the kernels are numba loops over the
host view of the weights (zero-copy from a CPU jax array), fused with the
vote count so that the candidate lists are never materialised for the
common case (see BENCHMARKS.md for what was measured).
"""
from typing import NamedTuple, Optional

import numba
import numpy as np

from sparse.errors import InputError


class InferenceConfig(NamedTuple):
  """Knobs of LSH inference (`Model.predict(..., mode="lsh")`).

  Attributes:
    budget: candidates scored per example; None = calibrated at
      `target_recall` (`calibrate_budget`).
    target_recall: the fraction of examples whose dense top-1 must be
      among their candidates when the budget is calibrated.
    probes: extra buckets probed per table (multi-probe: the codes one
      hash away from the example's own, the most likely flips first).
    frequent: neurons always scored (the highest-bias ones).
    max_budget: the largest budget calibration may choose; None =
      `default_max_budget(N)`.
    num_tables: tables of the index (SimHash of the centred output rows).
    bucket_size: mean neurons per bucket; sets the bits per table
      (`autotune.tune_index`).
    rows: what the index hashes: "centred" output rows or "simple"
      (Simple-LSH rows with the bias; see `sparse.lsh_inference`).
  """
  budget: Optional[int] = None
  target_recall: float = 0.95
  probes: int = 8
  frequent: int = 32
  max_budget: Optional[int] = None
  num_tables: int = 200
  bucket_size: int = 16
  rows: str = "centred"


def default_max_budget(n: int) -> int:
  """The largest calibrated budget: 1024 (scoring costs per candidate,
  whatever N; at 1024 of 100k neurons it no longer beats dense scoring)."""
  return int(min(n, 1024))


def check_config(cfg: InferenceConfig) -> InferenceConfig:
  """Returns `cfg` if its values are valid, else raises InputError."""
  if cfg.budget is not None and cfg.budget < 1:
    raise InputError(f"budget: must be >= 1, got {cfg.budget}")
  if not 0.0 < cfg.target_recall <= 1.0:
    raise InputError(f"target_recall: must be in (0, 1], got "
                     f"{cfg.target_recall}")
  if cfg.probes < 0 or cfg.frequent < 0:
    raise InputError("probes, frequent: must be >= 0")
  if cfg.rows not in ("centred", "simple"):
    raise InputError(f"rows: {cfg.rows!r} is not 'centred' or 'simple'")
  if cfg.num_tables < 1 or cfg.bucket_size < 1:
    raise InputError("num_tables, bucket_size: must be >= 1")
  if cfg.num_tables * (cfg.probes + 1) >= 1 << 15:
    raise InputError("num_tables * (probes + 1): must be below 32768 (the "
                     "votes are counted in 16 bits)")
  if cfg.max_budget is not None and cfg.max_budget < 1:
    raise InputError(f"max_budget: must be >= 1, got {cfg.max_budget}")
  return cfg


@numba.njit(inline="always")
def _collect(buckets, offered, qcodes, b, frequent, budget, counts, hits,
             touched, order, hist):
  """Fills `order[:m]` with example b's candidates, best first; returns m.

  `counts` must be zero on entry and is zero again on exit.
  """
  n_tables, n_probe = qcodes.shape[1], qcodes.shape[2]
  reservoir = buckets.shape[2]
  n_freq = frequent.shape[0]
  # Frequent neurons are marked with a huge count so they sort first and
  # are never counted twice.
  big = np.uint16(65535)
  m = 0
  for i in range(n_freq):
    j = frequent[i]
    counts[j] = big
  # Copy the probed buckets' entries first, then count: the copies are
  # independent loads that the CPU overlaps (the tables are far bigger
  # than the caches); counting as they arrive took 1.7x as long at
  # N=670k (BENCHMARKS.md).
  h = 0
  for l in range(n_tables):
    for p in range(n_probe):
      c = qcodes[b, l, p]
      # Slots past the number ever offered are empty.
      for r in range(min(offered[l, c], reservoir)):
        hits[h] = buckets[l, c, r]
        h += 1
  t = 0
  max_count = 0
  for i in range(h):
    j = hits[i]
    if j < 0:
      continue
    cj = counts[j]
    if cj == big:
      continue
    if cj == 0:
      touched[t] = j
      t += 1
    cj += 1
    counts[j] = cj
    if cj > max_count:
      max_count = cj
  for i in range(min(n_freq, budget)):
    order[m] = frequent[i]
    m += 1
  # Counting sort of the touched neurons by decreasing count, stable in
  # the order they were first hit (table 0 first).
  keep = min(budget - m, t)
  if keep > 0:
    hist[:max_count + 2] = 0
    for i in range(t):
      hist[max_count - counts[touched[i]]] += 1
    run = 0
    for v in range(max_count + 1):
      size = hist[v]
      hist[v] = run
      run += size
    for i in range(t):
      j = touched[i]
      pos = hist[max_count - counts[j]]
      hist[max_count - counts[j]] = pos + 1
      if pos < keep:
        order[m + pos] = j
    m += keep
  for i in range(t):
    counts[touched[i]] = 0
  for i in range(n_freq):
    counts[frequent[i]] = 0
  return m


@numba.njit(parallel=True, cache=True, fastmath=True)
def _retrieve(buckets, offered, qcodes, frequent, budget, n, keep, w, bias, h,
              top_k):
  # Candidates of each example (returned when `keep`), then the top_k of
  # their exact scores (when top_k > 0).
  batch = qcodes.shape[0]
  dim = w.shape[1]
  max_touched = qcodes.shape[1] * qcodes.shape[2] * buckets.shape[2]
  cands = np.full((batch if keep else 0, budget), -1, np.int32)
  top = np.full((batch, top_k), -1, np.int32)
  n_chunks = max(min(batch, numba.get_num_threads()), 1)
  per = -(-batch // n_chunks)
  for ch in numba.prange(n_chunks):
    counts = np.zeros(n, np.uint16)
    touched = np.empty(max_touched, np.int32)
    hits = np.empty(max_touched, np.int32)
    order = np.empty(max(budget, 1), np.int32)
    hist = np.empty(max_touched + 2, np.int64)
    best = np.empty(max(top_k, 1), np.float32)
    for b in range(ch * per, min(batch, (ch + 1) * per)):
      m = _collect(buckets, offered, qcodes, b, frequent, budget, counts,
                   hits, touched, order, hist)
      if keep:
        cands[b, :m] = order[:m]
      if top_k == 0:
        continue
      best[:] = -np.inf
      hb = h[b]
      for i in range(m):
        j = order[i]
        s = np.float32(0.0)
        wj = w[j]
        for d in range(dim):
          s += wj[d] * hb[d]
        s += bias[j]
        if s > best[top_k - 1] or top[b, top_k - 1] < 0:
          # Insertion into the sorted top-k (ties keep the earlier one).
          q = top_k - 1
          while q > 0 and (s > best[q - 1] or top[b, q - 1] < 0):
            best[q] = best[q - 1]
            top[b, q] = top[b, q - 1]
            q -= 1
          best[q] = s
          top[b, q] = j
  return cands, top


def frequent_neurons(bias: np.ndarray, count: int) -> np.ndarray:
  """The `count` neurons of highest bias, highest first, int32."""
  count = int(min(count, len(bias)))
  if count == 0:
    return np.zeros(0, np.int32)
  idx = np.argpartition(-bias, count - 1)[:count]
  return idx[np.argsort(-bias[idx], kind="stable")].astype(np.int32)


def candidates(tables, qcodes: np.ndarray, frequent: np.ndarray,
               budget: int) -> np.ndarray:
  """Candidate neurons per example, best first.

  Args:
    tables: the layer's `tables.Tables`.
    qcodes: `(B, L, P)` (or `(B, L)`) probed bucket of each example in
      each table, its own bucket first.
    frequent: `(F,)` int32 neurons always included, first.
    budget: candidates per example.

  Returns:
    `(B, budget)` int32 neuron ids, -1 where fewer were retrieved.
  """
  none = np.zeros((1, 1), np.float32)
  return _retrieve(tables.buckets, tables.offered, _codes(qcodes),
                   np.asarray(frequent, np.int32), int(budget),
                   tables.codes.shape[0], True, none, none[0], none, 0)[0]


def retrieve_topk(tables, qcodes: np.ndarray, frequent: np.ndarray,
                  budget: int, w: np.ndarray, bias: np.ndarray,
                  h: np.ndarray, top_k: int) -> np.ndarray:
  """Top-k of the exact scores `w[j] . h + bias[j]` over the candidates.

  Args: as `candidates`, and `w` `(N, D)` float32 weights, `bias` `(N,)`,
    `h` `(B, D)` the inputs of the layer, `top_k` answers per example.

  Returns:
    `(B, top_k)` int32 neuron ids, best first; -1 where fewer than `top_k`
    candidates were retrieved.
  """
  return _retrieve(tables.buckets, tables.offered, _codes(qcodes),
                   np.asarray(frequent, np.int32), int(budget),
                   tables.codes.shape[0], False, _f32(w), _f32(bias), _f32(h),
                   int(top_k))[1]


def _codes(qcodes):
  q = np.ascontiguousarray(qcodes, np.int32)
  return q[..., None] if q.ndim == 2 else q


def _f32(a):
  a = np.asarray(a)
  return a if a.dtype == np.float32 and a.flags.c_contiguous else \
      np.ascontiguousarray(a, np.float32)


def recall_at(cands: np.ndarray, target: np.ndarray) -> float:
  """Fraction of examples whose `target` (B,) is among `cands` (B, K)."""
  if len(target) == 0:
    return float("nan")
  return float((cands == target[:, None]).any(-1).mean())


def calibrate_budget(cands: np.ndarray, target: np.ndarray,
                     target_recall: float) -> int:
  """The smallest budget whose recall of `target` reaches `target_recall`.

  Args:
    cands: `(B, K)` candidates, best first (from `candidates` at the
      largest budget allowed).
    target: `(B,)` each example's dense top-1.
    target_recall: in (0, 1].

  Returns:
    A budget in [1, K]; K when even all K candidates fall short.
  """
  k = cands.shape[1]
  hit = cands == target[:, None]
  found = hit.any(-1)
  rank = np.where(found, hit.argmax(-1) + 1, k + 1)
  need = int(np.ceil(target_recall * len(rank)))
  if need == 0:
    return 1
  return int(min(np.sort(rank)[need - 1], k))
