"""What each federated algorithm trains at each capacity level.

An algorithm here is a plan: for every capacity level, whether its clients
take part, the subspace spec they train in, and the spec its users are
evaluated with. The round itself (broadcast collapsed params, run the
clients, reduce the expanded deltas) is shared and lives in `simulate.py`.

| algorithm          | level c trains                       | users of level c use |
|--------------------|--------------------------------------|----------------------|
| fair               | hashed tables at size m_c            | m_c                  |
| fair_inconsistent  | m_c, hashed with the client's seed   | m_c, own seed        |
| fedavg             | the full tables (ignores memory)     | full                 |
| drop               | full tables if c == 1, else nothing  | full                 |
| smallest           | the most compressed level's size     | that size            |
| heterofl           | first floor(d/c) columns (none: c>d) | those columns        |
| fedhm              | rank-r item factors U V^T (none: r=0)| rank r               |

(FedHM's r = floor(n d / (c (n + d))); a c = 1 device trains the plain table.)

HeteroFL (Diao et al., ICLR 2021) gives a client of ratio 1/c the first
d/c columns of every embedding table (its private user row included) and
the rows of the dense kernels that read them (`mlp_0` reads
[user_mlp | item_mlp], `head` reads [GMF product | MLP output]); the server
averages each entry over the clients that hold it (`per_entry`). FedHM
(Yao et al., 2021) gives a client the truncated SVD of each item table at
the rank its memory holds (factors cost r(n + d) floats against n d) and
the server averages the products U'V'^T - U V^T; a device whose memory holds
the plain table (c = 1) trains it as it is, as FedHM's largest clients do.

Devices that `drop`, `heterofl` or `fedhm` leave out never train their
private user embedding; they are still evaluated (with the global model and
their untrained user embedding), so the table shows what leaving them out
costs them; `excluded_clients` in metrics.jsonl counts them.
"""
import fractions
import math
from typing import Mapping, NamedTuple, Optional, Tuple

import jax.numpy as jnp
import numpy as np

from fairjax import subspace
from fairjax.capacity import Levels
from fairjax.errors import InputError

ALGORITHMS = ("fair", "fair_inconsistent", "fedavg", "drop", "smallest", "heterofl",
              "fedhm")


class LevelPlan(NamedTuple):
  """What one capacity level does under an algorithm.

  Attributes:
    compression: the level's compression factor c.
    name: its key in metrics.jsonl ("8x").
    trains: whether its clients take part.
    down: Subspace between the server params (no user tables) and the
      params a client of this level holds; `collapse` is the download,
      `expand` maps a client's update back to the server's space.
    model: the client's model (one user row).
    eval_down, eval_model: how this level's users are evaluated (model
      with every user's row).
    table_paths: the compressible tables in the level's params (accounting).
    spec: the hashed spec (FAIR-family algorithms), else None.
    per_entry: average each entry over the clients that hold it (HeteroFL)
      instead of over all clients of the round.
    user_cols: if set, a client trains only the first `user_cols` columns of
      its (full-width, stored) user rows (HeteroFL).
    expand_each: `down.expand` is not linear (FedHM's U V^T), so each
      client's params are expanded before the deltas are summed.
  """
  compression: float
  name: str
  trains: bool
  down: subspace.Subspace
  model: object
  eval_down: subspace.Subspace
  eval_model: object
  table_paths: Tuple[Tuple[str, ...], ...]
  spec: Optional[Mapping[Tuple[str, ...], subspace.TableSpec]] = None
  per_entry: bool = False
  user_cols: Optional[int] = None
  expand_each: bool = False


class Plan(NamedTuple):
  levels: Tuple[LevelPlan, ...]
  inconsistent: bool  # clients hash with their own seeds


