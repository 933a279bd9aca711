"""The LSH inference index of an output layer (host state of `mode="lsh"`).

Built from the output weights the first time LSH inference needs it after
they changed: SimHash tables (`autotune.tune_index`) over the centred rows
`w - mean(w)` (every score `w_j . h + b_j` moves by the same `mean(w) . h`,
so the centred rows rank the neurons as the scores do, and they spread
over the buckets where the raw rows, which share a common direction, do
not), the `frequent` highest-bias neurons, and the calibrated budget.

With `InferenceConfig.rows="simple"` the rows are Simple-LSH's (Neyshabur
and Srebro, 2015) augmented, bias included: `[w_j - mean(w), b_j] / M`
padded with `sqrt(1 - |.|^2)` to unit norm and queried with `[h, 1, 0]`,
so that the angle ranks the whole score `w_j . h + b_j`. `M` is the 99th
percentile of the row norms (rows beyond it keep their direction): with
the largest norm, most rows shrank towards the padding axis and recall
fell (BENCHMARKS.md).
"""
from typing import Optional

import jax.numpy as jnp
import numpy as np

from sparse import autotune
from sparse import retrieval
from sparse.layer_lsh import LayerLSH


class OutputIndex:
  """Inference tables over the rows of one output layer."""

  def __init__(self, seed: int):
    self.seed = seed
    self.invalidate()

  def invalidate(self):
    """Forgets the tables, blocks and budget (the weights changed)."""
    self.lsh: Optional[LayerLSH] = None
    self.rows = None
    self.by_bias = None   # (ids by decreasing bias, each id's place)
    self.block = None     # (F, retrieval.Block of the F frequent)
    # (config calibrated under, retrieval.Setting), from calibration.
    self.calibrated = None

  def ready(self, w: np.ndarray, b: np.ndarray,
            cfg: retrieval.InferenceConfig) -> LayerLSH:
    """The tables for weights `w` `(N, D)`, bias `b`; built when missing."""
    n = w.shape[0]
    want = autotune.tune_index(n, cfg.bucket_size, cfg.num_tables)
    if (self.lsh is None or self.lsh.tuning != want
        or self.rows != cfg.rows):
      rows = index_rows(w, b, cfg.rows)
      self.rows = cfg.rows
      self.lsh = LayerLSH("srp", rows.shape[1], want, self.seed)
      self.lsh.rehash(rows)
    if self.by_bias is None:
      self.by_bias = retrieval.by_bias(b)
    return self.lsh

  def frequent(self, count: int) -> np.ndarray:
    """The `count` highest-bias neurons, highest first (after `ready`)."""
    return self.by_bias[0][:count]

  def candidates(self, h, w, b, cfg: retrieval.InferenceConfig,
                 frequent: int, budget: int) -> np.ndarray:
    """`(B, frequent + budget)` candidates of the rows of `h`: the
    `frequent` highest-bias neurons, then the voted ones, best first."""
    lsh = self.ready(w, b, cfg)
    return retrieval.candidates(lsh.tables, self._probe(h, cfg),
                                self.frequent(frequent), budget)

  def voted(self, h, w, b, cfg: retrieval.InferenceConfig, sizes,
            budget: int) -> dict:
    """`{F: (B, budget)}` voted candidates of the rows of `h`, best first,
    leaving out the F highest-bias neurons, for each F of `sizes` (the
    probe codes computed once)."""
    lsh = self.ready(w, b, cfg)
    codes = self._probe(h, cfg)
    return {f: retrieval.voted(lsh.tables, codes, self.frequent(f), budget)
            for f in sizes}

  def rank_by_bias(self) -> np.ndarray:
    """Each neuron's place by decreasing bias (after `ready`)."""
    return self.by_bias[1]

  def topk(self, h, w, b, cfg: retrieval.InferenceConfig, frequent: int,
           budget: int, top_k: int) -> np.ndarray:
    """`(B, top_k)` best candidates by their exact scores; the frequent
    neurons' scores are one matrix product over their rows."""
    lsh = self.ready(w, b, cfg)
    if self.block is None or self.block[0] != frequent:
      self.block = (frequent,
                    retrieval.frequent_block(w, b, self.frequent(frequent)))
    # With no voted candidates the tables are not read: no probe codes.
    codes = (self._probe(h, cfg) if budget > 0
             else np.zeros((h.shape[0], 1, 1), np.int32))
    return retrieval.retrieve_topk(lsh.tables, codes,
                                   self.frequent(frequent), budget, w, b,
                                   h, top_k, self.block[1])

  def _probe(self, h, cfg):
    if self.rows == "simple":
      pad = jnp.zeros((h.shape[0], 1), h.dtype)
      h = jnp.concatenate([h, pad + 1, pad], axis=1)
    return self.lsh.probe(h, cfg.probes)


def index_rows(w: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
  """The vectors hashed for each neuron: centred rows, or Simple-LSH's."""
  wc = w - w.mean(0)
  if kind == "centred":
    return wc
  a = np.concatenate([wc, b[:, None]], axis=1)
  norm = np.linalg.norm(a, axis=1)
  scale = max(float(np.quantile(norm, 0.99)), 1e-12)
  pad = np.sqrt(np.maximum(1.0 - (norm / scale) ** 2, 0.0))
  return np.concatenate([a / scale, pad[:, None]], axis=1).astype(np.float32)
