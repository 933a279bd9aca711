"""FedHM (Yao et al., 2021): item tables as low-rank factors U V^T.

A client of compression c holds the truncated SVD of each item table at
rank r = floor(n d / (c (n + d))), the largest its memory holds (factors
cost r (n + d) floats against n d); the server averages the products
U'V'^T - U V^T. A device whose memory holds the plain table (c = 1) trains
it as it is, as FedHM's largest clients do; rank 0 means the device is
dropped. The product is not linear in the factors, so each client's update
is mapped to the full tables before the sum.
"""
import fractions
import math

import jax
import jax.numpy as jnp

from fairjax import subspace
from fairjax.algorithms import base
from fairjax.algorithms import hashed


def fedhm(ctx):
  """The FedHM algorithm on `ctx`'s levels."""
  (rows, d), = set(ctx.shapes.values())
  full = hashed.spec_at(ctx, 1)
  agg = base.make_aggregator(ctx.fair.aggregate, ctx.levels, name="fedhm")
  levels = []
  for c, name in zip(ctx.levels.compressions, ctx.levels.names):
    rank = fedhm_rank(rows, d, c)
    if c == 1 or rank == 0:
      levels.append(hashed.hashed_level(ctx, c, name, c == 1, full, agg))
      continue
    levels.append(_low_rank_level(ctx, c, name, rank, agg))
  base.check_trains(levels, "fedhm", ctx.levels)
  return base.Algorithm(tuple(levels), agg, *base.same_seeds(hashed.spec_seeds(full)))


def _low_rank_level(ctx, c, name, rank, agg):
  down = low_rank_subspace(ctx.shapes, rank)

  def contribute(start, delta, ok, seeds):
    del seeds
    if agg.of_weights:
      return down.expand(agg.value(start, delta, ok))
    # A nonlinear expand (u v^T) does not commute with the sum.
    new = down.expand(jax.tree.map(jnp.add, start, delta))
    return jax.tree.map(jnp.subtract, new, down.expand(start))

  return base.Level(
      c, name, True, ctx.build_model(1, item_rank=rank),
      ctx.build_model(ctx.num_users, item_rank=rank), tuple((p[0],) for p in ctx.shapes),
      broadcast=lambda params, seeds: down.collapse(params),
      held=lambda params, shared, seeds: shared, contribute=contribute,
      lift=base.identity_lift, eval_view=lambda params, seeds: down.collapse(params))


def fedhm_rank(rows, cols, c):
  """FedHM's rank at compression `c`: floor(n d / (c (n + d))), at most min(n, d).

  The factors `u [n, r]`, `v [d, r]` cost r (n + d) floats, so this is the
  largest rank within the device's n d / c floats; 0 means it holds none.
  """
  r = math.floor(fractions.Fraction(rows * cols, rows + cols) / fractions.Fraction(c))
  return min(r, rows, cols)


def low_rank_subspace(shapes, rank) -> subspace.Subspace:
  """FedHM's sub-model: each item table as rank-`rank` factors.

  `collapse` is the truncated SVD `T ~ (U S^1/2)(V S^1/2)^T`, the best
  rank-r approximation (Eckart-Young), split evenly between the factors so
  local SGD moves both at the same scale; `expand` is the product `u v^T`.
  `expand` is not linear: a client's update in the server's space is
  `u' v'^T - u v^T` (see `LevelPlan.expand_each`).

  Args:
    shapes: dict item-table path -> (rows, cols).
    rank: the factors' rank, 1 <= rank <= min(rows, cols).

  Returns:
    A `Subspace` mapping {"embedding": T} to {"u": ..., "v": ...} and back.
  """
  names = [p[0] for p in shapes]

  def collapse(params):
    out = dict(params)
    for t in names:
      u, s, vt = jnp.linalg.svd(params[t]["embedding"], full_matrices=False)
      root = jnp.sqrt(s[:rank])
      out[t] = {"u": u[:, :rank] * root, "v": vt[:rank].T * root}
    return out

  def expand(params):
    out = dict(params)
    for t in names:
      out[t] = {"embedding": params[t]["u"] @ params[t]["v"].T}
    return out

  return subspace.Subspace(collapse, expand)
