"""FAIR and the baselines that train hashed (or plain) tables.

| algorithm          | level c trains                       | users of level c use |
|--------------------|--------------------------------------|----------------------|
| fair               | hashed tables at size m_c            | m_c                  |
| fair_inconsistent  | m_c, hashed with the client's seed   | m_c, own seed        |
| fedavg             | the full tables (ignores memory)     | full                 |
| drop               | full tables if c == 1, else nothing  | full                 |
| smallest           | the most compressed level's size     | that size            |

A client of a hashed level holds `collapse(params)` (or, with
`fair.view=lift`, that rescaled by `count^power`, the left inverse of the
lift); its update reaches the full tables by `fair.lift`: `expand` (P w,
the design's map), `isometric` (P D^-1/2 w) or `adjoint` (P D^-1 w, the
transpose of collapse). See docs/design.md, "Collapse, expand and lift".
"""
import numpy as np

from fairjax import subspace
from fairjax.algorithms import base
from fairjax.errors import InputError

# fair.lift -> power of the bucket counts in P D^-power (see subspace.adjoint).
LIFTS = {"expand": 0.0, "isometric": 0.5, "adjoint": 1.0}
# fair.view: "mean" holds the bucket means; "lift" the means scaled by
# count^power, the left inverse of fair.lift's map.
VIEWS = ("mean", "lift")


def powers(fair_cfg):
  """(lift power, view power) of `config.fair`, checked."""
  lift = fair_cfg.get("lift", "expand")
  if lift not in LIFTS:
    raise InputError(f"fair.lift: unknown mode {lift!r}; choose one of {', '.join(LIFTS)}")
  view = fair_cfg.get("view", "mean")
  if view not in VIEWS:
    raise InputError(f"fair.view: unknown mode {view!r}; choose one of {', '.join(VIEWS)}")
  if lift != "expand" and fair_cfg.aggregate == "weights":
    raise InputError(f"fair.lift={lift} maps updates, not weights: use fair.aggregate=delta "
                     "or nested with it")
  power = LIFTS[lift]
  return power, (power if view == "lift" else 0.0)


def hashed_level(ctx, c, name, trains, spec, agg, per_client=False, trace_seeds=False,
                 penalty=None) -> base.Level:
  """A level that trains the hashed subspace `spec` (plain tables at c = 1).

  Args:
    ctx: the `base.Context`.
    c, name, trains: the level's compression, name and whether it trains.
    spec: the hashed spec of its tables.
    agg: the algorithm's `Aggregator` (its `value` is what clients add).
    per_client: each client hashes with its own seeds (collapses for itself
      and lifts its own update); else the level's clients share `broadcast`.
    trace_seeds: hash with the seeds the engine passes (per client or per
      round) instead of the spec's fixed ones.
    penalty: optional local penalty (see `base.Level`).
  """
  power, view_power = powers(ctx.fair)
  paths = list(spec)

  def space(seeds):
    if not trace_seeds:
      return spec
    return {p: spec[p]._replace(seed=seeds[t]) for t, p in enumerate(paths)}

  def collapse(params, seeds):
    sp = space(seeds)
    out = subspace.subspace(sp).collapse(params)
    return subspace.rescale_map(sp, view_power)(out) if view_power else out

  def to_server(x, seeds):
    sp = space(seeds)
    return subspace.adjoint_map(sp, power)(x) if power else subspace.subspace(sp).expand(x)

  if per_client:
    broadcast = lambda params, seeds: None
    held = lambda params, shared, seeds: collapse(params, seeds)
    contribute = lambda start, delta, ok, seeds: to_server(agg.value(start, delta, ok), seeds)
    lift = base.identity_lift
  else:
    broadcast = collapse
    held = lambda params, shared, seeds: shared
    contribute = lambda start, delta, ok, seeds: agg.value(start, delta, ok)
    lift = to_server
  seeds = base.item_seeds(spec)
  return base.Level(
      c, name, trains,
      ctx.build_model(1, base.item_sizes(spec), seeds),
      ctx.build_model(ctx.num_users, base.item_sizes(spec), seeds),
      tuple(ctx.shapes), broadcast, held, contribute, lift, eval_view=collapse, spec=spec,
      per_client=per_client, trace_seeds=trace_seeds, penalty=penalty)


def spec_at(ctx, c, seed=None):
  """The hashed spec of every item table at compression c."""
  sizes = ctx.fair.get("sizes", "pow2")
  return subspace.make_spec(ctx.shapes, c, ctx.hash_seed if seed is None else seed,
                            exact=ctx.exact_sizes or sizes == "exact",
                            layout=ctx.fair.get("layout", "hash"),
                            ladder=ctx.levels.compressions if sizes == "nested" else None)


def spec_seeds(spec):
  return [s.seed for s in spec.values()]


def consistent(name, spec_of, trains_of, penalty=None):
  """An algorithm whose every client hashes with the run's seeds.

  Args:
    name: the algorithm's name (errors).
    spec_of: `(ctx, c) -> spec` a level of compression c trains.
    trains_of: `(c) -> bool`, whether that level takes part.
    penalty: optional local penalty of every level.
  """
  def build(ctx):
    specs = [spec_of(ctx, c) for c in ctx.levels.compressions]
    agg = base.make_aggregator(ctx.fair.aggregate, ctx.levels,
                               downs=[subspace.subspace(s) for s in specs], name=name)
    levels = tuple(hashed_level(ctx, c, nm, trains_of(c), s, agg, penalty=penalty)
                   for c, nm, s in zip(ctx.levels.compressions, ctx.levels.names, specs))
    base.check_trains(levels, name, ctx.levels)
    return base.Algorithm(levels, agg, *base.same_seeds(spec_seeds(specs[0])))
  return build


def _own(ctx, c):
  return spec_at(ctx, c)


def _full(ctx, c):
  del c
  return spec_at(ctx, 1)


def _smallest(ctx, c):
  del c
  return spec_at(ctx, max(ctx.levels.compressions))


fair = consistent("fair", _own, lambda c: True)
fedavg = consistent("fedavg", _full, lambda c: True)
drop = consistent("drop", _full, lambda c: c == 1)
smallest = consistent("smallest", _smallest, lambda c: True)


def fair_inconsistent(ctx):
  """FAIR where every client hashes with its own seed (the ablation).

  Each client collapses the full tables under its own seeds and lifts its
  own update back; nothing is shared within a level, so nothing nests.
  """
  agg = base.make_aggregator(ctx.fair.aggregate, ctx.levels, name="fair_inconsistent")
  levels = tuple(hashed_level(ctx, c, nm, True, spec_at(ctx, c), agg, per_client=True,
                              trace_seeds=True)
                 for c, nm in zip(ctx.levels.compressions, ctx.levels.names))
  paths = list(ctx.shapes)
  shared = np.array(spec_seeds(spec_at(ctx, 1)), np.int32)
  cache = {}

  def client_seeds(users, rnd):
    del rnd
    out = np.empty((len(users), len(paths)), np.int32)
    for r, u in enumerate(np.asarray(users)):
      u = int(u)
      if u not in cache:
        cache[u] = [subspace.table_seed(p, ctx.hash_seed, u) for p in paths]
      out[r] = cache[u]
    return out
  return base.Algorithm(levels, agg, lambda rnd: shared, client_seeds)
