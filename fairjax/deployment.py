"""A federated run split across machines: the server's and a device's halves of a round.

Nothing here imports Flower: `fairjax.flower` wraps these classes in a
Flower Strategy, ServerApp and ClientApp, and the tests drive them in one
process. The round's math is the simulation's own (`fairjax.engine`):

  server (`Server`)                          device (`Node`)
  -----------------                          ---------------
  sample clients (`Simulation.sample`)
  broadcast, starts          -- start -->    train_program (vmapped groups
                                               of the same local update)
  settle_clients (screen,   <-- new ---
    contribute, sum), lift,
    aggregator + server step (`Engine.server_step`)
  eval_view                  -- view -->     its users scored with the
                                               model it holds

A device ("node") holds the users of one capacity level (one partition
file, see `write_partitions`); their private embedding rows never leave
it. The server knows of each user only its level and its example count,
which the node reports once (`Node.describe`): enough to draw the same
sample as the simulation. A user's items are chosen by position in its
own list (`positions_dataset`), so the server never sees an item id.

A trained user row is kept only if the server accepted that client's
update, as in the simulation: the node holds it as pending, and the
server's next message to the node says which were accepted (`commit`).
"""
import json
import os
import sys
import time
from typing import Dict, List, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fairjax import capacity
from fairjax import data as data_lib
from fairjax import engine as engine_lib
from fairjax import metrics
from fairjax import models
from fairjax import scoring
from fairjax.errors import InputError

# --------------------------------------------------------------- arrays


def _key_name(k):
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def flatten(tree, prefix=""):
  """A pytree of arrays -> {"prefix" + "a/b/c": numpy array} (flat string keys)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {prefix + "/".join(_key_name(k) for k in path): np.asarray(leaf)
          for path, leaf in leaves}


def unflatten(flat, template, prefix=""):
  """The inverse of `flatten` into `template`'s structure (keys must be present)."""
  paths, treedef = jax.tree_util.tree_flatten_with_path(template)
  leaves = [flat[prefix + "/".join(_key_name(k) for k in path)] for path, _ in paths]
  return jax.tree_util.tree_unflatten(treedef, leaves)


def shapes_of(tree, prefix="", lead=None):
  """{flat key: (shape, dtype)} of a pytree (or of its `jax.eval_shape`), with an optional leading axis."""
  out = {}
  for (path, leaf) in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = prefix + "/".join(_key_name(k) for k in path)
    shape = tuple(leaf.shape) if lead is None else (lead,) + tuple(leaf.shape)
    out[key] = (shape, np.dtype(leaf.dtype))
  return out


def check_arrays(flat, expected):
  """None if `flat` holds exactly the `expected` {key: (shape, dtype)}; else why not."""
  missing = sorted(set(expected) - set(flat))
  extra = sorted(set(flat) - set(expected))
  if missing:
    return f"missing array {missing[0]!r}" + (f" (and {len(missing) - 1} more)"
                                              if len(missing) > 1 else "")
  if extra:
    return f"unexpected array {extra[0]!r}"
  for key, (shape, dtype) in expected.items():
    a = flat[key]
    if tuple(a.shape) != tuple(shape):
      return f"array {key!r} has shape {tuple(a.shape)}, expected {tuple(shape)}"
    if np.dtype(a.dtype) != np.dtype(dtype):
      return f"array {key!r} has dtype {a.dtype}, expected {np.dtype(dtype)}"
  return None


# ------------------------------------------------------------ the config


def config_to_json(config):
  return config.to_json()


def config_from_json(text):
  """The ConfigDict of `config_to_json` (lists back to tuples where the defaults have tuples)."""
  d = json.loads(text)
  d["mlp_layers"] = tuple(d["mlp_layers"])
  if "train" in d and "mlp_layers" in d["train"]:
    d["train"]["mlp_layers"] = tuple(d["train"]["mlp_layers"])
  return ml_collections.ConfigDict(d)


# ------------------------------------------------------------ partitions


