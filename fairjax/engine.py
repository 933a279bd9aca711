"""The round engine: one federated round of any algorithm, with no branch on which.

For each level with clients this round (`fairjax.algorithms.base` defines
the pieces):

    broadcast -> vmapped local update -> screen -> contribute
              -> weighted sum -> lift

then the aggregator averages the levels' totals and the server optimizer
applies the average. A level's clients run as one jitted program: vmapped
groups of `group_size` clients scanned in sequence (their weighted sum
taken inside the group, so no per-client copy of the params outlives it),
split over the mesh's devices by `sharding.shard_clients`.

The pieces are public so that a deployment (`fairjax.flower`) runs the
same functions split across machines: the server calls `broadcast`,
`starts`, `settle_clients`, `Level.lift` and `Engine.server_step`; each
device calls `train_group` (through `train_program`) on its own clients.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fairjax import client as client_lib
from fairjax import server as server_lib
from fairjax import sharding


def map_groups(fn, xs, size):
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


def broadcast(level, params, round_seeds):
  """What the level's clients download this round (`level.broadcast`)."""
  return level.broadcast(params, round_seeds)


def settle(level, screen, start, new_shared, seeds, poison=None):
  """A trained client's contribution: its delta, screened, in the level's sum form.

  The engine and the bench's loop both end a client's round with this.
  Returns (contribution, accepted, norm before clipping).
  """
  delta = jax.tree.map(jnp.subtract, new_shared, start)
  if poison is not None:  # client.poison hook
    delta = jax.tree.map(lambda d: d * poison.astype(d.dtype), delta)
  delta, ok, norm = server_lib.screen_update(delta, screen)
  return level.contribute(start, delta, ok, seeds), ok, norm


def train_client(level, update, table_names):
  """One client's local training from the params it holds:
  `train(start, user, items, mask, rng, seeds, steps) -> (new_shared, new_user, loss)`."""
  def train(start, user, it, mk, rng, sd, steps):
    return update(start, user, it, mk, rng, level.model_seeds(table_names, sd), steps)
  return train


def client_update(level, update, table_names, screen):
  """One client's whole round, composed of the pieces above (the tutorial's step):
  `one(params, shared, (user, items, mask, rng, seeds, poison), steps) ->
  (contribution, new user rows, loss, accepted, norm)`."""
  train = train_client(level, update, table_names)

  def one(params, shared, xs, steps):
    user, it, mk, rng, sd, pz = xs
    start = level.held(params, shared, sd)
    new_shared, new_user, loss = train(start, user, it, mk, rng, sd, steps)
    out, ok, norm = settle(level, screen, start, new_shared, sd, pz)
    return out, new_user, loss, ok, norm
  return one


def client_keys(key, lv, k):
  """The PRNG keys of a level's k clients in a round whose key is `key`."""
  return jax.random.split(jax.random.fold_in(key, lv), k)


def starts(level, params, shared, seeds):
  """What the clients of a group hold at the start: `level.held` per client
  (stacked, `level.per_client`), else once for all of them."""
  if level.per_client:
    return jax.vmap(lambda sd: level.held(params, shared, sd))(seeds)
  return level.held(params, shared, seeds[0])


def train_group(train, cfg, stacked, start, xs):
  """A vmapped group of clients: per client (new_shared, new_user, loss).

  Every client of a group runs as many steps as its longest one (an
  unbatched trip count; the extra steps are no-ops).

  Args:
    train: from `train_client`.
    cfg: the `client.LocalConfig`.
    stacked: `start` has a leading client axis (see `starts`).
    start: the params the clients start from.
    xs: per client (user rows, items, mask, rng, seeds).
  """
  mask = xs[2]
  steps = client_lib.live_step_count(mask, cfg).max()
  return jax.vmap(lambda s, x: train(s, *x, steps), in_axes=(0 if stacked else None, 0))(
      start, xs)


def settle_clients(level, screen, stacked, start, new_shared, seeds, weights, poison=None):
  """Trained clients' screened contributions, weighted and summed in the level's space.

  Returns (sum_k w_k ok_k out_k, sum_k w_k ok_k, ok [K], norm [K]); a
  rejected client (ok False) adds nothing.
  """
  out, ok, norm = jax.vmap(
      lambda s, n, sd, pz: settle(level, screen, s, n, sd, pz),
      in_axes=(0 if stacked else None, 0, 0, None if poison is None else 0))(
          start, new_shared, seeds, poison)
  w = weights * ok
  return server_lib.weighted_sum(out, w), w.sum(), ok, norm


def train_program(level, update, table_names, cfg, size):
  """A device's clients of one level, in vmapped groups of `size`, jitted:
  `(start, user_rows, items, mask, rngs, seeds) -> (new_shared, new_users, losses)`,
  one row per client; `start` is stacked when `level.per_client`."""
  train = train_client(level, update, table_names)

  def program(start, user_rows, items, mask, rngs, seeds):
    def group(xs):
      st, rest = xs if level.per_client else (start, xs)
      return (), train_group(train, cfg, level.per_client, st, rest)
    rest = (user_rows, items, mask, rngs, seeds)
    (per,) = map_groups(group, (start, rest) if level.per_client else rest, size)
    return per
  return jax.jit(program)