def make_plan(algorithm, levels: Levels, shapes, hash_seed, build_model, num_users,
              exact_sizes=False) -> Plan:
  """The per-level plan of `algorithm`.

  Args:
    algorithm: one of ALGORITHMS.
    levels: parsed capacity levels.
    shapes: dict param path -> (rows, cols) of the compressible tables.
    hash_seed: the run's hash seed.
    build_model: (num_users, item_sizes=None, seeds=None, **kw) -> models.ModelDef.
    num_users: users of the dataset (rows of the evaluation models).
    exact_sizes: sizes ceil(n*d/c) instead of the power-of-two ladder.

  Returns:
    A Plan.
  """
  if algorithm not in ALGORITHMS:
    raise InputError(f"algorithm: {algorithm!r} is not a federated algorithm here; "
                     f"choose one of {', '.join(ALGORITHMS)}")
  spec = lambda c: subspace.make_spec(shapes, c, hash_seed, exact=exact_sizes)
  full = spec(1)
  smallest = spec(max(levels.compressions))

  def hashed(c, name, trains, train_spec, eval_spec):
    return LevelPlan(
        c, name, trains, subspace.subspace(train_spec),
        build_model(1, item_sizes(train_spec), item_seeds(train_spec)),
        subspace.subspace(eval_spec),
        build_model(num_users, item_sizes(eval_spec), item_seeds(eval_spec)),
        tuple(shapes), train_spec)

  (rows, d), = set(shapes.values())

  def heterofl(c, name):
    width = heterofl_width(d, c)
    if width == 0:
      return hashed(c, name, False, full, full)
    down = column_subspace(shapes, width)
    return LevelPlan(c, name, True, down, build_model(1, cols=width), down,
                     build_model(num_users, cols=width), tuple(shapes), full,
                     per_entry=True, user_cols=width)

  def fedhm(c, name):
    rank = fedhm_rank(rows, d, c)
    if c == 1 or rank == 0:
      return hashed(c, name, c == 1, full, full)
    down = low_rank_subspace(shapes, rank)
    return LevelPlan(c, name, True, down, build_model(1, item_rank=rank), down,
                     build_model(num_users, item_rank=rank),
                     tuple((p[0],) for p in shapes), full, expand_each=True)

  out = []
  for c, name in zip(levels.compressions, levels.names):
    if algorithm in ("fair", "fair_inconsistent"):
      out.append(hashed(c, name, True, spec(c), spec(c)))
    elif algorithm == "fedavg":
      out.append(hashed(c, name, True, full, full))
    elif algorithm == "drop":
      out.append(hashed(c, name, c == 1, full, full))
    elif algorithm == "smallest":
      out.append(hashed(c, name, True, smallest, smallest))
    elif algorithm == "heterofl":
      out.append(heterofl(c, name))
    elif algorithm == "fedhm":
      out.append(fedhm(c, name))
  if not any(p.trains for p in out):
    raise InputError(f"algorithm {algorithm}: no capacity level can take part "
                     f"(capacities {dict(zip(levels.compressions, levels.fractions))})")
  return Plan(tuple(out), algorithm == "fair_inconsistent")


def item_sizes(spec) -> Mapping[str, Optional[int]]:
  """Table name -> hashed size (None = plain) of a spec, for models.make_model."""
  return {path[0]: s.size for path, s in spec.items()}


def item_seeds(spec) -> Mapping[str, int]:
  return {path[0]: s.seed for path, s in spec.items()}


# ------------------------------------------------------------- HeteroFL


def heterofl_width(cols, c):
  """Columns a HeteroFL client of compression `c` holds: floor(cols / c)."""
  return math.floor(fractions.Fraction(cols) / fractions.Fraction(c))


def column_subspace(shapes, width) -> subspace.Subspace:
  """HeteroFL's sub-model: the first `width` columns of every embedding table.

  `collapse` slices the user and item tables present in the params (user
  tables appear only in evaluation params) and the input rows of the dense
  kernels that read them: `mlp_0` reads [user_mlp | item_mlp] (rows
  `[0, width)` and `[d, d + width)` of `2d`), `head` reads
  [GMF product | MLP output] (rows `[0, width)` and `[d, rows)`). `expand`
  puts the kept entries back in place with zeros elsewhere, so it is the
  transpose of `collapse`, and `expand(ones)` marks the entries a client holds.

  Args:
    shapes: dict item-table path -> (rows, cols), as for `make_spec`.
    width: the columns kept, 1 <= width <= cols.

  Returns:
    A `Subspace`.
  """
  (_, d), = set(shapes.values())
  names = {p[0] for p in shapes}
  has_gmf = "item_gmf" in names
  tables = [t for t in ("user_gmf", "item_gmf", "user_mlp", "item_mlp")
            if t.replace("user", "item") in names]
  if width == d:
    same = lambda params: params
    return subspace.Subspace(same, same)

  def kept_rows(layer, full_rows):
    if layer == "mlp_0":
      return np.r_[0:width, d:d + width]
    if layer == "head" and has_gmf:
      return np.r_[0:width, d:full_rows]
    return None  # MLP-only head: it reads the tower's output, not embeddings

  def collapse(params):
    out = dict(params)
    for t in tables:
      if t in params:
        out[t] = {"embedding": params[t]["embedding"][:, :width]}
    for layer in ("mlp_0", "head"):
      if layer in params:
        kernel = params[layer]["kernel"]
        rows = kept_rows(layer, kernel.shape[0])
        if rows is not None:
          out[layer] = dict(params[layer], kernel=kernel[rows])
    return out

  def expand(params):
    out = dict(params)
    for t in tables:
      if t in params:
        e = params[t]["embedding"]
        out[t] = {"embedding": jnp.pad(e, ((0, 0), (0, d - e.shape[1])))}
    for layer in ("mlp_0", "head"):
      if layer in params:
        kernel = params[layer]["kernel"]
        # mlp_0 lost 2 (d - width) rows (user and item halves), head d - width.
        full_rows = kernel.shape[0] + (d - width) * (2 if layer == "mlp_0" else 1)
        rows = kept_rows(layer, full_rows)
        if rows is not None:
          zero = jnp.zeros((full_rows,) + kernel.shape[1:], kernel.dtype)
          out[layer] = dict(params[layer], kernel=zero.at[rows].set(kernel))
    return out

  return subspace.Subspace(collapse, expand)


# ---------------------------------------------------------------- FedHM


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