class Partition(NamedTuple):
  """What one device holds: its users' interactions (global ids), nothing else.

  Attributes:
    num_users, num_items: of the whole dataset (ids are global).
    compression: the device's capacity level.
    users: int32 [U] its users, ascending.
    indptr, items: its users' training items (CSR over `users`, each list sorted).
    test_users, test_items: its users' test pairs.
    candidates: [T, 1 + negatives] sampled-protocol candidates of those
      pairs (column 0 the test item), or an empty array.
    prior: the popularity prior's initial knots (`models.popularity_prior`,
      a few floats published with the catalogue), or empty.
    popularity: the popularity scores served to a device its algorithm
      excludes (`scoring.popularity_scores`), or empty.
  """
  num_users: int
  num_items: int
  compression: float
  users: np.ndarray
  indptr: np.ndarray
  items: np.ndarray
  test_users: np.ndarray
  test_items: np.ndarray
  candidates: np.ndarray
  prior: np.ndarray = np.zeros(0, np.float64)
  popularity: np.ndarray = np.zeros(0, np.float32)


def assign_nodes(num_nodes, levels, user_level):
  """Node i -> (level index, users): nodes go round-robin over the levels, a
  level's users are split evenly over its nodes.

  Raises:
    InputError: fewer nodes than capacity levels.
  """
  n_levels = len(levels.compressions)
  if num_nodes < n_levels:
    raise InputError(f"--nodes={num_nodes}: fewer devices than capacity levels "
                     f"({n_levels}, capacities {levels.compressions}); each level needs one")
  out = []
  for lv in range(n_levels):
    nodes = list(range(lv, num_nodes, n_levels))
    users = np.flatnonzero(user_level == lv)
    for i, part in zip(nodes, np.array_split(users, len(nodes))):
      out.append((i, lv, part.astype(np.int32)))
  return [(lv, users) for _, lv, users in sorted(out, key=lambda t: t[0])]


def write_partitions(config, dataset, evaluator, num_nodes, directory):
  """Writes one partition file per device; returns [(compression, path)].

  The files play the part of the data each device has of its own: the
  sampled protocol's candidates come from the same `Evaluator` the
  simulation uses, so both rank the same items.
  """
  levels = capacity.parse_capacities(config.capacities)
  user_level = capacity.assign_levels(dataset.num_users, levels, config.seed)
  indptr, items = data_lib.train_csr(dataset)
  sampled = evaluator.parts[0] if evaluator.parts else evaluator
  candidates = getattr(sampled, "candidates", None)
  # What the operator publishes with the catalogue: the prior's knots (from
  # training counts) and the popularity ranking excluded devices are served.
  prior, popularity = simulate_prior(config, dataset)
  os.makedirs(directory, exist_ok=True)
  out = []
  for i, (lv, users) in enumerate(assign_nodes(num_nodes, levels, user_level)):
    own = np.isin(dataset.test_users, users)
    sel = [items[indptr[u]:indptr[u + 1]] for u in users]
    local_ptr = np.zeros(len(users) + 1, np.int64)
    np.cumsum([len(s) for s in sel], out=local_ptr[1:])
    path = os.path.join(directory, f"node-{i}.npz")
    np.savez(path, num_users=dataset.num_users, num_items=dataset.num_items,
             compression=levels.compressions[lv], users=users, indptr=local_ptr,
             items=np.concatenate(sel) if sel else np.zeros(0, np.int32),
             test_users=dataset.test_users[own], test_items=dataset.test_items[own],
             candidates=(candidates[own] if candidates is not None
                         else np.zeros((0, 0), np.int32)),
             prior=np.asarray(prior, np.float64), popularity=popularity)
    out.append((levels.compressions[lv], path))
  return out


def load_partition(path):
  try:
    with np.load(path) as z:
      return Partition(int(z["num_users"]), int(z["num_items"]), float(z["compression"]),
                       z["users"], z["indptr"], z["items"], z["test_users"], z["test_items"],
                       z["candidates"], z["prior"], z["popularity"])
  except (OSError, KeyError, ValueError) as e:
    raise InputError(f"partition {path!r}: cannot be read ({e})") from None


