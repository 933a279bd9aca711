"""The value an algorithm is: per-level pure functions and an aggregator.

A federated algorithm here is data, in the style of optax's
`GradientTransformation`: an `Algorithm` holds one `Level` per capacity
level (small named tuples of pure functions) and an `Aggregator`. The round
engine (`fairjax.engine`) runs, for every level with clients this round,

    shared = level.broadcast(params, seeds)                 # once per level
    start  = level.held(params, shared, client_seeds)       # per client
    ... local training from `start` (with `level.penalty`) ...
    out    = level.contribute(start, delta, ok, client_seeds)  # per client
    total  = level.lift(sum_k w_k out_k, seeds)             # once per level

and then `g = aggregator.average(params, totals, weights)`, which the
server optimizer applies as `-g`. Nothing in the engine knows which
algorithm it runs; docs/design.md, "Algorithms as values", says how to add
one.
"""
from typing import Callable, Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fairjax import server as server_lib
from fairjax.errors import InputError

class Context(NamedTuple):
  """What an algorithm is built from (one run's plan, before any data moves).

  Attributes:
    levels: parsed capacity levels (`capacity.Levels`).
    shapes: item-table param path -> (rows, cols).
    hash_seed: the run's hash seed.
    exact_sizes: sizes ceil(n d / c) instead of the power-of-two ladder.
    build_model: `(num_users, item_sizes=None, seeds=None, **kw) -> ModelDef`.
    num_users: users of the dataset (rows of the evaluation models).
    fair: the `config.fair` ConfigDict (aggregate, lift, view, ...).
  """
  levels: object
  shapes: Mapping[Tuple[str, ...], Tuple[int, int]]
  hash_seed: int
  exact_sizes: bool
  build_model: Callable
  num_users: int
  fair: object


class Level(NamedTuple):
  """What the clients of one capacity level do under an algorithm.

  Seeds are int32 arrays with one entry per item table: `seeds` the round's
  (the server's), `client_seeds` one client's. Only algorithms whose hash
  changes per client or per round read them.

  Attributes:
    compression: the level's compression factor c.
    name: its key in metrics.jsonl ("8x").
    trains: whether its clients take part.
    model: the client's model (one user row).
    eval_model: the model its users are scored with (every user's row).
    table_paths: the compressible tables of the level's params (accounting).
    broadcast: `(params, seeds) -> shared`, what the level's clients download.
    held: `(params, shared, client_seeds) -> start`, one client's params.
    contribute: `(start, delta, ok, client_seeds) -> out`, what one
      client's screened update adds to the level's weighted sum.
    lift: `(total, seeds) -> server-space total` of the level's sum.
    eval_view: `(params with every user's rows, seeds) -> eval_model params`.
    spec: the hashed spec the level trains at, if it trains one.
    per_client: `held`, `contribute` and `eval_view` depend on each
      client's own seeds (each client collapses for itself).
    trace_seeds: the model hashes with the seeds passed in, not its spec's.
    user_cols: if set, a client trains only the first `user_cols` columns
      of its (full-width, stored) user rows.
    penalty: optional `(params, anchor) -> scalar` added to the local loss,
      `anchor` being the params the client started the round from.
  """
  compression: float
  name: str
  trains: bool
  model: object
  eval_model: object
  table_paths: Tuple[Tuple[str, ...], ...]
  broadcast: Callable
  held: Callable
  contribute: Callable
  lift: Callable
  eval_view: Callable
  spec: Optional[Mapping] = None
  per_client: bool = False
  trace_seeds: bool = False
  user_cols: Optional[int] = None
  penalty: Optional[Callable] = None

  def model_seeds(self, names, seeds):
    """The seeds the client model hashes with: None (its spec's) or name -> seed."""
    return {n: seeds[t] for t, n in enumerate(names)} if self.trace_seeds else None


class Aggregator(NamedTuple):
  """How clients' updates become the server's averaged update `g`.

  Attributes:
    value: `(start, delta, ok) -> x`, the client's update in the form that
      is averaged (its delta, or its new weights).
    average: `(params, totals, weights) -> g`, from each level's summed
      server-space contribution (`totals[lv]`) and summed client weight.
    of_weights: `value` is the client's new weights, not its delta.
  """
  value: Callable
  average: Callable
  of_weights: bool = False


class Algorithm(NamedTuple):
  """A federated algorithm: levels, aggregator, and the hash seeds of a round.

  Attributes:
    levels: one `Level` per capacity level.
    aggregator: the `Aggregator`.
    seeds: `(rnd) -> int32 [tables]`, the server's hash seeds in round rnd.
    client_seeds: `(users, rnd) -> int32 [K, tables]`, each client's.
  """
  levels: Tuple[Level, ...]
  aggregator: Aggregator
  seeds: Callable
  client_seeds: Callable


# -------------------------------------------------------------- aggregators


def _sum(tree_dict):
  out = None
  for lv in sorted(tree_dict):
    out = tree_dict[lv] if out is None else jax.tree.map(jnp.add, out, tree_dict[lv])
  return out


