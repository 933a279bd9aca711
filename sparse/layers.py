"""Sampled layers: pure functions of gathered weight rows.

The trick that makes a sampled layer cheap in JAX: gather the active rows
first (`W[active]`), differentiate with respect to the *gathered* rows, and
write the update back with `W.at[active].set(...)` on a donated buffer.
Differentiating through `W[idx]` instead builds a dense `N x D` zero
gradient (measured: as slow as the dense layer), and
`bcoo_dot_general_sampled`'s gradient is dense too.

Conventions: `rows` index a table of `n` rows; padding indices equal `n`
(out of range), are read as zeros and dropped on write.
"""
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "linear": lambda x: x,
               "sigmoid": jax.nn.sigmoid, "gelu": jax.nn.gelu}


def gather_rows(table: jax.Array, rows: jax.Array) -> jax.Array:
  """`table[rows]` with out-of-range (padding) rows read as zeros."""
  return table.at[rows].get(mode="fill", fill_value=0)


def embed_bag(rows: jax.Array, inv: jax.Array, vals: jax.Array) -> jax.Array:
  """Sparse inputs times a weight matrix, from the gathered input rows.

  Args:
    rows: `(U, D)` weight rows of the distinct feature ids in the batch.
    inv: `(B, P)` index of each nonzero into `rows`.
    vals: `(B, P)` feature values (0 for padding).

  Returns:
    `(B, D)` = sum_p vals[b, p] * rows[inv[b, p]].
  """
  return jnp.einsum("bp,bpd->bd", vals, rows[inv])


def softmax_xent(logits: jax.Array, label_pos: jax.Array,
                 mask: jax.Array) -> jax.Array:
  """Mean cross-entropy against a uniform target over each example's labels.

  Args:
    logits: `(B, K)` scores of the candidate neurons.
    label_pos: `(B, M)` positions of the labels among the K, -1 = padding.
    mask: `(B,)` 1 for real examples, 0 for batch padding.

  Returns:
    Scalar loss, averaged over real examples.
  """
  lse = jax.nn.logsumexp(logits, axis=-1)
  valid = label_pos >= 0
  picked = jnp.take_along_axis(logits, jnp.maximum(label_pos, 0), axis=-1)
  n_lab = jnp.maximum(valid.sum(-1), 1)
  label_logit = jnp.sum(jnp.where(valid, picked, 0.0), -1) / n_lab
  per_example = lse - label_logit
  return jnp.sum(per_example * mask) / jnp.maximum(mask.sum(), 1.0)


def shared_logits(h: jax.Array, w_rows: jax.Array, b_rows: jax.Array
                  ) -> jax.Array:
  """Logits over one active set shared by the batch: `(B, K)`."""
  return h @ w_rows.T + b_rows


def per_example_logits(h: jax.Array, w_rows: jax.Array, b_rows: jax.Array,
                       inv: jax.Array) -> jax.Array:
  """Logits over per-example active sets.

  Args:
    h: `(B, D)` inputs to the layer.
    w_rows: `(U, D)` rows of the distinct active neurons of the batch.
    b_rows: `(U,)` their biases.
    inv: `(B, k)` index of each example's active neurons into `w_rows`.

  Returns:
    `(B, k)` logits.
  """
  return jnp.einsum("bd,bkd->bk", h, w_rows[inv]) + b_rows[inv]


def sampled_dense(x: jax.Array, w: jax.Array, b: jax.Array,
                  active_mask: jax.Array, activation: str) -> jax.Array:
  """A sampled hidden layer: outputs outside each example's active set are 0.

  The mask multiplies the output, so the gradient into weight row `j` is zero
  for every example where `j` is inactive.

  Args:
    x: `(B, D_in)`.
    w: `(units, D_in)`.
    b: `(units,)`.
    active_mask: `(B, units)` 1.0 where the neuron is active.
    activation: name in `ACTIVATIONS`.

  Returns:
    `(B, units)`.
  """
  return ACTIVATIONS[activation](x @ w.T + b) * active_mask


class AdamConfig(NamedTuple):
  learning_rate: float = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8


def adam_direction(g, m, v, count, cfg: AdamConfig):
  """One Adam step from moments; returns `(delta, m, v)` (optax's formula)."""
  m = cfg.b1 * m + (1 - cfg.b1) * g
  v = cfg.b2 * v + (1 - cfg.b2) * jnp.square(g)
  t = count.astype(jnp.float32)
  m_hat = m / (1 - cfg.b1**t)
  v_hat = v / (1 - cfg.b2**t)
  return -cfg.learning_rate * m_hat / (jnp.sqrt(v_hat) + cfg.eps), m, v