def positions_dataset(num_users, num_items, users, counts):
  """A stand-in `Dataset` whose user u "has items" 0 .. counts[u]-1: positions, not ids.

  The server samples from it exactly as the simulation samples from the
  real data (the sampler reads only the sizes, and draws items by
  position); a device maps the positions back to its own items.
  """
  users = np.asarray(users, np.int32)
  counts = np.asarray(counts, np.int64)
  if len(counts) and counts.max() > num_items:
    raise InputError("a user reports more training items than the dataset has items")
  train_users = np.repeat(users, counts).astype(np.int32)
  train_items = (np.concatenate([np.arange(c) for c in counts]).astype(np.int32)
                 if len(counts) else np.zeros(0, np.int32))
  empty = np.zeros(0, np.int32)
  ids = np.arange(num_users)
  return data_lib.Dataset(num_users, num_items, train_users, train_items, empty, empty, ids,
                          np.arange(num_items))


def simulate_prior(config, dataset):
  """(prior knots, popularity scores) a simulation of `config` on `dataset` uses."""
  from fairjax import simulate  # pylint: disable=g-import-not-at-top
  return simulate.prior_knots(config, dataset), simulate.served_popularity(config, dataset)


def _simulation(config, dataset, prior, popularity):
  """A Simulation on a stand-in dataset, with the real data's prior and popularity."""
  from fairjax import simulate  # pylint: disable=g-import-not-at-top
  return simulate.Simulation(config, dataset, prior=tuple(float(k) for k in prior),
                             popularity=popularity if len(popularity) else None)


# -------------------------------------------------------------- the node


