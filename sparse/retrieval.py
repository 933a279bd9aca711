"""LSH inference: retrieve candidates from the hash tables, score them exactly.

Per example, the candidates are the `F` highest-bias neurons (the classes
seen most in training) and the `budget` others with the most votes: every
neuron in the example's probed buckets (its own bucket in each of the `L`
tables, and with multi-probe the buckets at the nearest neighbouring
codes) gets one vote per hit. Only the candidates are scored, exactly
(`w . h + b`), and the top-k of those scores is the answer. With `budget >=
N - F` every neuron is a candidate and the answer is the dense one.

The frequent neurons are scored as a `Block`: matrix products in XLA,
reduced to a top-k chunk by chunk. The voted ones are a gather of weight
rows and a dot product each, in numba loops over the host view of the
weights (zero-copy from a CPU jax array), fused with the vote count so
that the candidate lists are never materialised for the common case (see
BENCHMARKS.md for what was measured).
"""
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numba
import numpy as np

from sparse.errors import InputError


class InferenceConfig(NamedTuple):
  """Knobs of LSH inference (`Model.predict(..., mode="lsh")`).

  Attributes:
    budget: voted candidates scored per example beyond the frequent ones;
      None = calibrated at `target_recall` (`Model.calibrate`).
    target_recall: the fraction of examples whose dense top-1 must be
      among their candidates when the budget is calibrated.
    probes: extra buckets probed per table (multi-probe: the codes one
      hash away from the example's own, the most likely flips first).
    frequent: neurons always scored (the highest-bias ones: the labels
      seen most in training), as one matrix product; None = calibrated
      with the budget (the cheapest pair that reaches `target_recall`,
      `choose_setting`).
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
  frequent: Optional[int] = None
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
  if cfg.budget is not None and cfg.budget < 0:
    raise InputError(f"budget: must be >= 0, got {cfg.budget}")
  if not 0.0 < cfg.target_recall <= 1.0:
    raise InputError(f"target_recall: must be in (0, 1], got "
                     f"{cfg.target_recall}")
  if cfg.probes < 0 or (cfg.frequent is not None and cfg.frequent < 0):
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


_SKIP = 65535   # the `counts` mark of a frequent neuron (never voted for)


@numba.njit(inline="always")
def _collect(buckets, offered, qcodes, b, budget, counts, hits, touched,
             order, hist):
  """Fills `order[:m]` with example b's voted candidates; returns m.

  Neurons whose `counts` entry is `_SKIP` (the frequent ones, marked by
  the caller) are left out. The others are ranked by decreasing votes,
  ties in the order they were first hit (table 0 first); when fewer than
  `budget` were hit, the rest follow in id order, so that a budget of N
  makes every neuron a candidate. Other `counts` entries must be zero on
  entry and are zero again on exit.
  """
  n_tables, n_probe = qcodes.shape[1], qcodes.shape[2]
  reservoir = buckets.shape[2]
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
    if cj == _SKIP:
      continue
    if cj == 0:
      touched[t] = j
      t += 1
    cj += 1
    counts[j] = cj
    if cj > max_count:
      max_count = cj
  m = min(budget, t)
  if m > 0:
    # Counting sort of the touched neurons by decreasing count, stable.
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
      if pos < m:
        order[pos] = j
  if m < budget:
    # Never hit: in id order (only reached when the budget exceeds the
    # neurons the probed buckets hold, e.g. a budget of N).
    for j in range(counts.shape[0]):
      if m == budget:
        break
      if counts[j] == 0:
        order[m] = j
        m += 1
  for i in range(t):
    counts[touched[i]] = 0
  return m


@numba.njit(parallel=True, cache=True, fastmath=True)
def _retrieve(buckets, offered, qcodes, frequent, budget, n, keep, w, bias, h,
              top_k, init_ids, init_scores):
  # Voted candidates of each example (returned when `keep`), then the
  # top_k of the exact scores of the voted ones merged into the frequent
  # neurons' top_k (`init_ids`, `init_scores`, -1 / -inf where fewer).
  batch = qcodes.shape[0]
  dim = w.shape[1]
  n_freq = frequent.shape[0]
  max_touched = qcodes.shape[1] * qcodes.shape[2] * buckets.shape[2]
  budget = min(budget, n - n_freq)
  cands = np.full((batch if keep else 0, budget), -1, np.int32)
  top = np.full((batch, top_k), -1, np.int32)
  n_chunks = max(min(batch, numba.get_num_threads()), 1)
  per = -(-batch // n_chunks)
  for ch in numba.prange(n_chunks):
    counts = np.zeros(n, np.uint16)
    for i in range(n_freq):
      counts[frequent[i]] = _SKIP
    touched = np.empty(max_touched, np.int32)
    hits = np.empty(max_touched, np.int32)
    order = np.empty(max(budget, 1), np.int32)
    hist = np.empty(max_touched + 2, np.int64)
    best = np.empty(max(top_k, 1), np.float32)
    for b in range(ch * per, min(batch, (ch + 1) * per)):
      m = 0
      if budget > 0:
        m = _collect(buckets, offered, qcodes, b, budget, counts, hits,
                     touched, order, hist)
      if keep:
        cands[b, :m] = order[:m]
      if top_k == 0:
        continue
      for q in range(top_k):
        top[b, q] = init_ids[b, q]
        best[q] = init_scores[b, q]
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


def by_bias(bias: np.ndarray):
  """Neuron ids by decreasing bias (ties by id), int32, and each neuron's
  place in that order, `(order, rank)`."""
  order = np.argsort(-np.asarray(bias), kind="stable").astype(np.int32)
  rank = np.empty(len(order), np.int64)
  rank[order] = np.arange(len(order))
  return order, rank


def candidates(tables, qcodes: np.ndarray, frequent: np.ndarray,
               budget: int) -> np.ndarray:
  """Candidate neurons per example: the frequent ones, then the voted ones.

  Args:
    tables: the layer's `tables.Tables`.
    qcodes: `(B, L, P)` (or `(B, L)`) probed bucket of each example in
      each table, its own bucket first.
    frequent: `(F,)` int32 neurons always scored, first.
    budget: voted candidates per example beyond the frequent ones.

  Returns:
    `(B, F + min(budget, N - F))` int32 neuron ids.
  """
  frequent = np.asarray(frequent, np.int32)
  v = voted(tables, qcodes, frequent, budget)
  return np.concatenate(
      [np.broadcast_to(frequent, (len(v), len(frequent))), v], 1)


def voted(tables, qcodes: np.ndarray, frequent: np.ndarray,
          budget: int) -> np.ndarray:
  """The voted candidates alone (`candidates` without the frequent ones):
  `(B, min(budget, N - F))` int32, most votes first."""
  none = np.zeros((1, 1), np.float32)
  return _retrieve(tables.buckets, tables.offered, _codes(qcodes),
                   np.asarray(frequent, np.int32), int(budget),
                   tables.codes.shape[0], True, none, none[0], none, 0,
                   np.zeros((1, 1), np.int32), none)[0]


def retrieve_topk(tables, qcodes: np.ndarray, frequent: np.ndarray,
                  budget: int, w: np.ndarray, bias: np.ndarray,
                  h: np.ndarray, top_k: int, block=None) -> np.ndarray:
  """Top-k of the exact scores `w[j] . h + bias[j]` over the candidates.

  Args: as `candidates`, and `w` `(N, D)` float32 weights, `bias` `(N,)`,
    `h` `(B, D)` the inputs of the layer, `top_k` answers per example,
    `block` the frequent neurons' `Block` when the caller keeps it
    (`frequent_block` of the same `frequent`).

  Returns:
    `(B, top_k)` int32 neuron ids, best first; -1 where fewer than `top_k`
    candidates were retrieved.
  """
  frequent = np.asarray(frequent, np.int32)
  if block is None:
    block = frequent_block(w, bias, frequent)
  ids, scores = block_topk(h, block, top_k)
  if budget <= 0 or len(frequent) >= tables.codes.shape[0]:
    return ids   # no voted candidates: the tables are not read
  h = _f32(h)
  return _retrieve(tables.buckets, tables.offered, _codes(qcodes), frequent,
                   int(budget), tables.codes.shape[0], False, _f32(w),
                   _f32(bias), h, int(top_k), ids, scores)[1]


class Block(NamedTuple):
  """The frequent neurons' rows as `(chunks, chunk, D)` device arrays
  (padded: rows of -inf bias, id -1), so that their scores are matrix
  products reduced to a top-k chunk by chunk in XLA, in the thread pool
  dense scoring uses (numpy's BLAS threads alternating with XLA's slowed
  both, BENCHMARKS.md)."""
  rows: jax.Array     # (C, chunk, D)
  bias: jax.Array     # (C, chunk)
  ids: jax.Array      # (C, chunk) int32


def frequent_block(w: np.ndarray, bias: np.ndarray, frequent: np.ndarray,
                   chunk: int = 4096) -> Block:
  """The `Block` of the neurons `frequent` of weights `w`, bias `bias`."""
  f, d = len(frequent), w.shape[1]
  chunk = max(min(chunk, f), 1)
  c = -(-f // chunk)
  rows = np.zeros((c * chunk, d), np.float32)
  rows[:f] = w[frequent]
  b = np.full(c * chunk, -np.inf, np.float32)
  b[:f] = bias[frequent]
  ids = np.full(c * chunk, -1, np.int32)
  ids[:f] = frequent
  return Block(jnp.asarray(rows.reshape(c, chunk, d)),
               jnp.asarray(b.reshape(c, chunk)),
               jnp.asarray(ids.reshape(c, chunk)))


@functools.partial(jax.jit, static_argnums=2)
def _block_topk(h, block, top_k):
  k = min(top_k, block.ids.shape[1])

  def chunk_top(args):
    rows, bias, ids = args
    vals, pos = jax.lax.top_k(h @ rows.T + bias, k)
    return vals, ids[pos]

  vals, ids = jax.lax.map(chunk_top, block)               # (C, B, k)
  vals = jnp.moveaxis(vals, 0, 1).reshape(h.shape[0], -1)
  ids = jnp.moveaxis(ids, 0, 1).reshape(h.shape[0], -1)
  if vals.shape[1] < top_k:
    pad = top_k - vals.shape[1]
    vals = jnp.pad(vals, ((0, 0), (0, pad)), constant_values=-jnp.inf)
    ids = jnp.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
  # top_k keeps the earlier entry on ties: chunk order, i.e. higher bias.
  vals, pos = jax.lax.top_k(vals, top_k)
  return jnp.take_along_axis(ids, pos, 1), vals


def block_topk(h, block: Block, top_k: int):
  """Top-k of the scores `h @ rows.T + bias` over the rows of a block.

  Returns:
    `(ids (B, top_k) int32, scores (B, top_k) float32)` numpy arrays, best
    first; -1 and -inf where the block has fewer than `top_k` rows.
  """
  if block.ids.size == 0:
    b = len(h)
    return (np.full((b, top_k), -1, np.int32),
            np.full((b, top_k), -np.inf, np.float32))
  ids, vals = _block_topk(jnp.asarray(h, jnp.float32), block, int(top_k))
  # Padding rows score -inf: never above a real row, id -1 if reached.
  ids, vals = np.asarray(ids), np.asarray(vals)
  return np.where(np.isneginf(vals), -1, ids).astype(np.int32), vals


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


class Setting(NamedTuple):
  """What calibration chose: `frequent` neurons always scored, `budget`
  voted candidates beyond them, and the recall of the dense top-1 of the
  calibration examples at that setting."""
  frequent: int
  budget: int
  recall: float


def choose_setting(voted_by_frequent: dict, target: np.ndarray,
                   target_rank: np.ndarray, target_recall: float,
                   candidate_cost: float, budget: Optional[int] = None,
                   vote_cost: float = 0.0) -> Setting:
  """The cheapest (frequent count, budget) that reaches `target_recall`.

  Args:
    voted_by_frequent: `{F: (B, C) voted candidates}` (from `voted` with
      the F highest-bias neurons left out, at the largest budget allowed).
    target: `(B,)` each example's dense top-1.
    target_rank: `(B,)` where each target ranks by decreasing bias (it is
      a frequent neuron at count F when below F).
    target_recall: in (0, 1].
    candidate_cost: what a voted candidate costs, in frequent neurons
      (a voted one is a gathered row and a dot product; the frequent ones
      are one matrix product over contiguous rows).
    budget: a fixed budget (only the frequent count is chosen); None =
      the smallest that reaches the target at each frequent count.
    vote_cost: what collecting an example's votes costs, in frequent
      neurons (paid only when the budget is above 0: with budget 0 the
      tables are not read).

  Returns:
    The setting of least `F + candidate_cost * budget + vote_cost *
    (budget > 0)` among those that reach the target recall; when none
    does, the one of highest recall.
  """
  best = None
  fixed = budget
  n_ex = len(target)
  for f, cands in sorted(voted_by_frequent.items()):
    hit = cands == target[:, None]
    # Budget each example needs: 0 when its target is frequent, the
    # target's place among the voted ones + 1, or more than C (never).
    need = np.full(len(target), cands.shape[1] + 1)
    if cands.shape[1]:
      need = np.where(hit.any(-1), hit.argmax(-1) + 1, need)
    need = np.where(target_rank < f, 0, need)
    if fixed is not None:
      budget = min(fixed, cands.shape[1])
    elif n_ex:
      k = int(np.ceil(target_recall * n_ex))
      budget = int(min(np.sort(need)[max(k, 1) - 1], cands.shape[1]))
    else:
      budget = 0
    recall = float((need <= budget).mean()) if n_ex else float("nan")
    reached = n_ex == 0 or recall >= target_recall
    cost = f + candidate_cost * budget + (vote_cost if budget else 0.0)
    key = (not reached, -recall if not reached else 0.0, cost)
    if best is None or key < best[0]:
      best = (key, Setting(int(f), int(budget), recall))
  return best[1]
