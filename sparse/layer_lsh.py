"""Host-side LSH state of one layer: hash functions, tables, queries."""
import jax
import numpy as np

from sparse import autotune
from sparse import lsh
from sparse import tables as tables_lib
from sparse.errors import InputError

_hash = jax.jit(lambda fn, p, x: fn(p, x), static_argnums=0)
_probe = jax.jit(lsh.probe_codes, static_argnums=2)


class LayerLSH:
  """Hash functions and tables over the weight rows of one layer."""

  def __init__(self, family: str, dim: int, tuning: autotune.LayerTuning,
               seed: int):
    if family not in lsh.FAMILIES:
      raise InputError(f"hash: unknown family {family!r}, use one of "
                       f"{sorted(lsh.FAMILIES)}")
    self.family = lsh.FAMILIES[family]
    self.dim, self.tuning, self.seed = dim, tuning, seed
    self.draws = 0
    self.params = None
    self.tables = None

  def rehash(self, w: np.ndarray):
    """New hash functions and a full rebuild from weights `w` (N, dim)."""
    self.draws += 1
    key = jax.random.fold_in(jax.random.key(self.seed), self.draws)
    self.params = self.family.init(key, self.dim, self.tuning.num_tables,
                                   self.tuning.hashes_per_table)
    codes = lsh.hash_rows(self.family, self.params, w)
    self.tables = tables_lib.build(codes, lsh.num_buckets(self.params),
                                   self.tuning.reservoir,
                                   seed=self.seed + self.draws)

  def rebuild(self, rows: np.ndarray, w_rows: np.ndarray):
    """Re-inserts the neurons `rows` whose weights changed."""
    if len(rows):
      codes = lsh.hash_rows(self.family, self.params, w_rows)
      tables_lib.update(self.tables, rows, codes, seed=self.seed + self.draws)

  def query(self, x) -> np.ndarray:
    """Bucket of each row of `x` `(B, dim)` in each table, `(B, L)`."""
    return np.asarray(_hash(self.family.hash, self.params, x))

  def probe(self, x, probes: int) -> np.ndarray:
    """Own and `probes` neighbouring buckets per table, `(B, L, 1+P)`."""
    return np.asarray(_probe(self.params, x, int(probes)))

  def active_mask(self, x, units: int, rng: np.random.Generator
                  ) -> np.ndarray:
    """BOLT's per-example active sets of a sampled hidden layer as a mask.

    Args:
      x: `(B, dim)` inputs of the layer.
      units: neurons of the layer.
      rng: generator of the top-up offsets.

    Returns:
      `(B, units)` float32, 1 on the `active_size` neurons of each row.
    """
    codes = self.query(x)
    act = tables_lib.per_example(self.tables, codes,
                                 np.zeros((len(codes), 0), np.int32),
                                 self.tuning.active_size,
                                 np.arange(units, dtype=np.int32), rng)
    mask = np.zeros((len(codes), units), np.float32)
    np.put_along_axis(mask, act, 1.0, axis=1)
    return mask