class Node:
  """A device's half of the run: its partition, the level's programs.

  Args:
    config: the experiment ConfigDict (sent by the server).
    partition: this device's `Partition`.
  """

  def __init__(self, config, partition: Partition):
    self.config, self.part = config, partition
    stand_in = positions_dataset(partition.num_users, partition.num_items, partition.users,
                                 np.diff(partition.indptr))
    self.sim = _simulation(config, stand_in, partition.prior, partition.popularity)
    comps = self.sim.levels.compressions
    if partition.compression not in comps:
      raise InputError(f"capacity={partition.compression:g}: not a level of capacities "
                       f"{config.capacities!r}")
    self.lv = comps.index(partition.compression)
    self.level = self.sim.algorithm.levels[self.lv]
    self.index = {int(u): r for r, u in enumerate(partition.users)}
    self._programs = {}

  def describe(self):
    """What the server may know of this device: level, users, example counts."""
    return {"level": self.lv, "compression": self.part.compression,
            "users": [int(u) for u in self.part.users],
            "counts": [int(c) for c in np.diff(self.part.indptr)],
            "num_users": self.part.num_users, "num_items": self.part.num_items,
            "prior": [float(k) for k in self.part.prior]}

  def initial_rows(self):
    """Its users' rows of the run's initial user tables (the simulation's init)."""
    users = jax.jit(self.sim._build_state)()["users"]  # pylint: disable=protected-access
    return {n: np.asarray(e)[self.part.users] for n, e in users.items()}

  def _items(self, users, positions, mask):
    """Positions in each user's item list -> item ids (0 where masked)."""
    out = np.zeros(positions.shape, np.int32)
    for r, u in enumerate(users):
      i = self.index[int(u)]
      mine = self.part.items[self.part.indptr[i]:self.part.indptr[i + 1]]
      m = mask[r]
      if m.any() and positions[r][m].max() >= len(mine):
        raise InputError(f"user {u}: the server asked for item position "
                         f"{positions[r][m].max()}, it has {len(mine)} items")
      out[r, m] = mine[positions[r][m]]
    return out

  def train_program(self, size):
    if size not in self._programs:
      self._programs[size] = engine_lib.train_program(
          self.level, self.sim.engine.local_update(self.level), self.sim.table_names,
          self.sim.local_cfg, size)
    return self._programs[size]

  def start_template(self):
    shapes = jax.eval_shape(self.sim._build_state)["params"]  # pylint: disable=protected-access
    level = self.level
    seeds = jnp.asarray(self.sim.algorithm.seeds(0))
    return jax.eval_shape(
        lambda p: level.held(p, level.broadcast(p, seeds), seeds), shapes)

  def train(self, flat, cfg, rows):
    """Trains the sampled users. Returns (reply arrays, per-client losses, new rows, timings).

    Args:
      flat: the server's arrays: "start/..." (stacked per client when the
        level hashes per client), "items" (positions), "mask", "rngs", "seeds".
      cfg: {"users": [...], "group": int}.
      rows: table name -> this device's user rows [U, d] (committed).
    """
    users = np.asarray(cfg["users"], np.int32)
    k = len(users)
    template = self.start_template()
    if self.level.per_client:
      template = jax.tree.map(lambda s: jax.ShapeDtypeStruct((k,) + s.shape, s.dtype),
                              template)
    start = unflatten(flat, template, "start/")
    items = self._items(users, flat["items"], flat["mask"].astype(bool))
    local = np.array([self.index[int(u)] for u in users])
    cols = slice(None, self.level.user_cols)
    user_rows = {n: {"embedding": jnp.asarray(r[local][:, None, cols])} for n, r in rows.items()}
    args = (start, user_rows, jnp.asarray(items), jnp.asarray(flat["mask"].astype(bool)),
            jnp.asarray(flat["rngs"]), jnp.asarray(flat["seeds"]))
    t0 = time.perf_counter()
    compiled = self.train_program(int(cfg["group"])).lower(*args).compile()
    t1 = time.perf_counter()
    new_shared, new_users, losses = jax.block_until_ready(compiled(*args))
    t2 = time.perf_counter()
    new_rows = {n: np.array(r) for n, r in rows.items()}
    for n in new_rows:
      new_rows[n][local, cols] = np.asarray(new_users[n]["embedding"])[:, 0, :]
    return (flatten(new_shared, "new/"), np.asarray(losses), new_rows,
            {"compile": t1 - t0, "train": t2 - t1})

  # ----------------------------------------------------------- evaluation

  def evaluate(self, flat, rnd, rows):
    """This device's users scored with the model it holds.

    Returns {"<metric>": (sum, count)} over its test pairs (sampled
    protocol) or its users with tests (full protocol).
    """
    part, level = self.part, self.level
    protocol = self.config.eval.protocol
    table = {n: np.zeros((part.num_users, r.shape[1]), r.dtype) for n, r in rows.items()}
    for n in table:
      table[n][part.users] = rows[n]
    cols = slice(None, level.user_cols)
    users_tab = {n: {"embedding": jnp.asarray(t[:, cols])} for n, t in table.items()}
    names = self.sim.table_names
    if not level.trains and len(part.popularity):
      # A device its algorithm excludes holds no model: it is served the
      # popularity ranking (docs/design.md, "Evaluation").
      score = scoring.popularity_fn(part.popularity)
    elif level.per_client:
      shapes = jax.eval_shape(self.sim._build_state)["params"]  # pylint: disable=protected-access
      params = unflatten(flat, shapes, "params/")
      fn = scoring.score_program(level, names)
      full_tab = {n: {"embedding": jnp.asarray(t)} for n, t in table.items()}

      def score(u, items):
        u = np.asarray(u)
        seeds = self.sim.algorithm.client_seeds(u, rnd)
        return fn(params, full_tab, jnp.asarray(u), jnp.asarray(items), jnp.asarray(seeds))
    else:
      view_t = jax.eval_shape(lambda p: eval_items(level, p, jnp.zeros(
          (len(names),), jnp.int32)), jax.eval_shape(self.sim._build_state)["params"])  # pylint: disable=protected-access
      view = unflatten(flat, view_t, "view/")
      apply = jax.jit(scoring.view_scores(level, names))
      seeds0 = jnp.asarray(self.sim.algorithm.client_seeds(part.users[:1], rnd)[0])
      merged = models.merge_user_params(users_tab, view)

      def score(u, items):
        return apply(merged, jnp.asarray(u), jnp.asarray(items), seeds0)
    out = {}
    if not len(part.test_users):
      return out
    if protocol in ("sampled", "both"):
      per = metrics.evaluate_sampled(score, part.test_users, part.candidates)
      out.update({k: (float(np.sum(v)), len(v)) for k, v in per.items()})
    if protocol in ("full", "both"):
      indptr = np.zeros(part.num_users + 1, np.int64)
      counts = np.zeros(part.num_users, np.int64)
      counts[part.users] = np.diff(part.indptr)
      np.cumsum(counts, out=indptr[1:])
      # The global CSR of this device's users (others have no items).
      order = np.argsort(part.users, kind="stable")
      items = np.concatenate([part.items[part.indptr[i]:part.indptr[i + 1]] for i in order]
                             ) if len(order) else np.zeros(0, np.int32)
      _, per = metrics.evaluate_full(score, part.num_items, part.test_users, part.test_items,
                                     indptr, items)
      out.update({k: (float(np.sum(v)), len(v)) for k, v in per.items()})
    return out


