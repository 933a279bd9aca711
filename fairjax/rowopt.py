"""Row-sparse optimizers for embedding tables: a step costs the rows it touches.

A client's minibatch step looks up `B * (1 + K)` item rows of tables that
may hold hundreds of thousands; a dense optimizer step reads and writes
every row of them (and, for Adam, of both moments) at every step. These
optimizers update only the *units* a step touches: the rows of a plain
table, the elements (buckets) of a hashed one (`subspace.lookup_units`).

A step's gradient on a unit is the sum over its lookups in the batch (the
dense gradient's entries, added up in the same order), then:

* `sgd`: `w -= lr * g` on the touched units: dense SGD exactly (a zero
  gradient moves nothing).
* `adagrad`: optax's Adagrad on the touched units: dense Adagrad exactly (a
  zero gradient adds nothing to the accumulator and moves nothing).
* `adam`, `catch_up=False` (lazy, TensorFlow's LazyAdam): optax's Adam on
  the touched units, with the bias correction of the global step count;
  an untouched unit keeps its value and both moments. Dense Adam would
  still move a unit whose moments are non-zero, at every step it is not
  touched (the momentum `m` decays by `b1`, `v` by `b2`, and the unit
  moves by `lr * m_hat / (sqrt(v_hat) + eps)`): lazy Adam skips those moves.
* `adam`, `catch_up=True`: before a step looks up a unit (`catch_up`, ahead
  of the forward pass), the unit replays the zero-gradient steps it skipped
  since its last update, with dense Adam's own arithmetic step by step
  (`last` records each unit's last step); so the step sees and leaves every
  unit it touches exactly as dense Adam does (to float rounding: XLA may
  round an expression differently in two programs, a fused multiply-add in
  one only). `flush` replays what every unit still owes at the end of local
  training, after which the whole table equals dense Adam's. The replay costs one elementwise Adam update per skipped
  step of each touched unit (never more than the dense optimizer's work,
  far less when few units are touched), and one int32 per unit of state.

Units of a never-touched row have zero moments; Adam moves them by
`0 / (0 + eps) = 0`, as dense Adam does, so neither rule has to replay them.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fairjax.errors import InputError

NAMES = ("sgd", "adam", "adagrad")


class RowOptimizer(NamedTuple):
  """Settings of a row-sparse optimizer (hashable: part of a jit-static config).

  Defaults are optax's (`optax.adam`, `optax.adagrad`).
  """
  name: str
  lr: float
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  catch_up: bool = False
  initial_accumulator_value: float = 0.1
  adagrad_eps: float = 1e-7


def make(name, lr, catch_up=False) -> RowOptimizer:
  if name not in NAMES:
    raise InputError(f"row optimizer: unknown {name!r}; choose one of {', '.join(NAMES)}")
  if not lr > 0:
    raise InputError(f"learning rate must be positive, got {lr}")
  return RowOptimizer(name, float(lr), catch_up=bool(catch_up) and name == "adam")


def init(opt: RowOptimizer, w):
  """The optimizer state of one table `w` (plain `[rows, cols]` or hashed `[size]`)."""
  if opt.name == "sgd":
    return {}
  if opt.name == "adagrad":
    return {"acc": jnp.full_like(w, opt.initial_accumulator_value)}
  # Both moments of a unit side by side (`[rows, 2, cols]` or `[size, 2]`):
  # one gather and one scatter fetch them, where the rows' random places in
  # a large table cost a cache miss each.
  state = {"mv": jnp.zeros(w.shape[:1] + (2,) + w.shape[1:], w.dtype)}
  if opt.catch_up:
    state["last"] = jnp.zeros(w.shape[:1], jnp.int32)
  return state


def adam_update(opt: RowOptimizer, g, m, v, count):
  """One Adam step on some units: `(update, m, v)`, in optax's own arithmetic.

  The expressions and their order are those of `optax.scale_by_adam`
  followed by `scale_by_learning_rate`, so the result is bit for bit what
  `optax.adam` computes for those entries; `count` (int32, the step
  number, >= 1) is a scalar, as in optax.
  """
  m = (1 - opt.b1) * (g ** 1) + opt.b1 * m
  v = (1 - opt.b2) * (g ** 2) + opt.b2 * v
  m_hat = m / (1 - jnp.float32(opt.b1) ** count).astype(m.dtype)
  v_hat = v / (1 - jnp.float32(opt.b2) ** count).astype(v.dtype)
  u = m_hat / (jnp.sqrt(v_hat + 0.0) + opt.eps)
  return (-1 * opt.lr) * u, m, v


def replay(opt: RowOptimizer, p, m, v, last, target):
  """Dense Adam's zero-gradient steps `last + 1 .. target` on units (catch-up).

  Args:
    p, m, v: the units' values and moments, `[N, ...]`.
    last: int32 `[N]`, each unit's last step (0: never touched, nothing owed).
    target: int32 scalar, the last step to replay.

  Returns:
    (p, m, v) as dense Adam leaves them after step `target`.
  """
  last = last.reshape((-1,) + (1,) * (p.ndim - 1))
  owes = (last > 0) & (last < target)
  # An opaque zero: a constant one would let XLA simplify the arithmetic
  # and round otherwise than the dense step, whose gradient is a runtime 0.
  zero = jax.lax.optimization_barrier(jnp.zeros_like(p))

  # Step by step with one scalar count, as dense Adam runs them (a count per
  # unit would take another code path for the power and round differently).
  def body(c):
    j, p, m, v = c
    u, m2, v2 = adam_update(opt, zero, m, v, j)
    on = owes & (last < j)
    return j + 1, jnp.where(on, p + u, p), jnp.where(on, m2, m), jnp.where(on, v2, v)

  first = jnp.min(jnp.where(owes, last, target), initial=target) + 1
  _, p, m, v = jax.lax.while_loop(lambda c: c[0] <= target, body, (first, p, m, v))
  return p, m, v


def repeats(units):
  """Numbers each lookup by the first position of its unit among the sorted units.

  One int32 sort and a binary search (sorting the gradients along would
  cost four times as much on CPU). Tables looked up with the same units
  (a model's plain item tables) can share it.
  """
  return jnp.searchsorted(jnp.sort(units), units, method="scan").astype(jnp.int32)


def sum_repeats(units, grads, segment=None):
  """Gives each lookup the summed gradient of its unit (repeated units add up).

  A unit's lookups are summed in their own order, the order in which the
  dense gradient's scatter-add adds them.

  Args:
    units: int `[N]`.
    grads: `[N, ...]`.
    segment: `repeats(units)`, if already computed.

  Returns:
    `[N, ...]`: per lookup, its unit's total.
  """
  segment = repeats(units) if segment is None else segment
  return jax.ops.segment_sum(grads, segment, num_segments=units.shape[0])[segment]


def _small(w, units):
  """Whether a dense pass over `w` costs less than the sparse bookkeeping."""
  return w.shape[0] <= DENSE_BELOW * units.shape[0]


# A table with at most this many units per lookup of a step (a hashed
# level's small array) takes the same rule through a masked dense update.
DENSE_BELOW = 8


def update(opt: RowOptimizer, w, state, count, units, grads, segment=None):
  """One step on the units a minibatch touched.

  With catch-up Adam, call `catch_up(opt, w, state, units, count - 1)`
  first (before the forward pass that reads the units).

  Args:
    opt: the settings.
    w: the table, plain `[rows, cols]` or hashed `[size]`.
    state: from `init` (or a previous `update`).
    count: int32 scalar, this step's number (the dense optimizer's count
      after its increment, >= 1); Adam's bias correction uses it.
    units: int `[N]` indices into `w`'s first axis; an index out of range
      (>= len(w)) is no lookup (padding).
    grads: `[N] + w.shape[1:]`, the loss's gradient with respect to each
      lookup; repeated units add up.
    segment: optional `repeats(units)`, shared with another table.

  Returns:
    (w, state).
  """
  if opt.name == "sgd":
    return w.at[units].add((-1 * opt.lr) * grads.astype(w.dtype), mode="drop"), state
  state = dict(state)
  grads = grads.astype(w.dtype)
  if _small(w, units):
    # The same rule, over the whole (small) table: its gradient summed by
    # a scatter-add into zeros (as the dense gradient is), a mask of the
    # touched units, and the update kept where the mask is set.
    g = jnp.zeros_like(w).at[units].add(grads, mode="drop")
    touched = jnp.zeros(w.shape[:1], bool).at[units].set(True, mode="drop")
    get = lambda x: x
    put = lambda x, new: jnp.where(touched.reshape((-1,) + (1,) * (x.ndim - 1)), new, x)
  else:
    g = sum_repeats(units, grads, segment)
    get = lambda x: x.at[units].get(mode="fill", fill_value=0)
    put = lambda x, new: x.at[units].set(new, mode="drop")
  p = get(w)
  if opt.name == "adagrad":
    # optax.scale_by_rss, then scale_by_learning_rate.
    acc = (g.conj() * g).real + get(state["acc"])
    inv = jnp.where(acc > 0, jax.lax.rsqrt(acc + opt.adagrad_eps), 0.0)
    state["acc"] = put(state["acc"], acc)
    return put(w, p + (-1 * opt.lr) * (inv * g)), state
  mv = get(state["mv"])
  m, v = mv[:, 0], mv[:, 1]
  if opt.catch_up:  # `catch_up(..., count - 1)` brought the units here first
    state["last"] = put(state["last"], jnp.full(get(state["last"]).shape, count))
  # Gathered once: XLA would otherwise repeat the (cache-missing) gathers in
  # each fusion that reads them (the new value, m and v).
  p, g, m, v = jax.lax.optimization_barrier((p, g, m, v))
  u, m, v = adam_update(opt, g, m, v, count)
  state["mv"] = put(state["mv"], jnp.stack([m, v], axis=1))
  return put(w, p + u), state


def catch_up(opt: RowOptimizer, w, state, units, count):
  """Brings `units` to step `count`: the zero-gradient steps they skipped (catch-up Adam).

  A step must look up caught-up rows: dense Adam has moved them by their
  momentum meanwhile, and the loss and gradient depend on where they are.
  A no-op for the other optimizers.

  Args:
    units: int `[N]` indices into `w` (out of range: none).
    count: int32 scalar, the last completed step.

  Returns:
    (w, state).
  """
  if not (opt.name == "adam" and opt.catch_up):
    return w, state
  get = lambda x: x.at[units].get(mode="fill", fill_value=0)
  put = lambda x, new: x.at[units].set(new, mode="drop")
  last = get(state["last"])
  mv = get(state["mv"])
  p, m, v = replay(opt, get(w), mv[:, 0], mv[:, 1], last, count)
  state = dict(state, mv=put(state["mv"], jnp.stack([m, v], axis=1)),
               last=put(state["last"], jnp.where(last > 0, count, 0)))
  return put(w, p), state


def flush(opt: RowOptimizer, w, state, count, bound):
  """Replays what every unit owes up to step `count` (Adam with catch-up; else a no-op).

  Args:
    bound: static, at least the number of units touched since `init` (the
      units owing steps are gathered into `bound` slots; a smaller bound
      leaves the excess unflushed).

  Returns:
    (w, state): every unit as dense Adam leaves it after step `count`.
  """
  if not (opt.name == "adam" and opt.catch_up):
    return w, state
  last = state["last"]
  n = last.shape[0]
  owes = (last > 0) & (last < count)
  idx = jnp.nonzero(owes, size=min(int(bound), n), fill_value=n)[0]
  get = lambda x: x.at[idx].get(mode="fill", fill_value=0)
  put = lambda x, new: x.at[idx].set(new, mode="drop")
  mv = get(state["mv"])
  p, m, v = replay(opt, get(w), mv[:, 0], mv[:, 1], get(last), count)
  state = dict(state, mv=put(state["mv"], jnp.stack([m, v], axis=1)),
               last=jnp.where(owes, count, last))
  return put(w, p), state
