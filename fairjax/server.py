"""Server side: screening client updates, weighting them, the server optimizer.

The aggregate of a round is `G = sum_k p_k expand_{c_k}(delta_k)` with
`p_k` proportional to client k's example count (delta mode), or
`G = sum_k p_k expand_{c_k}(w'_k) - theta` (weights mode, the paper code's
weight averaging). The server optimizer receives `-G` as its gradient:
SGD with learning rate 1 is FedAvg; Adam or Yogi give FedAdam / FedYogi.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

AGGREGATES = ("delta", "weights")


class Screen(NamedTuple):
  """Robust-aggregation settings (0 disables a bound)."""
  max_norm: float = 0.0
  clip_norm: float = 0.0


def global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def screen_update(delta, screen: Screen):
  """Accepts or rejects one client's delta; optionally clips it.

  Args:
    delta: the client's update pytree (in its own subspace).
    screen: the bounds.

  Returns:
    (delta with rejected entries zeroed and clipping applied, accepted bool,
    norm before clipping).
  """
  norm = global_norm(delta)
  ok = jnp.isfinite(norm)
  if screen.max_norm > 0:
    ok &= norm <= screen.max_norm
  scale = jnp.where(ok, 1.0, 0.0)
  if screen.clip_norm > 0:
    scale *= jnp.minimum(1.0, screen.clip_norm / jnp.maximum(norm, 1e-12))
  # where(), not multiply: 0 * inf is nan.
  delta = jax.tree.map(lambda d: jnp.where(ok, d * scale.astype(d.dtype), 0), delta)
  return delta, ok, norm


def weighted_sum(trees, weights):
  """sum_k weights[k] * trees[k] over the leading (client) axis."""
  return jax.tree.map(lambda x: jnp.tensordot(weights.astype(x.dtype), x, axes=1), trees)


def server_step(optimizer: optax.GradientTransformation, params, opt_state, total, weight,
                aggregate):
  """Applies one round's aggregate; leaves the state as is when weight == 0.

  Args:
    optimizer: the server optimizer.
    params: the server's params (full tables).
    opt_state: its state.
    total: sum over clients of weight * expanded delta (or weights).
    weight: the sum of the clients' weights.
    aggregate: "delta" or "weights".

  Returns:
    (params, opt_state).
  """
  w = jnp.maximum(weight, 1e-12)
  if aggregate == "delta":
    g = jax.tree.map(lambda t: t / w, total)
  else:
    g = jax.tree.map(lambda t, p: t / w - p, total, params)
  grads = jax.tree.map(jnp.negative, g)
  updates, new_state = optimizer.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  live = weight > 0
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(live, a, b), new, old)
  return keep(new_params, params), keep(new_state, opt_state)
