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
  # An update whose squared norm overflows float32 (entries beyond ~1e19)
  # has an infinite norm, so it is rejected even with max_norm off.
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


def average(total, weight, params, aggregate, coverage=None):
  """The averaged update `g` of a round's weighted sum (what the server applies as `-g`).

  Args:
    total: sum over clients of weight * expanded delta (or weights).
    weight: the sum of the clients' weights.
    params: the server's params (full tables).
    aggregate: "delta" or "weights".
    coverage: optional pytree like `params`: per entry, the summed weight of
      the clients that hold it (HeteroFL). Each entry is then averaged over
      those clients only; an entry no client held gets 0 (it stays as it is).
  """
  if coverage is not None:
    held = lambda c: c > 0
    per = lambda t, c: jnp.where(held(c), t / jnp.maximum(c, 1e-12), 0)
    if aggregate == "delta":
      return jax.tree.map(per, total, coverage)
    return jax.tree.map(lambda t, c, p: jnp.where(held(c), per(t, c) - p, 0),
                        total, coverage, params)
  w = jnp.maximum(weight, 1e-12)
  if aggregate == "delta":
    return jax.tree.map(lambda t: t / w, total)
  return jax.tree.map(lambda t, p: t / w - p, total, params)


def server_step(optimizer: optax.GradientTransformation, params, opt_state, total, weight,
                aggregate, coverage=None):
  """Applies one round's aggregate (`average`); leaves the state as is when weight == 0.

  Returns:
    (params, opt_state).
  """
  g = average(total, weight, params, aggregate, coverage)
  return apply_average(optimizer, params, opt_state, g, weight)


def apply_average(optimizer, params, opt_state, g, weight):
  """Feeds an averaged update -g to the server optimizer; keeps the state when no client answered.

  The state is also kept when the step would make it non-finite, so the
  server never holds inf or NaN whatever the clients send.
  """
  grads = jax.tree.map(jnp.negative, g)
  updates, new_state = optimizer.update(grads, opt_state, params)
  new_params = optax.apply_updates(params, updates)
  # Screened updates are finite, yet their sum or a large server step can
  # still overflow: a step that would make the state non-finite is skipped.
  finite = [jnp.isfinite(x).all() for x in jax.tree.leaves((new_params, new_state))]
  live = (weight > 0) & jnp.stack(finite).all()
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(live, a, b), new, old)
  return keep(new_params, params), keep(new_state, opt_state)


def nested_average(level_totals, level_weights, projections):
  """Averages each nested layer of the subspaces over the clients that hold it.

  With consistent, collapsible subspaces P_1 ⊂ P_2 ⊂ ... (most compressed
  first), the space splits into orthogonal layers L_j = P_j - P_{j-1}. Layer
  j is held by the clients of level j and of every larger level, so its
  average divides by their weight only. Plain `delta` averaging divides
  every layer by the weight of all clients, which shrinks what only the
  large devices can learn by the share of small devices in the round.

  Args:
    level_totals: per level (most compressed first), sum_k w_k expand(delta_k).
    level_weights: per level, sum_k w_k.
    projections: per level, params -> expand(collapse(params)) onto its subspace.

  Returns:
    The averaged update g (a pytree like the totals).
  """
  total = level_totals[0]
  for t in level_totals[1:]:
    total = jax.tree.map(jnp.add, total, t)
  g = jax.tree.map(jnp.zeros_like, total)
  below = jax.tree.map(jnp.zeros_like, total)
  for j, proj in enumerate(projections):
    held = sum(level_weights[j:])
    here = proj(total)
    layer = jax.tree.map(jnp.subtract, here, below)
    scale = jnp.where(held > 0, 1.0 / jnp.maximum(held, 1e-12), 0.0)
    g = jax.tree.map(lambda a, b: a + b * scale.astype(b.dtype), g, layer)
    below = here
  return g
