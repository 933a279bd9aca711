"""Scoring a federated model: each level's users with the model their level holds.

One path for every algorithm: a user of level lv is scored by the level's
`eval_model` on `level.eval_view(params with every user's rows, seeds)`,
the view taken once for the level, or once per user where each client
hashes with its own seeds (`level.per_client`).

A level that an algorithm excludes (`level.trains` is False: a level that
cannot hold the algorithm's sub-model) holds no model.
Its users are served the popularity ranking, which a device can use without
holding anything (`excluded="popularity"`, the reported default); the older
view, scoring them with the global model they could not hold, is
`excluded="global"` (metrics.jsonl's `global_view/` keys).
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


EXCLUDED = ("popularity", "global")


def popularity_scores(train_items, num_items, seed=0):
  """Training counts per item with a tiny seeded jitter, so equal counts do not tie."""
  counts = np.bincount(np.asarray(train_items), minlength=num_items).astype(np.float32)
  counts += np.random.default_rng(seed).uniform(0, 1e-3, counts.shape).astype(np.float32)
  return counts


def popularity_fn(scores):
  """`(users, items) -> scores` that ranks by `scores[item]` (popularity_scores)."""
  return lambda users, items: scores[np.asarray(items)]


class Scorer:
  """Scoring functions of a run's levels, compiled once and reused every evaluation.

  Args:
    algorithm: the `Algorithm`.
    table_names: its item tables' names.
    popularity: scores per item (`popularity_scores`) served to the users of
      excluded levels; None scores them with the global model.
  """

  def __init__(self, algorithm, table_names, popularity=None):
    self.algorithm, self.table_names = algorithm, table_names
    self.popularity = popularity
    self._programs = {}

  @property
  def excludes(self):
    """Whether some level holds no model (its users' scores depend on `excluded`)."""
    return any(not level.trains for level in self.algorithm.levels)

  def score_fns(self, state, excluded="popularity"):
    """One `(users, items) -> scores` per level, for the model in `state`.

    Args:
      state: the run's state.
      excluded: how users of excluded levels are scored: "popularity" (the
        ranking a device can use without holding a model) or "global" (the
        global model and their untrained rows).
    """
    if excluded not in EXCLUDED:
      raise ValueError(f"excluded={excluded!r}; choose one of {EXCLUDED}")
    users = {n: {"embedding": e} for n, e in state["users"].items()}
    rnd = int(state["round"])
    fns = []
    for lv, level in enumerate(self.algorithm.levels):
      if not level.trains and excluded == "popularity" and self.popularity is not None:
        fns.append(popularity_fn(self.popularity))
        continue
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