def eval_items(level, params, seeds):
  """The item side of a level's evaluation view (what its devices hold to score)."""
  # eval_view maps every table leafwise (server params hold no user
  # tables); a device cuts its own user rows to `Level.user_cols`.
  return level.eval_view(params, seeds)


# ------------------------------------------------------------ the server


class Registered(NamedTuple):
  node_id: int
  lv: int
  users: np.ndarray


class Task(NamedTuple):
  """One device's share of a round: what is sent, and what the reply must hold."""
  node_id: int
  lv: int
  sel: np.ndarray          # positions in the level's batch
  users: np.ndarray
  start: object            # the params they start from (a pytree)
  seeds: np.ndarray
  weights: np.ndarray
  arrays: Dict[str, np.ndarray]
  config: Dict
  expected: Dict           # {flat key: (shape, dtype)} of a valid reply


def log(message):
  print(message, file=sys.stderr, flush=True)


class Server:
  """The server's half of a deployed run.

  Args:
    config: the experiment ConfigDict.
    describe: {node_id: Node.describe() of the device}, every device of the run.
    log: where one-line notices go (rejected replies, dropped devices).
  """

  def __init__(self, config, describe, log_fn=log):
    self.config = config
    self.log = log_fn
    if config.client.poison:  # the sampler's hook poisons uploads inside the fused program
      raise InputError(f"client.poison={config.client.poison!r}: a simulation hook, not "
                       "available in a deployment")
    first = next(iter(describe.values()))
    self.num_users, self.num_items = int(first["num_users"]), int(first["num_items"])
    users, counts = [], []
    for info in describe.values():
      users.extend(info["users"])
      counts.extend(info["counts"])
    order = np.argsort(users)
    users, counts = np.asarray(users)[order], np.asarray(counts)[order]
    if len(np.unique(users)) != len(users):
      raise InputError("two devices report the same user")
    all_counts = np.zeros(self.num_users, np.int64)
    all_counts[users] = counts
    # The prior's knots are published with the catalogue: every device has them.
    self.sim = _simulation(config, positions_dataset(
        self.num_users, self.num_items, np.arange(self.num_users), all_counts),
                           first.get("prior", []), np.zeros(0, np.float32))
    self.algorithm = self.sim.algorithm
    self.nodes: Dict[int, Registered] = {}
    for node_id, info in describe.items():
      self.register(node_id, info)
    state = jax.jit(self.sim._build_state)()  # pylint: disable=protected-access
    self.params, self.opt_state = state["params"], state["opt_state"]
    self.commits: Dict[int, List[int]] = {}
    self._jits = {}

  def register(self, node_id, info):
    """Adds (or re-adds, after a restart) a device; returns an error line or None."""
    lv = int(info["level"])
    users = np.asarray(info["users"], np.int32)
    if (int(info["num_users"]), int(info["num_items"])) != (self.num_users, self.num_items):
      return f"node {node_id}: reports another dataset; ignored"
    if lv >= len(self.algorithm.levels) or (len(users) and
                                            (self.sim.user_level[users] != lv).any()):
      return f"node {node_id}: its users are not all of its level {lv}; ignored"
    for other in [n for n, r in self.nodes.items() if set(r.users.tolist()) &
                  set(users.tolist())]:
      del self.nodes[other]  # the same device, restarted under a new id
      self.commits.pop(other, None)
    self.nodes[node_id] = Registered(node_id, lv, users)
    return None

  def forget(self, node_id):
    self.nodes.pop(node_id, None)
    self.commits.pop(node_id, None)

  def _jit(self, name, lv, fn):
    if (name, lv) not in self._jits:
      self._jits[(name, lv)] = jax.jit(fn)
    return self._jits[(name, lv)]

  # ---------------------------------------------------------------- train

  def plan(self, rnd):
    """The round's tasks, one per device with sampled users, and the level batches."""
    algo, eng = self.algorithm, self.sim.engine
    batches = self.sim.sample(rnd)
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), rnd)
    round_seeds = jnp.asarray(algo.seeds(rnd))
    tasks = []
    for lv, batch in enumerate(batches):
      if batch is None:
        continue
      level = algo.levels[lv]
      shared = self._jit("broadcast", lv, lambda p, s, level=level: engine_lib.broadcast(
          level, p, s))(self.params, round_seeds)
      rngs = np.asarray(engine_lib.client_keys(key, lv, len(batch.users)))
      starts = self._jit("starts", lv, lambda p, sh, sd, level=level: engine_lib.starts(
          level, p, sh, sd))
      for node in self.nodes.values():
        if node.lv != lv:
          continue
        sel = np.flatnonzero(np.isin(batch.users, node.users) & (batch.weights > 0))
        if not len(sel):
          continue
        start = starts(self.params, shared, jnp.asarray(batch.seeds[sel]))
        arrays = flatten(start, "start/")
        arrays.update({"items": batch.items[sel], "mask": batch.mask[sel].astype(np.uint8),
                       "rngs": rngs[sel], "seeds": batch.seeds[sel]})
        held = start if level.per_client else jax.tree.map(
            lambda x, n=len(sel): jax.ShapeDtypeStruct((n,) + x.shape, x.dtype), start)
        expected = shapes_of(held, "new/")
        expected["loss"] = ((len(sel),), np.dtype(np.float32))
        cfg = {"round": rnd, "level": lv, "users": [int(u) for u in batch.users[sel]],
               "group": int(eng.group_sizes[lv])}
        tasks.append(Task(node.node_id, lv, sel, batch.users[sel], start, batch.seeds[sel],
                          batch.weights[sel], arrays, cfg, expected))
    return tasks, batches

  def take_commit(self, node_id):
    """The users whose rows a device may keep from its last training (then forgotten)."""
    return self.commits.pop(node_id, [])

  def aggregate(self, rnd, tasks, batches, replies):
    """Screens the replies, sums, lifts and steps the server; returns the round's statistics.

    Args:
      rnd: the round.
      tasks: from `plan`.
      batches: from `plan`.
      replies: {node_id: (arrays, config)}, or a string saying why a device
        gave none (an error reply); a device absent from it did not answer.
    """
    algo, eng = self.algorithm, self.sim.engine
    round_seeds = jnp.asarray(algo.seeds(rnd))
    sums, weights = {}, {}
    stats = {"dropped_clients": 0, "rejected_updates": 0, "clients": 0, "bytes_down": 0,
             "bytes_up": 0, "dropped_nodes": 0, "rejected_nodes": 0}
    answered = {lv: np.zeros(len(b.users), bool) for lv, b in enumerate(batches) if b is not None}
    oks = {lv: np.zeros(len(b.users), bool) for lv, b in enumerate(batches) if b is not None}
    losses = []
    for task in tasks:
      level = algo.levels[task.lv]
      name = self.sim.levels.names[task.lv]
      reply = replies.get(task.node_id)
      if reply is None or isinstance(reply, str):
        stats["dropped_nodes"] += 1
        self.log(f"node {task.node_id} (level {name}): no reply in round {rnd}"
                 + (f" ({reply.strip()})" if reply else "")
                 + f"; its {len(task.sel)} clients count as dropped")
        continue
      arrays, reply_cfg = reply
      why = arrays if isinstance(arrays, str) else check_arrays(arrays, task.expected)
      if why is None and int(reply_cfg.get("round", -1)) != rnd:
        why = f"it answers round {reply_cfg.get('round')}, not {rnd}"
      if why is None and int(reply_cfg.get("level", -1)) != task.lv:
        why = f"it answers as level {reply_cfg.get('level')}, not {task.lv} ({name})"
      answered[task.lv][task.sel] = True
      if why is not None:
        stats["rejected_nodes"] += 1
        self.log(f"node {task.node_id} (level {name}): reply rejected in round {rnd}: {why}")
        continue
      held = task.start if level.per_client else jax.tree.map(
          lambda x, n=len(task.sel): jax.ShapeDtypeStruct((n,) + x.shape, x.dtype), task.start)
      new = unflatten(arrays, held, "new/")
      settle = self._jit("settle", task.lv, lambda st, nw, sd, wt, level=level:
                         engine_lib.settle_clients(level, eng.screen, level.per_client, st,
                                                   nw, sd, wt)[:3])
      total, wsum, ok = settle(task.start, new, jnp.asarray(task.seeds),
                               jnp.asarray(task.weights))
      ok = np.asarray(ok)
      oks[task.lv][task.sel] = ok
      if not ok.all():
        self.log(f"node {task.node_id} (level {name}): {int((~ok).sum())} of {len(ok)} "
                 f"client updates rejected by the screen in round {rnd} (non-finite or "
                 "over server.max_update_norm)")
      sums[task.lv] = total if task.lv not in sums else jax.tree.map(jnp.add, sums[task.lv],
                                                                      total)
      weights[task.lv] = wsum if task.lv not in weights else weights[task.lv] + wsum
      loss = np.asarray(arrays["loss"])
      losses.extend(loss[ok & np.isfinite(loss)].tolist())
      self.commits[task.node_id] = [int(u) for u in task.users[ok]]
    totals, tw = {}, {}
    for lv, batch in enumerate(batches):
      if batch is None:
        continue
      level = algo.levels[lv]
      if lv not in sums:  # no accepted reply: the level adds zeros, as in the simulation
        shape = self._level_sum_shape(lv, round_seeds)
        sums[lv] = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
        weights[lv] = jnp.zeros((), jnp.float32)
      lift = self._jit("lift", lv, lambda t, s, level=level: level.lift(t, s))
      totals[lv], tw[lv] = lift(sums[lv], round_seeds), weights[lv]
      live = batch.weights > 0
      stats["clients"] += len(batch.users)
      stats["dropped_clients"] += int((~(live & answered[lv])).sum())
      stats["rejected_updates"] += int((live & answered[lv] & ~oks[lv]).sum())
      sizes = self.sim.level_bytes(lv)
      level_bytes = sizes["shared"] + (sizes["user"] if self.sim.federate_user else 0)
      stats["bytes_down"] += len(batch.users) * level_bytes
      stats["bytes_up"] += int((live & answered[lv]).sum()) * level_bytes
    if totals:
      self.params, self.opt_state = eng.server_step(self.params, self.opt_state, totals, tw)
    stats["train_loss"] = float(np.mean(losses)) if losses else float("nan")
    stats["answered_weight"] = float(sum(float(tw[lv]) for lv in sorted(tw)))
    return stats

  def _level_sum_shape(self, lv, round_seeds):
    level, eng = self.algorithm.levels[lv], self.sim.engine
    batch_seeds = jnp.zeros((1, len(round_seeds)), jnp.int32)

    def one(params):
      shared = engine_lib.broadcast(level, params, round_seeds)
      start = engine_lib.starts(level, params, shared, batch_seeds)
      new = start if level.per_client else jax.tree.map(lambda x: x[None], start)
      return engine_lib.settle_clients(level, eng.screen, level.per_client, start, new,
                                       batch_seeds, jnp.ones((1,), jnp.float32))[0]
    return jax.eval_shape(one, self.params)

  # ------------------------------------------------------------- evaluate

  def eval_arrays(self, lv, rnd):
    """What a device of level lv scores with after round rnd (its model, no user rows)."""
    level = self.algorithm.levels[lv]
    if level.per_client:
      return flatten(self.params, "params/")
    seeds = jnp.asarray(self.algorithm.client_seeds(np.zeros(1, np.int32), rnd)[0])
    view = self._jit("view", lv, lambda p, s, level=level: eval_items(level, p, s))(
        self.params, seeds)
    return flatten(view, "view/")

  def eval_summary(self, results):
    """{metric: mean} overall and per level from {node_id: {metric: (sum, count)}}."""
    names = self.sim.levels.names
    overall, per_level = {}, {}
    for node_id, res in results.items():
      lv = self.nodes[node_id].lv if node_id in self.nodes else None
      for k, (s, n) in res.items():
        a = overall.setdefault(k, [0.0, 0])
        a[0] += s
        a[1] += n
        if lv is not None:
          b = per_level.setdefault((names[lv], k), [0.0, 0])
          b[0] += s
          b[1] += n
    out = {k: (s / n if n else float("nan")) for k, (s, n) in overall.items()}
    for name in names:
      for k in metrics.metric_names(self.config.eval.protocol):
        s, n = per_level.get((name, k), (0.0, 0))
        out[f"level/{name}/{k}"] = s / n if n else float("nan")
    return out