class Engine:
  """Runs rounds of `algorithm` (an `algorithms.Algorithm`).

  Args:
    algorithm: the algorithm value.
    local_opt: the clients' optax optimizer.
    local_cfg: `client.LocalConfig`.
    server_opt: the server's optax optimizer.
    screen: `server.Screen` bounds on client updates.
    mesh: from `sharding.make_mesh`.
    group_sizes: per level, clients per vmapped group.
    table_names: the item tables, in the order of the seeds' columns.
  """

  def __init__(self, algorithm, local_opt, local_cfg, server_opt, screen, mesh, group_sizes,
               table_names):
    self.algorithm = algorithm
    self.local_opt, self.local_cfg = local_opt, local_cfg
    self.server_opt, self.screen = server_opt, screen
    self.mesh, self.group_sizes, self.table_names = mesh, group_sizes, table_names
    self._programs = {}

  def local_update(self, level):
    return client_lib.make_local_update(level.model, self.local_opt, self.local_cfg,
                                        level.penalty)

  def program(self, lv):
    """The jitted program of level lv: `(params, seeds), per-client arrays -> sums, rows`."""
    if lv in self._programs:
      return self._programs[lv]
    level = self.algorithm.levels[lv]
    train = train_client(level, self.local_update(level), self.table_names)
    cfg, size, screen = self.local_cfg, self.group_sizes[lv], self.screen
    stacked = level.per_client

    def program(server, user_rows, items, mask, weights, rngs, seeds, poison=None):
      params, round_seeds = server
      shared = broadcast(level, params, round_seeds)

      def group(xs):
        user, it, mk, rng, sd, pz, wt = xs
        start = starts(level, params, shared, sd)
        new_shared, new_user, loss = train_group(train, cfg, stacked, start,
                                                 (user, it, mk, rng, sd))
        total, wsum, ok, norm = settle_clients(level, screen, stacked, start, new_shared, sd,
                                               wt, pz)
        return (total, wsum), (new_user, loss, ok, norm)

      total, wsum, (new_users, losses, oks, norms) = map_groups(
          group, (user_rows, items, mask, rngs, seeds, poison, weights), size)
      total = level.lift(total, round_seeds)
      answered = (weights > 0) & oks
      keep = lambda new, old: jnp.where(answered.reshape((-1,) + (1,) * (new.ndim - 1)),
                                        new, old)
      new_users = jax.tree.map(keep, new_users, user_rows)
      return total, wsum, new_users, losses, oks, norms

    # Outputs: (total, weight sum) summed over clients, then per-client ones.
    self._programs[lv] = sharding.shard_clients(program, self.mesh, num_summed=2)
    return self._programs[lv]

  @functools.cached_property
  def server_step(self):
    """`(params, opt_state, totals, weights) -> (params, opt_state)`, jitted.

    `totals` and `weights` are dicts keyed by level; no donation, so callers
    (tests, notebooks) may keep the previous state.
    """
    opt, agg = self.server_opt, self.algorithm.aggregator

    def step(params, opt_state, totals, weights):
      g = agg.average(params, totals, weights)
      weight = sum(weights[lv] for lv in sorted(weights))
      return server_lib.apply_average(opt, params, opt_state, g, weight)
    return jax.jit(step)

  def round(self, params, opt_state, users, batches, rnd, key):
    """Runs one round on the sampled `batches` (one per level, or None).

    Args:
      params, opt_state: the server's.
      users: table name -> every user's stored rows.
      batches: from the sampler.
      rnd: the round number (the algorithm's seeds may depend on it).
      key: the round's PRNG key.

    Returns:
      (params, opt_state, users, per level (batch, accepted, loss) or None,
      the round's summed client weight).
    """
    totals, weights, out = {}, {}, []
    users = dict(users)
    round_seeds = jnp.asarray(self.algorithm.seeds(rnd))
    for lv, batch in enumerate(batches):
      if batch is None:
        out.append(None)
        continue
      k = len(batch.users)
      cols = slice(None, self.algorithm.levels[lv].user_cols)
      rows = {n: {"embedding": users[n][batch.users][:, None, cols]} for n in users}
      rngs = client_keys(key, lv, k)
      totals[lv], weights[lv], new_rows, loss, ok, _ = self.program(lv)(
          (params, round_seeds), rows, batch.items, batch.mask, batch.weights, rngs,
          batch.seeds, batch.poison)
      for n in users:
        users[n] = users[n].at[batch.users, cols].set(new_rows[n]["embedding"][:, 0, :])
      out.append((batch, np.asarray(ok), np.asarray(loss)))
    if totals:
      params, opt_state = self.server_step(params, opt_state, totals, weights)
    return params, opt_state, users, out, sum(weights[lv] for lv in sorted(weights))
