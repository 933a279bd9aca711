"""Heterogeneous federated simulation: sampling, levels, vmap, the round loop.

A round (DESIGN.md, "One round"):
  1. sample clients without replacement, stratified by capacity level so
     every level contributes a fixed number of clients (fixed shapes: one
     compiled program per level for the whole run);
  2. per level, collapse the server params once (broadcast), run the
     level's clients as one vmapped (or scanned) program, screen their
     updates and reduce them to one weighted sum, then expand it;
  3. the server optimizer applies the sum over levels.

Randomness of round r comes from (seed, r) alone, so a run resumed from a
checkpoint replays exactly what an uninterrupted run does.
"""
import functools
import math
import os
import sys
import time
from typing import List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fairjax import algorithms
from fairjax import capacity
from fairjax import checkpoint
from fairjax import client as client_lib
from fairjax import data as data_lib
from fairjax import metrics
from fairjax import models
from fairjax import server as server_lib
from fairjax import sharding
from fairjax import subspace
from fairjax.centralized import make_optimizer
from fairjax.errors import InputError

EXECUTIONS = ("vmap", "scan")
# fair.lift -> power of the bucket counts in P D^-power (see subspace.adjoint).
LIFTS = {"expand": 0.0, "isometric": 0.5, "adjoint": 1.0}
# fair.view: what a client of a hashed level holds. "mean": the bucket means
# (collapse, the design's view). "lift": the means scaled by count^power, the
# left inverse of fair.lift's map (with lift=isometric a client holds
# D^-1/2 P^T table, whose entries keep the full table's scale).
VIEWS = ("mean", "lift")


class LevelBatch(NamedTuple):
  """One level's sampled clients for one round (host arrays)."""
  users: np.ndarray    # int32 [K]
  items: np.ndarray    # int32 [K, L]
  mask: np.ndarray     # bool [K, L]
  weights: np.ndarray  # float32 [K]: example count, 0 if the client dropped out
  seeds: np.ndarray    # int32 [K, tables]: hash seeds (inconsistent runs)
  poison: Optional[np.ndarray] = None  # float32 [K]: upload factor (client.poison)


# client.poison, a test hook: one client per round, chosen from (seed, round)
# alone, misbehaves. "nan" and "huge" multiply its upload by NaN or 1e30 (the
# screen must reject it); "drop" makes it drop out instead, the reference run
# whose results a screened poisoned run must reproduce.
POISONS = {"": None, "nan": float("nan"), "huge": 1e30, "drop": 0.0}


def server_optimizer(cfg):
  """The server optimizer of `cfg` (config.server), with its `eps` if set.

  `eps` is the adaptivity tau of FedAdam / FedYogi (Reddi et al., 2021):
  coordinates whose averaged update stays far below it move by less than
  `lr` a round, where optax's default 1e-8 normalises even a faint but
  steady update (such as hash-collision noise) to a full step.
  """
  eps = float(cfg.get("eps", 0.0))
  if not math.isfinite(eps) or eps < 0:
    raise InputError(f"server.eps: must be a finite number >= 0, got {cfg.eps}")
  return make_optimizer(cfg.optimizer, cfg.lr, eps=eps or None)


def apportion(total, fractions, caps):
  """Integer counts summing to <= total, proportional to fractions, capped."""
  fractions = np.asarray(fractions, float)
  raw = fractions / fractions.sum() * total
  counts = np.floor(raw).astype(int)
  for i in np.argsort(-(raw - counts), kind="stable")[:total - counts.sum()]:
    counts[i] += 1
  return np.minimum(counts, caps)


def _held(shared, spec, view_power):
  """What a client of a hashed level holds (fair.view): its collapse, rescaled by
  `count^view_power` (nothing to do at power 0, the design's bucket means)."""
  return subspace.rescale_map(spec, view_power)(shared) if view_power else shared


