"""The LSH inference index of an output layer (host state of `mode="lsh"`).

Built from the output weights the first time LSH inference needs it after
they changed: SimHash tables (`autotune.tune_index`) over the centred rows
`w - mean(w)` (every score `w_j . h + b_j` moves by the same `mean(w) . h`,
so the centred rows rank the neurons as the scores do, and they spread
over the buckets where the raw rows, which share a common direction, do
not), the `frequent` highest-bias neurons, and the calibrated budget.
"""
from typing import Optional

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
    """Forgets the tables and budget (the weights changed)."""
    self.lsh: Optional[LayerLSH] = None
    self.frequent = np.zeros(0, np.int32)
    self.budget: Optional[int] = None

  def ready(self, w: np.ndarray, b: np.ndarray,
            cfg: retrieval.InferenceConfig) -> LayerLSH:
    """The tables for weights `w` `(N, D)`, bias `b`; built when missing."""
    n = w.shape[0]
    want = autotune.tune_index(n, cfg.bucket_size, cfg.num_tables)
    if self.lsh is None or self.lsh.tuning != want:
      self.lsh = LayerLSH("srp", w.shape[1], want, self.seed)
      self.lsh.rehash(w - w.mean(0))
    if len(self.frequent) != min(cfg.frequent, n):
      self.frequent = retrieval.frequent_neurons(b, cfg.frequent)
    return self.lsh

  def candidates(self, h, w, b, cfg: retrieval.InferenceConfig,
                 budget: int) -> np.ndarray:
    """`(B, budget)` candidates of the rows of `h`, best first."""
    lsh = self.ready(w, b, cfg)
    return retrieval.candidates(lsh.tables, lsh.probe(h, cfg.probes),
                                self.frequent, budget)

  def topk(self, h, w, b, cfg: retrieval.InferenceConfig, budget: int,
           top_k: int) -> np.ndarray:
    """`(B, top_k)` best candidates by their exact scores."""
    lsh = self.ready(w, b, cfg)
    return retrieval.retrieve_topk(lsh.tables, lsh.probe(h, cfg.probes),
                                   self.frequent, budget, w, b,
                                   np.asarray(h), top_k)
