"""Which clients take part in a round, and their data as padded host arrays.

Clients are sampled without replacement, stratified by capacity level so
every level contributes a fixed number of clients (fixed shapes: one
compiled program per level for the whole run). Randomness of round r comes
from (seed, r) alone, so a resumed run replays what an uninterrupted one
does.
"""
from typing import List, NamedTuple, Optional

import numpy as np

# client.poison, a test hook: one client per round, chosen from (seed, round)
# alone, misbehaves. "nan" and "huge" multiply its upload by NaN or 1e30 (the
# screen must reject it); "drop" makes it drop out instead, the reference run
# whose results a screened poisoned run must reproduce.
POISONS = {"": None, "nan": float("nan"), "huge": 1e30, "drop": 0.0}


class LevelBatch(NamedTuple):
  """One level's sampled clients for one round (host arrays)."""
  users: np.ndarray    # int32 [K]
  items: np.ndarray    # int32 [K, L]
  mask: np.ndarray     # bool [K, L]
  weights: np.ndarray  # float32 [K]: example count, 0 if the client dropped out
  seeds: np.ndarray    # int32 [K, tables]: each client's hash seeds this round
  poison: Optional[np.ndarray] = None  # float32 [K]: upload factor (client.poison)


def apportion(total, fractions, caps):
  """Integer counts summing to <= total, proportional to fractions, capped."""
  fractions = np.asarray(fractions, float)
  raw = fractions / fractions.sum() * total
  counts = np.floor(raw).astype(int)
  for i in np.argsort(-(raw - counts), kind="stable")[:total - counts.sum()]:
    counts[i] += 1
  return np.minimum(counts, caps)


class Sampler:
  """Samples each round's clients per level.

  Args:
    seed: the run's seed.
    indptr, items: every user's training items (CSR).
    level_users: per level, the users that can take part.
    per_level: clients per level and round.
    level_len: per level, the padded item slots per client.
    level_scale: per level, the factor on a client's example count (weight).
    dropout: probability that a sampled client does not answer.
    client_seeds: `(users, rnd) -> int32 [K, tables]`, the algorithm's.
    poison: a key of POISONS.
  """

  def __init__(self, seed, indptr, items, level_users, per_level, level_len, level_scale,
               dropout, client_seeds, poison=""):
    self.seed = seed
    self.indptr, self.items = indptr, items
    self.level_users, self.per_level = level_users, per_level
    self.level_len, self.level_scale = level_len, level_scale
    self.dropout, self.client_seeds, self.poison = dropout, client_seeds, poison

  def __call__(self, rnd) -> List[Optional[LevelBatch]]:
    """The round's clients per level (None for a level with none)."""
    rng = np.random.default_rng([self.seed, 7919, rnd])
    batches = []
    for lv, users in enumerate(self.level_users):
      k = int(self.per_level[lv])
      if k == 0:
        batches.append(None)
        continue
      sel = rng.choice(users, size=k, replace=False)
      # Ordered by data size, so vmapped chunks hold clients of similar
      # length (a chunk runs as many steps as its longest client).
      sizes = self.indptr[sel + 1] - self.indptr[sel]
      sel = sel[np.lexsort((sel, sizes))].astype(np.int32)
      length = self.level_len[lv]
      items = np.zeros((k, length), np.int32)
      mask = np.zeros((k, length), bool)
      for r, u in enumerate(sel):
        mine = self.items[self.indptr[u]:self.indptr[u + 1]]
        if len(mine) > length:
          mine = rng.choice(mine, size=length, replace=False)
        items[r, :len(mine)] = mine
        mask[r, :len(mine)] = True
      weights = mask.sum(1).astype(np.float32) * self.level_scale[lv]
      dropped = rng.random(k) < self.dropout
      weights[dropped] = 0.0
      batches.append(LevelBatch(sel, items, mask, weights, self.client_seeds(sel, rnd)))
    return self._poison(batches, rnd)

  def _poison(self, batches, rnd):
    """Applies the client.poison hook to one client of the round (see POISONS)."""
    mode = self.poison
    if not mode:
      return batches
    slots = [(lv, i) for lv, b in enumerate(batches) if b is not None
             for i in range(len(b.users))]
    if not slots:
      return batches
    # Its own stream: the round's sampling and dropouts stay as without the hook.
    lv, i = slots[np.random.default_rng([self.seed, 104729, rnd]).integers(len(slots))]
    out = list(batches)
    if mode == "drop":
      weights = out[lv].weights.copy()
      weights[i] = 0.0
      out[lv] = out[lv]._replace(weights=weights)
      return out
    for j, b in enumerate(out):
      if b is not None:
        factor = np.ones(len(b.users), np.float32)
        if j == lv:
          factor[i] = POISONS[mode]
        out[j] = b._replace(poison=factor)
    return out
