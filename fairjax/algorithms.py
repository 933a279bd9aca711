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

Devices that `drop` leaves out never train their private user embedding;
they are still evaluated (with the global model and their untrained user
embedding), so the table shows what leaving them out costs them.
"""
from typing import Mapping, NamedTuple, Optional, Tuple

from fairjax import subspace
from fairjax.capacity import Levels
from fairjax.errors import InputError

ALGORITHMS = ("fair", "fair_inconsistent", "fedavg", "drop", "smallest")


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
  if not any(p.trains for p in out):
    raise InputError(f"algorithm {algorithm}: no capacity level can take part "
                     f"(capacities {dict(zip(levels.compressions, levels.fractions))})")
  return Plan(tuple(out), algorithm == "fair_inconsistent")


def item_sizes(spec) -> Mapping[str, Optional[int]]:
  """Table name -> hashed size (None = plain) of a spec, for models.make_model."""
  return {path[0]: s.size for path, s in spec.items()}


def item_seeds(spec) -> Mapping[str, int]:
  return {path[0]: s.seed for path, s in spec.items()}