def _delta_value(start, delta, ok):
  del start, ok
  return delta


def _weights_value(start, delta, ok):
  # A rejected client adds nothing (its weight is 0 too; where() keeps NaN out).
  return jax.tree.map(lambda d, s: jnp.where(ok, s + d, 0), delta, start)


def average(mode):
  """FedAvg-style averaging over every client of the round.

  Args:
    mode: "delta" (average the updates) or "weights" (average the new
      weights, the paper code's rule: g = mean(w') - params).
  """
  def avg(params, totals, weights):
    return server_lib.average(_sum(totals), _sum(weights), params, mode)
  return _aggregator(mode, avg)


def _aggregator(mode, avg):
  if mode == "delta":
    return Aggregator(_delta_value, avg)
  return Aggregator(_weights_value, avg, of_weights=True)


def per_entry(mode, coverage):
  """Each server entry averaged over the clients that hold it (HeteroFL).

  Args:
    mode: "delta" or "weights", as in `average`.
    coverage: `(lv, params) -> pytree`, 1 where a client of level lv holds
      an entry, else 0. An entry no client held this round is left as is.
  """
  def avg(params, totals, weights):
    cover = _sum({lv: jax.tree.map(lambda c, w=w: c * w, coverage(lv, params))
                  for lv, w in weights.items()})
    return server_lib.average(_sum(totals), _sum(weights), params, mode, cover)
  return _aggregator(mode, avg)


def nested(levels, downs):
  """Each nested layer of the subspaces averaged over the clients holding it.

  Args:
    levels: the run's `capacity.Levels`.
    downs: per level, the `Subspace` its clients train in; they must nest
      (a more compressed one inside every less compressed one).
  """
  order = sorted(range(len(downs)), key=lambda lv: -levels.compressions[lv])

  def avg(params, totals, weights):
    del params
    lvs = [lv for lv in order if lv in totals]
    projections = [(lambda x, d=downs[lv]: d.expand(d.collapse(x))) for lv in lvs]
    return server_lib.nested_average([totals[lv] for lv in lvs],
                                     [weights[lv] for lv in lvs], projections)
  return Aggregator(_delta_value, avg)


AGGREGATES = ("delta", "weights", "nested")


def make_aggregator(mode, levels, downs=None, coverage=None, name=""):
  """The aggregator of `fair.aggregate=mode` for an algorithm's levels.

  Args:
    mode: one of AGGREGATES.
    levels: the run's `capacity.Levels`.
    downs: per level, its linear `Subspace` (needed by "nested"), or None
      where the algorithm's levels do not nest.
    coverage: per-entry averaging (see `per_entry`), or None.
    name: the algorithm's name, for errors.
  """
  if mode not in AGGREGATES:
    raise InputError(f"fair.aggregate: unknown mode {mode!r}; choose one of "
                     f"{', '.join(AGGREGATES)}")
  if mode == "nested":
    if downs is None:
      raise InputError("fair.aggregate=nested needs consistent, nested subspaces "
                       f"(algorithm {name!r} has none)")
    return nested(levels, downs)
  if coverage is not None:
    return per_entry(mode, coverage)
  return average(mode)


# -------------------------------------------------------------- level pieces


def identity_lift(total, seeds):
  del seeds
  return total


def same_seeds(seeds_of_table):
  """`seeds` and `client_seeds` of an algorithm whose hash never changes."""
  row = np.asarray(seeds_of_table, np.int32)
  return (lambda rnd: row,
          lambda users, rnd: np.broadcast_to(row, (len(users), len(row))).copy())


def check_trains(levels_out, name, levels):
  if not any(lv.trains for lv in levels_out):
    raise InputError(f"algorithm {name}: no capacity level can take part "
                     f"(capacities {dict(zip(levels.compressions, levels.fractions))})")


def item_sizes(spec) -> Mapping[str, Optional[int]]:
  """Table name -> hashed size (None = plain) of a spec, for models.make_model."""
  return {path[0]: s.size for path, s in spec.items()}


def item_seeds(spec) -> Mapping[str, int]:
  return {path[0]: s.seed for path, s in spec.items()}


def subspace_level(c, name, trains, down, model, eval_model, table_paths, agg, **kw) -> Level:
  """A level whose clients hold `down.collapse(params)`, the same for all of them.

  Its updates are summed in the level's space and mapped back with
  `down.expand` (linear maps: column slices, plain tables).
  """
  return Level(
      c, name, trains, model, eval_model, table_paths,
      broadcast=lambda params, seeds: down.collapse(params),
      held=lambda params, shared, seeds: shared,
      contribute=lambda start, delta, ok, seeds: agg.value(start, delta, ok),
      lift=lambda total, seeds: down.expand(total),
      eval_view=lambda params, seeds: down.collapse(params), **kw)


def ones_coverage(down):
  """`(params) -> pytree`: 1 on the server entries a `down` client holds."""
  def cover(params):
    held = jax.eval_shape(down.collapse, params)
    return down.expand(jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), held))
  return cover