def _map_groups(fn, xs, size):
  """Runs `fn` on consecutive groups of `size` clients (the last may be smaller).

  `fn(group) -> (summed, per_client)`: the `summed` outputs are added over
  groups, the `per_client` ones concatenated back to one row per client.
  """
  k = jax.tree.leaves(xs)[0].shape[0]
  size = max(1, min(size, k))
  full = k // size * size
  total, rows = None, []
  if full:
    head = jax.tree.map(lambda x: x[:full].reshape((k // size, size) + x.shape[1:]), xs)
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        jax.eval_shape(fn, jax.tree.map(lambda x: x[0], head))[0])

    def body(acc, group):
      summed, per = fn(group)
      return jax.tree.map(jnp.add, acc, summed), per

    total, per = jax.lax.scan(body, zero, head)
    rows.append(jax.tree.map(lambda y: y.reshape((full,) + y.shape[2:]), per))
  if k > full:
    summed, per = fn(jax.tree.map(lambda x: x[full:], xs))
    total = summed if total is None else jax.tree.map(jnp.add, total, summed)
    rows.append(per)
  per = rows[0] if len(rows) == 1 else jax.tree.map(lambda *r: jnp.concatenate(r), *rows)
  return (*total, per)


class Simulation:
  """The state-free parts of a federated run: plan, models, programs.

  Args:
    config: the experiment ConfigDict.
    dataset: a `fairjax.data.Dataset`.
  """

  def __init__(self, config, dataset):
    self.config = config
    self.dataset = dataset
    cfg_fair = config.fair
    if cfg_fair.aggregate not in server_lib.AGGREGATES:
      raise InputError(f"fair.aggregate: unknown mode {cfg_fair.aggregate!r}; choose one "
                       f"of {', '.join(server_lib.AGGREGATES)}")
    lift = cfg_fair.get("lift", "expand")
    if lift not in LIFTS:
      raise InputError(f"fair.lift: unknown mode {lift!r}; choose one of {', '.join(LIFTS)}")
    if lift != "expand" and cfg_fair.aggregate == "weights":
      raise InputError(f"fair.lift={lift} maps updates, not weights: use fair.aggregate=delta "
                       "or nested with it")
    self.lift = lift
    view = cfg_fair.get("view", "mean")
    if view not in VIEWS:
      raise InputError(f"fair.view: unknown mode {view!r}; choose one of {', '.join(VIEWS)}")
    self.view = view
    alpha = float(cfg_fair.get("level_weight", 0.0))
    if not math.isfinite(alpha) or alpha < 0:
      raise InputError(f"fair.level_weight: must be a finite number >= 0, got {alpha}")
    if cfg_fair.execution not in EXECUTIONS:
      raise InputError(f"fair.execution: unknown mode {cfg_fair.execution!r}; choose one "
                       f"of {', '.join(EXECUTIONS)}")
    for key in ("rounds", "clients_per_round", "local_epochs"):
      if int(config[key]) < 1:
        raise InputError(f"{key}: must be >= 1, got {config[key]}")
    c = config.client
    if c.batch_size < 1 or c.num_negatives < 1 or c.max_items < 1:
      raise InputError("client: batch_size, num_negatives and max_items must be >= 1")
    if not 0.0 <= c.dropout <= 1.0:
      raise InputError(f"client.dropout: must be a probability in [0, 1], got {c.dropout}")
    self.levels = capacity.parse_capacities(config.capacities)
    self.user_level = capacity.assign_levels(dataset.num_users, self.levels, config.seed)
    kind = config.model
    full = models.make_model(kind, 1, dataset.num_items, config.embed_dim,
                             tuple(config.mlp_layers))
    self.kind = kind
    self.full_model = full
    self.shapes = {p: (dataset.num_items, int(config.embed_dim))
                   for p in models.item_table_paths(kind)}
    self.plan = algorithms.make_plan(config.algorithm, self.levels, self.shapes,
                                     cfg_fair.hash_seed, self._model, dataset.num_users,
                                     cfg_fair.exact_sizes)
    self.table_names = [p[0] for p in self.shapes]
    self.local_opt = make_optimizer(c.optimizer, c.lr)
    self.server_opt = server_optimizer(config.server)
    models.get_loss(c.loss)
    sparse = bool(c.get("sparse_update", True)) and c.optimizer == "sgd"
    self.local_cfg = client_lib.LocalConfig(c.loss, dataset.num_items, int(c.num_negatives),
                                            int(c.batch_size), int(config.local_epochs),
                                            float(c.lr) if sparse else 0.0)
    self.screen = server_lib.Screen(float(config.server.max_update_norm),
                                    float(config.server.clip_norm))
    self.indptr, self.items = data_lib.train_csr(dataset)
    counts = np.diff(self.indptr)
    self.level_users = [np.flatnonzero((self.user_level == lv) & (counts > 0))
                        for lv in range(len(self.levels.compressions))]
    caps = np.array([len(u) if lp.trains else 0
                     for u, lp in zip(self.level_users, self.plan.levels)])
    # p_k ∝ examples_k * c_k^-level_weight (0: examples only, the design's p_k).
    self.level_scale = [float(c) ** -alpha for c in self.levels.compressions]
    self.per_level = apportion(int(config.clients_per_round), self.levels.fractions, caps)
    bs = int(c.batch_size)
    self.level_len = []
    for users in self.level_users:
      longest = int(counts[users].max()) if len(users) else 1
      length = min(int(c.max_items), longest)
      self.level_len.append(-(-length // bs) * bs)
    self._programs = {}
    self._eval_fns = {}
    # fair.federate_user: the server stores every user row and a client
    # downloads its own and uploads it trained. Rows are never averaged
    # across users (that was a flaw of the paper's code), so the training
    # math is that of a private row; what changes is the traffic.
    self.federate_user = bool(cfg_fair.get("federate_user", False))
    # Every level's clients are split over these devices (config.num_devices).
    self.mesh = sharding.make_mesh(int(config.num_devices))

  # ------------------------------------------------------------ building

  def _model(self, num_users, item_sizes=None, seeds=None, **kwargs):
    return models.make_model(self.kind, num_users, self.dataset.num_items,
                             self.config.embed_dim, tuple(self.config.mlp_layers),
                             item_sizes, seeds, **kwargs)

  def init_state(self):
    """Server params (full tables), server optimizer state, all user tables."""
    # Jitted: flax's eager init would compile every primitive on its own.
    if not hasattr(self, "_init_state"):
      self._init_state = jax.jit(self._build_state)
    return sharding.replicate(self._init_state(), self.mesh)

  def _build_state(self):
    key = jax.random.PRNGKey(self.config.seed)
    k_server, k_users = jax.random.split(key)
    user0, rest = models.split_user_params(self.full_model.init(k_server), self.kind)
    del user0
    big = models.make_model(self.kind, self.dataset.num_users, self.dataset.num_items,
                            self.config.embed_dim, tuple(self.config.mlp_layers))
    users, _ = models.split_user_params(big.init(k_users), self.kind)
    users = {name: leaf["embedding"] for name, leaf in users.items()}
    # Counters since the last evaluation live in the state, so a resumed run
    # reports exactly what an uninterrupted one does.
    acc = {"dropped": jnp.zeros((), jnp.int32), "rejected": jnp.zeros((), jnp.int32),
           "loss_sum": jnp.zeros((), jnp.float32), "loss_rounds": jnp.zeros((), jnp.int32)}
    return {"params": rest, "opt_state": self.server_opt.init(rest), "users": users,
            "round": jnp.zeros((), jnp.int32), "acc": acc,
            "answered_rounds": jnp.zeros((), jnp.int32)}

  @functools.cached_property
  def _user_seeds(self):
    """Every user's table seeds [U, tables], computed once (sampling and the
    inconsistent evaluation index it each round)."""
    users = np.arange(self.dataset.num_users)
    out = np.zeros((len(users), len(self.table_names)), np.int64)
    for t, path in enumerate(self.shapes):
      if self.plan.inconsistent:
        out[:, t] = [subspace.table_seed(path, self.config.fair.hash_seed, int(u))
                     for u in users]
      else:
        spec = self.plan.levels[0].spec[path]
        out[:, t] = spec.seed
    return out.astype(np.int32)

  def client_seeds(self, users):
    """Per-client table seeds [K, tables] (inconsistent) or the shared ones."""
    return self._user_seeds[np.asarray(users)]

  def group_size(self, lv):
    """Clients of level lv that run as one vmapped group (fair.execution, chunk_size)."""
    k = int(self.per_level[lv])
    size = k if self.config.fair.execution == "vmap" else 1
    if self.config.fair.chunk_size > 0:
      size = min(size, int(self.config.fair.chunk_size))
    return size

  def _powers(self, plan):
    """(lift power, view power) of a level: both 0 but on hashed levels."""
    hashed = plan.spec is not None and not plan.expand_each and not plan.per_entry
    power = LIFTS[self.lift] if hashed else 0.0
    return power, (power if self.view == "lift" else 0.0)

  def _level_program(self, lv):
    if lv in self._programs:
      return self._programs[lv]
    plan = self.plan.levels[lv]
    spec = plan.spec
    update = client_lib.make_local_update(plan.model, self.local_opt, self.local_cfg)
    down = plan.down
    screen = self.screen
    mode = self.config.fair.aggregate
    inconsistent = self.plan.inconsistent
    expand_each = plan.expand_each
    names = self.table_names
    chunk = self.group_size(lv)

    def tables_with(seeds):
      return {path: s._replace(seed=seeds[t]) for t, (path, s) in enumerate(spec.items())}

    def collapse(params, sp):
      return subspace.subspace(sp).collapse(params)

    # fair.lift: how an update reaches the full tables. It applies where
    # `down` is the hashed subspace of `spec`; HeteroFL's column slices and
    # FedHM's nonlinear expand_each path keep their own maps.
    power, view_power = self._powers(plan)

    def expand(params, sp):
      if power:
        return subspace.adjoint_map(sp, power)(params)
      return subspace.subspace(sp).expand(params)

    def program(params, user_rows, items, mask, weights, rngs, seeds, poison=None):
      shared = None if inconsistent else _held(down.collapse(params), spec, view_power)
      shared_full = down.expand(shared) if expand_each else None

      def one(xs, steps):
        user, it, mk, rng, sd, pz = xs
        sp = tables_with(sd) if inconsistent else spec
        start = _held(collapse(params, sp), sp, view_power) if inconsistent else shared
        tseeds = {n: sd[t] for t, n in enumerate(names)} if inconsistent else None
        new_shared, new_user, loss = update(start, user, it, mk, rng, tseeds, steps)
        delta = jax.tree.map(jnp.subtract, new_shared, start)
        if pz is not None:  # client.poison hook
          delta = jax.tree.map(lambda d: d * pz.astype(d.dtype), delta)
        delta, ok, norm = server_lib.screen_update(delta, screen)
        out = delta if mode != "weights" else jax.tree.map(
            lambda d, s: jnp.where(ok, s + d, 0), delta, start)
        if inconsistent:
          out = expand(out, sp)
        elif expand_each:
          # A nonlinear expand (FedHM's u v^T) does not commute with the sum.
          out = (jax.tree.map(jnp.subtract, down.expand(jax.tree.map(jnp.add, start, delta)),
                              shared_full) if mode != "weights" else down.expand(out))
        return out, new_user, loss, ok, norm

      def group(xs):
        # One vmapped group of clients. They all run as many steps as the
        # longest of them (an unbatched trip count; the extra steps are no-ops),
        # and their weighted sum is taken here, so no per-client copy of the
        # level's params outlives the group.
        user, it, mk, rng, sd, pz, wt = xs
        steps = client_lib.live_step_count(mk, self.local_cfg).max()
        out, new_user, loss, ok, norm = jax.vmap(one, in_axes=(0, None))(
            (user, it, mk, rng, sd, pz), steps)
        w = wt * ok
        return (server_lib.weighted_sum(out, w), w.sum()), (new_user, loss, ok, norm)

      total, wsum, (new_users, losses, oks, norms) = _map_groups(
          group, (user_rows, items, mask, rngs, seeds, poison, weights), chunk)
      if not inconsistent and not expand_each:
        total = expand(total, spec) if power else down.expand(total)
      answered = (weights > 0) & oks
      keep = lambda new, old: jnp.where(answered.reshape((-1,) + (1,) * (new.ndim - 1)),
                                        new, old)
      new_users = jax.tree.map(keep, new_users, user_rows)
      return total, wsum, new_users, losses, oks, norms

    # Outputs: (total, weight sum) summed over clients, then per-client ones.
    self._programs[lv] = sharding.shard_clients(program, self.mesh, num_summed=2)
    return self._programs[lv]

  @functools.cached_property
  def _server_step(self):
    opt, mode = self.server_opt, self.config.fair.aggregate
    # No donation: callers (tests, notebooks) may keep the previous state.
    return jax.jit(lambda p, s, t, w, c=None: server_lib.server_step(opt, p, s, t, w, mode, c))

  @functools.cached_property
  def _nested(self):
    """Whether rounds use `server.nested_average` (fair.aggregate="nested")."""
    if self.config.fair.aggregate != "nested":
      return False
    if self.plan.inconsistent or any(lp.spec is None for lp in self.plan.levels):
      raise InputError("fair.aggregate=nested needs consistent hashed subspaces "
                       f"(algorithm {self.config.algorithm!r} has none)")
    return True

  @functools.cached_property
  def _nested_step(self):
    opt = self.server_opt
    # Most compressed first: the order in which the subspaces nest.
    order = sorted(range(len(self.plan.levels)),
                   key=lambda lv: -self.plan.levels[lv].compression)

    def step(params, opt_state, totals, weights, weight):
      lvs = [lv for lv in order if lv in totals]
      projections = [
          (lambda x, d=self.plan.levels[lv].down: d.expand(d.collapse(x))) for lv in lvs]
      g = server_lib.nested_average([totals[lv] for lv in lvs],
                                    [weights[lv] for lv in lvs], projections)
      return server_lib.apply_average(opt, params, opt_state, g, weight)
    return jax.jit(step)

  @functools.lru_cache(maxsize=None)
  def coverage(self, lv):
    """Per server entry, 1 where a client of level lv holds it, else 0 (HeteroFL)."""
    down = self.plan.levels[lv].down
    shapes = jax.eval_shape(self._build_state)["params"]
    held = jax.eval_shape(down.collapse, shapes)
    return jax.jit(lambda: down.expand(jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype),
                                                    held)))()

  # -------------------------------------------------------------- rounds

  def sample(self, rnd) -> List[LevelBatch]:
    """The round's clients per level (stratified, without replacement)."""
    rng = np.random.default_rng([self.config.seed, 7919, rnd])
    batches = []
    for lv, users in enumerate(self.level_users):
      k = int(self.per_level[lv])
      if k == 0:
        batches.append(None)
        continue
      sel = rng.choice(users, size=k, replace=False)
      # Ordered by data size, so vmapped chunks hold clients of similar
      # length (a chunk runs as many steps as its longest client).
      sizes = self.indptr[sel + 1] - self.indptr[sel]
      sel = sel[np.lexsort((sel, sizes))].astype(np.int32)
      length = self.level_len[lv]
      items = np.zeros((k, length), np.int32)
      mask = np.zeros((k, length), bool)
      for r, u in enumerate(sel):
        mine = self.items[self.indptr[u]:self.indptr[u + 1]]
        if len(mine) > length:
          mine = rng.choice(mine, size=length, replace=False)
        items[r, :len(mine)] = mine
        mask[r, :len(mine)] = True
      weights = mask.sum(1).astype(np.float32) * self.level_scale[lv]
      dropped = rng.random(k) < self.config.client.dropout
      weights[dropped] = 0.0
      batches.append(LevelBatch(sel, items, mask, weights, self.client_seeds(sel)))
    return self._poison(batches, rnd)

  def _poison(self, batches, rnd):
    """Applies the client.poison hook to one client of the round (see POISONS)."""
    mode = self.config.client.poison
    if not mode:
      return batches
    slots = [(lv, i) for lv, b in enumerate(batches) if b is not None
             for i in range(len(b.users))]
    if not slots:
      return batches
    # Its own stream: the round's sampling and dropouts stay as without the hook.
    lv, i = slots[np.random.default_rng([self.config.seed, 104729, rnd]).integers(len(slots))]
    out = list(batches)
    if mode == "drop":
      weights = out[lv].weights.copy()
      weights[i] = 0.0
      out[lv] = out[lv]._replace(weights=weights)
      return out
    for j, b in enumerate(out):
      if b is not None:
        factor = np.ones(len(b.users), np.float32)
        if j == lv:
          factor[i] = POISONS[mode]
        out[j] = b._replace(poison=factor)
    return out

  def round(self, state, rnd):
    """Runs round `rnd` (1-based); returns (state, round statistics)."""
    params = state["params"]
    total, weight, cover = None, 0.0, None
    level_totals, level_weights = {}, {}
    users = dict(state["users"])
    stats = {"dropped_clients": 0, "rejected_updates": 0, "clients": 0,
             "bytes_down": 0, "bytes_up": 0}
    losses = []
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), rnd)
    for lv, batch in enumerate(self.sample(rnd)):
      if batch is None:
        continue
      k = len(batch.users)
      cols = slice(None, self.plan.levels[lv].user_cols)  # HeteroFL trains a prefix
      rows = {n: {"embedding": users[n][batch.users][:, None, cols]} for n in users}
      rngs = jax.random.split(jax.random.fold_in(key, lv), k)
      t, w, new_rows, loss, ok, _ = self._level_program(lv)(
          params, rows, batch.items, batch.mask, batch.weights, rngs, batch.seeds,
          batch.poison)
      for n in users:
        users[n] = users[n].at[batch.users, cols].set(new_rows[n]["embedding"][:, 0, :])
      if self._nested:  # nested_average sums the levels itself
        level_totals[lv], level_weights[lv] = t, w
      else:
        total = t if total is None else jax.tree.map(jnp.add, total, t)
      weight = weight + w
      if self.plan.levels[lv].per_entry:
        held = jax.tree.map(lambda x: x * w, self.coverage(lv))
        cover = held if cover is None else jax.tree.map(jnp.add, cover, held)
      answered = batch.weights > 0
      ok = np.asarray(ok)
      stats["clients"] += k
      stats["dropped_clients"] += int((~answered).sum())
      stats["rejected_updates"] += int((answered & ~ok).sum())
      sizes = self.level_bytes(lv)
      # A federated user row travels with the shared params, both ways.
      level_bytes = sizes["shared"] + (sizes["user"] if self.federate_user else 0)
      stats["bytes_down"] += k * level_bytes
      stats["bytes_up"] += int(answered.sum()) * level_bytes
      loss = np.asarray(loss)
      good = answered & ok & np.isfinite(loss)
      losses.extend(loss[good].tolist())
    if self._nested and level_totals:
      params, opt_state = self._nested_step(params, state["opt_state"], level_totals,
                                            level_weights, weight)
    else:
      params, opt_state = self._server_step(params, state["opt_state"], total, weight, cover)
    stats["train_loss"] = float(np.mean(losses)) if losses else float("nan")
    stats["answered_weight"] = float(weight)
    acc = state["acc"]
    has_loss = bool(losses)
    acc = {"dropped": acc["dropped"] + stats["dropped_clients"],
           "rejected": acc["rejected"] + stats["rejected_updates"],
           "loss_sum": acc["loss_sum"] + np.float32(stats["train_loss"] if has_loss else 0.0),
           "loss_rounds": acc["loss_rounds"] + int(has_loss)}
    return {"params": params, "opt_state": opt_state, "users": users,
            "round": jnp.asarray(rnd, jnp.int32), "acc": acc,
            "answered_rounds": state["answered_rounds"] + int(weight > 0)}, stats

  @staticmethod
  def reset_acc(state):
    zero = jax.tree.map(jnp.zeros_like, state["acc"])
    return dict(state, acc=zero)

  # ---------------------------------------------------------- accounting

  @functools.lru_cache(maxsize=None)
  def level_bytes(self, lv):
    """Bytes a client of level lv holds, read from the arrays it is sent (cached).

    Returns:
      dict: "shared" (what it downloads and uploads), "tables" (its
      compressible tables), "user" (its private user rows), "params" (all).
    """
    plan = self.plan.levels[lv]
    if not plan.trains:
      return {"shared": 0, "tables": 0, "user": 0, "params": 0}
    state_shapes = jax.eval_shape(self._build_state)
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state_shapes["params"])
    shared = jax.jit(plan.down.collapse)(params)
    user = jax.eval_shape(plan.model.init, jax.random.PRNGKey(0))
    user_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(
        models.split_user_params(user, self.kind)[0]))
    shared_bytes = subspace.param_bytes(shared)
    tables = sum(subspace.param_bytes(subspace._get(shared, p)) for p in plan.table_paths)  # pylint: disable=protected-access
    return {"shared": shared_bytes, "tables": tables, "user": user_bytes,
            "params": shared_bytes + user_bytes}

  # ---------------------------------------------------------- evaluation

  def score_fns(self, state):
    """One scoring function per level: its model, the users' own embeddings."""
    state = sharding.local(state)  # score on one device, not on every one of the mesh
    fns = []
    for lv, plan in enumerate(self.plan.levels):
      fns.append(self._score_fn(lv, plan, state))
    return fns

  def _score_fn(self, lv, plan, state):
    model = plan.eval_model
    users = {n: {"embedding": e} for n, e in state["users"].items()}
    if not self.plan.inconsistent:
      if lv not in self._eval_fns:
        sub = plan.eval_down

        _, view_power = self._powers(plan)

        def score(params, users_tab, u, items):
          # Users too: a HeteroFL level slices their rows.
          full = _held(sub.collapse(models.merge_user_params(users_tab, params)), plan.spec,
                       view_power)
          return model.apply(full, jnp.broadcast_to(u[:, None], items.shape), items)
        self._eval_fns[lv] = jax.jit(score)
      fn = self._eval_fns[lv]
      return lambda u, items: fn(state["params"], users, jnp.asarray(u), jnp.asarray(items))
    # Inconsistent: every user scores with the table collapsed under its own seed.
    if lv not in self._eval_fns:
      spec = plan.spec
      names = self.table_names
      _, view_power = self._powers(plan)

      def score_one(params, users_tab, u, items, seeds):
        sp = {path: s._replace(seed=seeds[t]) for t, (path, s) in enumerate(spec.items())}
        shared = _held(subspace.subspace(sp).collapse(params), sp, view_power)
        full = models.merge_user_params(users_tab, shared)
        tseeds = {n: seeds[t] for t, n in enumerate(names)}
        return model.apply(full, jnp.broadcast_to(u, items.shape), items, tseeds)

      def score(params, users_tab, u, items, seeds):
        return jax.lax.map(lambda xs: score_one(params, users_tab, *xs), (u, items, seeds),
                           batch_size=8)
      self._eval_fns[lv] = jax.jit(score)
    fn = self._eval_fns[lv]
    return lambda u, items: fn(state["params"], users, jnp.asarray(u), jnp.asarray(items),
                               jnp.asarray(self.client_seeds(np.asarray(u))))


