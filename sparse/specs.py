"""Layer declarations of the sparse model and their LSH tuning."""
import dataclasses
from typing import Optional

from sparse import autotune


@dataclasses.dataclass
class Dense:
  """A hidden layer; `sparsity < 1` samples its active neurons by LSH."""
  units: int
  activation: str = "relu"
  sparsity: float = 1.0
  hashes_per_table: Optional[int] = None
  num_tables: Optional[int] = None
  range_pow: Optional[int] = None
  reservoir: Optional[int] = None


@dataclasses.dataclass
class Output:
  """A softmax output layer over `units` classes, sampled by LSH.

  Attributes:
    units: number of classes N.
    sparsity: active fraction; None = BOLT's autotuned value, 1.0 = dense.
    active_set: "shared" (one set of `shared_size` neurons for the batch:
      its labels, then the neurons its probes hit most, then a top-up) or
      "per_example" (BOLT's k neurons per example).
    shared_size: size of the shared set; None = min(N, batch + 4k).
    hash: "dwta" or "srp".
    hashes_per_table, num_tables, range_pow, reservoir: LSH overrides.
    rebuild_every, rehash_every: schedule overrides, in batches.
    adam_catch_up: lazy Adam on the output rows also applies, when a row is
      next touched (and before inference), the steps dense Adam would have
      taken while it sat outside the active sets with zero gradient (its
      momentum keeps moving it); plain lazy Adam skips them.
    random_negatives: ("shared") positions of the active set kept for
      neurons drawn uniformly from those not already chosen as labels or
      by the probes (the top-up), so that every neuron is pushed down now
      and then; None = 2k (k = sparsity * N), 0 = probes first.
    sampling_correction: ("shared") trains on an estimate of the full
      softmax: the top-up neurons, a uniform sample of the `U` neurons not
      chosen as labels or by the probes, stand for all of them, so their
      logits get `+log(U / number drawn)` in the training loss (zero when
      the active set is every neuron).
  """
  units: int
  sparsity: Optional[float] = None
  active_set: str = "shared"
  shared_size: Optional[int] = None
  hash: str = "dwta"
  hashes_per_table: Optional[int] = None
  num_tables: Optional[int] = None
  range_pow: Optional[int] = None
  reservoir: Optional[int] = None
  rebuild_every: Optional[int] = None
  rehash_every: Optional[int] = None
  adam_catch_up: bool = True
  random_negatives: Optional[int] = None
  sampling_correction: bool = False


def tuning(units: int, spec) -> autotune.LayerTuning:
  """BOLT's autotuned LSH setup of a layer, with the spec's overrides."""
  kw = {}
  for name in ("hashes_per_table", "num_tables", "range_pow", "reservoir"):
    kw[name] = getattr(spec, name, None)
  t = autotune.tune_layer(units, spec.sparsity, **kw)
  if isinstance(spec, Output) and spec.hash == "srp":
    # SimHash gives one bit per hash: K = range_pow bits per table.
    t = t._replace(hashes_per_table=spec.hashes_per_table or t.range_pow)
  return t
