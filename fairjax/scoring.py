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

Each scoring function also has a `grid(users [U], items [C]) -> [U, C]`
(every user against the same items: the full protocol's chunks, see
`metrics.full_topk`). Where the level's users share one view it computes
the NCF model factorised: each item's rows and the item half of the first
MLP layer once per item, each user's half once per user, and per pair only
what mixes them (`ncf_grid`); the scores equal the model's to float rounding.
"""
import jax
import jax.numpy as jnp
import numpy as np

from fairjax import models
from fairjax import subspace


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


def _rows(module, view, name, ids, seeds):
  """Rows `ids` of table `name` as `models.Embedding` computes them."""
  p = view[name]
  if "u" in p:  # low-rank factors (FedHM)
    return p["u"][ids] @ p["v"].T
  spec = dict(module.tables)[name]
  if seeds and name in seeds:
    spec = spec._replace(seed=seeds[name])
  return subspace.lookup(p["embedding"], spec, ids)


def ncf_grid(module, view, users, items, seeds=None):
  """`NCF` logits of every user in `users` [U] with every item in `items` [C]: [U, C].

  The math of `models.NCF.__call__`, arranged for a grid: the first MLP
  layer's product `concat(u, v) @ W0` is split into `u @ W0[:d] + v @ W0[d:]`
  (once per user and once per item), the GMF part and the head's GMF
  weights become one `[U, d] @ [d, C]` product. Per pair only the MLP's
  later layers run.
  """
  head = view["head"]
  w_head = head["kernel"][:, 0]
  logits = jnp.zeros((users.shape[0], items.shape[0]), w_head.dtype) + head["bias"][0]
  at = 0
  if module.kind in ("gmf", "neumf"):
    u = _rows(module, view, "user_gmf", users, seeds)
    v = _rows(module, view, "item_gmf", items, seeds)
    d = u.shape[-1]
    logits = logits + (u * w_head[at:at + d]) @ v.T
    at += d
  if module.kind in ("mlp", "neumf"):
    u = _rows(module, view, "user_mlp", users, seeds)
    v = _rows(module, view, "item_mlp", items, seeds)
    first = view["mlp_0"]
    d = u.shape[-1]
    a = u @ first["kernel"][:d] + first["bias"]  # [U, w0], once per user
    b = v @ first["kernel"][d:]  # [C, w0], once per item

    def tower(b_block):
      h = jax.nn.relu(a[:, None, :] + b_block[None, :, :])
      for i in range(1, len(module.mlp_layers)):
        layer = view[f"mlp_{i}"]
        h = jax.nn.relu(h @ layer["kernel"] + layer["bias"])
      return h @ w_head[at:]

    # Blocks of GRID_BLOCK items keep a block's [U, block, width] activations
    # in cache: written whole for a large chunk, the first layer's sum alone
    # cost as much as the products (memory-bound), 4x the time in all.
    c = items.shape[0]
    pad = -c % GRID_BLOCK
    blocks = jnp.pad(b, ((0, pad), (0, 0))).reshape(-1, GRID_BLOCK, b.shape[-1])
    out = jax.lax.map(tower, blocks)  # [blocks, U, GRID_BLOCK]
    logits = logits + out.transpose(1, 0, 2).reshape(users.shape[0], -1)[:, :c]
  if module.prior:  # the popularity prior (models.NCF): once per item
    rows = dict(module.tables)[models.table_names(module.kind)[1]].rows
    logits = logits + models.prior_at(view["prior"], rows, items)[None, :]
  return logits


GRID_BLOCK = 64


def grid_program(level, table_names):
  """`(view(params, users_tab, seeds), grid(view, u [U], items [C], seeds) -> [U, C])`, jitted.

  For a level whose users share one view (not `level.per_client`). The
  view (a hashed level's collapse of the full tables) is taken once per
  evaluation, not once per chunk of items.
  """
  module = level.eval_model.module

  def view(params, users_tab, seeds):
    return level.eval_view(models.merge_user_params(users_tab, params), seeds)

  def grid(view, u, items, seeds):
    return ncf_grid(module, view, u, items, level.model_seeds(table_names, seeds))
  return jax.jit(view), jax.jit(grid)



EXCLUDED = ("popularity", "global")


def popularity_scores(train_items, num_items, seed=0):
  """Training counts per item with a tiny seeded jitter, so equal counts do not tie."""
  counts = np.bincount(np.asarray(train_items), minlength=num_items).astype(np.float32)
  counts += np.random.default_rng(seed).uniform(0, 1e-3, counts.shape).astype(np.float32)
  return counts


def popularity_fn(scores):
  """`(users, items) -> scores` that ranks by `scores[item]` (popularity_scores).

  Its `grid(users [U], items [C]) -> [U, C]` scores every user on the same items.
  """
  def score(users, items):
    return scores[np.asarray(items)]
  score.grid = lambda users, items: np.broadcast_to(
      scores[np.asarray(items)][None, :], (len(users), len(items)))
  return score


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
        grid = None if level.per_client else grid_program(level, self.table_names)
        self._programs[lv] = (score_program(level, self.table_names), grid)
      fns.append(self._bind(*self._programs[lv], state["params"], users, rnd))
    return fns

  def _bind(self, fn, grid_fn, params, users, rnd):
    def score(u, items):
      u = np.asarray(u)
      seeds = self.algorithm.client_seeds(u, rnd)
      return fn(params, users, jnp.asarray(u), jnp.asarray(items), jnp.asarray(seeds))

    views = {}

    def grid(u, items):
      u = np.asarray(u)
      if grid_fn is None:  # each user its own view: the pairwise path
        return score(u, np.broadcast_to(np.asarray(items), (len(u), len(items))))
      seeds = jnp.asarray(self.algorithm.client_seeds(u[:1], rnd)[0])
      key = tuple(np.asarray(seeds).tolist())
      if key not in views:  # one view per evaluation (this bound function)
        views[key] = grid_fn[0](params, users, seeds)
      return grid_fn[1](views[key], jnp.asarray(u), jnp.asarray(items), seeds)
    score.grid = grid
    return score
