"""Output-layer modes as `ActiveSet`s: which neurons a step trains, and how.

Each mode is a small named tuple of functions, chosen once per model (in
the style of optax's transforms):

* `select(sampler, codes, labels, batch_size) -> (batch, touched)` runs on
  the host: it picks the active neurons from the LSH codes of the batch's
  last hidden layer (`codes` is None for the dense mode) and returns the
  arrays the step needs, plus the output rows it will update (None: all).
* `gather(out_params, batch) -> out_rows`: the trainable output weights
  (`{"w", "b"}`), gathered for the sampled modes.
* `logits(h, out_rows, batch) -> (B, K)`: scores of the active neurons.
* `update(out, m, v, last, grads, batch, count, cfg) -> (out, m, v, last)`:
  Adam on the output layer (lazy, on the gathered rows, for sampled modes).

Modes: `DENSE` (every neuron), `SHARED` (one active set for the batch) and
`PER_EXAMPLE` (BOLT's `k` neurons per example).
"""
import math
from typing import Callable, NamedTuple, Optional

import numpy as np

from sparse import autotune
from sparse import data as data_lib
from sparse import layers
from sparse import tables as tables_lib


class Sampler(NamedTuple):
  """What `select` reads: the output layer's spec, tuning and tables."""
  spec: object                    # specs.Output
  tuning: autotune.LayerTuning
  tables: Optional[tables_lib.Tables]
  perm: np.ndarray                # (N,) fixed random permutation
  rng: np.random.Generator


class ActiveSet(NamedTuple):
  name: str
  sampled: bool
  select: Callable
  gather: Callable
  logits: Callable
  update: Callable


def shared_size(spec, tuning: autotune.LayerTuning, batch_size: int) -> int:
  """Size of the batch-shared active set."""
  if spec.shared_size is not None:
    return int(min(spec.units, spec.shared_size))
  return int(min(spec.units, batch_size + 4 * tuning.active_size))


def random_slots(spec, tuning: autotune.LayerTuning, size: int) -> int:
  """Positions of the shared active set kept for uniform negatives."""
  r = spec.random_negatives
  if r is None:
    r = 2 * tuning.active_size
  return int(min(max(r, 0), size))


def sampling_offsets(k: int, n_fixed: int, n: int, correct: bool
                     ) -> np.ndarray:
  """Logit offsets `(k,)` of a shared active set for the training loss.

  The first `n_fixed` entries (labels, probed neurons) count once; the
  rest are a uniform sample of the `n - n_fixed` other neurons, so each
  stands for `(n - n_fixed) / (k - n_fixed)` of them: with `correct`, it
  gets that log-weight, and the logsumexp over the active set estimates
  the one over all `n` neurons. Zero when `k == n` or not `correct`.
  """
  corr = np.zeros(k, np.float32)
  if correct and k > n_fixed:
    corr[n_fixed:] = math.log((n - n_fixed) / (k - n_fixed))
  return corr


# ------------------------------------------------------------------ dense
def _dense_select(sampler, codes, labels, batch_size):
  del sampler, codes, batch_size
  return {"label_pos": labels}, None


def _dense_gather(out, batch):
  del batch
  return out


def _dense_logits(h, out, batch):
  del batch
  return h @ out["w"].T + out["b"]


def _dense_update(out, m, v, last, grads, batch, count, cfg):
  del batch
  new = {k: layers.adam_dense(out[k], m[k], v[k], grads[k], count, cfg)
         for k in ("w", "b")}
  return ({k: o[0] for k, o in new.items()},
          {k: o[1] for k, o in new.items()},
          {k: o[2] for k, o in new.items()}, last)


# ---------------------------------------------------------- sampled modes
def _rows_gather(out, batch):
  return {k: layers.gather_rows(out[k], batch["out_rows"]) for k in out}


def _rows_update(out, m, v, last, grads, batch, count, cfg):
  rows = batch["out_rows"]
  new_p, new_m, new_v = {}, {}, {}
  new_last = last
  for k in ("w", "b"):
    res = layers.lazy_adam_rows(out[k], m[k], v[k], rows, grads[k], count,
                                cfg, last)
    new_p[k], new_m[k], new_v[k] = res[:3]
    if last is not None and k == "w":
      new_last = res[3]
  return new_p, new_m, new_v, new_last


def _shared_select(sampler, codes, labels, batch_size):
  spec, tuning = sampler.spec, sampler.tuning
  k = shared_size(spec, tuning, batch_size)
  active, label_pos, n_fixed = tables_lib.batch_union(
      sampler.tables, codes, labels, k, sampler.perm, sampler.rng,
      random_slots=random_slots(spec, tuning, k), return_fixed=True)
  batch = {"out_rows": active, "label_pos": label_pos,
           "out_corr": sampling_offsets(k, n_fixed, spec.units,
                                        spec.sampling_correction)}
  return batch, active


def _shared_logits(h, rows, batch):
  return layers.shared_logits(h, rows["w"], rows["b"]) + batch["out_corr"]


def _per_example_select(sampler, codes, labels, batch_size):
  del batch_size
  spec = sampler.spec
  active = tables_lib.per_example(sampler.tables, codes, labels,
                                  sampler.tuning.active_size, sampler.perm,
                                  sampler.rng)
  uniq, inv = np.unique(active, return_inverse=True)
  u = data_lib._bucket(len(uniq))  # pylint: disable=protected-access
  rows = np.full(u, spec.units, np.int32)
  rows[:len(uniq)] = uniq
  # The labels sit first in each example's active set.
  pos = np.broadcast_to(np.arange(labels.shape[1], dtype=np.int32),
                        labels.shape)
  batch = {"out_rows": rows,
           "out_inv": inv.reshape(active.shape).astype(np.int32),
           "label_pos": np.where(labels >= 0, pos, -1).astype(np.int32)}
  return batch, uniq


def _per_example_logits(h, rows, batch):
  return layers.per_example_logits(h, rows["w"], rows["b"], batch["out_inv"])


DENSE = ActiveSet("dense", False, _dense_select, _dense_gather,
                  _dense_logits, _dense_update)
SHARED = ActiveSet("shared", True, _shared_select, _rows_gather,
                   _shared_logits, _rows_update)
PER_EXAMPLE = ActiveSet("per_example", True, _per_example_select,
                        _rows_gather, _per_example_logits, _rows_update)
MODES = {m.name: m for m in (SHARED, PER_EXAMPLE)}


def for_output(spec, tuning: autotune.LayerTuning) -> ActiveSet:
  """The mode of an output layer: dense at sparsity 1, else its active set."""
  return DENSE if tuning.sparsity >= 1.0 else MODES[spec.active_set]