def catch_up_factor(last: jax.Array, count: jax.Array, cfg: AdamConfig,
                    horizon: int = 64) -> jax.Array:
  """Movement of dense Adam over steps with zero gradient, per unit m/sqrt(v).

  A row last updated at step `s = last` whose gradient is zero at steps
  `s+1 .. count` (here: steps where it was outside the active set) would,
  under dense Adam, still move at each of them, by
  `-lr * m_hat_k / sqrt(v_hat_k)` with `m_k = b1^k m`, `v_k = b2^k v`:
  momentum keeps carrying it for ~1/(1-b1) steps. This returns
  `sum_k b1^k / sqrt(b2^k) * sqrt(1 - b2^(s+k)) / (1 - b1^(s+k))` over the
  first `min(count - s, horizon)` of those steps (later terms are below
  `b1^horizon`), so the movement is `-lr * factor * m / sqrt(v)`.

  Args:
    last: `(R,)` int32 step of each row's last update (0 = never).
    count: scalar int32, the step to catch up to (inclusive).
    cfg: Adam settings.
    horizon: number of terms summed.

  Returns:
    `(R,)` float32 factors.
  """
  k = jnp.arange(1, horizon + 1, dtype=jnp.float32)
  s = last.astype(jnp.float32)[:, None]
  # b^(s+k) as b^s * b^k: one power per row, not per term.
  b1_t = cfg.b1**s * cfg.b1**k
  b2_t = cfg.b2**s * cfg.b2**k
  terms = (cfg.b1 / jnp.sqrt(cfg.b2))**k * jnp.sqrt(1 - b2_t) / (1 - b1_t)
  skipped = (count - last).astype(jnp.float32)[:, None]
  return jnp.sum(jnp.where(k <= skipped, terms, 0.0), -1)


def catch_up_rows(param_r, m_r, v_r, last_r, count, cfg: AdamConfig):
  """Applies the zero-gradient dense Adam steps `last_r+1 .. count` to rows.

  Returns `(param_r, m_r, v_r)` as dense Adam would have left them at step
  `count` had the rows' gradients been zero since their last update.
  """
  f = catch_up_factor(last_r, count, cfg)
  shape = (-1,) + (1,) * (param_r.ndim - 1)
  # Rows never updated have m = v = 0 and do not move.
  direction = jnp.where(v_r > 0, m_r / (jnp.sqrt(v_r) + cfg.eps), 0.0)
  skipped = (count - last_r).astype(jnp.float32).reshape(shape)
  return (param_r - cfg.learning_rate * f.reshape(shape) * direction,
          m_r * cfg.b1**skipped, v_r * cfg.b2**skipped)


def lazy_adam_rows(param: jax.Array, m: jax.Array, v: jax.Array,
                   rows: jax.Array, grad_rows: jax.Array, count: jax.Array,
                   cfg: AdamConfig, last: Optional[jax.Array] = None):
  """Adam on the rows a batch touched only (TensorFlow's LazyAdam).

  Moments of untouched rows stay as they were; bias correction uses the
  global step `count` (already incremented). Padding rows (== len(param))
  are dropped.

  With `last` (`(n,)` int32, the step of each row's last update), a touched
  row first catches up on the steps it skipped, as dense Adam would have
  moved it with zero gradients there (`catch_up_rows`); `last` is returned
  updated as a fourth element.

  Returns:
    `(param, m, v)` (or `(param, m, v, last)`) with the touched rows updated.
  """
  m_r, v_r = gather_rows(m, rows), gather_rows(v, rows)
  p_r = gather_rows(param, rows)
  if last is not None:
    p_r, m_r, v_r = catch_up_rows(p_r, m_r, v_r, gather_rows(last, rows),
                                  count - 1, cfg)
  delta, m_r, v_r = adam_direction(grad_rows, m_r, v_r, count, cfg)
  p_r = p_r + delta
  out = (param.at[rows].set(p_r, mode="drop"),
         m.at[rows].set(m_r, mode="drop"), v.at[rows].set(v_r, mode="drop"))
  if last is None:
    return out
  return out + (last.at[rows].set(count, mode="drop"),)


def adam_dense(param, m, v, g, count, cfg: AdamConfig, row_mask=None):
  """Adam on a whole parameter; with `row_mask`, only rows where it is 1."""
  delta, m2, v2 = adam_direction(g, m, v, count, cfg)
  if row_mask is None:
    return param + delta, m2, v2
  keep = row_mask.reshape((-1,) + (1,) * (param.ndim - 1)) > 0
  return (jnp.where(keep, param + delta, param), jnp.where(keep, m2, m),
          jnp.where(keep, v2, v))