def run(config, dataset, evaluate, workdir, progress):
  """Runs the federated experiment; resumes from WORKDIR/checkpoints/."""
  sim = Simulation(config, dataset)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  # The config is stored with each checkpoint: a rerun with other settings is refused.
  meta = checkpoint.config_meta(config)
  last, state = checkpoint.restore_latest(ckpt_dir, sim.init_state(), meta)
  # Several processes resume from what process 0 found; it alone writes files.
  last, state = sharding.from_lead(last, state)
  lead = sharding.is_lead()
  state = sharding.replicate(jax.tree.map(jnp.asarray, state), sim.mesh)
  start_round = int(state["round"])
  if last is not None:
    print(f"resuming from round {start_round} ({ckpt_dir})", file=sys.stderr)
  writer = metrics.MetricsWriter(workdir, resume_round=start_round if last is not None
                                 else None, finished=start_round >= int(config.rounds)
                                 ) if lead else None
  names = sim.levels.names
  static = {}
  for lv, name in enumerate(names):
    b = sim.level_bytes(lv)
    static[f"client_param_bytes/{name}"] = b["params"]
    static[f"client_table_bytes/{name}"] = b["tables"]
    static[f"clients_per_round/{name}"] = int(sim.per_level[lv])
  excluded = sum(len(u) for u, lp in zip(sim.level_users, sim.plan.levels) if not lp.trains)
  static["excluded_clients"] = int(excluded)
  rounds = int(config.rounds)
  every = int(config.eval.every)
  ckpt_every = int(config.checkpoint_every)
  final = None
  bar = progress(range(start_round + 1, rounds + 1), rounds, "rounds", initial=start_round)
  round_start = time.time()
  last_eval = start_round
  for rnd in bar:
    state, stats = sim.round(state, rnd)
    checkpoint.crash_point("round", rnd)  # test hook: a kill mid-training
    is_last = rnd == rounds
    if rnd % every == 0 or is_last:
      acc = jax.device_get(state["acc"])
      n_loss = int(acc["loss_rounds"])
      record = {"round": rnd, "algorithm": config.algorithm,
                "train_loss": float(acc["loss_sum"]) / n_loss if n_loss else None,
                "bytes_down": stats["bytes_down"], "bytes_up": stats["bytes_up"],
                "dropped_clients": int(acc["dropped"]),
                "rejected_updates": int(acc["rejected"]),
                "time/round_seconds": (time.time() - round_start) / max(1, rnd - last_eval)}
      record.update(static)
      t0 = time.time()
      record.update(evaluate(sim.score_fns(state), sim.user_level, names))
      record["time/eval_seconds"] = time.time() - t0
      if is_last:
        record["final"] = True
        if int(state["answered_rounds"]) == 0:
          record["note"] = "no client ever answered: this is the initial model"
      if writer:
        writer.write(record)
      final = record
      metrics.show_progress(bar, f"round {rnd}/{rounds}", record,
                            list(evaluate.names) + ["train_loss"])
      state = Simulation.reset_acc(state)
      last_eval = rnd
      round_start = time.time()
    if (rnd % ckpt_every == 0 or is_last) and lead:
      checkpoint.save(ckpt_dir, rnd, state, meta=meta)
  if final is None:  # resumed after the last round: report the stored result
    records = metrics.read_metrics(workdir) if lead else []
    final = records[-1] if records else {}
  return final
