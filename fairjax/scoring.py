"""Scoring a federated model: each level's users with the model their level holds.

One path for every algorithm: a user of level lv is scored by the level's
`eval_model` on `level.eval_view(params with every user's rows, seeds)`,
the view taken once for the level, or once per user where each client
hashes with its own seeds (`level.per_client`).
"""
import jax
import jax.numpy as jnp
import numpy as np

from fairjax import models


def view_scores(level, table_names):
  """`scores(view, u [B], items [B, C], seeds) -> [B, C]`: the level's eval model on a
  view (user rows included); a deployed device scores with it on the view it holds."""
  model = level.eval_model

  def scores(view, u, items, seeds):
    return model.apply(view, jnp.broadcast_to(u[..., None] if u.ndim else u, items.shape),
                       items, level.model_seeds(table_names, seeds))
  return scores


def score_program(level, table_names):
  """`score(params, users_tab, u [B], items [B, C], seeds [B, tables]) -> [B, C]`, jitted."""
  scores = view_scores(level, table_names)

  def score_with(params, users_tab, u, items, seeds):
    view = level.eval_view(models.merge_user_params(users_tab, params), seeds)
    return scores(view, u, items, seeds)

  def score(params, users_tab, u, items, seeds):
    if not level.per_client:  # the level's users share their seeds: one view
      return score_with(params, users_tab, u, items, seeds[0])
    return jax.lax.map(lambda xs: score_with(params, users_tab, *xs), (u, items, seeds),
                       batch_size=8)
  return jax.jit(score)


class Scorer:
  """Scoring functions of a run's levels, compiled once and reused every evaluation."""

  def __init__(self, algorithm, table_names):
    self.algorithm, self.table_names = algorithm, table_names
    self._programs = {}

  def score_fns(self, state):
    """One `(users, items) -> scores` per level, for the model in `state`."""
    users = {n: {"embedding": e} for n, e in state["users"].items()}
    rnd = int(state["round"])
    fns = []
    for lv, level in enumerate(self.algorithm.levels):
      if lv not in self._programs:
        self._programs[lv] = score_program(level, self.table_names)
      fns.append(self._bind(self._programs[lv], state["params"], users, rnd))
    return fns

  def _bind(self, fn, params, users, rnd):
    def score(u, items):
      u = np.asarray(u)
      seeds = self.algorithm.client_seeds(u, rnd)
      return fn(params, users, jnp.asarray(u), jnp.asarray(items), jnp.asarray(seeds))
    return score
